//! Campaign configuration: one YAML file per activity, parsed, validated and served.
//!
//! A campaign is a tree: activity → award types → awards → scenes. Operators edit it as YAML
//! (`scenes/*.yaml`, one file per activity); the server only ever sees it through the
//! validated model types of this module ([`Activity`], [`Scene`], ...), which nothing but the
//! validator creates. Parsing happens in two steps:
//!
//! 1. serde reads the text into private `Raw*` types that mirror the YAML and remember source
//!    lines. A YAML syntax error, a wrong type or an unknown key stops here with one error.
//! 2. the validator checks every semantic rule and reports *every* problem it finds, each with
//!    the file, the 1-based line, the key path and a message quoting the offending value, so
//!    that an operator can fix a file in one round trip.
//!
//! [`SceneRegistry`] serves the activities of a directory and hot-reloads it without ever
//! letting a broken edit take down what is already being served.

mod raw;
mod registry;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::plugin::{LoadError, PluginRuntime};
use crate::stock::StockLimits;

pub use registry::{FileState, SceneRegistry, Snapshot};

/// The largest amount, in cents, that a single red packet may carry (¥200,000).
///
/// This is a platform-wide safety cap independent of any budget: a typo such as an extra zero
/// in `max_cents` must not be able to pay out a fortune in one grant, and every amount rule is
/// checked against it when the file is loaded.
pub const MAX_GRANT_CENTS: i64 = 20_000_000;

/// The largest accepted scene file, in bytes (1 MiB).
///
/// A real campaign with thousands of scenes stays far below this; the cap keeps a runaway or
/// malicious file from making the loader allocate without bound.
pub const SCENE_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The most scenes one activity may declare.
///
/// Every scene is held in memory and looked up per grant request; the cap bounds both and
/// catches generated files that went wrong.
pub const SCENES_PER_ACTIVITY_MAX: usize = 10_000;

/// The most scene files loaded from one directory; files beyond it (in name order) are
/// reported and not loaded, so that a mis-pointed directory cannot exhaust the server.
pub const SCENE_FILES_PER_DIR_MAX: usize = 1000;

/// The longest display name, in characters, of an activity, award type, award or scene; names
/// end up in bills and operator tools, where longer text is truncated anyway.
pub const NAME_CHARS_MAX: usize = 128;

/// The longest id, in characters. Ids are embedded in order numbers, whose total length the
/// ledger bounds.
pub const ID_CHARS_MAX: usize = 64;

/// The largest activity budget, in cents (10^15 cents = ¥10 trillion): far above any real
/// campaign, yet small enough that sums of budgets cannot overflow an `i64`.
pub const BUDGET_CENTS_MAX: i64 = 1_000_000_000_000_000;

/// The longest bill copy template, in characters; the rendered text is shown in a wallet's
/// bill list, which has little room.
pub const TEMPLATE_CHARS_MAX: usize = 256;

/// The longest rate-limit window, in seconds (one day); per-user counters are kept for one
/// window, so a longer window would mean unbounded memory for idle users.
pub const USER_WINDOW_SECONDS_MAX: i64 = 86_400;

/// The longest compensation back-off, in milliseconds (one hour); a failed crediting step
/// must be retried at least this often or the user waits too long for the money.
pub const RETRY_MAX_MS_MAX: i64 = 3_600_000;

/// Placeholders a bill copy template may use, each replaced by [`BillCopy::render`].
pub const BILL_PLACEHOLDERS: [&str; 6] =
    ["amount_yuan", "amount_cents", "rain_id", "stage", "scene_name", "activity_name"];

/// One campaign activity: the validated content of one scene file.
///
/// It is immutable once built and shared behind an `Arc`, so a reload replaces whole
/// activities and never mutates one that a request is still using.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// Unique activity id; the first component of every order number.
    pub id: String,
    /// Display name, used in bill copy (`{activity_name}`).
    pub name: String,
    /// Total spend the activity may ever make, in cents.
    pub budget_cents: i64,
    /// The award types, in file order.
    pub award_types: Vec<AwardType>,
    /// Every scene of the activity, by scene id, for the lookup done on each grant request.
    pub scenes: BTreeMap<String, Arc<Scene>>,
    /// First 16 hex characters of the SHA-256 of the file bytes; tells which edit is live.
    pub version: String,
    /// The file the activity was loaded from, for error messages and operator tools.
    pub file: PathBuf,
}

/// A kind of award within an activity (e.g. cash, cards, fireworks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwardType {
    /// Unique award type id within the activity; part of every order number.
    pub id: String,
    /// Display name for operator tools.
    pub name: String,
    /// The awards of this type, in file order.
    pub awards: Vec<Award>,
}

/// One award (e.g. "the cash of the red-packet rains"), grouping the scenes that grant it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Award {
    /// Unique award id within the activity.
    pub id: String,
    /// Display name for operator tools.
    pub name: String,
    /// Ids of the award's scenes, in file order; the scenes themselves are in
    /// [`Activity::scenes`].
    pub scene_ids: Vec<String>,
}

/// A scene: the unit a grant request names, with everything needed to serve it.
///
/// The scene repeats its activity and award ids and names so that a request handler holding
/// only an `Arc<Scene>` can build order numbers and bill copy without a second lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Id of the activity the scene belongs to.
    pub activity_id: String,
    /// Display name of that activity.
    pub activity_name: String,
    /// Id of the award type the scene belongs to.
    pub award_type: String,
    /// Id of the award the scene belongs to.
    pub award_id: String,
    /// Scene id, unique within the activity.
    pub id: String,
    /// Display name, used in bill copy (`{scene_name}`).
    pub name: String,
    /// The apps allowed to request grants for this scene, in file order.
    pub app_ids: Vec<i64>,
    /// How much one grant pays.
    pub amount: AmountRule,
    /// Bill text shown to the user; `None` when the capability is off.
    pub bill_copy: Option<BillCopy>,
    /// Request throttling; `None` when the capability is off.
    pub rate_limit: Option<RateLimit>,
    /// Scene stock; `None` when off (the activity budget still bounds spend).
    pub inventory: Option<Inventory>,
    /// Retry schedule for failed crediting steps; `None` when off.
    pub compensation: Option<Compensation>,
    /// Ledger reconciliation settings; `None` when off.
    pub reconciliation: Option<Reconciliation>,
    /// WebAssembly plugins that take over capabilities, with their failure policies.
    pub plugins: ScenePlugins,
    /// Version of the activity file this scene was loaded from (see [`Activity::version`]).
    pub version: String,
}

/// A scene's plugins: what the YAML declares, and once the registry has loaded them, the
/// loaded plugins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScenePlugins {
    /// The declarations, in capability order.
    pub specs: Vec<crate::plugin::PluginSpec>,
    /// `plugins.bill_copy`, loaded.
    pub bill_copy: Option<Arc<crate::plugin::Plugin>>,
    /// `plugins.rate_limit`, loaded.
    pub rate_limit: Option<Arc<crate::plugin::Plugin>>,
    /// `plugins.inventory`, loaded.
    pub inventory: Option<Arc<crate::plugin::Plugin>>,
    /// `plugins.compensation`, loaded.
    pub compensation: Option<Arc<crate::plugin::Plugin>>,
    /// `plugins.reconciliation`, loaded.
    pub reconciliation: Option<Arc<crate::plugin::Plugin>>,
}

impl ScenePlugins {
    /// The loaded plugin for `capability`.
    pub fn get(&self, capability: crate::plugin::Capability) -> Option<&Arc<crate::plugin::Plugin>> {
        use crate::plugin::Capability;
        match capability {
            Capability::BillCopy => self.bill_copy.as_ref(),
            Capability::RateLimit => self.rate_limit.as_ref(),
            Capability::Inventory => self.inventory.as_ref(),
            Capability::Compensation => self.compensation.as_ref(),
            Capability::Reconciliation => self.reconciliation.as_ref(),
        }
    }

    fn slot(&mut self, capability: crate::plugin::Capability) -> &mut Option<Arc<crate::plugin::Plugin>> {
        use crate::plugin::Capability;
        match capability {
            Capability::BillCopy => &mut self.bill_copy,
            Capability::RateLimit => &mut self.rate_limit,
            Capability::Inventory => &mut self.inventory,
            Capability::Compensation => &mut self.compensation,
            Capability::Reconciliation => &mut self.reconciliation,
        }
    }
}

impl Scene {
    /// Tells whether `app_id` may request grants for this scene; requests from any other app
    /// are refused before any money moves.
    #[must_use]
    pub fn allows_app(&self, app_id: i64) -> bool {
        self.app_ids.contains(&app_id)
    }

    /// The bounds the store enforces for a grant in this scene of an activity with
    /// `activity_budget_cents`: the activity's budget, and the scene's inventory when it has one.
    #[must_use]
    pub fn stock_limits(&self, activity_budget_cents: i64) -> StockLimits {
        StockLimits {
            activity_budget_cents,
            scene_count_max: self.inventory.as_ref().and_then(|inventory| inventory.count_max),
            scene_budget_cents: self.inventory.as_ref().and_then(|inventory| inventory.budget_cents),
        }
    }
}

/// How the amount of one grant is decided. Every amount is in cents, positive and at most
/// [`MAX_GRANT_CENTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountRule {
    /// Every grant pays exactly `cents`.
    Fixed {
        /// The amount of each grant.
        cents: i64,
    },
    /// The server draws the amount uniformly from `min_cents..=max_cents`.
    Random {
        /// Smallest amount drawn.
        min_cents: i64,
        /// Largest amount drawn.
        max_cents: i64,
    },
    /// The calling service chooses `amount_cents`, which must lie in `min_cents..=max_cents`.
    Caller {
        /// Smallest amount the caller may ask for.
        min_cents: i64,
        /// Largest amount the caller may ask for.
        max_cents: i64,
    },
}

/// The bill text a user sees for a grant, per locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillCopy {
    /// The locale used when the requested one has no template; always a key of `templates`.
    pub default_locale: String,
    /// Locale → template. Templates use the placeholders listed in [`BILL_PLACEHOLDERS`].
    pub templates: BTreeMap<String, String>,
}

impl BillCopy {
    /// Renders the template for `locale` (falls back to `default_locale`).
    ///
    /// The locale is matched exactly first, then case-insensitively, then by its primary
    /// language (`en-US` uses an `en` template), and finally `default_locale` is used, so a user
    /// always gets a bill line. Placeholders are replaced from `vars`; `{amount_yuan}` is the
    /// amount with two decimals (888 cents → `8.88`). Validated templates contain only known,
    /// balanced placeholders; anything else is copied literally rather than failing a grant.
    #[must_use]
    pub fn render(&self, locale: Option<&str>, vars: &BillVars<'_>) -> String {
        let template = locale
            .and_then(|wanted| self.find_template(wanted))
            .or_else(|| self.templates.get(&self.default_locale))
            .map_or("", String::as_str);
        let mut out = String::with_capacity(template.len() + 16);
        for piece in template_pieces(template) {
            match piece {
                Piece::Text(text) | Piece::Unknown(text) | Piece::Unbalanced(text) => {
                    out.push_str(text);
                }
                Piece::Var(placeholder) => {
                    let name = placeholder.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(placeholder);
                    // Writing to a String cannot fail.
                    let _ = match name {
                        "amount_yuan" => write!(out, "{}", yuan(vars.amount_cents)),
                        "amount_cents" => write!(out, "{}", vars.amount_cents),
                        "rain_id" => write!(out, "{}", vars.rain_id),
                        "stage" => write!(out, "{}", vars.stage),
                        "scene_name" => write!(out, "{}", vars.scene_name),
                        _ => write!(out, "{}", vars.activity_name),
                    };
                }
            }
        }
        out
    }

    /// Looks up the template for a requested locale without the default fallback.
    fn find_template(&self, wanted: &str) -> Option<&String> {
        if let Some(found) = self.templates.get(wanted) {
            return Some(found);
        }
        let ci = |want: &str| {
            self.templates.iter().find(|(locale, _)| locale.eq_ignore_ascii_case(want)).map(|(_, template)| template)
        };
        ci(wanted).or_else(|| {
            let primary = wanted.split(['-', '_']).next()?;
            if primary.len() < wanted.len() { ci(primary) } else { None }
        })
    }
}

/// The values substituted into a bill copy template for one grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillVars<'a> {
    /// The granted amount in cents (`{amount_cents}`, and `{amount_yuan}` in yuan).
    pub amount_cents: i64,
    /// The red-packet rain the grant belongs to (`{rain_id}`).
    pub rain_id: i32,
    /// The stage within the rain (`{stage}`).
    pub stage: u32,
    /// The scene's display name (`{scene_name}`).
    pub scene_name: &'a str,
    /// The activity's display name (`{activity_name}`).
    pub activity_name: &'a str,
}

/// Token-bucket throttling of one scene plus a per-user grant limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added to the scene bucket per second (> 0).
    pub scene_per_second: u32,
    /// Capacity of the scene bucket, i.e. the largest burst (>= 1).
    pub scene_burst: u32,
    /// Grants one user may receive per window (>= 1).
    pub user_max: u32,
    /// Length of the per-user window in seconds (1..=86400).
    pub user_window_seconds: u32,
}

/// The stock of a scene; at least one of the two bounds is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inventory {
    /// The most grants the scene may ever make.
    pub count_max: Option<u64>,
    /// The most cents the scene may ever pay out (at most the activity budget).
    pub budget_cents: Option<i64>,
}

/// Exponential back-off for retrying a failed crediting step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compensation {
    /// Delay before the first retry, in milliseconds (>= 1).
    pub retry_initial_ms: u64,
    /// Cap on the delay between retries, in milliseconds (at most one hour).
    pub retry_max_ms: u64,
}

/// Settings for reconciling the scene's grants against the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// Largest difference, in cents, accepted without raising an alert (>= 0).
    pub tolerance_cents: i64,
}

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
    fn file_level(file: &Path, message: String) -> Self {
        ConfigError { file: file.to_path_buf(), line: 1, path: raw::FILE_PATH.to_owned(), message }
    }
}

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
            attach_plugins(&mut parsed, plugins)?;
            // Stricter than the server, which serves a plugin that does not load with its
            // failure policy: an author validating wants to hear about it.
            let errors: Vec<ConfigError> = parsed
                .activity
                .scenes
                .values()
                .flat_map(|scene| {
                    scene.plugins.specs.iter().filter_map(|spec| {
                        let error = scene.plugins.get(spec.capability)?.load_error()?;
                        Some(ConfigError {
                            file: file.clone(),
                            line: spec.line,
                            path: format!("{}.path", spec.key_path),
                            message: error.to_string(),
                        })
                    })
                })
                .collect();
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

/// Loads the plugins `parsed` declares into its scenes.
///
/// # Errors
///
/// A plugin whose file is missing or whose sha256 is not the pinned one refuses the file (and
/// so its scenes), reported at the plugin block's line.
fn attach_plugins(parsed: &mut Parsed, runtime: &Arc<PluginRuntime>) -> Result<(), Vec<ConfigError>> {
    let activity = &mut parsed.activity;
    let mut errors = Vec::new();
    for scene in activity.scenes.values_mut() {
        if scene.plugins.specs.is_empty() {
            continue;
        }
        // Not shared yet, so this does not clone.
        let scene = Arc::make_mut(scene);
        let limits = scene.stock_limits(activity.budget_cents);
        for spec in scene.plugins.specs.clone() {
            match runtime.load(&spec, &activity.id, &scene.id, limits) {
                Ok(plugin) => *scene.plugins.slot(spec.capability) = Some(plugin),
                Err(error) => errors.push(ConfigError {
                    file: activity.file.clone(),
                    line: if matches!(error, LoadError::Sha256Mismatch { .. }) { spec.sha256_line } else { spec.line },
                    path: format!(
                        "{}.{}",
                        spec.key_path,
                        if matches!(error, LoadError::Sha256Mismatch { .. }) { "sha256" } else { "path" }
                    ),
                    message: error.to_string(),
                }),
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// A validated activity plus what cross-file checks need to report on it.
struct Parsed {
    activity: Activity,
    /// Line of `activity.id`, where a duplicate activity id is reported.
    id_line: u64,
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
fn parse_bytes(file: &Path, bytes: &[u8]) -> Result<Parsed, Vec<ConfigError>> {
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
fn read_scene_file(file: &Path) -> Result<Vec<u8>, Vec<ConfigError>> {
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
fn list_scene_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
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
fn too_many_files(file: &Path, total: usize) -> ConfigError {
    ConfigError::file_level(
        file,
        format!(
            "directory holds `{total}` scene files, more than the limit of \
             {SCENE_FILES_PER_DIR_MAX}; this file is not loaded"
        ),
    )
}

/// The error for a file whose activity id another file already declared.
fn duplicate_activity(parsed: &Parsed, first: &Path) -> ConfigError {
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

/// Formats cents as yuan with two decimals (888 → `8.88`, 5 → `0.05`, -150 → `-1.50`).
fn yuan(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Shortens a value quoted in an error message, so that a huge value cannot flood the log.
fn show(value: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 64;
    let mut shown: String = value.chars().take(SHOWN_CHARS_MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if value.chars().nth(SHOWN_CHARS_MAX).is_some() {
        shown.push('…');
    }
    shown
}

/// A piece of a bill copy template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A known placeholder, with its braces.
    Var(&'a str),
    /// An unknown placeholder, with its braces.
    Unknown(&'a str),
    /// A brace without its partner.
    Unbalanced(&'a str),
}

/// Splits a template into literal text and placeholders. `{name}` is a placeholder; a `{`
/// without a later `}` (or with another `{` first) and a `}` without a `{` are unbalanced.
fn template_pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(at) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest));
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        rest = &rest[at..];
        if rest.starts_with('}') {
            pieces.push(Piece::Unbalanced(&rest[..1]));
            rest = &rest[1..];
            continue;
        }
        // `rest` starts with `{`.
        match rest[1..].find(['{', '}']) {
            Some(end) if rest.as_bytes().get(end + 1) == Some(&b'}') => {
                let name = &rest[1..end + 1];
                let placeholder = &rest[..end + 2];
                if BILL_PLACEHOLDERS.contains(&name) {
                    pieces.push(Piece::Var(placeholder));
                } else {
                    pieces.push(Piece::Unknown(placeholder));
                }
                rest = &rest[end + 2..];
            }
            _ => {
                pieces.push(Piece::Unbalanced(&rest[..1]));
                rest = &rest[1..];
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Proves that rendering formats yuan with two decimals, fills every placeholder and
    /// falls back from an unknown or missing locale to the default one.
    #[test]
    fn bill_copy_render() {
        let bill = BillCopy {
            default_locale: "zh-CN".to_owned(),
            templates: BTreeMap::from([
                ("zh-CN".to_owned(), "第{rain_id}场 获得{amount_yuan}元".to_owned()),
                (
                    "en".to_owned(),
                    "{activity_name}/{scene_name} #{rain_id}.{stage}: ¥{amount_yuan} ({amount_cents})".to_owned(),
                ),
            ]),
        };
        let vars =
            |amount_cents| BillVars { amount_cents, rain_id: 3, stage: 2, scene_name: "eve", activity_name: "spring" };
        assert_eq!(bill.render(Some("zh-CN"), &vars(888)), "第3场 获得8.88元");
        assert_eq!(bill.render(Some("zh-CN"), &vars(5)), "第3场 获得0.05元");
        assert_eq!(bill.render(Some("zh-CN"), &vars(100)), "第3场 获得1.00元");
        assert_eq!(bill.render(Some("en"), &vars(888)), "spring/eve #3.2: ¥8.88 (888)");
        assert_eq!(bill.render(Some("en-US"), &vars(5)), "spring/eve #3.2: ¥0.05 (5)");
        assert_eq!(bill.render(Some("fr"), &vars(888)), "第3场 获得8.88元");
        assert_eq!(bill.render(None, &vars(20_000_000)), "第3场 获得200000.00元");
        assert_eq!(yuan(-150), "-1.50");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");

        // A hand-built copy with broken templates renders literally instead of failing.
        let broken = BillCopy {
            default_locale: "en".to_owned(),
            templates: BTreeMap::from([("en".to_owned(), "}{x} {amount_cents".to_owned())]),
        };
        assert_eq!(broken.render(None, &vars(1)), "}{x} {amount_cents");
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
