//! The admin credential: a bearer token for operators (scenes, plugins, reconciliation and
//! repair), created on a host's first start in `DATA/keys/admin.token`, owner-only, and shared
//! by a fleet like the signing keys. Apps cannot use it, and it cannot sign app requests.

use std::path::Path;

use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use super::apps::create_owner_only_dir;
use crate::issuer::{KeyError, write_owner_only};

/// The admin credential's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "keys/admin.token";

/// The session key's length.
const KEY_BYTES: usize = 32;

/// The prefix of the admin credential.
pub const ADMIN_PREFIX: &str = "hbadmin_";

/// The admin credential, checked in constant time.
pub struct AdminToken(String);

impl AdminToken {
    /// Whether `credential` is it.
    pub fn matches(&self, credential: &str) -> bool {
        self.0.as_bytes().ct_eq(credential.as_bytes()).into()
    }
}

/// Reads `DATA/keys/admin.token` and `DATA/keys/session.key`, creating each (owner-only) on first
/// start.
pub fn load_or_create(data_dir: &Path) -> Result<(AdminToken, [u8; KEY_BYTES]), KeyError> {
    create_owner_only_dir(&data_dir.join("keys"))?;
    let admin = read_or_create(&data_dir.join(ADMIN_TOKEN_FILE), || {
        format!("{ADMIN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()))
            .into_bytes()
    })?;
    let admin = String::from_utf8(admin).ok().filter(|token| token.starts_with(ADMIN_PREFIX)).ok_or_else(|| {
        KeyError::Invalid {
            path: data_dir.join(ADMIN_TOKEN_FILE),
            message: format!("not an `{ADMIN_PREFIX}…` credential"),
        }
    })?;
    let session_path = data_dir.join(super::session::SESSION_KEY_FILE);
    let session = read_or_create(&session_path, || random::<KEY_BYTES>().to_vec())?;
    let session: [u8; KEY_BYTES] = session
        .try_into()
        .map_err(|_| KeyError::Invalid { path: session_path, message: format!("not {KEY_BYTES} bytes") })?;
    Ok((AdminToken(admin.trim().to_owned()), session))
}

fn read_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            write_owner_only(path, &bytes)?;
            Ok(bytes)
        }
        Err(source) => Err(KeyError::Io { path: path.to_path_buf(), source }),
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    getrandom::fill(&mut bytes).expect("the operating system has no random source");
    bytes
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    // Proves the first start creates owner-only credentials and later starts read the same ones.
    #[test]
    fn credentials_are_created_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, session) = load_or_create(dir.path()).unwrap();
        let (again, session_again) = load_or_create(dir.path()).unwrap();
        assert_eq!(admin.0, again.0);
        assert_eq!(session, session_again);
        assert!(admin.matches(&admin.0) && !admin.matches("hbadmin_x") && !admin.matches(""));
        for file in [ADMIN_TOKEN_FILE, super::super::session::SESSION_KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
}
