//! App credentials: `DATA/keys/apps.json`, owner-only like the signing keys beside it, and shared
//! by a fleet the same way. Each app has one or two secrets (two while a rotation overlaps) and
//! the activities it may act in. Hosts reload the file when it changes, so `hongbao apps …`
//! takes effect without a restart; secrets are shown once, when created, and never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;

use crate::issuer::{KeyError, write_owner_only};

/// The credentials file inside the data directory.
pub const APPS_FILE: &str = "keys/apps.json";

/// The most secrets an app holds at once: the current one and, during a rotation, the one it
/// replaces. A rotation past this drops the oldest.
pub const KEYS_PER_APP_MAX: usize = 2;

/// The most apps one deployment knows; the file is read whole on every change.
pub const APPS_MAX: usize = 10_000;

/// The largest credentials file read.
pub const APPS_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Activities an app may act in: every one, or those listed.
pub const ALL_ACTIVITIES: &str = "*";

/// One app's entry in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    /// The app.
    pub app_id: i64,
    /// For operators.
    #[serde(default)]
    pub name: String,
    /// The activities it may act in; `*` for all.
    pub activities: Vec<String>,
    /// Its secrets, oldest first.
    pub keys: Vec<AppKey>,
}

/// One secret.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppKey {
    /// Names the secret in signed requests.
    pub key_id: String,
    /// The HMAC secret.
    pub secret: String,
    /// When it was created.
    pub created_ms: u64,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in a debug log.
        f.debug_struct("AppKey").field("key_id", &self.key_id).field("created_ms", &self.created_ms).finish()
    }
}

impl AppEntry {
    /// Whether the app may act in `activity_id`.
    pub fn may_act_in(&self, activity_id: &str) -> bool {
        self.activities.iter().any(|allowed| allowed == ALL_ACTIVITIES || allowed == activity_id)
    }

    /// The secret named `key_id`.
    pub fn secret(&self, key_id: &str) -> Option<&[u8]> {
        self.keys.iter().find(|key| key.key_id == key_id).map(|key| key.secret.as_bytes())
    }
}

/// Every app's credentials, by app id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    /// By app id.
    pub apps: BTreeMap<i64, AppEntry>,
}

/// Why the credentials could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppsError {
    /// The file system failed.
    #[error(transparent)]
    Io(#[from] KeyError),
    /// The file is not what `hongbao apps` writes.
    #[error("credentials file `{path}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The change asked for does not fit the credentials.
    #[error("{0}")]
    Refused(String),
}

/// What a file's state was when last read: a change to either means read it again.
pub type FileStamp = Option<(SystemTime, u64)>;

/// The stamp of `path` now.
pub fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

impl Apps {
    /// Reads `DATA/keys/apps.json`; no file means no apps.
    pub fn load(data_dir: &Path) -> Result<Apps, AppsError> {
        let path = data_dir.join(APPS_FILE);
        let invalid = |message: String| AppsError::Invalid { path: path.clone(), message };
        let bytes = match std::fs::metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Apps::default()),
            Err(source) => return Err(KeyError::Io { path, source }.into()),
            Ok(metadata) if metadata.len() > APPS_FILE_BYTES_MAX => {
                return Err(invalid(format!("over {APPS_FILE_BYTES_MAX} bytes")));
            }
            Ok(_) => std::fs::read(&path).map_err(|source| KeyError::Io { path: path.clone(), source })?,
        };
        let listed: Vec<AppEntry> =
            serde_json::from_slice::<AppsFile>(&bytes).map_err(|error| invalid(error.to_string()))?.apps;
        if listed.len() > APPS_MAX {
            return Err(invalid(format!("more than {APPS_MAX} apps")));
        }
        let mut apps = BTreeMap::new();
        for entry in listed {
            if let Some(previous) = apps.insert(entry.app_id, entry) {
                return Err(invalid(format!("app `{}` is listed twice", previous.app_id)));
            }
        }
        Ok(Apps { apps })
    }

    /// Writes the file, owner-only, atomically.
    pub fn save(&self, data_dir: &Path) -> Result<(), AppsError> {
        let path = data_dir.join(APPS_FILE);
        if let Some(parent) = path.parent() {
            create_owner_only_dir(parent)?;
        }
        let file = AppsFile { apps: self.apps.values().cloned().collect() };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("credentials serialize");
        bytes.push(b'\n');
        write_owner_only(&path, &bytes)?;
        Ok(())
    }

    /// Adds an app with one new secret; answers the secret (the only time it is shown).
    pub fn add(&mut self, app_id: i64, name: &str, activities: Vec<String>, now_ms: u64) -> Result<AppKey, AppsError> {
        if app_id <= 0 {
            return Err(AppsError::Refused(format!("app id `{app_id}` must be positive")));
        }
        if self.apps.contains_key(&app_id) {
            return Err(AppsError::Refused(format!("app `{app_id}` exists; rotate its key instead")));
        }
        if self.apps.len() >= APPS_MAX {
            return Err(AppsError::Refused(format!("{APPS_MAX} apps is the most one deployment holds")));
        }
        check_activities(&activities)?;
        let key = new_key(now_ms);
        self.apps.insert(app_id, AppEntry { app_id, name: name.to_owned(), activities, keys: vec![key.clone()] });
        Ok(key)
    }

    /// Gives an app a new secret; the previous one keeps working until revoked (or until the
    /// next rotation, which drops the oldest).
    pub fn rotate(&mut self, app_id: i64, now_ms: u64) -> Result<AppKey, AppsError> {
        let entry = self.apps.get_mut(&app_id).ok_or_else(|| unknown_app(app_id))?;
        let key = new_key(now_ms);
        entry.keys.push(key.clone());
        while entry.keys.len() > KEYS_PER_APP_MAX {
            entry.keys.remove(0);
        }
        Ok(key)
    }

    /// Removes one secret of an app, or the whole app when `key_id` is `None`.
    pub fn revoke(&mut self, app_id: i64, key_id: Option<&str>) -> Result<(), AppsError> {
        let entry = self.apps.get_mut(&app_id).ok_or_else(|| unknown_app(app_id))?;
        match key_id {
            None => {
                self.apps.remove(&app_id);
            }
            Some(key_id) => {
                let before = entry.keys.len();
                entry.keys.retain(|key| key.key_id != key_id);
                if entry.keys.len() == before {
                    return Err(AppsError::Refused(format!("app `{app_id}` has no key `{key_id}`")));
                }
            }
        }
        Ok(())
    }
}

/// The file's shape: a list, so that it reads in app order.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: Vec<AppEntry>,
}

fn unknown_app(app_id: i64) -> AppsError {
    AppsError::Refused(format!("no app `{app_id}`; add it first"))
}

fn check_activities(activities: &[String]) -> Result<(), AppsError> {
    if activities.is_empty() {
        return Err(AppsError::Refused("an app needs at least one activity (`*` for all)".into()));
    }
    for activity in activities {
        if activity != ALL_ACTIVITIES && !crate::config::is_valid_id(activity) {
            return Err(AppsError::Refused(format!("`{activity}` is not an activity id (or `*`)")));
        }
    }
    Ok(())
}

/// A new secret: 32 random bytes, base64url, with a prefix that makes leaked ones easy to grep.
fn new_key(now_ms: u64) -> AppKey {
    let mut bytes = [0_u8; 40];
    getrandom::fill(&mut bytes).expect("the operating system has no random source");
    let id: String = bytes[32..].iter().map(|byte| format!("{byte:02x}")).collect();
    AppKey {
        key_id: format!("k{id}"),
        secret: format!("hbsk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..32])),
        created_ms: now_ms,
    }
}

/// Creates `dir` (and parents) owner-only if missing.
pub(crate) fn create_owner_only_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyError::Io { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    // Proves credentials survive a save and load, the file is owner-only, a rotation overlaps two
    // keys and drops the oldest past two, and revoking removes a key or the app.
    #[test]
    fn credentials_add_rotate_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let mut apps = Apps::load(dir.path()).unwrap();
        assert!(apps.apps.is_empty(), "no file, no apps");
        let first = apps.add(1128, "partner", vec!["*".into()], 1).unwrap();
        assert!(apps.add(1128, "again", vec!["*".into()], 1).is_err(), "added twice");
        assert!(apps.add(7, "none", vec![], 1).is_err(), "no activities");
        assert!(apps.add(7, "bad", vec!["a_b".into()], 1).is_err(), "not an activity id");
        let second = apps.rotate(1128, 2).unwrap();
        apps.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(APPS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut apps = Apps::load(dir.path()).unwrap();
        let entry = &apps.apps[&1128];
        assert_eq!(entry.secret(&first.key_id), Some(first.secret.as_bytes()));
        assert_eq!(entry.secret(&second.key_id), Some(second.secret.as_bytes()));
        let third = apps.rotate(1128, 3).unwrap();
        let entry = &apps.apps[&1128];
        assert!(entry.secret(&first.key_id).is_none(), "the oldest goes past two keys");
        assert!(entry.secret(&third.key_id).is_some());
        apps.revoke(1128, Some(&second.key_id)).unwrap();
        assert!(apps.revoke(1128, Some(&second.key_id)).is_err());
        assert_eq!(apps.apps[&1128].keys.len(), 1);
        apps.revoke(1128, None).unwrap();
        assert!(apps.apps.is_empty());
        assert!(!format!("{third:?}").contains(&third.secret), "debug output hides the secret");
    }

    // Proves a credentials file that is not what `hongbao apps` writes is refused with its path.
    #[test]
    fn a_broken_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join(APPS_FILE), "{\"apps\": [{\"app_id\": 1}]}").unwrap();
        let error = Apps::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("apps.json"), "{error}");
    }
}
