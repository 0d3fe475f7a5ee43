//! Prometheus metrics: `GET /metrics` (admin), in the Prometheus text format.
//!
//! Counters on the grant path are plain atomics behind handles resolved once per request, so an
//! increment costs one uncontended lock or atomic add, never an allocation or a label string
//! built per call ([`SceneCounters`], [`Histogram`]). Everything else (the writer's totals, plugin
//! calls, the forgery watch, the backlog, the process) already exists as counters of its own and is
//! read when the page is scraped ([`exposition`]). Labels never carry a user id; scenes are
//! labelled only when the scene exists, so a client naming scenes at random cannot grow the page.

pub mod exposition;
pub mod process;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

/// Upper bounds of the latency histograms, in seconds (Prometheus `le`), from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A latency histogram with [`LATENCY_BUCKETS_S`] (non-cumulative counts; cumulated when shown).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    /// Observations above the last bound.
    above: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS_S.len()],
            above: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match LATENCY_BUCKETS_S.iter().position(|bound| seconds <= *bound) {
            Some(index) => self.buckets[index].fetch_add(1, Ordering::Relaxed),
            None => self.above.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Cumulative counts per bound, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS_S.len());
        let mut running = 0;
        for bucket in &self.buckets {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.above.load(Ordering::Relaxed);
        (cumulative, count, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// The token store operations timed for `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Committing a grant.
    Grant,
    /// Looking an order up.
    Lookup,
    /// Remembering a signed request's nonce.
    Nonce,
    /// The writer claiming queued tokens.
    Claim,
    /// The writer marking tokens credited.
    Complete,
    /// Retiring credited records.
    Retire,
}

impl StoreOp {
    /// Every operation, in the order of [`STORE_OPERATIONS`].
    pub const ALL: [StoreOp; 6] =
        [StoreOp::Grant, StoreOp::Lookup, StoreOp::Nonce, StoreOp::Claim, StoreOp::Complete, StoreOp::Retire];

    /// Its `op` label.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Grant => "grant",
            StoreOp::Lookup => "lookup",
            StoreOp::Nonce => "nonce",
            StoreOp::Claim => "claim",
            StoreOp::Complete => "complete",
            StoreOp::Retire => "retire",
        }
    }
}

/// One store operation's times and failures.
#[derive(Debug)]
pub struct OperationStats {
    /// How long each call took, answered or failed.
    pub seconds: Histogram,
    /// Calls that failed.
    pub errors: AtomicU64,
}

/// The token store operations of this process, by [`StoreOp`] (a process-wide figure, like the
/// `process_*` ones: every store the process opened counts here).
pub static STORE_OPERATIONS: [OperationStats; 6] =
    [const { OperationStats { seconds: Histogram::new(), errors: AtomicU64::new(0) } }; 6];

/// Runs a store call, timing it into [`STORE_OPERATIONS`] and counting its failure (from when
/// it is made, which its callers do as they await it).
///
/// Not an `async fn`: one would hold `call` twice, as its argument and as what it awaits, and a
/// grant's future, which holds this one, would grow by the store call's size (BENCHMARKS.md,
/// "Futures moved, not copied").
pub fn timed<T, E>(op: StoreOp, call: impl Future<Output = Result<T, E>>) -> impl Future<Output = Result<T, E>> {
    use futures_util::FutureExt as _;
    let started = std::time::Instant::now();
    call.map(move |answer| {
        let stats = &STORE_OPERATIONS[op as usize];
        stats.seconds.observe(started.elapsed());
        if answer.is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        answer
    })
}

/// The embedded journals whose syncs are timed for `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    /// The embedded token store's: a sync makes a group of grants durable before they are
    /// answered.
    Store,
    /// The embedded ledger's: a sync makes a batch of credits (or a withdrawal) durable.
    Ledger,
}

impl JournalKind {
    /// Every journal, in the order of [`JOURNAL_SYNCS`].
    pub const ALL: [JournalKind; 2] = [JournalKind::Store, JournalKind::Ledger];

    /// Its `journal` label.
    pub fn name(self) -> &'static str {
        match self {
            JournalKind::Store => "store",
            JournalKind::Ledger => "ledger",
        }
    }
}

/// How long each `fdatasync` of the embedded journals took, by [`JournalKind`] (process-wide,
/// like [`STORE_OPERATIONS`]). An embedded host answers a grant only after its group's sync.
pub static JOURNAL_SYNCS: [Histogram; 2] = [const { Histogram::new() }; 2];

/// Grant answers of one scene by outcome: `granted`, `replayed`, or the refusal's code.
#[derive(Debug, Default)]
pub struct SceneCounters {
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
}

impl SceneCounters {
    /// Counts one grant answer.
    pub fn count(&self, outcome: &'static str) {
        *self.outcomes.lock().entry(outcome).or_default() += 1;
    }

    /// The counts by outcome.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.outcomes.lock().clone()
    }
}

/// How a grant request came: alone or in a batch.
#[derive(Debug, Clone, Copy)]
pub enum GrantKind {
    /// `POST /v1/grants`.
    Single,
    /// `POST /v1/grants:batch`.
    Batch,
}

/// The host's own metrics (see the module docs).
#[derive(Debug, Default)]
pub struct Metrics {
    scenes: RwLock<HashMap<String, HashMap<String, Arc<SceneCounters>>>>,
    /// Grants naming a scene that does not exist.
    unknown_scene: Arc<SceneCounters>,
    single_seconds: Histogram,
    batch_seconds: Histogram,
}

impl Metrics {
    /// The counters of `activity_id`/`scene_id`; `exists` says whether that scene is loaded
    /// (asked only the first time), and grants to scenes that are not share one set.
    pub fn scene(&self, activity_id: &str, scene_id: &str, exists: impl FnOnce() -> bool) -> Arc<SceneCounters> {
        if let Some(counters) = self.scenes.read().get(activity_id).and_then(|scenes| scenes.get(scene_id)) {
            return counters.clone();
        }
        if !exists() {
            return self.unknown_scene.clone();
        }
        self.scenes.write().entry(activity_id.to_owned()).or_default().entry(scene_id.to_owned()).or_default().clone()
    }

    /// Times one grant request.
    pub fn grant_request(&self, kind: GrantKind, elapsed: Duration) {
        match kind {
            GrantKind::Single => self.single_seconds.observe(elapsed),
            GrantKind::Batch => self.batch_seconds.observe(elapsed),
        }
    }

    /// Grant answers by outcome over every scene, those that do not exist included.
    pub fn outcome_totals(&self) -> BTreeMap<&'static str, u64> {
        let mut totals = BTreeMap::new();
        for (_, _, outcomes) in self.scene_snapshots() {
            for (outcome, count) in outcomes {
                *totals.entry(outcome).or_default() += count;
            }
        }
        totals
    }

    /// Every scene's counters, by activity and scene.
    fn scene_snapshots(&self) -> Vec<(String, String, BTreeMap<&'static str, u64>)> {
        let scenes = self.scenes.read();
        let mut rows: Vec<_> = scenes
            .iter()
            .flat_map(|(activity, scenes)| {
                scenes.iter().map(move |(scene, counters)| (activity.clone(), scene.clone(), counters.snapshot()))
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        rows.push((String::new(), String::new(), self.unknown_scene.snapshot()));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves observations land in the first bucket whose bound holds them, cumulated when read.
    #[test]
    fn a_histogram_counts_each_observation_once_under_its_bound() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let (cumulative, count, sum) = histogram.snapshot();
        assert_eq!(cumulative[0], 1, "0.3 ms under 0.5 ms");
        assert_eq!(cumulative[3], 2, "3 ms under 5 ms");
        assert_eq!(*cumulative.last().unwrap(), 2, "60 s above every bound");
        assert_eq!(count, 3);
        assert!((sum - 60.0033).abs() < 1e-6, "{sum}");
    }

    // Proves a scene that does not exist gets no counters of its own.
    #[test]
    fn only_existing_scenes_get_counters_of_their_own() {
        let metrics = Metrics::default();
        metrics.scene("a", "s", || true).count("granted");
        metrics.scene("a", "s", || unreachable!("asked once")).count("granted");
        metrics.scene("a", "nope", || false).count("scene_not_found");
        let rows = metrics.scene_snapshots();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], ("a".into(), "s".into(), BTreeMap::from([("granted", 2)])));
        assert_eq!(rows[1].2, BTreeMap::from([("scene_not_found", 1)]));
    }
}
