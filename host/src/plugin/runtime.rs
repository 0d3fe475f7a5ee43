//! The process's plugin runtime: one wasmtime engine with epoch interruption and fuel, one linker
//! with the host functions and a sealed WASI, the epoch ticker, the compile cache, and loading a
//! `.wasm` into a [`Plugin`] (read within its bound, pin checked, compiled, pre-linked against
//! its capability's world).
//!
//! Compiling is off the serving path in a server ([`PluginRuntime::with_stock_source`]): a
//! component no cache holds is compiled on a background thread (one at a time, since wasmtime
//! spreads one compile over the cores) while its [`Plugin`] is *warming* — its calls get the
//! scene's failure policy — so a host listens at once and a 12 MB JavaScript component never
//! delays the other scenes. The registry keeps serving a scene's previous version until the new
//! version's plugins are compiled (see `config::registry`). Tools (`validate`, `plugin run`)
//! compile in line.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings;
use super::bindings::types::Stock;
use super::cache::{ComponentCache, hex};
use super::decisions::DecisionLog;
use super::failure::{LoadError, error_chain};
use super::host_api::{HostServices, Scope};
use super::limits::{self, WASM_BYTES_MAX};
use super::sandbox::{PluginState, seal_sleep, seal_streams};
use super::scene_plugin::{Plugin, ReadyPre};
use super::spec::{Capability, FailurePolicy, PluginSpec};
use super::stats::PluginStats;
use crate::stock::{StockLimits, StockSource};

/// The engine, linker, caches and host services shared by every plugin of a process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    services: Arc<HostServices>,
    cache: ComponentCache,
    stats: Mutex<std::collections::HashMap<(String, String, Capability), Arc<PluginStats>>>,
    /// Whether components no cache holds are compiled in the background (a server) or in line
    /// (tools).
    background: bool,
    /// Held by the compile running in the background: one at a time.
    compiling: Arc<Mutex<()>>,
    /// Background compiles waiting or running (bounded by [`limits::COMPILES_PENDING_MAX`]).
    compiles_pending: Arc<AtomicUsize>,
    /// The decision log, when some scenes' calls are recorded.
    decisions: std::sync::OnceLock<Arc<DecisionLog>>,
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
        PluginRuntime::build(cache_dir, None, false)
    }

    /// The server's runtime: plugins read their scene's stock from `stock` (the token store the
    /// host serves from), and components no cache holds compile in the background.
    ///
    /// # Errors
    ///
    /// As [`PluginRuntime::new`].
    pub fn with_stock_source(
        cache_dir: Option<&Path>,
        stock: Arc<dyn StockSource>,
    ) -> anyhow::Result<Arc<PluginRuntime>> {
        PluginRuntime::build(cache_dir, Some(stock), true)
    }

    fn build(
        cache_dir: Option<&Path>,
        stock: Option<Arc<dyn StockSource>>,
        background: bool,
    ) -> anyhow::Result<Arc<PluginRuntime>> {
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
        seal_sleep(&mut linker)?;
        seal_streams(&mut linker)?;
        bindings::bill_copy::BillCopyPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        let cache = ComponentCache::new(cache_dir);
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            services: Arc::new(HostServices::new(stock)),
            cache,
            stats: Mutex::default(),
            background,
            compiling: Arc::default(),
            compiles_pending: Arc::default(),
            decisions: std::sync::OnceLock::new(),
        }))
    }

    /// Records the calls of the scenes `log` names from now on (plugins loaded after this).
    pub fn record_decisions(&self, log: Arc<DecisionLog>) {
        let _ = self.decisions.set(log);
    }

    /// The decision log, when calls are recorded.
    pub fn decisions(&self) -> Option<&Arc<DecisionLog>> {
        self.decisions.get()
    }

    /// The host services (stock source, counters).
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// Reads, checks and compiles the `.wasm` at `path`, returning its bytes' sha256.
    fn compile_file(&self, path: &Path, pinned: Option<&[u8; 32]>) -> Result<(Component, [u8; 32]), LoadError> {
        let (bytes, sha256) = read_checked(path, pinned)?;
        let component = self.compile(path, &sha256, &bytes)?;
        Ok((component, sha256))
    }

    fn compile(&self, path: &Path, sha256: &[u8; 32], bytes: &[u8]) -> Result<Component, LoadError> {
        self.cache
            .component(&self.engine, sha256, bytes)
            .map_err(|error| LoadError::Invalid { path: path.display().to_string(), message: error_chain(&error) })
    }

    /// The component compiled and pre-linked against `spec`'s world.
    fn prepared(&self, component: &Component, spec: &PluginSpec) -> Result<ReadyPre, LoadError> {
        self.pre(component, spec.capability).map_err(|message| LoadError::WrongInterface {
            path: spec.path.display().to_string(),
            world: format!("{}-plugin", spec.capability.kind()),
            message,
        })
    }

    /// Compiles `bytes` for `plugin` on a thread of its own, one compile at a time, and hands
    /// the plugin the result; in line when too many compiles are pending already.
    fn compile_in_background(self: &Arc<Self>, plugin: Arc<Plugin>, bytes: Vec<u8>, sha256: [u8; 32]) {
        if self.compiles_pending.fetch_add(1, Ordering::SeqCst) >= limits::COMPILES_PENDING_MAX {
            self.compiles_pending.fetch_sub(1, Ordering::SeqCst);
            let compiled = self.compile(&plugin.spec().path, &sha256, &bytes);
            plugin.loaded(compiled.and_then(|component| self.prepared(&component, plugin.spec())));
            return;
        }
        let runtime = self.clone();
        let waiting = plugin.clone();
        let spawned = std::thread::Builder::new().name("plugin-compile".into()).spawn(move || {
            let _one_at_a_time = runtime.compiling.lock();
            crate::failpoint::stall("plugin.compile.stall");
            let started = std::time::Instant::now();
            let spec = plugin.spec();
            let compiled = runtime.compile(&spec.path, &sha256, &bytes);
            let prepared = compiled.and_then(|component| runtime.prepared(&component, spec));
            if prepared.is_ok() {
                tracing::info!(plugin = %spec.path.display(), activity = %plugin.scope().activity_id,
                    scene = %plugin.scope().scene_id, seconds = started.elapsed().as_secs_f64(),
                    "plugin compiled in the background");
            }
            plugin.loaded(prepared);
            runtime.compiles_pending.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(error) = spawned {
            self.compiles_pending.fetch_sub(1, Ordering::SeqCst);
            let path = waiting.spec().path.display().to_string();
            waiting.loaded(Err(LoadError::Invalid { path, message: format!("no thread to compile it on: {error}") }));
        }
    }
}

/// Reads the `.wasm` at `path` within [`WASM_BYTES_MAX`] and checks it against its pin; its bytes
/// and their sha256.
fn read_checked(path: &Path, pinned: Option<&[u8; 32]>) -> Result<(Vec<u8>, [u8; 32]), LoadError> {
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
    Ok((bytes, actual))
}

impl PluginRuntime {
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
        let (bytes, sha256) = read_checked(&spec.path, Some(&spec.sha256))?;
        let recorder = self.decisions.get().filter(|log| log.records(activity_id, scene_id)).cloned();
        let plugin = Arc::new(Plugin::new(
            self.engine.clone(),
            self.services.clone(),
            spec.clone(),
            scope,
            None,
            stats,
            recorder,
        ));
        match self.cache.cached(&self.engine, &sha256) {
            Some(component) => plugin.loaded(self.prepared(&component, spec)),
            None if self.background => self.compile_in_background(plugin.clone(), bytes, sha256),
            None => plugin.loaded(self.compile(&spec.path, &sha256, &bytes).and_then(|c| self.prepared(&c, spec))),
        }
        Ok(plugin)
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
                        instructions_max: limits::INSTRUCTIONS_MAX_MAX,
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
                    let plugin = Plugin::new(
                        self.engine.clone(),
                        self.services.clone(),
                        spec,
                        scope,
                        Some(Ok(pre)),
                        Arc::default(),
                        None,
                    );
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
