//! The error a scene file's problem is reported as, and how offending values are quoted in it.

use std::path::{Path, PathBuf};

/// Key path shown for problems that concern the file as a whole rather than one key.
pub(super) const FILE_PATH: &str = "(file)";

/// One problem found in a scene file, precise enough to fix it without guessing.
///
/// Displayed as `{file}:{line}: {path}: {message}`, one problem per line, e.g.
///
/// ```text
/// scenes/a.yaml:14: activity.award_types[0].awards[0].scenes[0].amount.max_cents: value `30000000` must be at most 20000000 (the single red-packet cap)
/// ```
///
/// Problems about the file as a whole (size, encoding, reading, and YAML errors that no key
/// can be blamed for) use the path `(file)`; file-level problems use line 1 unless a better
/// line is known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{}:{}: {}: {}", .file.display(), .line, .path, .message)]
pub struct ConfigError {
    /// The scene file, as it was given to the loader.
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: u64,
    /// Key path such as `activity.award_types[0].awards[1].scenes[2].amount.max_cents`.
    pub path: String,
    /// Lowercase description quoting the offending value in backticks.
    pub message: String,
}

impl ConfigError {
    /// Builds an error about the file as a whole.
    pub(super) fn file_level(file: &Path, message: String) -> Self {
        ConfigError { file: file.to_path_buf(), line: 1, path: FILE_PATH.to_owned(), message }
    }
}

/// Shortens a value quoted in an error message, so that a huge value cannot flood the log.
pub(super) fn show(value: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 64;
    let mut shown: String = value.chars().take(SHOWN_CHARS_MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if value.chars().nth(SHOWN_CHARS_MAX).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the exact Display format of a config error: `{file}:{line}: {path}: {message}`.
    #[test]
    fn config_error_display_format() {
        let error = ConfigError {
            file: PathBuf::from("scenes/a.yaml"),
            line: 7,
            path: "activity.id".to_owned(),
            message: "id `a_b` is bad".to_owned(),
        };
        assert_eq!(error.to_string(), "scenes/a.yaml:7: activity.id: id `a_b` is bad");
    }
}
