//! Signing keys on disk: `DATA/keys/<key_id>.ed25519` holds a 32-byte secret with owner-only
//! permissions, and `DATA/keys/ACTIVE` names the key that signs new tokens. Older keys stay so
//! that tokens they signed still verify after a rotation.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

const KEY_FILE_SUFFIX: &str = ".ed25519";
const ACTIVE_FILE: &str = "ACTIVE";
/// Key ids whose tokens are refused, one per line.
const RETIRED_FILE: &str = "RETIRED";

/// Why the keys could not be loaded or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key directory failed.
    #[error("key file `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A key file is not 32 bytes, or `ACTIVE` names a key that is not there.
    #[error("key file `{path}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

pub(super) struct KeyRing {
    pub active_key_id: String,
    pub signing_keys: BTreeMap<String, SigningKey>,
}

pub(super) fn generate_key() -> SigningKey {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system has no random source");
    SigningKey::from_bytes(&secret)
}

/// `ed25519-` and the first 16 hex digits of the public key's SHA-256.
pub(super) fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.to_bytes());
    let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("ed25519-{hex}")
}

pub(super) fn load_or_create(dir: &Path) -> Result<KeyRing, KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let mut signing_keys = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(KEY_FILE_SUFFIX) else { continue };
        let bytes = fs::read(&path).map_err(io(&path))?;
        let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Invalid {
            path: path.clone(),
            message: format!("expected 32 bytes, found {}", bytes.len()),
        })?;
        let key = SigningKey::from_bytes(&secret);
        if key_id(&key.verifying_key()) != stem {
            return Err(KeyError::Invalid { path, message: "file name does not match the key it holds".into() });
        }
        signing_keys.insert(stem.to_owned(), key);
    }
    let active_path = dir.join(ACTIVE_FILE);
    if signing_keys.is_empty() {
        let active_key_id = write_new_key(dir)?;
        let key = load_key(dir, &active_key_id)?;
        signing_keys.insert(active_key_id.clone(), key);
        return Ok(KeyRing { active_key_id, signing_keys });
    }
    // A crash on first start can leave the key written but not `ACTIVE`: with one key there is
    // no doubt which one it is.
    if !active_path.exists() && signing_keys.len() == 1 {
        let only = signing_keys.keys().next().cloned().unwrap_or_default();
        write_owner_only(&active_path, only.as_bytes())?;
    }
    let active_key_id = fs::read_to_string(&active_path).map_err(io(&active_path))?.trim().to_owned();
    if !signing_keys.contains_key(&active_key_id) {
        return Err(KeyError::Invalid { path: active_path, message: format!("names missing key `{active_key_id}`") });
    }
    Ok(KeyRing { active_key_id, signing_keys })
}

/// Creates a new signing key in `DATA/keys` and makes it the active one; older keys keep
/// verifying the tokens they signed. Returns the new key id. Takes effect at the next start.
pub fn rotate_key(data_dir: &Path) -> Result<String, KeyError> {
    let dir = data_dir.join("keys");
    fs::create_dir_all(&dir).map_err(|source| KeyError::Io { path: dir.clone(), source })?;
    write_new_key(&dir)
}

/// Retires `key_id`: tokens it signed stop verifying, on restore and `tokens:verify`, on every
/// host within a second. The active key cannot be retired; rotate first.
pub fn retire_key(data_dir: &Path, key_id: &str) -> Result<(), KeyError> {
    let dir = data_dir.join("keys");
    let ring = load_or_create(&dir)?;
    let invalid = |message: String| KeyError::Invalid { path: dir.join(RETIRED_FILE), message };
    if !ring.signing_keys.contains_key(key_id) {
        return Err(invalid(format!("no key `{key_id}` in this data directory")));
    }
    if ring.active_key_id == key_id {
        return Err(invalid(format!("`{key_id}` signs new tokens: run `hongbao keys rotate` first")));
    }
    let mut retired = load_retired(&dir)?;
    retired.insert(key_id.to_owned());
    let text: String = retired.iter().map(|id| format!("{id}\n")).collect();
    write_owner_only(&dir.join(RETIRED_FILE), text.as_bytes())
}

/// The retired key ids; none when the file is missing.
pub(super) fn load_retired(dir: &Path) -> Result<std::collections::BTreeSet<String>, KeyError> {
    let path = dir.join(RETIRED_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

fn load_key(dir: &Path, key_id: &str) -> Result<SigningKey, KeyError> {
    let path = dir.join(format!("{key_id}{KEY_FILE_SUFFIX}"));
    let bytes = fs::read(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?;
    let secret: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| KeyError::Invalid { path, message: "expected 32 bytes".into() })?;
    Ok(SigningKey::from_bytes(&secret))
}

fn write_new_key(dir: &Path) -> Result<String, KeyError> {
    let key = generate_key();
    let id = key_id(&key.verifying_key());
    write_owner_only(&dir.join(format!("{id}{KEY_FILE_SUFFIX}")), &key.to_bytes())?;
    write_owner_only(&dir.join(ACTIVE_FILE), id.as_bytes())?;
    Ok(id)
}

/// Writes through a temporary file, fsyncs and renames, so a crash never leaves half a key.
pub(crate) fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    let temporary = path.with_extension("tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the first start creates an owner-only key, later starts load the same key, and a
    // rotation switches the active key while keeping the old one.
    #[test]
    fn keys_are_created_once_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let first = load_or_create(&keys_dir).unwrap();
        let mode = fs::metadata(keys_dir.join(format!("{}{KEY_FILE_SUFFIX}", first.active_key_id)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&keys_dir).unwrap();
        assert_eq!(again.active_key_id, first.active_key_id);
        // Regression: a crash between writing the first key and `ACTIVE` left a host that could
        // not start.
        fs::remove_file(keys_dir.join(ACTIVE_FILE)).unwrap();
        assert_eq!(load_or_create(&keys_dir).unwrap().active_key_id, first.active_key_id);
        let rotated = rotate_key(dir.path()).unwrap();
        let after = load_or_create(&keys_dir).unwrap();
        assert_eq!(after.active_key_id, rotated);
        assert!(after.signing_keys.contains_key(&first.active_key_id));
    }
}
