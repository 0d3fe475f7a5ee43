//! Loading scene files: listing a directory, reading each file within its bounds, parsing and
//! validating it, and checking activity ids across files.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::attach::{attach_plugins, plugin_load_errors};
use super::error::ConfigError;
use super::limits::{SCENE_FILE_BYTES_MAX, SCENE_FILES_PER_DIR_MAX};
use super::model::Activity;
use super::validate::Parsed;
use super::{raw, validate};
use crate::plugin::PluginRuntime;

/// Parses and validates the text of one scene file.
///
/// `file` is only used in error messages and recorded in [`Activity::file`]. Every semantic
/// problem is reported, sorted by line; a YAML syntax error, a wrong type or an unknown key is
/// reported alone, since nothing reliable can be said about the rest of the file.
///
/// # Errors
///
/// Returns every problem found when the text is not a valid activity.
pub fn parse_activity(file: &Path, text: &str) -> Result<Activity, Vec<ConfigError>> {
    parse_detailed(file, text).map(|parsed| parsed.activity)
}

/// Validates every `*.yaml` / `*.yml` file of `dir`, in file name order.
///
/// Each file yields its own result, so one broken file never hides another's activity. Activity
/// ids must be unique across files: a file declaring an id already declared by an earlier file
/// (by name) gets an error instead of an activity. Files whose names start with `.` (editor
/// temporaries) and subdirectories are ignored; files beyond [`SCENE_FILES_PER_DIR_MAX`] get an
/// error.
///
/// # Errors
///
/// Only an unreadable directory is an `Err`; problems with single files are in the results.
pub fn validate_dir(
    dir: &Path,
    plugins: &Arc<PluginRuntime>,
) -> Result<Vec<Result<Activity, Vec<ConfigError>>>, std::io::Error> {
    let files = list_scene_files(dir)?;
    let total = files.len();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut results = Vec::with_capacity(total);
    for (index, file) in files.into_iter().enumerate() {
        if index >= SCENE_FILES_PER_DIR_MAX {
            results.push(Err(vec![too_many_files(&file, total)]));
            continue;
        }
        let parsed = read_scene_file(&file).and_then(|bytes| parse_bytes(&file, &bytes)).and_then(|mut parsed| {
            attach_plugins(&mut parsed.activity, plugins)?;
            // Stricter than the server, which serves a plugin that does not load with its
            // failure policy: an author validating wants to hear about it.
            let errors = plugin_load_errors(&parsed.activity);
            if errors.is_empty() { Ok(parsed) } else { Err(errors) }
        });
        results.push(match parsed {
            Err(errors) => Err(errors),
            Ok(parsed) => match seen.get(&parsed.activity.id) {
                Some(first) => Err(vec![duplicate_activity(&parsed, first)]),
                None => {
                    seen.insert(parsed.activity.id.clone(), file.clone());
                    Ok(parsed.activity)
                }
            },
        });
    }
    Ok(results)
}

/// [`parse_activity`], also returning the line of the activity id.
fn parse_detailed(file: &Path, text: &str) -> Result<Parsed, Vec<ConfigError>> {
    if text.len() as u64 > SCENE_FILE_BYTES_MAX {
        return Err(vec![too_large(file, text.len() as u64)]);
    }
    let raw = raw::parse_raw(file, text).map_err(|err| vec![err])?;
    validate::validate(file, version_of(text.as_bytes()), &raw)
}

/// Parses file bytes, which must be UTF-8.
pub(super) fn parse_bytes(file: &Path, bytes: &[u8]) -> Result<Parsed, Vec<ConfigError>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_detailed(file, text),
        Err(err) => {
            let before = bytes.get(..err.valid_up_to()).unwrap_or_default();
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count() as u64;
            Err(vec![ConfigError {
                line,
                ..ConfigError::file_level(
                    file,
                    format!("file is not valid utf-8 at byte offset `{}`", err.valid_up_to()),
                )
            }])
        }
    }
}

/// Reads a scene file, refusing files over [`SCENE_FILE_BYTES_MAX`] without reading them whole.
pub(super) fn read_scene_file(file: &Path) -> Result<Vec<u8>, Vec<ConfigError>> {
    let read_error = |err: std::io::Error| vec![ConfigError::file_level(file, format!("cannot read file (`{err}`)"))];
    let handle = std::fs::File::open(file).map_err(read_error)?;
    let mut bytes = Vec::new();
    handle.take(SCENE_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > SCENE_FILE_BYTES_MAX {
        let size = std::fs::metadata(file).map_or(bytes.len() as u64, |m| m.len());
        return Err(vec![too_large(file, size)]);
    }
    Ok(bytes)
}

/// Lists the scene files of `dir`, sorted by file name.
pub(super) fn list_scene_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if is_yaml && !name.starts_with('.') && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// First 16 hex characters of the SHA-256 of `bytes`.
fn version_of(bytes: &[u8]) -> String {
    hex16(&Sha256::digest(bytes))
}

/// Hex-encodes the first 8 bytes of a digest.
fn hex16(digest: &[u8]) -> String {
    let mut out = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The error for a file over [`SCENE_FILE_BYTES_MAX`].
fn too_large(file: &Path, size: u64) -> ConfigError {
    ConfigError::file_level(file, format!("file size `{size}` bytes exceeds the limit of {SCENE_FILE_BYTES_MAX} bytes"))
}

/// The error for a file beyond [`SCENE_FILES_PER_DIR_MAX`].
pub(super) fn too_many_files(file: &Path, total: usize) -> ConfigError {
    ConfigError::file_level(
        file,
        format!(
            "directory holds `{total}` scene files, more than the limit of \
             {SCENE_FILES_PER_DIR_MAX}; this file is not loaded"
        ),
    )
}

/// The error for a file whose activity id another file already declared.
pub(super) fn duplicate_activity(parsed: &Parsed, first: &Path) -> ConfigError {
    let first_name = first.file_name().unwrap_or(first.as_os_str());
    ConfigError {
        file: parsed.activity.file.clone(),
        line: parsed.id_line,
        path: "activity.id".to_owned(),
        message: format!(
            "activity id `{}` is already declared in `{}`",
            parsed.activity.id,
            Path::new(first_name).display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AmountRule, Compensation, Inventory, RateLimit, Reconciliation};

    /// Folder of the scene validation cases (`<case>/scene.yaml` + `<case>/expected.txt`).
    const CASES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/scene-cases");
    /// Folder of the example campaign served by the example server.
    const EXAMPLE_SCENES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenes");

    const VALID: &str = r#"activity:
  id: spring-festival-2027
  name: 2027 春节红包
  budget_cents: 5000000000
  award_types:
    - id: cash
      name: 现金红包
      awards:
        - id: rain-cash
          name: 红包雨现金
          scenes:
            - id: eve-rain
              name: 除夕红包雨
              app_ids: [1128, 2329]
              amount:
                kind: random
                min_cents: 1
                max_cents: 888
              bill_copy:
                default_locale: zh-CN
                templates:
                  zh-CN: "除夕红包雨第{rain_id}场 获得{amount_yuan}元"
                  en: "New Year's Eve rain #{rain_id}: ¥{amount_yuan}"
              rate_limit:
                scene_per_second: 200000
                scene_burst: 400000
                user_max: 1
                user_window_seconds: 10
              inventory:
                count_max: 10000000
                budget_cents: 1000000000
              compensation:
                retry_initial_ms: 100
                retry_max_ms: 10000
              reconciliation:
                tolerance_cents: 0
        - id: partner-cash
          name: 合作方奖励金
          scenes:
            - id: partner-bonus
              name: 合作伙伴红包
              app_ids: [8663]
              amount:
                kind: caller
                min_cents: 1
                max_cents: 5000
    - id: fireworks
      name: 烟花秀
      awards:
        - id: fireworks-show
          name: 烟花秀红包
          scenes:
            - id: fireworks-show
              name: 零点烟花秀
              app_ids: [1128]
              amount:
                kind: fixed
                cents: 66
"#;

    /// The (line, path) pairs of a list of errors, for exact comparisons.
    fn lines_and_paths(errors: &[ConfigError]) -> Vec<(u64, &str)> {
        errors.iter().map(|e| (e.line, e.path.as_str())).collect()
    }

    /// Proves that a valid file becomes the expected tree, with every value carried over,
    /// capabilities absent when their block is absent, and the version taken from the bytes.
    #[test]
    fn valid_file_parses_into_tree() {
        let activity = parse_activity(Path::new("scenes/spring.yaml"), VALID).expect("valid");
        assert_eq!(activity.id, "spring-festival-2027");
        assert_eq!(activity.name, "2027 春节红包");
        assert_eq!(activity.budget_cents, 5_000_000_000);
        assert_eq!(activity.file, Path::new("scenes/spring.yaml"));
        let digest = Sha256::digest(VALID.as_bytes());
        let expected_version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(activity.version, expected_version);

        let type_ids: Vec<&str> = activity.award_types.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(type_ids, ["cash", "fireworks"]);
        let cash = &activity.award_types[0];
        assert_eq!(cash.name, "现金红包");
        assert_eq!(cash.awards.len(), 2);
        assert_eq!(cash.awards[0].id, "rain-cash");
        assert_eq!(cash.awards[0].scene_ids, ["eve-rain"]);
        assert_eq!(cash.awards[1].scene_ids, ["partner-bonus"]);
        let scene_ids: Vec<&String> = activity.scenes.keys().collect();
        assert_eq!(scene_ids, ["eve-rain", "fireworks-show", "partner-bonus"]);

        let eve = &activity.scenes["eve-rain"];
        assert_eq!(eve.activity_id, "spring-festival-2027");
        assert_eq!(eve.activity_name, "2027 春节红包");
        assert_eq!(eve.award_type, "cash");
        assert_eq!(eve.award_id, "rain-cash");
        assert_eq!(eve.name, "除夕红包雨");
        assert_eq!(eve.app_ids, [1128, 2329]);
        assert!(eve.allows_app(2329));
        assert!(!eve.allows_app(8663));
        assert_eq!(eve.amount, AmountRule::Random { min_cents: 1, max_cents: 888 });
        let bill = eve.bill_copy.as_ref().expect("bill copy");
        assert_eq!(bill.default_locale, "zh-CN");
        assert_eq!(bill.templates.len(), 2);
        assert_eq!(bill.templates["en"], "New Year's Eve rain #{rain_id}: ¥{amount_yuan}");
        assert_eq!(
            eve.rate_limit,
            Some(RateLimit { scene_per_second: 200_000, scene_burst: 400_000, user_max: 1, user_window_seconds: 10 })
        );
        assert_eq!(eve.inventory, Some(Inventory { count_max: Some(10_000_000), budget_cents: Some(1_000_000_000) }));
        assert_eq!(eve.compensation, Some(Compensation { retry_initial_ms: 100, retry_max_ms: 10_000 }));
        assert_eq!(eve.reconciliation, Some(Reconciliation { tolerance_cents: 0 }));
        assert_eq!(eve.version, activity.version);

        let partner = &activity.scenes["partner-bonus"];
        assert_eq!(partner.amount, AmountRule::Caller { min_cents: 1, max_cents: 5000 });
        assert_eq!(partner.bill_copy, None);
        assert_eq!(partner.rate_limit, None);
        assert_eq!(partner.inventory, None);
        assert_eq!(partner.compensation, None);
        assert_eq!(partner.reconciliation, None);

        let show = &activity.scenes["fireworks-show"];
        assert_eq!(show.award_type, "fireworks");
        assert_eq!(show.amount, AmountRule::Fixed { cents: 66 });
    }

    /// Proves that validation does not stop at the first problem: every distinct semantic
    /// problem is reported, sorted by line, each with its exact line and key path.
    #[test]
    fn several_problems_are_all_reported_with_lines_and_paths() {
        let text = r#"activity:
  id: spring_2027
  name: 春节
  budget_cents: 0
  award_types:
    - id: cash
      name: 现金红包
      awards:
        - id: rain-cash
          name: 红包雨现金
          scenes:
            - id: eve-rain
              name: 除夕红包雨
              app_ids: [1128, -5]
              amount:
                kind: random
                min_cents: 500
                max_cents: 20000001
              bill_copy:
                default_locale: fr
                templates:
                  zh-CN: "获得{amount_yuan}元 {bonus}"
              rate_limit:
                scene_per_second: 100
                scene_burst: 0
                user_max: 1
            - id: eve-rain
              name: 重复
              app_ids: [1128]
              amount:
                kind: fixed
                cents: 66
                min_cents: 1
"#;
        let errors = parse_activity(Path::new("scene.yaml"), text).expect_err("invalid");
        let at = "activity.award_types[0].awards[0].scenes";
        let expected = vec![
            (2, "activity.id".to_owned()),
            (4, "activity.budget_cents".to_owned()),
            (14, format!("{at}[0].app_ids[1]")),
            (18, format!("{at}[0].amount.max_cents")),
            (20, format!("{at}[0].bill_copy.default_locale")),
            (22, format!("{at}[0].bill_copy.templates.zh-CN")),
            (24, format!("{at}[0].rate_limit.user_window_seconds")),
            (25, format!("{at}[0].rate_limit.scene_burst")),
            (27, format!("{at}[1].id")),
            (33, format!("{at}[1].amount.min_cents")),
        ];
        let actual: Vec<(u64, String)> = errors.iter().map(|e| (e.line, e.path.clone())).collect();
        assert_eq!(actual, expected, "{errors:#?}");
        assert!(errors.iter().all(|e| e.file == Path::new("scene.yaml")));
        assert!(errors[0].message.contains("`spring_2027`"), "{}", errors[0].message);
        assert!(errors[3].message.contains("`20000001`"), "{}", errors[3].message);
        assert!(errors[5].message.contains("`{bonus}`"), "{}", errors[5].message);
        assert!(errors[8].message.contains("duplicate scene id `eve-rain`"));
        for error in &errors {
            let first = error.message.chars().next().unwrap_or('?');
            assert!(!first.is_uppercase(), "message not lowercase: {}", error.message);
            assert!(error.message.contains('`'), "value not quoted: {}", error.message);
        }
    }

    /// Proves that an unknown key stops the parse with exactly one error that carries the
    /// key's line and path.
    #[test]
    fn unknown_key_is_one_error_with_its_line() {
        let text = VALID
            .replace("              app_ids: [8663]\n", "              app_ids: [8663]\n              colour: red\n");
        let errors = parse_activity(Path::new("scene.yaml"), &text).expect_err("invalid");
        assert_eq!(lines_and_paths(&errors), [(43, "activity.award_types[0].awards[1].scenes[0].colour")]);
        assert!(errors[0].message.starts_with("unknown field `colour`"), "{}", errors[0]);
    }

    /// Proves that a value of the wrong type stops the parse with exactly one error that
    /// carries the value's line, path and text.
    #[test]
    fn wrong_type_is_one_error_with_its_line() {
        let text = VALID.replace("                cents: 66\n", "                cents: lots\n");
        let errors = parse_activity(Path::new("scene.yaml"), &text).expect_err("invalid");
        assert_eq!(lines_and_paths(&errors), [(58, "activity.award_types[1].awards[0].scenes[0].amount.cents")]);
        assert!(errors[0].message.contains("`lots`"), "{}", errors[0]);
    }
    /// Proves that every case folder's errors, as displayed, match its `expected.txt` line
    /// by line (or that it parses when the file says `ok`).
    #[test]
    fn scene_cases_match_expected_output() {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(CASES_DIR)
            .expect("scene cases folder")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_dir())
            .collect();
        cases.sort();
        assert!(cases.len() >= 6, "only {} cases in {CASES_DIR}", cases.len());

        let mut failures = Vec::new();
        for case in &cases {
            let text = std::fs::read_to_string(case.join("scene.yaml")).expect("scene.yaml");
            let expected = std::fs::read_to_string(case.join("expected.txt")).expect("expected");
            let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
            let actual: Vec<String> = match parse_activity(Path::new("scene.yaml"), &text) {
                Ok(_) => vec!["ok".to_owned()],
                Err(errors) => errors.iter().map(ToString::to_string).collect(),
            };
            if actual != expected {
                failures.push(format!(
                    "case {}:\n  expected:\n    {}\n  actual:\n    {}",
                    case.display(),
                    expected.join("\n    "),
                    actual.join("\n    ")
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Proves that the example campaign shipped for the example server is valid.
    #[test]
    fn example_scenes_are_valid() {
        let results = validate_dir(Path::new(EXAMPLE_SCENES_DIR), &PluginRuntime::new(None).expect("runtime"))
            .expect("scenes folder");
        let ids: Vec<String> = results
            .into_iter()
            .map(|result| match result {
                Ok(activity) => activity.id,
                Err(errors) => panic!("example scene file is invalid: {errors:#?}"),
            })
            .collect();
        for expected in ["lantern-festival-2027", "spring-festival-2027"] {
            assert!(ids.iter().any(|id| id == expected), "{expected} missing from {ids:?}");
        }
    }

    /// Proves that validate_dir reads only YAML files in name order, keeps files isolated,
    /// and gives a duplicate activity id's error to the later file, at its id line.
    #[test]
    fn validate_dir_checks_activity_ids_across_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = VALID.replace("id: spring-festival-2027", "id: other-2027");
        std::fs::write(dir.path().join("b.yaml"), VALID).expect("write");
        std::fs::write(dir.path().join("a.yml"), VALID).expect("write");
        std::fs::write(dir.path().join("c.yaml"), "activity: [").expect("write");
        std::fs::write(dir.path().join("d.yaml"), other).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a scene").expect("write");
        std::fs::write(dir.path().join(".e.yaml"), "editor temp").expect("write");
        std::fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");

        let results = validate_dir(dir.path(), &PluginRuntime::new(None).expect("runtime")).expect("readable");
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().map(|a| a.id.as_str()), Ok("spring-festival-2027"));
        let duplicate = results[1].as_ref().expect_err("duplicate");
        assert_eq!(duplicate.len(), 1);
        assert_eq!(duplicate[0].file, dir.path().join("b.yaml"));
        assert_eq!(duplicate[0].line, 2);
        assert_eq!(duplicate[0].path, "activity.id");
        assert_eq!(duplicate[0].message, "activity id `spring-festival-2027` is already declared in `a.yml`");
        assert_eq!(results[2].as_ref().map(|a| a.id.as_str()).map_err(Vec::len), Err(1));
        assert_eq!(results[3].as_ref().map(|a| a.id.as_str()), Ok("other-2027"));
        assert!(validate_dir(&dir.path().join("missing"), &PluginRuntime::new(None).expect("runtime")).is_err());
    }

    /// Proves that oversized and non-UTF-8 files are rejected with a file-level error
    /// instead of being parsed.
    #[test]
    fn oversized_and_non_utf8_files_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut big = VALID.to_owned();
        while (big.len() as u64) <= SCENE_FILE_BYTES_MAX {
            big.push_str("# padding padding padding padding padding padding padding\n");
        }
        std::fs::write(dir.path().join("big.yaml"), &big).expect("write");
        std::fs::write(dir.path().join("bin.yaml"), b"activity:\n  id: \xff\n").expect("write");
        let results = validate_dir(dir.path(), &PluginRuntime::new(None).expect("runtime")).expect("readable");
        let messages: Vec<String> = results
            .iter()
            .flat_map(|r| r.as_ref().err().cloned().unwrap_or_default())
            .map(|e| format!("{}:{}:{}", e.line, e.path, e.message))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("1:(file):file size `"), "{}", messages[0]);
        assert_eq!(messages[1], "2:(file):file is not valid utf-8 at byte offset `16`");
        let errors = parse_activity(Path::new("big.yaml"), &big).expect_err("too big");
        assert_eq!(errors.len(), 1);
    }

    /// Proves that no input panics the parser: every prefix and many single-byte corruptions
    /// of a valid file produce a result (an error or an activity), never a panic.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut inputs: Vec<String> = Vec::new();
        for (index, _) in VALID.char_indices().step_by(3) {
            inputs.push(VALID[..index].to_owned());
        }
        for (index, _) in VALID.char_indices().step_by(19) {
            for replacement in ["{", "}", "[", "]", ":", "\"", "'", "-", "\n", "&a", "*a", "!!x"] {
                let mut text = VALID.to_owned();
                let end = VALID[index..].chars().next().map_or(index, |c| index + c.len_utf8());
                text.replace_range(index..end, replacement);
                inputs.push(text);
            }
        }
        for text in &inputs {
            if let Err(errors) = parse_activity(Path::new("fuzz.yaml"), text) {
                assert!(!errors.is_empty());
                assert!(errors.iter().all(|e| e.line >= 1 && !e.path.is_empty()));
            }
        }
    }
}
