//! The throttled ledger writer: credits pending tokens to the ledger in batches, never faster
//! than a configured number of credits per second, and slower while the ledger struggles.
//!
//! One step: claim a batch from the front of the crediting queue (status 1 → 2), credit it to the
//! ledger in one transaction, mark it credited (2 → 8). A crash between any two of these leaves
//! tokens in processing; they stay at the front of the queue and the next step claims them
//! again. The ledger knows each order number once, so crediting again changes nothing.
//!
//! - [`limiter`]: the cap, a one-second window no second of which ever holds more credits.
//! - [`steward`]: the payment steward, which sets this host's window below the cap while the
//!   ledger's batches take far longer than usual or fail, and lets it climb back after.
//!
//! On a shared (Redis) store every host also takes its credits from the fleet's window in Redis
//! under the fleet cap, so the steward's lower limits never let the fleet exceed it.

pub mod limiter;
pub mod steward;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::capability::compensation::{self, RefusalOutcome, RefusalRetries};
use crate::clock::Clock;
use crate::config::SceneRegistry;
use crate::ledger::{Credit, CreditResult, Ledger, LedgerError};
use crate::store::{CapTake, FleetCap, GrantKey, GrantRecord, Store, StoreError};

pub use limiter::CreditLimiter;
pub use steward::{LimitReason, Steward};

/// The most tokens credited in one ledger transaction: large enough to amortise the commit,
/// small enough that one batch holds the limiter's window only briefly.
pub const CREDIT_BATCH_ENTRIES_MAX: usize = 512;

/// How long the writer sleeps when the queue is empty; a pending token waits at most this long
/// before a writer looks at it.
const IDLE_POLL_MS: u64 = 20;

/// How long the writer waits after a batch that was not full, so that the next one gathers more
/// tokens. Every ledger transaction costs a commit (an fsync, or a PostgreSQL round trip and
/// WAL flush) whatever its size; under a steady rain a writer that went straight back would
/// credit many small batches and spend most of its time committing (profiled: 40 % of the
/// embedded host's CPU at 10k grants/s). A token waits at most this much longer; a backlog,
/// which fills whole batches, is drained without pause.
const BATCH_GATHER_MS: u64 = 10;

/// The writer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Credits per second at most, fleet-wide for this writer; `None` for no cap.
    pub credits_per_second_max: Option<u64>,
    /// Tokens per ledger transaction.
    pub batch_entries_max: usize,
    /// Whether the payment steward adapts the rate to the ledger's health ([`steward`]);
    /// `false` credits at the cap whatever the ledger does (`serve --fixed-rate`).
    pub adaptive: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { credits_per_second_max: None, batch_entries_max: CREDIT_BATCH_ENTRIES_MAX, adaptive: true }
    }
}

/// Why a writer step failed; nothing is lost, the step is retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepReport {
    /// Tokens claimed from the queue.
    pub claimed: usize,
    /// Ledger entries written now (the rest were already there).
    pub applied: usize,
    /// When the cap stopped the step: milliseconds until it may go on.
    pub throttled_ms: Option<u64>,
}

/// Totals since start, for `/healthz` and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Ledger entries written by this writer (queue and forced).
    pub applied: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Failed steps.
    pub failures: AtomicU64,
    /// Tokens the ledger refused and that were parked.
    pub parked: AtomicU64,
    /// Parked tokens queued again because a compensation plugin said to retry.
    pub compensation_retries: AtomicU64,
    /// Refused tokens a compensation plugin gave up on (they stay parked and owed).
    pub compensation_alerts: AtomicU64,
    /// How long each ledger batch took, answered or failed.
    pub ledger_batch_seconds: crate::metrics::Histogram,
    /// Ledger batches that failed.
    pub ledger_batch_errors: AtomicU64,
}

/// Where the cap is kept: in this host's window alone over the embedded store, and also in the
/// fleet's window in Redis over the shared store (every host's writer draws from it).
enum CreditCap {
    Local,
    Fleet { cap: u64, window: FleetCap },
}

/// Credits the crediting queue to the ledger.
pub struct LedgerWriter {
    store: Store,
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    cap: CreditCap,
    /// This host's window, at the steward's limit (which is the cap unless the ledger struggles).
    window: Mutex<CreditLimiter>,
    steward: Mutex<Steward>,
    batch_entries_max: usize,
    /// The scenes, for their compensation plugins; `None` when built without them.
    scenes: Option<Arc<SceneRegistry>>,
    /// Compensation decisions about refused tokens.
    retries: RefusalRetries,
    /// Totals since start.
    pub stats: WriterStats,
}

impl LedgerWriter {
    /// A writer over `store` and `ledger`.
    pub fn new(store: Store, ledger: Ledger, clock: Arc<dyn Clock>, config: WriterConfig) -> LedgerWriter {
        let cap = match (store.fleet_cap(), config.credits_per_second_max) {
            (Some(window), Some(cap)) => CreditCap::Fleet { cap, window },
            _ => CreditCap::Local,
        };
        LedgerWriter {
            store,
            ledger,
            clock,
            cap,
            window: Mutex::new(CreditLimiter::new(config.credits_per_second_max)),
            steward: Mutex::new(Steward::new(config.credits_per_second_max, config.adaptive)),
            batch_entries_max: config.batch_entries_max.max(1),
            scenes: None,
            retries: RefusalRetries::default(),
            stats: WriterStats::default(),
        }
    }

    /// The credits-per-second cap it keeps (the fleet's on a shared store), if any: the
    /// configured one, whatever the steward's limit is now.
    pub fn cap_per_second(&self) -> Option<u64> {
        self.steward.lock().cap_per_s()
    }

    /// The limit it credits under now (`None`: none) and why it is there.
    pub fn limit(&self) -> (Option<f64>, LimitReason) {
        let steward = self.steward.lock();
        (steward.limit_per_s(), steward.reason(self.clock.monotonic_ms()))
    }

    /// How many times the steward has lowered the limit since start.
    pub fn backoffs(&self) -> u64 {
        self.steward.lock().backoffs()
    }

    /// The writer, asking the scenes' compensation plugins about tokens the ledger refuses.
    #[must_use]
    pub fn with_scenes(mut self, scenes: Arc<SceneRegistry>) -> LedgerWriter {
        self.scenes = Some(scenes);
        self
    }

    /// Puts back in the queue the parked tokens whose compensation retry time has come.
    async fn requeue_due(&self) -> Result<(), WriterError> {
        let now_ms = self.clock.monotonic_ms();
        let due = self.retries.due(now_ms);
        if !due.is_empty() {
            match self.store.requeue_parked_keys(due.clone()).await {
                Ok(moved) => {
                    self.stats.compensation_retries.fetch_add(moved, Ordering::Relaxed);
                }
                Err(error) => {
                    // Not lost: due again on the next step.
                    self.retries.retry_at(&due, now_ms);
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }

    /// Credits one batch from the front of the queue, as far as the cap and the steward allow
    /// now.
    pub async fn step(&self) -> Result<StepReport, WriterError> {
        self.requeue_due().await?;
        let now_ms = self.clock.monotonic_ms();
        let allowance = {
            let mut window = self.window.lock();
            window.set_cap(self.steward.lock().limit_whole());
            let allowance = window.allowance(now_ms);
            if allowance == 0 {
                let wait_ms = window.wait_ms(now_ms).max(1);
                return Ok(StepReport { throttled_ms: Some(wait_ms), ..StepReport::default() });
            }
            allowance
        };
        let want = (self.batch_entries_max as u64).min(allowance);
        match &self.cap {
            CreditCap::Local => {
                let claimed = self.store.claim_queue(want as usize).await?;
                if claimed.is_empty() {
                    return Ok(StepReport::default());
                }
                // Reserve the allowance now; the stamp moves to the ledger's commit time below.
                self.window.lock().record(now_ms, claimed.len() as u64);
                let claimed_count = claimed.len();
                let outcome = self.credit_claimed(claimed).await;
                self.window.lock().restamp_last(self.clock.monotonic_ms());
                Ok(StepReport { claimed: claimed_count, applied: outcome?, throttled_ms: None })
            }
            CreditCap::Fleet { cap, window } => {
                // An empty queue must not hold the fleet's allowance: look before reserving.
                if self.store.queue_len().await? == 0 {
                    return Ok(StepReport::default());
                }
                let (taken, ticket) = match window.take(*cap, want).await? {
                    CapTake::Wait { wait_ms } => {
                        return Ok(StepReport { throttled_ms: Some(wait_ms), ..StepReport::default() });
                    }
                    CapTake::Taken { taken, ticket } => (taken, ticket),
                };
                let claimed = match self.store.claim_queue(taken as usize).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        let _ = window.settle(&ticket, 0).await;
                        return Err(error.into());
                    }
                };
                let claimed_count = claimed.len();
                self.window.lock().record(now_ms, claimed_count as u64);
                let outcome = self.credit_claimed(claimed).await;
                // Counted at the ledger's commit; a failed batch still counts (it may have
                // committed before the answer was lost).
                window.settle(&ticket, claimed_count as u64).await?;
                Ok(StepReport { claimed: claimed_count, applied: outcome?, throttled_ms: None })
            }
        }
    }

    /// Credits the user's pending tokens now, ahead of the queue and outside the cap: a user
    /// about to withdraw must see the whole balance. Returns how many entries were written.
    /// Parked tokens are tried again here too; the ledger still refuses what it cannot take.
    pub async fn credit_user_now(&self, act_id: i64) -> Result<usize, WriterError> {
        let unsettled = self.store.unsettled_for_user(act_id).await?;
        if unsettled.is_empty() {
            return Ok(0);
        }
        let claimed = self.store.claim_keys(unsettled.iter().map(GrantRecord::key).collect()).await?;
        self.credit_claimed(claimed).await
    }

    /// Credits every pending token of the user now, in passes of `USER_UNSETTLED_READ_MAX` for a
    /// user who holds more than one read returns (at most `passes_max` of them): what a withdrawal
    /// or a group red packet's send does before it debits the wallet.
    pub async fn credit_user_fully_now(&self, act_id: i64, passes_max: usize) -> Result<(), WriterError> {
        for _ in 0..passes_max {
            match self.credit_user_now(act_id).await {
                Err(WriterError::Store(crate::store::StoreError::TooManyUnsettled { .. })) => {
                    self.credit_user_prefix_now(act_id).await?;
                }
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }

    /// Credits the first `USER_UNSETTLED_READ_MAX` of a user's pending tokens, for users who
    /// have more than one read returns.
    pub async fn credit_user_prefix_now(&self, act_id: i64) -> Result<usize, WriterError> {
        let keys = self.store.unsettled_keys_prefix(act_id).await?;
        let claimed = self.store.claim_keys(keys).await?;
        self.credit_claimed(claimed).await
    }

    /// Credits the tokens with these keys now, outside the cap (a reconciliation repair), in
    /// batches of the writer's batch size. Crediting is idempotent: a token the writer credits
    /// at the same time is written to the ledger once.
    pub async fn credit_keys_now(&self, keys: Vec<GrantKey>) -> Result<usize, WriterError> {
        let mut applied = 0;
        for chunk in keys.chunks(self.batch_entries_max) {
            let claimed = self.store.claim_keys(chunk.to_vec()).await?;
            applied += self.credit_claimed(claimed).await?;
        }
        Ok(applied)
    }

    async fn credit_claimed(&self, claimed: Vec<GrantRecord>) -> Result<usize, WriterError> {
        if claimed.is_empty() {
            return Ok(0);
        }
        let credits = claimed.iter().map(Credit::of).collect();
        let started = std::time::Instant::now();
        let results = self.ledger.credit_batch(credits).await;
        let elapsed = started.elapsed();
        self.stats.ledger_batch_seconds.observe(elapsed);
        let now_ms = self.clock.monotonic_ms();
        match &results {
            Ok(_) => self.steward.lock().observe(now_ms, claimed.len(), elapsed.as_secs_f64() * 1_000.0),
            Err(_) => {
                self.stats.ledger_batch_errors.fetch_add(1, Ordering::Relaxed);
                self.steward.lock().observe_error(now_ms);
            }
        }
        let results = results?;
        let mut done = Vec::with_capacity(claimed.len());
        let mut refused = Vec::new();
        let mut refused_records = Vec::new();
        let mut applied = 0;
        for (record, result) in claimed.iter().zip(results) {
            match result {
                CreditResult::Applied => {
                    applied += 1;
                    done.push(record.key());
                }
                CreditResult::AlreadyCredited => done.push(record.key()),
                // Still owed: parked off the queue's front so it blocks nobody, shown by
                // reconciliation, and queued again when the activity is funded.
                CreditResult::BudgetExhausted | CreditResult::Conflict => {
                    refused.push(record.key());
                    refused_records
                        .push((record, if result == CreditResult::Conflict { "conflict" } else { "budget_exhausted" }));
                }
            }
        }
        self.retries.settled(&done);
        self.store.complete(done).await?;
        if !refused.is_empty() {
            self.stats.parked.fetch_add(refused.len() as u64, Ordering::Relaxed);
            self.store.park(refused).await?;
            self.compensate(&refused_records);
        }
        self.stats.applied.fetch_add(applied as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(applied)
    }

    /// Asks each refused token's scene's compensation plugin what to do.
    fn compensate(&self, refused: &[(&GrantRecord, &str)]) {
        let Some(scenes) = &self.scenes else { return };
        let snapshot = scenes.snapshot();
        for (record, code) in refused {
            let scene = snapshot.scene(&record.activity_id, &record.scene_id);
            let outcome = self.retries.on_refused(
                scene.map(|s| s.as_ref()),
                record,
                code,
                self.clock.now_ms(),
                self.clock.monotonic_ms(),
            );
            if let RefusalOutcome::Alert(reason) = outcome {
                self.stats.compensation_alerts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(order_no = %record.order_no, activity = %record.activity_id, %reason,
                    "compensation gave up on a refused token; it stays parked and owed");
            }
        }
    }

    /// Runs steps until `shutdown` turns true, sleeping when idle or throttled and backing off
    /// after failures.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let sleep_ms = match self.step().await {
                Ok(report) => {
                    failures = 0;
                    match report {
                        StepReport { throttled_ms: Some(wait_ms), .. } => wait_ms,
                        StepReport { claimed: 0, .. } => IDLE_POLL_MS,
                        StepReport { claimed, .. } if claimed < self.batch_entries_max => BATCH_GATHER_MS,
                        _ => continue,
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let backoff = compensation::retry_after_ms(&compensation::DEFAULT_SCHEDULE, failures);
                    tracing::warn!(%error, backoff_ms = backoff, "ledger writer step failed; retrying");
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
