//! One scene's plugin for one capability, and how one call runs on it: a warm instance from the
//! pool (or a fresh one), a new epoch deadline, the fuel meter reset, the guest's clock and
//! randomness set from the call, the guest's output and log lines flushed to the host's log,
//! and a failure classified and counted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store};

use super::bindings;
use super::bindings::types::{CallContext, LogLevel, PluginError, Stock};
use super::decisions::{DecisionLog, DecisionRecord, HostCall, HostTape};
use super::failure::{LoadError, PluginFailure, call_failure, error_chain, instantiate_failure, plugin_error_text};
use super::host_api::{HostServices, Scope};
use super::limits::{CALLS_PER_INSTANCE_MAX, INSTANCES_PER_POOL_MAX, INSTRUCTIONS_PER_INSTANTIATION_MAX};
use super::pool::{InstancePool, Pooled};
use super::sandbox::{Captured, PluginState};
use super::spec::PluginSpec;
use super::stats::PluginStats;

/// A pre-linked component, by world.
pub(super) enum ReadyPre {
    BillCopy(bindings::bill_copy::BillCopyPluginPre<PluginState>),
    RateLimit(bindings::rate_limit::RateLimitPluginPre<PluginState>),
    Inventory(bindings::inventory::InventoryPluginPre<PluginState>),
    Compensation(bindings::compensation::CompensationPluginPre<PluginState>),
    Reconciliation(bindings::reconciliation::ReconciliationPluginPre<PluginState>),
}

/// A live instance, by world.
pub(super) enum Instance {
    BillCopy(bindings::bill_copy::BillCopyPlugin),
    RateLimit(bindings::rate_limit::RateLimitPlugin),
    Inventory(bindings::inventory::InventoryPlugin),
    Compensation(bindings::compensation::CompensationPlugin),
    Reconciliation(bindings::reconciliation::ReconciliationPlugin),
}

/// A live instance and its store.
struct Live {
    store: Store<PluginState>,
    instance: Instance,
}

/// A live instance as the pool keeps it, with the calls it has served.
type Warm = Pooled<Live>;

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
    /// The host calls made, with their answers, when the call was recorded.
    pub host_calls: Vec<HostCall>,
    /// How the host calls differed from the recording, when the call was a replay.
    pub host_diverged: Vec<String>,
}

/// One scene's plugin for one capability.
pub struct Plugin {
    /// The runtime's engine (instances are created in it; holding it keeps the epoch ticking).
    engine: Engine,
    /// The runtime's host services.
    services: Arc<HostServices>,
    spec: PluginSpec,
    pub(super) scope: Arc<Scope>,
    /// Set once the component is compiled (or failed to): until then the plugin is warming.
    pre: OnceLock<Result<ReadyPre, LoadError>>,
    pool: InstancePool<Live>,
    pub(super) stats: Arc<PluginStats>,
    /// Where its calls are recorded, when its scene's are (`serve --record-decisions`).
    recorder: Option<Arc<DecisionLog>>,
    /// The host answers the next call replays (`hongbao plugin replay`).
    replaying: parking_lot::Mutex<Option<Vec<HostCall>>>,
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
    /// A plugin; `pre` is `None` while its component is being compiled, and [`Plugin::loaded`]
    /// gives it when it is.
    pub(super) fn new(
        engine: Engine,
        services: Arc<HostServices>,
        spec: PluginSpec,
        scope: Arc<Scope>,
        pre: Option<Result<ReadyPre, LoadError>>,
        stats: Arc<PluginStats>,
        recorder: Option<Arc<DecisionLog>>,
    ) -> Plugin {
        let plugin = Plugin {
            engine,
            services,
            spec,
            scope,
            pre: OnceLock::new(),
            pool: InstancePool::new(INSTANCES_PER_POOL_MAX, CALLS_PER_INSTANCE_MAX),
            stats,
            recorder,
            replaying: parking_lot::Mutex::new(None),
        };
        if let Some(pre) = pre {
            plugin.loaded(pre);
        }
        plugin
    }

    /// The compiled component (or why there is none): the plugin stops warming. Only the first
    /// call counts.
    pub(super) fn loaded(&self, pre: Result<ReadyPre, LoadError>) {
        if let Err(error) = &pre {
            tracing::warn!(activity = %self.scope.activity_id, scene = %self.scope.scene_id, %error,
                "plugin not loaded; every call gets the scene's failure policy");
        }
        let _ = self.pre.set(pre);
    }

    /// Makes the next call answer its host calls from `calls`, a recording, instead of live
    /// state (`hongbao plugin replay`).
    pub fn replay_next(&self, calls: Vec<HostCall>) {
        *self.replaying.lock() = Some(calls);
    }

    /// Whether its calls are recorded.
    pub(super) fn records(&self) -> bool {
        self.recorder.is_some()
    }

    /// Writes one call to the decision log: its context, the capability's `input`, the host
    /// calls in `report`, and `outcome` (see [`super::json::outcome`]).
    pub(super) fn record(
        &self,
        ctx: &CallContext,
        input: serde_json::Value,
        report: &CallReport,
        outcome: serde_json::Value,
    ) {
        let Some(log) = &self.recorder else { return };
        log.write(&DecisionRecord {
            capability: self.spec.capability.kind().to_owned(),
            plugin_sha256: super::hex(&self.spec.sha256),
            context: super::json::context(ctx),
            input,
            host: report.host_calls.clone(),
            output: outcome,
        });
    }

    /// Whether its component is compiled (or failed to): not warming any more.
    pub fn is_ready(&self) -> bool {
        self.pre.get().is_some()
    }

    /// The declaration this plugin was loaded from.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// Why the plugin could not be loaded, if it could not.
    pub fn load_error(&self) -> Option<&LoadError> {
        self.pre.get()?.as_ref().err()
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
        self.services.stock_remaining(&self.scope)
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
        let state = PluginState::new(self.scope.clone(), self.services.clone(), memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        // Instantiation runs guest code (constructors): it needs fuel and a deadline too.
        store.set_epoch_deadline(self.spec.deadline_ms.max(1));
        store.set_fuel(INSTRUCTIONS_PER_INSTANTIATION_MAX).map_err(|e| PluginFailure::Instantiate(error_chain(&e)))?;
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let instance = match pre {
            ReadyPre::BillCopy(pre) => pre.instantiate(&mut store).map(Instance::BillCopy),
            ReadyPre::RateLimit(pre) => pre.instantiate(&mut store).map(Instance::RateLimit),
            ReadyPre::Inventory(pre) => pre.instantiate(&mut store).map(Instance::Inventory),
            ReadyPre::Compensation(pre) => pre.instantiate(&mut store).map(Instance::Compensation),
            ReadyPre::Reconciliation(pre) => pre.instantiate(&mut store).map(Instance::Reconciliation),
        };
        match instance {
            Ok(instance) => Ok(Pooled::fresh(Live { store, instance })),
            Err(error) => Err(instantiate_failure(&error, &self.spec)),
        }
    }

    /// Runs one call on a warm (or fresh) instance and returns the answer with its report.
    pub(super) fn call<R>(
        &self,
        ctx: &CallContext,
        invoke: impl FnOnce(&Instance, &mut Store<PluginState>) -> Option<wasmtime::Result<Result<R, PluginError>>>,
    ) -> (Result<R, PluginFailure>, CallReport) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // Inline on the caller's thread (the sandbox never blocks: `sandbox::seal_streams`). A
        // host function that panics (a WASI call the seal does not cover that would block on
        // the runtime) fails this call alone: the instance it ran on is dropped, not pooled.
        let (result, report) =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.call_inner(ctx, invoke))) {
                Ok(answer) => answer,
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|why| (*why).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a host function panicked".to_owned());
                    (Err(PluginFailure::Trap(format!("host call failed: {why}"))), CallReport::default())
                }
            };
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
        let pre = match self.pre.get() {
            Some(Ok(pre)) => pre,
            Some(Err(error)) => return (Err(PluginFailure::NotLoaded(error.to_string())), report),
            None => return (Err(PluginFailure::Warming), report),
        };
        let mut warm = match self.pool.take() {
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
        warm.store.data_mut().tape = match self.replaying.lock().take() {
            Some(calls) => HostTape::Replaying { calls: calls.into(), diverged: Vec::new() },
            None if self.recorder.is_some() => HostTape::Recording(Vec::new()),
            None => HostTape::Off,
        };
        warm.store.set_epoch_deadline(self.spec.deadline_ms.max(1));
        let fuel = self.spec.instructions_max;
        if let Err(error) = warm.store.set_fuel(fuel) {
            return (Err(PluginFailure::Trap(error_chain(&error))), report);
        }
        let started = Instant::now();
        let Live { store, instance } = &mut *warm;
        let outcome = invoke(instance, store);
        report.call = started.elapsed();
        let state = warm.store.data_mut();
        (report.host_calls, report.host_diverged) = state.tape.finish();
        report.output = state.output.take();
        report.peak_memory_bytes = state.memory.peak_bytes;
        let log = std::mem::take(&mut state.log);
        report.log_dropped = log.dropped;
        report.log = log.lines.into_iter().map(|(level, line)| (level_name(level).to_owned(), line)).collect();
        self.flush_output(&report);
        let result = match outcome {
            None => Err(PluginFailure::NotLoaded("the instance is of another world".into())),
            Some(Ok(Ok(value))) => {
                report.instructions = warm.store.get_fuel().ok().map(|left| fuel - left);
                self.pool.give_back(warm);
                Ok(value)
            }
            Some(Ok(Err(error))) => {
                report.instructions = warm.store.get_fuel().ok().map(|left| fuel - left);
                self.pool.give_back(warm);
                Err(PluginFailure::PluginError(plugin_error_text(&error)))
            }
            // A trapped instance cannot be entered again: it is dropped here.
            Some(Err(error)) => Err(call_failure(&error, &self.spec, &report.output.bytes)),
        };
        (result, report)
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
