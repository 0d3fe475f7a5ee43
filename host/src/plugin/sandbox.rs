//! What a guest sees of the world: a sealed WASI context whose clocks and randomness are fixed
//! per call from the call context, bounded output capture, and a memory meter.
//!
//! Components built by standard toolchains (Rust's `wasm32-wasip2`, other languages' component
//! tools) import `wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random` and sometimes
//! `wasi:filesystem`/`wasi:sockets` whether they use them or not. The host links the whole WASI
//! 0.2 set so they load unchanged, and seals it: no preopened directories, no environment, no
//! arguments, no sockets, stdin closed, clocks frozen at the call's `now-ms`, randomness drawn
//! from the call's `random-seed`, and sleeps that return at once (time does not pass inside a
//! call). Every stream and pollable it gives a guest is ready at once, and the WASI calls that
//! would wait on one are replaced by ones that never wait ([`seal_streams`]), so a hook runs
//! inline on the async worker that serves the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::poll as wit_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as wit_streams;

use super::host_api::{CallLog, HostServices, Scope};
use super::limits::{OUTPUT_BYTES_PER_CALL_MAX, TABLE_ELEMENTS_MAX};

/// Everything a store carries for one warm instance.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) memory: MemoryMeter,
    pub(super) clock: CallClock,
    pub(super) random: CallRandom,
    pub(super) output: BoundedOutput,
    pub(super) log: CallLog,
    /// The scene this instance serves; every host key is prefixed with it.
    pub(super) scope: Arc<Scope>,
    pub(super) services: Arc<HostServices>,
    /// The current call's host calls: recorded, replayed, or neither.
    pub(super) tape: super::decisions::HostTape,
}

impl PluginState {
    /// A sealed state for an instance serving `scope`, with linear memory capped at
    /// `memory_bytes_max`.
    pub fn new(scope: Arc<Scope>, services: Arc<HostServices>, memory_bytes_max: u64) -> PluginState {
        let clock = CallClock::default();
        let random = CallRandom::default();
        let output = BoundedOutput::default();
        // The builder's defaults already give no args, no env, no preopened directories and a
        // closed stdin; sockets default to "allowed, but every address denied", turned off here.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .secure_random(random.clone())
            .insecure_random(random.clone())
            .insecure_random_seed(0)
            .max_random_size(4096)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryMeter::new(memory_bytes_max),
            clock,
            random,
            output,
            log: CallLog::default(),
            scope,
            services,
            tape: super::decisions::HostTape::Off,
        }
    }

    /// Fixes the guest's view of time and randomness for the next call.
    pub(super) fn arm(&mut self, now_ms: u64, random_seed: u64) {
        self.clock.0.store(now_ms, Ordering::Relaxed);
        self.random.0.store(random_seed, Ordering::Relaxed);
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The call's `now-ms`, read by the guest's wall and monotonic clocks.
#[derive(Clone, Default)]
pub(super) struct CallClock(Arc<AtomicU64>);

impl wasmtime_wasi::HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

impl wasmtime_wasi::HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed).saturating_mul(1_000_000)
    }
}

impl CallClock {
    /// The frozen `now-ms` of the current call.
    pub(super) fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The guest's randomness: splitmix64 from the call's `random-seed`, so a replay draws the same
/// numbers.
#[derive(Clone, Default)]
pub(super) struct CallRandom(Arc<AtomicU64>);

impl CallRandom {
    fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl rand_core::TryRng for CallRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.next() as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// Guest stdout and stderr: keeps the first [`OUTPUT_BYTES_PER_CALL_MAX`] bytes of a call and
/// counts the rest. Never full, so a guest that prints never traps for it.
#[derive(Clone, Default)]
pub(super) struct BoundedOutput(Arc<Mutex<Captured>>);

/// What a call printed.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// How many more were dropped.
    pub dropped_bytes: u64,
}

impl BoundedOutput {
    fn append(&self, bytes: &[u8]) {
        let mut captured = self.0.lock();
        let room = OUTPUT_BYTES_PER_CALL_MAX.saturating_sub(captured.bytes.len());
        let kept = room.min(bytes.len());
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped_bytes += (bytes.len() - kept) as u64;
    }

    /// Takes what was printed since the last take.
    pub(super) fn take(&self) -> Captured {
        let mut captured = self.0.lock();
        if captured.bytes.is_empty() && captured.dropped_bytes == 0 {
            return Captured::default();
        }
        std::mem::take(&mut *captured)
    }
}

impl wasmtime_wasi::cli::IsTerminal for BoundedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for BoundedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for BoundedOutput {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for BoundedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for BoundedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The memory cap was reached: the error a growing memory traps with, so the host can tell
/// this failure from any other trap.
#[derive(Debug, thiserror::Error)]
#[error("plugin memory cap of {cap_bytes} bytes exceeded (wanted {desired_total_bytes})")]
pub struct MemoryCapExceeded {
    /// The cap.
    pub cap_bytes: u64,
    /// What the guest asked to grow to, over all its memories.
    pub desired_total_bytes: u64,
}

/// Caps the total linear memory of an instance (a component may have several memories) and
/// remembers the peak.
pub(super) struct MemoryMeter {
    cap_bytes: u64,
    total_bytes: u64,
    pub(super) peak_bytes: u64,
}

impl MemoryMeter {
    fn new(cap_bytes: u64) -> MemoryMeter {
        MemoryMeter { cap_bytes, total_bytes: 0, peak_bytes: 0 }
    }
}

impl ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let desired_total_bytes = (self.total_bytes - current as u64).saturating_add(desired as u64);
        if desired_total_bytes > self.cap_bytes {
            // An error traps at once with a cause the host can recognise, instead of the guest
            // seeing -1 and aborting with an anonymous `unreachable`.
            return Err(wasmtime::Error::new(MemoryCapExceeded { cap_bytes: self.cap_bytes, desired_total_bytes }));
        }
        self.total_bytes = desired_total_bytes;
        self.peak_bytes = self.peak_bytes.max(desired_total_bytes);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        super::limits::CORE_INSTANCES_PER_COMPONENT_MAX
    }

    fn tables(&self) -> usize {
        super::limits::TABLES_PER_COMPONENT_MAX
    }

    fn memories(&self) -> usize {
        super::limits::MEMORIES_PER_COMPONENT_MAX
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// Shadows the monotonic clock's `subscribe-*` functions with ones that are ready at once.
///
/// A guest `sleep` waits on them inside a host call, where no epoch deadline can reach it:
/// unsealed, it would block the host thread for as long as it asked. Time is frozen inside a
/// call anyway, so a sleep returns immediately; a busy wait on the frozen clock is plain
/// computation and meets the deadline. Shadowing the 0.2.12 names also covers components that
/// import older 0.2 versions (the linker matches by semver).
pub(super) fn seal_sleep(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(name, |mut store: StoreContextMut<'_, PluginState>, (_when,): (u64,)| {
            let table = &mut store.data_mut().table;
            let ready = table.push(Ready)?;
            Ok((wasmtime_wasi::p2::subscribe(table, ready)?,))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Why a guest's wait traps: it waited on a stream or pollable that was not ready, which the
/// sealed sandbox never hands out (output is captured, stdin is closed, sleeps are ready).
const WOULD_BLOCK: &str = "the plugin waited on I/O that is not ready (the plugin sandbox has none that blocks)";

/// Polls a WASI host future once, with no runtime and no waker: `None` if it would wait.
fn at_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// A stream call's outcome as the guest sees it: its value, or a `stream-error`; a trap if it
/// would have waited or the error is a trap.
fn streamed<T>(
    table: &mut ResourceTable,
    outcome: Option<StreamResult<T>>,
) -> wasmtime::Result<(Result<T, wit_streams::StreamError>,)> {
    match outcome {
        None => Err(wasmtime::Error::msg(WOULD_BLOCK)),
        Some(Ok(value)) => Ok((Ok(value),)),
        Some(Err(error)) => Ok((Err(wit_streams::Host::convert_stream_error(table, error)?),)),
    }
}

/// A plain host call's outcome: a trap if it would have waited.
fn done<T>(outcome: Option<wasmtime::Result<T>>) -> wasmtime::Result<T> {
    outcome.unwrap_or_else(|| Err(wasmtime::Error::msg(WOULD_BLOCK)))
}

/// Shadows the `wasi:io` calls that WASI's synchronous bindings run by blocking on the tokio
/// runtime (`blocking-write-and-flush`, `blocking-flush`, `poll`, `pollable.block`, the streams'
/// destructors, …) with ones that run the same host code to its end at once.
///
/// Blocking on the runtime from an async worker panics, so hooks used to run in
/// `block_in_place`, which hands the worker's core to another thread on every grant: measured,
/// 4.7 context switches a grant with it and 2.7 without, and 28 % more grants/s (BENCHMARKS.md,
/// issue 17). The sandbox's streams never wait, so nothing is lost; a guest that waits on one
/// that is not ready traps with [`WOULD_BLOCK`] instead of stalling a worker.
pub(super) fn seal_streams(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    type Ctx<'a> = StoreContextMut<'a, PluginState>;
    linker.allow_shadowing(true);
    let mut streams = linker.instance("wasi:io/streams@0.2.12")?;
    streams.resource("output-stream", ResourceType::host::<DynOutputStream>(), |mut store, rep| {
        let table = &mut store.data_mut().table;
        done(at_once(wit_streams::HostOutputStream::drop(table, Resource::new_own(rep))))
    })?;
    streams.resource("input-stream", ResourceType::host::<DynInputStream>(), |mut store, rep| {
        let table = &mut store.data_mut().table;
        done(at_once(wit_streams::HostInputStream::drop(table, Resource::new_own(rep))))
    })?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: Ctx<'_>, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostOutputStream::blocking_write_and_flush(table, stream, bytes));
            streamed(table, outcome)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: Ctx<'_>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len));
            streamed(table, outcome)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: Ctx<'_>, (stream,): (Resource<DynOutputStream>,)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostOutputStream::blocking_flush(table, stream));
            streamed(table, outcome)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: Ctx<'_>, (stream, source, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostOutputStream::blocking_splice(table, stream, source, len));
            streamed(table, outcome)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: Ctx<'_>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostInputStream::blocking_read(table, stream, len));
            streamed(table, outcome)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: Ctx<'_>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = &mut store.data_mut().table;
            let outcome = at_once(wit_streams::HostInputStream::blocking_skip(table, stream, len));
            streamed(table, outcome)
        },
    )?;
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap("poll", |mut store: Ctx<'_>, (pollables,): (Vec<Resource<DynPollable>>,)| {
        let table = &mut store.data_mut().table;
        Ok((done(at_once(wit_poll::Host::poll(table, pollables)))?,))
    })?;
    poll.func_wrap("[method]pollable.block", |mut store: Ctx<'_>, (pollable,): (Resource<DynPollable>,)| {
        let table = &mut store.data_mut().table;
        done(at_once(wit_poll::HostPollable::block(table, pollable)))
    })?;
    poll.func_wrap("[method]pollable.ready", |mut store: Ctx<'_>, (pollable,): (Resource<DynPollable>,)| {
        let table = &mut store.data_mut().table;
        Ok((done(at_once(wit_poll::HostPollable::ready(table, pollable)))?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
