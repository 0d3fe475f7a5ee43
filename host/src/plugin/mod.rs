//! The WebAssembly plugin runtime: scene plugins for bill copy, compensation, rate limiting,
//! inventory and reconciliation, run sandboxed on the grant path.
//!
//! - One [`PluginRuntime`] per process: one wasmtime `Engine` (epoch interruption and fuel on),
//!   one `Linker` with the host functions and a sealed WASI, an epoch ticker (1 tick = 1 ms), a
//!   compile cache by content hash (in memory, and on disk under the data directory).
//! - One [`Plugin`] per scene and capability, loaded when its scene file is: the `.wasm` is
//!   read, its sha256 checked against the pin in the YAML, compiled (or taken from the cache)
//!   and pre-linked against the capability's world. It keeps a pool of warm instances that are
//!   recycled after [`limits::CALLS_PER_INSTANCE_MAX`] calls and dropped after any trap.
//! - Every call gets a fresh epoch deadline, the fuel meter reset, the guest clocks and
//!   randomness set from the call context, and its captured output and log lines flushed to
//!   the host's log, bounded. Failures come back as [`PluginFailure`] values and are counted in
//!   [`PluginStats`]; the caller applies the scene's [`FailurePolicy`].
//!
//! A hot reload builds new `Plugin`s; requests that hold the old scene snapshot finish their
//! calls on the old ones.

pub mod authoring;
pub mod bindings;
mod cache;
mod host_api;
pub mod limits;
mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

use self::bindings::types::{CallContext, LogLevel, PluginError, Stock};
pub use self::host_api::{HostServices, Scope, remaining};
use self::limits::{CALLS_PER_INSTANCE_MAX, FUEL_PER_CALL, INSTANCES_PER_POOL_MAX, WASM_BYTES_MAX};
use self::sandbox::PluginState;
pub use self::sandbox::{Captured, MemoryCapExceeded};
use crate::stock::{StockLimits, StockSource};

/// The five capabilities a plugin can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Bill copy: the text on the user's bill.
    BillCopy,
    /// Rate limiting: allow or reject a grant request.
    RateLimit,
    /// Inventory: the amount of a grant, or out of stock.
    Inventory,
    /// Compensation: what to do after a step failed.
    Compensation,
    /// Reconciliation: findings and repairs for a scene's books.
    Reconciliation,
}

impl Capability {
    /// All five, in YAML order.
    pub const ALL: [Capability; 5] = [
        Capability::BillCopy,
        Capability::RateLimit,
        Capability::Inventory,
        Capability::Compensation,
        Capability::Reconciliation,
    ];

    /// The YAML key (`bill_copy`, …).
    pub fn yaml_key(self) -> &'static str {
        match self {
            Capability::BillCopy => "bill_copy",
            Capability::RateLimit => "rate_limit",
            Capability::Inventory => "inventory",
            Capability::Compensation => "compensation",
            Capability::Reconciliation => "reconciliation",
        }
    }

    /// The name used by the CLI and the WIT interface (`bill-copy`, …).
    pub fn kind(self) -> &'static str {
        match self {
            Capability::BillCopy => "bill-copy",
            Capability::RateLimit => "rate-limit",
            Capability::Inventory => "inventory",
            Capability::Compensation => "compensation",
            Capability::Reconciliation => "reconciliation",
        }
    }

    /// Parses [`Capability::kind`] or [`Capability::yaml_key`].
    pub fn parse(text: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.kind() == text || c.yaml_key() == text)
    }
}

/// What happens when a scene's plugin fails (traps, runs past its deadline, exceeds its memory,
/// returns a `plugin-error` or an invalid answer, or could not be loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse the request with the stable code `plugin_failed`.
    FailClosed,
    /// Skip the step: no bill text, no rate limit, the scene's amount rule, no retry decision
    /// (the token waits for funding), no plugin findings.
    FailOpen,
    /// Let the host's native built-in decide, as if the scene had no plugin.
    Builtin,
}

impl FailurePolicy {
    /// Parses the YAML value.
    pub fn parse(text: &str) -> Option<FailurePolicy> {
        match text {
            "fail_closed" => Some(FailurePolicy::FailClosed),
            "fail_open" => Some(FailurePolicy::FailOpen),
            "builtin" => Some(FailurePolicy::Builtin),
            _ => None,
        }
    }
}

/// A plugin as a scene's YAML declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Which capability it serves.
    pub capability: Capability,
    /// The `.wasm` file, resolved against the scene file's directory.
    pub path: PathBuf,
    /// The pinned sha256 of the file.
    pub sha256: [u8; 32],
    /// What a failure does.
    pub on_failure: FailurePolicy,
    /// Per-call deadline.
    pub deadline_ms: u64,
    /// Linear memory cap per instance.
    pub memory_mb: u64,
    /// Handed to the plugin in `call-context.settings`.
    pub settings: Vec<(String, String)>,
    /// Where in the YAML the block is (line), for errors.
    pub line: u64,
    /// The line of its `sha256`, where a mismatch is reported.
    pub sha256_line: u64,
    /// The key path of the block, e.g. `activity.award_types[0]….plugins.bill_copy`.
    pub key_path: String,
}

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read `{path}`: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file's sha256 is not the pinned one; the scene is refused.
    #[error("sha256 mismatch for `{path}`: the scene pins {pinned}, the file has {actual}")]
    Sha256Mismatch {
        /// The file.
        path: String,
        /// What the YAML says.
        pinned: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("`{path}` is not a valid WebAssembly component: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component does not export the capability's interface (or imports something the
    /// host does not provide).
    #[error("`{path}` does not fit the `{world}` world: {message}")]
    WrongInterface {
        /// The file.
        path: String,
        /// The expected world.
        world: String,
        /// wasmtime's reason.
        message: String,
    },
}

impl LoadError {
    /// Whether the scene must be refused (a pin mismatch or a missing file), rather than
    /// served with its failure policy applied to every call.
    pub fn refuses_scene(&self) -> bool {
        matches!(self, LoadError::Sha256Mismatch { .. } | LoadError::Unreadable { .. })
    }
}

/// Why one call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginFailure {
    /// The plugin could not be loaded; every call fails with this.
    #[error("plugin not loaded: {0}")]
    NotLoaded(String),
    /// A fresh instance could not be created.
    #[error("plugin instantiation failed: {0}")]
    Instantiate(String),
    /// The call ran past its deadline.
    #[error("plugin ran past its {0} ms deadline")]
    Deadline(u64),
    /// The instance grew past its memory cap.
    #[error("plugin exceeded its {0} MiB memory cap")]
    MemoryCap(u64),
    /// The guest trapped (panic, unreachable, out-of-bounds access, …).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin returned a `plugin-error`.
    #[error("plugin refused: {0}")]
    PluginError(String),
    /// The plugin answered something the host cannot accept.
    #[error("plugin answer invalid: {0}")]
    InvalidOutput(String),
}

impl PluginFailure {
    /// A stable code for logs, stats and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            PluginFailure::NotLoaded(_) => "plugin_not_loaded",
            PluginFailure::Instantiate(_) => "plugin_instantiate",
            PluginFailure::Deadline(_) => "plugin_deadline",
            PluginFailure::MemoryCap(_) => "plugin_memory",
            PluginFailure::Trap(_) => "plugin_trap",
            PluginFailure::PluginError(_) => "plugin_error",
            PluginFailure::InvalidOutput(_) => "plugin_invalid_output",
        }
    }
}

/// Counts of one scene plugin's calls, kept across reloads.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that answered.
    pub ok: AtomicU64,
    /// Calls that failed, by [`PluginFailure::code`] (in the order of `FAILURE_CODES`).
    failures: [AtomicU64; FAILURE_CODES.len()],
    /// Fresh instances created.
    pub instantiations: AtomicU64,
    /// Total nanoseconds inside calls.
    pub call_ns: AtomicU64,
}

const FAILURE_CODES: [&str; 7] = [
    "plugin_not_loaded",
    "plugin_instantiate",
    "plugin_deadline",
    "plugin_memory",
    "plugin_trap",
    "plugin_error",
    "plugin_invalid_output",
];

impl PluginStats {
    fn count_failure(&self, failure: &PluginFailure) {
        if let Some(index) = FAILURE_CODES.iter().position(|code| *code == failure.code()) {
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A JSON view for `GET /v1/plugins`.
    pub fn to_json(&self) -> serde_json::Value {
        let failures: serde_json::Map<String, serde_json::Value> = FAILURE_CODES
            .iter()
            .zip(&self.failures)
            .map(|(code, count)| ((*code).to_owned(), count.load(Ordering::Relaxed).into()))
            .collect();
        serde_json::json!({
            "calls": self.calls.load(Ordering::Relaxed),
            "ok": self.ok.load(Ordering::Relaxed),
            "failures": failures,
            "instantiations": self.instantiations.load(Ordering::Relaxed),
            "call_ns_total": self.call_ns.load(Ordering::Relaxed),
        })
    }
}

/// The engine, linker, caches and host services shared by every plugin of a process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    services: Arc<HostServices>,
    cache: cache::ComponentCache,
    stats: Mutex<std::collections::HashMap<(String, String, Capability), Arc<PluginStats>>>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// A runtime whose compiled components are cached under `cache_dir` (when given) as well as
    /// in memory, and whose plugins see no stock limits (no token store: `hongbao plugin run`,
    /// `hongbao validate`, tests).
    ///
    /// # Errors
    ///
    /// The engine or linker could not be set up (a build problem, not a user one).
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<Arc<PluginRuntime>> {
        PluginRuntime::build(cache_dir, None)
    }

    /// [`PluginRuntime::new`], with plugins reading their scene's stock from `stock` (the token
    /// store the host serves from).
    ///
    /// # Errors
    ///
    /// As [`PluginRuntime::new`].
    pub fn with_stock_source(
        cache_dir: Option<&Path>,
        stock: Arc<dyn StockSource>,
    ) -> anyhow::Result<Arc<PluginRuntime>> {
        PluginRuntime::build(cache_dir, Some(stock))
    }

    fn build(cache_dir: Option<&Path>, stock: Option<Arc<dyn StockSource>>) -> anyhow::Result<Arc<PluginRuntime>> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(true);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new().name("plugin-epoch".into()).spawn(move || {
            // One tick per millisecond until the engine is dropped.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(Duration::from_millis(1));
            }
        })?;
        let mut linker = Linker::<PluginState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        sandbox::seal_sleep(&mut linker)?;
        bindings::bill_copy::BillCopyPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        let cache = cache::ComponentCache::new(cache_dir);
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            services: Arc::new(HostServices::new(stock)),
            cache,
            stats: Mutex::default(),
        }))
    }

    /// The host services (stock source, counters).
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// Reads, checks and compiles the `.wasm` at `path`, returning its bytes' sha256.
    fn compile_file(&self, path: &Path, pinned: Option<&[u8; 32]>) -> Result<(Component, [u8; 32]), LoadError> {
        let shown = path.display().to_string();
        let unreadable = |message: String| LoadError::Unreadable { path: shown.clone(), message };
        // One open handle, a regular file, and a bounded read: a FIFO, a device or a file that
        // keeps growing can neither hang nor exhaust the reload.
        let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
        let metadata = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        if !metadata.is_file() {
            return Err(unreadable("not a regular file".into()));
        }
        let mut bytes = Vec::with_capacity(metadata.len().min(WASM_BYTES_MAX) as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, WASM_BYTES_MAX + 1), &mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        if bytes.len() as u64 > WASM_BYTES_MAX {
            return Err(unreadable(format!("more than the {WASM_BYTES_MAX} bytes a plugin may have")));
        }
        let actual: [u8; 32] = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
        if let Some(pinned) = pinned
            && *pinned != actual
        {
            return Err(LoadError::Sha256Mismatch { path: shown, pinned: hex(pinned), actual: hex(&actual) });
        }
        let component = self
            .cache
            .component(&self.engine, &actual, &bytes)
            .map_err(|error| LoadError::Invalid { path: shown, message: error_chain(&error) })?;
        Ok((component, actual))
    }

    fn pre(&self, component: &Component, capability: Capability) -> Result<ReadyPre, String> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| error_chain(&e))?;
        let ready = match capability {
            Capability::BillCopy => bindings::bill_copy::BillCopyPluginPre::new(instance_pre).map(ReadyPre::BillCopy),
            Capability::RateLimit => {
                bindings::rate_limit::RateLimitPluginPre::new(instance_pre).map(ReadyPre::RateLimit)
            }
            Capability::Inventory => {
                bindings::inventory::InventoryPluginPre::new(instance_pre).map(ReadyPre::Inventory)
            }
            Capability::Compensation => {
                bindings::compensation::CompensationPluginPre::new(instance_pre).map(ReadyPre::Compensation)
            }
            Capability::Reconciliation => {
                bindings::reconciliation::ReconciliationPluginPre::new(instance_pre).map(ReadyPre::Reconciliation)
            }
        };
        ready.map_err(|e| error_chain(&e))
    }

    /// Loads the plugin `spec` declares for scene `scene_id` of `activity_id`.
    ///
    /// A pin mismatch or an unreadable file is an `Err` (the scene is refused). A file that is
    /// not a component, or not one of the capability's world, still gives a [`Plugin`]: every
    /// call to it fails with [`PluginFailure::NotLoaded`] and the scene's failure policy
    /// decides, while [`Plugin::load_error`] tells why.
    ///
    /// # Errors
    ///
    /// See above.
    pub fn load(
        self: &Arc<Self>,
        spec: &PluginSpec,
        activity_id: &str,
        scene_id: &str,
        limits: StockLimits,
    ) -> Result<Arc<Plugin>, LoadError> {
        let stats = self
            .stats
            .lock()
            .entry((activity_id.to_owned(), scene_id.to_owned(), spec.capability))
            .or_default()
            .clone();
        let scope = Arc::new(Scope {
            activity_id: activity_id.to_owned(),
            scene_id: scene_id.to_owned(),
            plugin: spec.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            limits,
            fixed_stock: None,
            counters: self.services.counters_for(activity_id, scene_id),
        });
        let loaded = match self.compile_file(&spec.path, Some(&spec.sha256)) {
            Ok((component, _)) => self.pre(&component, spec.capability).map_err(|message| LoadError::WrongInterface {
                path: spec.path.display().to_string(),
                world: format!("{}-plugin", spec.capability.kind()),
                message,
            }),
            Err(error) if error.refuses_scene() => return Err(error),
            Err(error) => Err(error),
        };
        Ok(Arc::new(Plugin::new(self.clone(), spec.clone(), scope, loaded, stats)))
    }

    /// Loads `path` without a scene or pin, for `hongbao plugin run`: finds which capability's
    /// world the component fits.
    ///
    /// # Errors
    ///
    /// The file is unreadable, not a component, or fits no world (the message names what each
    /// world missed).
    pub fn load_standalone(
        self: &Arc<Self>,
        path: &Path,
        settings: Vec<(String, String)>,
        fixed_stock: Option<Stock>,
    ) -> Result<(Arc<Plugin>, [u8; 32]), LoadError> {
        let (component, sha256) = self.compile_file(path, None)?;
        let mut reasons = Vec::new();
        for capability in Capability::ALL {
            match self.pre(&component, capability) {
                Ok(pre) => {
                    let spec = PluginSpec {
                        capability,
                        path: path.to_path_buf(),
                        sha256,
                        on_failure: FailurePolicy::FailClosed,
                        deadline_ms: limits::DEADLINE_MS_MAX,
                        memory_mb: limits::MEMORY_MB_MAX,
                        settings,
                        line: 0,
                        sha256_line: 0,
                        key_path: String::new(),
                    };
                    let scope = Arc::new(Scope {
                        activity_id: "local".into(),
                        scene_id: "local".into(),
                        plugin: path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                        limits: StockLimits {
                            activity_budget_cents: 0,
                            scene_count_max: None,
                            scene_budget_cents: None,
                        },
                        fixed_stock,
                        counters: Arc::default(),
                    });
                    let plugin = Plugin::new(self.clone(), spec, scope, Ok(pre), Arc::default());
                    return Ok((Arc::new(plugin), sha256));
                }
                Err(message) => reasons.push(format!("{}: {message}", capability.kind())),
            }
        }
        Err(LoadError::WrongInterface {
            path: path.display().to_string(),
            world: "any hongbao:plugin".into(),
            message: reasons.join("; "),
        })
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// wasmtime's error with its causes, on one line and bounded (some causes are multi-line
/// debug dumps).
fn error_chain(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 400 {
        let mut end = 400;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// A pre-linked component, by world.
enum ReadyPre {
    BillCopy(bindings::bill_copy::BillCopyPluginPre<PluginState>),
    RateLimit(bindings::rate_limit::RateLimitPluginPre<PluginState>),
    Inventory(bindings::inventory::InventoryPluginPre<PluginState>),
    Compensation(bindings::compensation::CompensationPluginPre<PluginState>),
    Reconciliation(bindings::reconciliation::ReconciliationPluginPre<PluginState>),
}

/// A live instance, by world.
enum Instance {
    BillCopy(bindings::bill_copy::BillCopyPlugin),
    RateLimit(bindings::rate_limit::RateLimitPlugin),
    Inventory(bindings::inventory::InventoryPlugin),
    Compensation(bindings::compensation::CompensationPlugin),
    Reconciliation(bindings::reconciliation::ReconciliationPlugin),
}

/// A warm instance and its store.
struct Warm {
    store: Store<PluginState>,
    instance: Instance,
    calls: u32,
}

/// What one call cost, for `hongbao plugin run` and the bench.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// Creating the instance, when the call needed a fresh one.
    pub instantiate: Option<Duration>,
    /// The call itself.
    pub call: Duration,
    /// Wasm operators executed; `None` after a trap (the meter is not reliable then).
    pub instructions: Option<u64>,
    /// The instance's peak linear memory.
    pub peak_memory_bytes: u64,
    /// What the guest printed.
    pub output: Captured,
    /// `host.log` lines, and how many were dropped.
    pub log: Vec<(String, String)>,
    /// `host.log` lines over the bound.
    pub log_dropped: u64,
}

/// One scene's plugin for one capability.
pub struct Plugin {
    runtime: Arc<PluginRuntime>,
    spec: PluginSpec,
    scope: Arc<Scope>,
    pre: Result<ReadyPre, LoadError>,
    pool: Mutex<Vec<Warm>>,
    stats: Arc<PluginStats>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl PartialEq for Plugin {
    fn eq(&self, other: &Plugin) -> bool {
        self.spec == other.spec
    }
}

/// The per-request part of a call context; the plugin adds its scene and settings.
#[derive(Debug, Clone, Default)]
pub struct CallInput<'a> {
    /// The award type.
    pub award_type: &'a str,
    /// The app.
    pub app_id: i64,
    /// The user.
    pub act_id: i64,
    /// The rain.
    pub rain_id: i32,
    /// The stage.
    pub stage: u32,
    /// Wall clock, ms since the epoch.
    pub now_ms: u64,
    /// Seed of the call's randomness.
    pub random_seed: u64,
    /// The requested locale.
    pub locale: Option<&'a str>,
}

impl Plugin {
    fn new(
        runtime: Arc<PluginRuntime>,
        spec: PluginSpec,
        scope: Arc<Scope>,
        pre: Result<ReadyPre, LoadError>,
        stats: Arc<PluginStats>,
    ) -> Plugin {
        if let Err(error) = &pre {
            tracing::warn!(activity = %scope.activity_id, scene = %scope.scene_id, %error,
                "plugin not loaded; every call gets the scene's failure policy");
        }
        Plugin { runtime, spec, scope, pre, pool: Mutex::new(Vec::new()), stats }
    }

    /// The declaration this plugin was loaded from.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// Why the plugin could not be loaded, if it could not.
    pub fn load_error(&self) -> Option<&LoadError> {
        self.pre.as_ref().err()
    }

    /// Its call counts.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// The scene it serves.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// What is left of the scene's stock now.
    ///
    /// # Errors
    ///
    /// The store could not be read.
    pub fn stock_remaining(&self) -> Result<Stock, String> {
        self.runtime.services.stock_remaining(&self.scope)
    }

    /// The counters of the scene (for `hongbao plugin run`).
    pub fn counters(&self, now_ms: u64) -> Vec<(String, i64)> {
        self.scope.counters.lock().live(now_ms)
    }

    /// Seeds a counter (for `hongbao plugin run`).
    pub fn seed_counter(&self, name: &str, value: i64, now_ms: u64) {
        let _ = self.scope.counters.lock().add(name, value, None, now_ms);
    }

    /// The full call context for `input`.
    pub fn context(&self, input: &CallInput<'_>) -> CallContext {
        CallContext {
            activity_id: self.scope.activity_id.clone(),
            scene_id: self.scope.scene_id.clone(),
            award_type: input.award_type.to_owned(),
            app_id: input.app_id,
            act_id: input.act_id,
            rain_id: input.rain_id,
            stage: input.stage,
            now_ms: input.now_ms,
            random_seed: input.random_seed,
            locale: input.locale.map(str::to_owned),
            settings: self.spec.settings.clone(),
        }
    }

    fn fresh(&self, pre: &ReadyPre) -> Result<Warm, PluginFailure> {
        let memory_bytes = self.spec.memory_mb.saturating_mul(1024 * 1024);
        let state = PluginState::new(self.scope.clone(), self.runtime.services.clone(), memory_bytes);
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|state| &mut state.memory);
        // Instantiation runs guest code (constructors): it needs fuel and a deadline too.
        store.set_epoch_deadline(self.spec.deadline_ms.max(1));
        store.set_fuel(FUEL_PER_CALL).map_err(|e| PluginFailure::Instantiate(error_chain(&e)))?;
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let instance = match pre {
            ReadyPre::BillCopy(pre) => pre.instantiate(&mut store).map(Instance::BillCopy),
            ReadyPre::RateLimit(pre) => pre.instantiate(&mut store).map(Instance::RateLimit),
            ReadyPre::Inventory(pre) => pre.instantiate(&mut store).map(Instance::Inventory),
            ReadyPre::Compensation(pre) => pre.instantiate(&mut store).map(Instance::Compensation),
            ReadyPre::Reconciliation(pre) => pre.instantiate(&mut store).map(Instance::Reconciliation),
        };
        match instance {
            Ok(instance) => Ok(Warm { store, instance, calls: 0 }),
            Err(error) => Err(match self.classify(&error) {
                PluginFailure::Trap(message) => PluginFailure::Instantiate(message),
                other => other,
            }),
        }
    }

    fn classify(&self, error: &wasmtime::Error) -> PluginFailure {
        if error.downcast_ref::<MemoryCapExceeded>().is_some() {
            return PluginFailure::MemoryCap(self.spec.memory_mb);
        }
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt | wasmtime::Trap::OutOfFuel) => {
                PluginFailure::Deadline(self.spec.deadline_ms)
            }
            // The trap itself, without the wasm backtrace wasmtime attaches.
            Some(trap) => PluginFailure::Trap(trap.to_string()),
            None => PluginFailure::Trap(error_chain(error)),
        }
    }

    /// Runs one call on a warm (or fresh) instance and returns the answer with its report.
    fn call<R>(
        &self,
        ctx: &CallContext,
        invoke: impl FnOnce(&Instance, &mut Store<PluginState>) -> Option<wasmtime::Result<Result<R, PluginError>>>,
    ) -> (Result<R, PluginFailure>, CallReport) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let (result, report) = in_place(|| self.call_inner(ctx, invoke));
        self.stats.call_ns.fetch_add(report.call.as_nanos() as u64, Ordering::Relaxed);
        match &result {
            Ok(_) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                self.stats.count_failure(failure);
                tracing::warn!(activity = %self.scope.activity_id, scene = %self.scope.scene_id,
                    plugin = %self.scope.plugin, code = failure.code(), %failure, "plugin call failed");
            }
        }
        (result, report)
    }

    fn call_inner<R>(
        &self,
        ctx: &CallContext,
        invoke: impl FnOnce(&Instance, &mut Store<PluginState>) -> Option<wasmtime::Result<Result<R, PluginError>>>,
    ) -> (Result<R, PluginFailure>, CallReport) {
        let mut report = CallReport::default();
        let pre = match &self.pre {
            Ok(pre) => pre,
            Err(error) => return (Err(PluginFailure::NotLoaded(error.to_string())), report),
        };
        let pooled = self.pool.lock().pop();
        let mut warm = match pooled {
            Some(warm) => warm,
            None => {
                let started = Instant::now();
                // The fresh instance's constructors see the call's time and randomness too.
                let warm = self.fresh(pre);
                report.instantiate = Some(started.elapsed());
                match warm {
                    Ok(warm) => warm,
                    Err(failure) => return (Err(failure), report),
                }
            }
        };
        warm.store.data_mut().arm(ctx.now_ms, ctx.random_seed);
        warm.store.set_epoch_deadline(self.spec.deadline_ms.max(1));
        if let Err(error) = warm.store.set_fuel(FUEL_PER_CALL) {
            return (Err(PluginFailure::Trap(error_chain(&error))), report);
        }
        let started = Instant::now();
        let outcome = invoke(&warm.instance, &mut warm.store);
        report.call = started.elapsed();
        let state = warm.store.data_mut();
        report.output = state.output.take();
        report.peak_memory_bytes = state.memory.peak_bytes;
        let log = std::mem::take(&mut state.log);
        report.log_dropped = log.dropped;
        report.log = log.lines.into_iter().map(|(level, line)| (level_name(level).to_owned(), line)).collect();
        self.flush_output(&report);
        let result = match outcome {
            None => Err(PluginFailure::NotLoaded("the instance is of another world".into())),
            Some(Ok(Ok(value))) => {
                report.instructions = warm.store.get_fuel().ok().map(|left| FUEL_PER_CALL - left);
                self.recycle(warm);
                Ok(value)
            }
            Some(Ok(Err(error))) => {
                report.instructions = warm.store.get_fuel().ok().map(|left| FUEL_PER_CALL - left);
                self.recycle(warm);
                Err(PluginFailure::PluginError(plugin_error_text(&error)))
            }
            // A trapped instance cannot be entered again: it is dropped here.
            Some(Err(error)) => Err(match self.classify(&error) {
                // A Rust panic prints its message to stderr just before the trap: keep it.
                PluginFailure::Trap(trap) => match panic_line(&report.output.bytes) {
                    Some(panic) => PluginFailure::Trap(format!("{trap} ({panic})")),
                    None => PluginFailure::Trap(trap),
                },
                other => other,
            }),
        };
        (result, report)
    }

    fn recycle(&self, mut warm: Warm) {
        warm.calls += 1;
        if warm.calls >= CALLS_PER_INSTANCE_MAX {
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < INSTANCES_PER_POOL_MAX {
            pool.push(warm);
        }
    }

    fn flush_output(&self, report: &CallReport) {
        let scope = &self.scope;
        if !report.output.bytes.is_empty() || report.output.dropped_bytes > 0 {
            tracing::info!(activity = %scope.activity_id, scene = %scope.scene_id, plugin = %scope.plugin,
                dropped_bytes = report.output.dropped_bytes, "plugin output: {}",
                String::from_utf8_lossy(&report.output.bytes).trim_end());
        }
        for (level, line) in &report.log {
            match level.as_str() {
                "error" => {
                    tracing::error!(activity = %scope.activity_id, scene = %scope.scene_id, plugin = %scope.plugin, "{line}")
                }
                "warn" => {
                    tracing::warn!(activity = %scope.activity_id, scene = %scope.scene_id, plugin = %scope.plugin, "{line}")
                }
                "info" => {
                    tracing::info!(activity = %scope.activity_id, scene = %scope.scene_id, plugin = %scope.plugin, "{line}")
                }
                _ => {
                    tracing::debug!(activity = %scope.activity_id, scene = %scope.scene_id, plugin = %scope.plugin, "{line}")
                }
            }
        }
        if report.log_dropped > 0 {
            tracing::info!(plugin = %scope.plugin, dropped = report.log_dropped, "plugin log lines dropped");
        }
    }

    /// `bill-copy.render`.
    pub fn render(
        &self,
        ctx: &CallContext,
        award: &bindings::bill_copy::exports::hongbao::plugin::bill_copy::Award,
    ) -> (Result<bindings::bill_copy::exports::hongbao::plugin::bill_copy::BillText, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::BillCopy(p) => Some(p.hongbao_plugin_bill_copy().call_render(store, ctx, award)),
            _ => None,
        });
        let result = result.and_then(|text| {
            if text.text.len() > limits::BILL_TEXT_BYTES_MAX || text.locale.len() > 35 {
                Err(PluginFailure::InvalidOutput(format!(
                    "bill text of {} bytes (at most {}) or locale of {} bytes (at most 35)",
                    text.text.len(),
                    limits::BILL_TEXT_BYTES_MAX,
                    text.locale.len()
                )))
            } else if text.text.contains('\0') {
                // No ledger stores NUL in text (PostgreSQL refuses it), and no bill needs it.
                Err(PluginFailure::InvalidOutput("bill text contains a NUL character".into()))
            } else {
                Ok(text)
            }
        });
        self.count_invalid(&result);
        (result, report)
    }

    /// `rate-limit.check`.
    pub fn check(
        &self,
        ctx: &CallContext,
    ) -> (Result<bindings::rate_limit::exports::hongbao::plugin::rate_limit::Decision, PluginFailure>, CallReport) {
        self.call(ctx, |instance, store| match instance {
            Instance::RateLimit(p) => Some(p.hongbao_plugin_rate_limit().call_check(store, ctx)),
            _ => None,
        })
    }

    /// `inventory.choose`; an amount outside `min-cents..=max-cents` is an invalid answer.
    pub fn choose(
        &self,
        ctx: &CallContext,
        request: &bindings::inventory::exports::hongbao::plugin::inventory::AmountRequest,
    ) -> (Result<bindings::inventory::exports::hongbao::plugin::inventory::Allocation, PluginFailure>, CallReport) {
        use bindings::inventory::exports::hongbao::plugin::inventory::Allocation;
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Inventory(p) => Some(p.hongbao_plugin_inventory().call_choose(store, ctx, *request)),
            _ => None,
        });
        let result = result.and_then(|allocation| match allocation {
            Allocation::Amount(amount) if amount < request.min_cents || amount > request.max_cents => {
                Err(PluginFailure::InvalidOutput(format!(
                    "amount {amount} is outside {}..={}",
                    request.min_cents, request.max_cents
                )))
            }
            other => Ok(other),
        });
        self.count_invalid(&result);
        (result, report)
    }

    /// `compensation.decide`; retry delays are kept within [`limits::RETRY_AFTER_MS_MIN`] and
    /// [`limits::RETRY_AFTER_MS_MAX`].
    pub fn decide(
        &self,
        ctx: &CallContext,
        failure: &bindings::compensation::exports::hongbao::plugin::compensation::Failure,
    ) -> (Result<bindings::compensation::exports::hongbao::plugin::compensation::Remedy, PluginFailure>, CallReport)
    {
        use bindings::compensation::exports::hongbao::plugin::compensation::Remedy;
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Compensation(p) => Some(p.hongbao_plugin_compensation().call_decide(store, ctx, failure)),
            _ => None,
        });
        let result = result.map(|remedy| match remedy {
            Remedy::RetryAfterMs(ms) => {
                Remedy::RetryAfterMs(ms.clamp(limits::RETRY_AFTER_MS_MIN, limits::RETRY_AFTER_MS_MAX))
            }
            other => other,
        });
        (result, report)
    }

    /// `reconciliation.judge`; more than [`limits::FINDINGS_PER_CALL_MAX`] findings, or codes
    /// that are not short identifiers, are an invalid answer.
    pub fn judge(
        &self,
        ctx: &CallContext,
        summary: &bindings::reconciliation::exports::hongbao::plugin::reconciliation::SceneSummary,
    ) -> (
        Result<Vec<bindings::reconciliation::exports::hongbao::plugin::reconciliation::Finding>, PluginFailure>,
        CallReport,
    ) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Reconciliation(p) => Some(p.hongbao_plugin_reconciliation().call_judge(store, ctx, *summary)),
            _ => None,
        });
        let result = result.and_then(|findings| {
            if findings.len() > limits::FINDINGS_PER_CALL_MAX {
                return Err(PluginFailure::InvalidOutput(format!(
                    "{} findings (at most {})",
                    findings.len(),
                    limits::FINDINGS_PER_CALL_MAX
                )));
            }
            if let Some(bad) = findings.iter().find(|f| {
                f.code.is_empty()
                    || f.code.len() > 64
                    || !f.code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    || f.message.len() > 4096
            }) {
                return Err(PluginFailure::InvalidOutput(format!(
                    "finding code `{}` must match [A-Za-z0-9_-]{{1,64}} with a message of at most 4096 bytes",
                    bad.code.chars().take(64).collect::<String>()
                )));
            }
            Ok(findings)
        });
        self.count_invalid(&result);
        (result, report)
    }

    /// Counts an answer the caller rejected after the call (a rule the plugin cannot see).
    pub fn count_invalid_answer(&self, failure: &PluginFailure) {
        self.count_invalid::<()>(&Err(failure.clone()));
    }

    fn count_invalid<T>(&self, result: &Result<T, PluginFailure>) {
        if let Err(failure @ PluginFailure::InvalidOutput(_)) = result {
            // `call` counted the call as ok; it was not.
            self.stats.ok.fetch_sub(1, Ordering::Relaxed);
            self.stats.count_failure(failure);
            tracing::warn!(activity = %self.scope.activity_id, scene = %self.scope.scene_id,
                plugin = %self.scope.plugin, %failure, "plugin answer rejected");
        }
    }
}

/// The last line of captured output that looks like a panic message.
fn panic_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let mut lines = text.lines().rev();
    let line = lines.find(|line| line.contains("panicked at"))?;
    // The message follows on the next line in current Rust; join them.
    let after = text.split(line).nth(1).and_then(|rest| rest.lines().nth(1)).unwrap_or("");
    Some(format!("{} {}", line.trim(), after.trim()).trim().chars().take(300).collect())
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn plugin_error_text(error: &PluginError) -> String {
    match error {
        PluginError::Unsupported(m) => format!("unsupported: {m}"),
        PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        PluginError::HostFailed(m) => format!("host failed: {m}"),
        PluginError::Other(m) => format!("other: {m}"),
    }
}

/// Runs `f` where blocking is allowed. WASI's synchronous streams block on the tokio runtime
/// when a guest prints; on a multi-thread runtime's worker that needs `block_in_place` (it
/// would panic otherwise). Entering it hands the worker's core to another thread, which costs
/// wake-ups and context switches (measured: a grant with two hooks each in its own section ran
/// at 10.4k grants/s, and at 13.4k with none), so the grant path wraps all of a grant's hooks in
/// one section; a call already inside one runs directly.
pub(crate) fn in_place<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
