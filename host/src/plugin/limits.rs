//! The bounds of the plugin sandbox, each with the reason for its value.
//!
//! A scene may lower the per-call deadline and memory cap, or raise them up to the `_MAX`
//! values here; everything else is fixed by the host.

/// Per-call deadline when the scene sets none. A warm hook takes 1–2 µs; 10 ms is thousands of
/// times that, so only a plugin that is stuck (or absurdly slow) ever reaches it.
pub const DEADLINE_MS_DEFAULT: u64 = 10;
/// The longest deadline a scene may set, and the deadline of `hongbao plugin run`. It guards
/// against a typo (a deadline in seconds meant as milliseconds), not the grant path's latency:
/// that is the default's job. Seconds, because the deadline is wall-clock time and a loaded or
/// shared machine can deschedule a call for more than 100 ms; a host whose plugins must not fail
/// there (the test suite beside a build) needs that much.
pub const DEADLINE_MS_MAX: u64 = 10_000;
/// Linear memory per instance when the scene sets none. A Rust plugin built with the SDK's
/// template starts at 128 KiB (64 KiB stack) and rarely grows past a few hundred.
pub const MEMORY_MB_DEFAULT: u64 = 16;
/// The largest memory cap a scene may set: warm instances are pooled, so this times the pool
/// size is what one scene can hold.
pub const MEMORY_MB_MAX: u64 = 64;
/// Core wasm instances one plugin instance may create. A Rust plugin makes a handful; a
/// componentize-js or componentize-py plugin about 20; `componentize-py --stub-wasi` makes 38,
/// which this refuses on purpose (its stubs trap on every clock, random and output call, and
/// its random seed is fixed at build time: build without it).
pub const CORE_INSTANCES_PER_COMPONENT_MAX: usize = 32;
/// Tables one plugin instance may create; as many as its core instances.
pub const TABLES_PER_COMPONENT_MAX: usize = 32;
/// Linear memories one plugin instance may create: one per language runtime, and a few adapters.
pub const MEMORIES_PER_COMPONENT_MAX: usize = 8;
/// Table elements per instance (function references); generous for any real plugin.
pub const TABLE_ELEMENTS_MAX: usize = 100_000;
/// Wasm operators a call may run when the scene sets no `instructions_max`. Unlike the deadline,
/// which is wall-clock time and so depends on how loaded the machine is, an instruction count is
/// the same for the same call everywhere. Shopify Functions allow 11M a call; this is ten times
/// that, room for a JavaScript or Python plugin's warm call (the Rust reference plugins use
/// about 10k), while a loop that never ends stops here in well under a second.
pub const INSTRUCTIONS_MAX_DEFAULT: u64 = 100_000_000;
/// The most a scene may allow a call: seconds of CPU, a guard against a typo.
pub const INSTRUCTIONS_MAX_MAX: u64 = 10_000_000_000;
/// Wasm operators an instantiation may run (a JavaScript or Python plugin starts its language's
/// runtime there); the deadline bounds it in time.
pub const INSTRUCTIONS_PER_INSTANTIATION_MAX: u64 = 1 << 40;
/// Bytes of guest stdout plus stderr kept per call; the rest is counted and dropped, so a
/// chatty plugin can neither trap on a full pipe nor flood the host's log.
pub const OUTPUT_BYTES_PER_CALL_MAX: usize = 4 * 1024;
/// `host.log` lines kept per call; the rest are counted and dropped.
pub const LOG_LINES_PER_CALL_MAX: usize = 16;
/// Bytes kept of one `host.log` line.
pub const LOG_LINE_BYTES_MAX: usize = 512;
/// Calls one warm instance serves before it is replaced. Guest globals survive between calls,
/// so a plugin could keep state despite the contract; recycling bounds how long it can.
pub const CALLS_PER_INSTANCE_MAX: u32 = 10_000;
/// Idle warm instances kept per scene plugin: about one per concurrently running grant.
pub const INSTANCES_PER_POOL_MAX: usize = 64;
/// Bytes of a counter name (`host.counter-*`).
pub const COUNTER_NAME_BYTES_MAX: usize = 128;
/// Counters one scene may hold at once (expired windows are reclaimed first).
pub const COUNTERS_PER_SCENE_MAX: usize = 1_000_000;
/// The largest `.wasm` file the host reads.
pub const WASM_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Compiles waiting or running in the background at once. Each holds its `.wasm` bytes (up to
/// [`WASM_BYTES_MAX`]) until it is done; past the bound a plugin is compiled on the reload's own
/// thread instead, which delays that reload but never the requests being served.
pub const COMPILES_PENDING_MAX: usize = 8;
/// Compiled artifacts kept in the data directory's cache: a JavaScript plugin's is about 40 MB,
/// and every version of a plugin leaves one, so the oldest (by last use) go past this many.
pub const CACHE_ARTIFACTS_MAX: usize = 32;
/// Bytes of text a bill-copy plugin may return.
pub const BILL_TEXT_BYTES_MAX: usize = 512;
/// Findings one reconciliation call may return.
pub const FINDINGS_PER_CALL_MAX: usize = 64;
/// Settings per plugin in the scene YAML, and bytes per key or value.
pub const SETTINGS_MAX: usize = 64;
/// Bytes of one settings key or value.
pub const SETTING_BYTES_MAX: usize = 1024;
/// The shortest retry delay a compensation plugin may ask for; shorter answers are raised, so a
/// refused token cannot spin the ledger writer.
pub const RETRY_AFTER_MS_MIN: u64 = 50;
/// The longest retry delay a compensation plugin may ask for; longer answers are capped.
pub const RETRY_AFTER_MS_MAX: u64 = 3_600_000;
