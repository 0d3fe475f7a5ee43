//! `hongbao plugin new`: a plugin project that builds as is with one command, in Rust,
//! JavaScript or Python, made of the SDK's template for the language and its example for the
//! capability (the same decisions in every language), with a sample input for `plugin run`.
//!
//! - Rust: a crate depending on the SDK by path; `cargo build --release`.
//! - JavaScript: componentize-js and jco pinned by the reference plugins' lock file
//!   (`plugins/js/package-lock.json`), the SDK's helpers (`sdk/js/common.js`) and the world's
//!   TypeScript declarations (`sdk/js/types/WORLD`); `npm install && npm run build`.
//! - Python: componentize-py pinned as the reference plugins pin it, the SDK's helpers
//!   (`sdk/python/hb_common.py`); `./build.sh` (a venv in `.venv`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::Capability;

/// The languages a plugin can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the SDK crate (`hongbao-sdk`).
    Rust,
    /// JavaScript, built with componentize-js.
    #[value(alias = "javascript")]
    Js,
    /// Python, built with componentize-py.
    #[value(alias = "py")]
    Python,
}

const CARGO_TEMPLATE: &str = include_str!("../../../sdk/template/Cargo.toml.tmpl");
const CARGO_CONFIG: &str = include_str!("../../../sdk/template/config.toml");
const JS_PACKAGE: &str = include_str!("../../../sdk/template/js/package.json.tmpl");
/// The reference plugins' lock: a scaffold installs exactly the toolchain they are built with.
const JS_LOCK: &str = include_str!("../../../plugins/js/package-lock.json");
const JS_LOCK_NAME: &str = "hongbao-js-plugins";
const JS_CONFIG: &str = include_str!("../../../sdk/template/js/jsconfig.json");
const JS_README: &str = include_str!("../../../sdk/template/js/README.md.tmpl");
const JS_IGNORE: &str = include_str!("../../../sdk/template/js/gitignore");
const JS_COMMON: &str = include_str!("../../../sdk/js/common.js");
const PY_BUILD: &str = include_str!("../../../sdk/template/python/build.sh.tmpl");
const PY_REQUIREMENTS: &str = include_str!("../../../plugins/python/requirements.txt");
const PY_README: &str = include_str!("../../../sdk/template/python/README.md.tmpl");
const PY_IGNORE: &str = include_str!("../../../sdk/template/python/gitignore");
const PY_COMMON: &str = include_str!("../../../sdk/python/hb_common.py");

/// The SDK example for `capability` in `language`: its file name in the new project's `src/`
/// and its text.
fn example(capability: Capability, language: Language) -> (&'static str, &'static str) {
    macro_rules! examples {
        ($rust:literal, $js:literal, $py:literal) => {
            match language {
                Language::Rust => ("lib.rs", include_str!(concat!("../../../sdk/examples/", $rust))),
                Language::Js => ($js, include_str!(concat!("../../../sdk/examples/js/", $js))),
                Language::Python => ($py, include_str!(concat!("../../../sdk/examples/python/", $py))),
            }
        };
    }
    match capability {
        Capability::BillCopy => examples!("bill_copy.rs", "bill-copy.js", "bill_copy_app.py"),
        Capability::RateLimit => examples!("rate_limit.rs", "rate-limit.js", "rate_limit_app.py"),
        Capability::Inventory => examples!("inventory.rs", "inventory.js", "inventory_app.py"),
        Capability::Compensation => examples!("compensation.rs", "compensation.js", "compensation_app.py"),
        Capability::Reconciliation => examples!("reconciliation.rs", "reconciliation.js", "reconciliation_app.py"),
    }
}

/// A sample input for `hongbao plugin run`.
fn sample_input(capability: Capability) -> Value {
    let context = |extra: Value| {
        let mut ctx = json!({
            "activity_id": "spring-festival-2027", "scene_id": "eve-rain", "award_type": "cash",
            "app_id": 1128, "act_id": 10001, "rain_id": 3, "stage": 1,
            "now_ms": 1_800_000_000_000u64, "random_seed": 42, "locale": "zh-CN", "settings": {}
        });
        if let (Some(ctx), Some(extra)) = (ctx.as_object_mut(), extra.as_object()) {
            ctx.extend(extra.clone());
        }
        ctx
    };
    match capability {
        Capability::BillCopy => json!({ "capability": "bill-copy", "context": context(json!({})),
            "input": { "amount_cents": 188, "scene_name": "除夕红包雨", "activity_name": "2027 春节红包" } }),
        Capability::RateLimit => {
            json!({ "capability": "rate-limit", "context": context(json!({})), "counters": { "user/10001": 0 } })
        }
        Capability::Inventory => json!({ "capability": "inventory", "context": context(json!({})),
            "input": { "min_cents": 1, "max_cents": 888 },
            "stock": { "count_remaining": 10, "budget_remaining_cents": 1000 } }),
        Capability::Compensation => json!({ "capability": "compensation", "context": context(json!({})),
            "input": { "step": "ledger-credit", "attempt": 2, "error_code": "unavailable",
                       "error_message": "ledger did not answer", "first_failed_ms": 1_799_999_999_000u64 } }),
        Capability::Reconciliation => json!({ "capability": "reconciliation",
            "context": context(json!({ "act_id": 0, "rain_id": 0, "stage": 0 })),
            "input": { "issued_count": 10, "issued_cents": 1000, "credited_count": 8, "credited_cents": 800,
                       "in_flight_count": 2, "in_flight_cents": 200, "oldest_in_flight_ms": 1_799_999_000_000u64,
                       "parked_count": 0, "stock_used_count": 10, "stock_used_cents": 1000 } }),
    }
}

/// The SDK next to this binary's sources, when it is there.
pub fn default_sdk_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    dir.join("Cargo.toml").is_file().then(|| dir.canonicalize().ok()).flatten()
}

/// What `hongbao plugin new` made: the files, and the commands that build and run it.
#[derive(Debug)]
pub struct Scaffold {
    pub files: Vec<PathBuf>,
    pub next: String,
}

/// One file of a new project: its path inside it, its text, and whether it is a script.
struct File {
    path: PathBuf,
    text: String,
    executable: bool,
}

impl File {
    fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        File { path: path.into(), text: text.into(), executable: false }
    }
}

/// Writes a new `language` plugin project for `capability` named `name` into `dir`.
///
/// # Errors
///
/// A bad name, a non-empty `dir`, an SDK directory that is not one (or whose path the build
/// files cannot quote), or a write failure.
pub fn scaffold(
    capability: Capability,
    language: Language,
    name: &str,
    dir: &Path,
    sdk_dir: &Path,
) -> anyhow::Result<Scaffold> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!("plugin name `{name}` must be 1 to 64 lowercase letters, digits or `-`, starting with a letter");
    }
    if dir.exists() && std::fs::read_dir(dir).with_context(|| format!("reading `{}`", dir.display()))?.next().is_some()
    {
        bail!("`{}` already exists and is not empty", dir.display());
    }
    let sdk_dir = sdk_dir.canonicalize().with_context(|| format!("the SDK directory `{}`", sdk_dir.display()))?;
    if !sdk_dir.join("wit/hongbao-plugin.wit").is_file() {
        bail!("`{}` is not the hongbao SDK (no wit/hongbao-plugin.wit)", sdk_dir.display());
    }
    let sdk_text = sdk_dir.to_str().context("the SDK directory's path must be UTF-8")?;
    let unquotable = |c: char| matches!(c, '"' | '\'' | '\\' | '$' | '`') || c.is_control();
    if let (false, Some(c)) = (language == Language::Rust, sdk_text.chars().find(|&c| unquotable(c))) {
        bail!(
            "the SDK directory `{sdk_text}` has a `{}` in its path, which the build files cannot quote",
            c.escape_default()
        );
    }
    let input = serde_json::to_string_pretty(&sample_input(capability))? + "\n";
    let (files, next) = match language {
        Language::Rust => rust_files(capability, name, sdk_text, input),
        Language::Js => js_files(capability, name, &sdk_dir, sdk_text, input)?,
        Language::Python => python_files(capability, name, sdk_text, input),
    };
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating `{}`", parent.display()))?;
        }
        std::fs::write(&path, &file.text).with_context(|| format!("writing `{}`", path.display()))?;
        #[cfg(unix)]
        if file.executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making `{}` executable", path.display()))?;
        }
        written.push(path);
    }
    let next = format!("cd {} && {next} --input input.json", dir.display());
    Ok(Scaffold { files: written, next })
}

/// Fills a template's `{{name}}`, `{{world}}`, `{{entry}}` and `{{wit_path}}`.
fn fill(template: &str, name: &str, capability: Capability, entry: &str, wit_path: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{world}}", &format!("{}-plugin", capability.kind()))
        .replace("{{entry}}", entry)
        .replace("{{wit_path}}", wit_path)
}

fn rust_files(capability: Capability, name: &str, sdk: &str, input: String) -> (Vec<File>, String) {
    let (_, lib) = example(capability, Language::Rust);
    let toml_text = sdk.replace('\\', "\\\\").replace('"', "\\\"");
    let files = vec![
        File::new("Cargo.toml", CARGO_TEMPLATE.replace("{{name}}", name).replace("{{sdk_path}}", &toml_text)),
        File::new(".cargo/config.toml", CARGO_CONFIG),
        File::new("src/lib.rs", lib),
        File::new("input.json", input),
        File::new(".gitignore", "target/\n"),
    ];
    let wasm = name.replace('-', "_");
    (files, format!("cargo build --release && hongbao plugin run target/wasm32-wasip2/release/{wasm}.wasm"))
}

fn js_files(
    capability: Capability,
    name: &str,
    sdk_dir: &Path,
    sdk: &str,
    input: String,
) -> anyhow::Result<(Vec<File>, String)> {
    let (entry, source) = example(capability, Language::Js);
    let wit = format!("{sdk}/wit");
    let fill = |template: &str| fill(template, name, capability, entry, &wit);
    let mut files = vec![
        File::new("package.json", fill(JS_PACKAGE)),
        File::new("package-lock.json", JS_LOCK.replace(JS_LOCK_NAME, name)),
        File::new("jsconfig.json", JS_CONFIG),
        File::new("src/common.js", JS_COMMON),
        File::new(format!("src/{entry}"), source),
        File::new("input.json", input),
        File::new("README.md", fill(JS_README)),
        File::new(".gitignore", JS_IGNORE),
    ];
    // The world's declarations as `jco types` writes them, for editors and `tsc --checkJs`.
    let types = sdk_dir.join("js/types").join(format!("{}-plugin", capability.kind()));
    for path in files_under(&types)? {
        let relative = path.strip_prefix(&types).context("a typings file outside its folder")?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading `{}`", path.display()))?;
        files.push(File::new(Path::new("types").join(relative), text));
    }
    Ok((files, format!("npm install && npm run build && hongbao plugin run {name}.wasm")))
}

fn python_files(capability: Capability, name: &str, sdk: &str, input: String) -> (Vec<File>, String) {
    let (file, source) = example(capability, Language::Python);
    let entry = file.trim_end_matches(".py");
    let wit = format!("{sdk}/wit");
    let version = componentize_py_version();
    let fill = |template: &str| fill(template, name, capability, entry, &wit).replace("{{componentize_py}}", version);
    let files = vec![
        File { path: "build.sh".into(), text: fill(PY_BUILD), executable: true },
        File::new("requirements.txt", PY_REQUIREMENTS),
        File::new("src/hb_common.py", PY_COMMON),
        File::new(format!("src/{file}"), source),
        File::new("input.json", input),
        File::new("README.md", fill(PY_README)),
        File::new(".gitignore", PY_IGNORE),
    ];
    (files, format!("./build.sh && hongbao plugin run {name}.wasm"))
}

/// The componentize-py version the reference plugins pin (`componentize-py==X` in their
/// requirements), which `build.sh` checks its venv for.
fn componentize_py_version() -> &'static str {
    PY_REQUIREMENTS.lines().find_map(|line| line.trim().strip_prefix("componentize-py==")).map_or("", str::trim)
}

/// Every file under `dir`, in name order.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("reading `{}`", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `{{word}}` in `text` (a template placeholder; Python's `{{{x:y}}}` is not one).
    fn placeholder(text: &str) -> Option<&str> {
        text.match_indices("{{").find_map(|(at, _)| {
            let rest = &text[at + 2..];
            let word = rest.split("}}").next()?;
            (!word.is_empty() && rest.len() > word.len() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .then_some(word)
        })
    }

    // Proves the Python scaffold's build checks its venv for the version it installs: the one the
    // reference plugins pin.
    #[test]
    fn the_python_build_checks_for_the_pinned_toolchain() {
        let version = componentize_py_version();
        assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{PY_REQUIREMENTS}");
        let build = fill(PY_BUILD, "p", Capability::BillCopy, "e", "/w").replace("{{componentize_py}}", version);
        assert!(build.contains(&format!("grep -qx 'componentize-py {version}'")), "{build}");
        assert_eq!(placeholder("f\"\\\\u{{{code:x}}}\" {{name}}"), Some("name"));
        assert_eq!(placeholder("f\"\\\\u{{{code:x}}}\""), None);
    }

    // Proves a JavaScript scaffold installs the toolchain the reference plugins are built with:
    // its package.json asks for the versions the lock it ships pins.
    #[test]
    fn the_js_template_asks_for_the_locked_toolchain() {
        let package: Value = serde_json::from_str(&fill(JS_PACKAGE, "p", Capability::BillCopy, "e", "/w")).unwrap();
        let lock: Value = serde_json::from_str(JS_LOCK).unwrap();
        assert_eq!(package["devDependencies"], lock["packages"][""]["devDependencies"]);
        assert!(!package["devDependencies"].as_object().unwrap().is_empty());
    }

    // Proves the scaffolds refuse what they cannot build: a bad name, a folder in use, and an
    // SDK path the build files would misquote.
    #[test]
    fn scaffolds_refuse_what_they_cannot_build() {
        let sdk = default_sdk_dir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = scaffold(Capability::BillCopy, Language::Js, "Bad_Name", &dir.path().join("a"), &sdk);
        assert!(bad.unwrap_err().to_string().contains("lowercase"));
        std::fs::write(dir.path().join("taken"), "").unwrap();
        let used = scaffold(Capability::BillCopy, Language::Python, "p", dir.path(), &sdk);
        assert!(used.unwrap_err().to_string().contains("not empty"));
        let quoted = dir.path().join("it's");
        std::fs::create_dir_all(quoted.join("wit")).unwrap();
        std::fs::copy(sdk.join("wit/hongbao-plugin.wit"), quoted.join("wit/hongbao-plugin.wit")).unwrap();
        let misquoted = scaffold(Capability::BillCopy, Language::Python, "p", &dir.path().join("b"), &quoted);
        assert!(misquoted.unwrap_err().to_string().contains("cannot quote"));
        assert!(!dir.path().join("b").exists());
    }

    // Proves each language's project has its build file, the capability's example and the
    // sample input, with every placeholder filled.
    #[test]
    fn every_language_gets_a_whole_project() {
        let sdk = default_sdk_dir().unwrap();
        for language in [Language::Rust, Language::Js, Language::Python] {
            for capability in Capability::ALL {
                let dir = tempfile::tempdir().unwrap();
                let made = scaffold(capability, language, "my-plugin", dir.path(), &sdk).unwrap();
                for file in &made.files {
                    let text = std::fs::read_to_string(file).unwrap();
                    assert_eq!(placeholder(&text), None, "{}", file.display());
                }
                let build = match language {
                    Language::Rust => "Cargo.toml",
                    Language::Js => "package.json",
                    Language::Python => "build.sh",
                };
                assert!(dir.path().join(build).is_file(), "{language:?}");
                let input: Value =
                    serde_json::from_str(&std::fs::read_to_string(dir.path().join("input.json")).unwrap()).unwrap();
                assert_eq!(input["capability"], capability.kind());
                if language == Language::Js {
                    let world = format!("types/{}-plugin.d.ts", capability.kind());
                    assert!(dir.path().join(world).is_file(), "{:?}", made.files);
                }
            }
        }
    }
}
