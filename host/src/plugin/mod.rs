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
//!
//! The parts: `spec` (what a scene declares: capability, failure policy), `runtime` (engine,
//! linker, loading), `cache` (compiled components by content hash), `scene_plugin` (one
//! scene's plugin and how a call runs), `pool` (warm instances and their bounds), `calls` (the
//! five capability calls and the checks on their answers), `failure` (load and call failures),
//! `stats` (call counts), `sandbox` (the guest's WASI, clocks, memory cap), `host_api` (the
//! host functions), `limits` (every bound), `bindings` (the WIT worlds), `authoring`
//! (`hongbao plugin run`) and `scaffold` (`hongbao plugin new`).

pub mod authoring;
pub mod bindings;
mod cache;
mod calls;
pub mod decisions;
mod failure;
mod host_api;
pub mod json;
pub mod limits;
mod pool;
pub mod replay;
mod runtime;
mod sandbox;
pub mod scaffold;
mod scene_plugin;
mod spec;
mod stats;

pub use self::cache::hex;
pub use self::failure::{LoadError, PluginFailure};
pub use self::host_api::{HostServices, Scope, remaining};
pub use self::runtime::PluginRuntime;
pub use self::sandbox::{Captured, MemoryCapExceeded};
pub use self::scene_plugin::{CallInput, CallReport, Plugin};
pub use self::spec::{Capability, FailurePolicy, PluginSpec};
pub use self::stats::PluginStats;
