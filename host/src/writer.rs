//! The throttled ledger writer: credits pending tokens to the ledger in batches, never faster
//! than a configured number of credits per second.
//!
//! One step: claim a batch from the front of the crediting queue (status 1 → 2), credit it to the
//! ledger in one transaction, mark it credited (2 → 8). A crash between any two of these leaves
//! tokens in processing; they stay at the front of the queue and the next step claims them
//! again. The ledger knows each order number once, so crediting again changes nothing.
//!
//! The cap is a window of borrowed tokens: each credit borrows one, and gives it back exactly
//! one second later. Unlike a refilling token bucket, whose capacity lets a burst exceed the rate
//! in any one second, this guarantees that no window of one second ever holds more than the cap,
//! while a steady stream still reaches the cap.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::capability::compensation::{self, RefusalOutcome, RefusalRetries};
use crate::clock::Clock;
use crate::config::SceneRegistry;
use crate::ledger::{Credit, CreditResult, Ledger, LedgerError};
use crate::store::{CapTake, FleetCap, GrantKey, GrantRecord, Store, StoreError};

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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { credits_per_second_max: None, batch_entries_max: CREDIT_BATCH_ENTRIES_MAX }
    }
}

/// The window length of the cap.
const WINDOW_MS: u64 = 1_000;

/// Counts credits over the last second.
#[derive(Debug)]
pub struct CreditLimiter {
    cap: Option<u64>,
    /// (time, credits) of recent batches; at most one entry per batch in the last second, so
    /// at most `cap` entries.
    recent: VecDeque<(u64, u64)>,
    in_window: u64,
}

impl CreditLimiter {
    /// A limiter allowing `cap` credits in any one second (`None`: unlimited).
    pub fn new(cap: Option<u64>) -> CreditLimiter {
        CreditLimiter { cap, recent: VecDeque::new(), in_window: 0 }
    }

    /// The cap (`None`: unlimited).
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    fn forget_before(&mut self, now_ms: u64) {
        while let Some(&(time_ms, count)) = self.recent.front() {
            if time_ms + WINDOW_MS > now_ms {
                break;
            }
            self.recent.pop_front();
            self.in_window -= count;
        }
    }

    /// How many credits may start now.
    pub fn allowance(&mut self, now_ms: u64) -> u64 {
        let Some(cap) = self.cap else { return u64::MAX };
        self.forget_before(now_ms);
        cap.saturating_sub(self.in_window)
    }

    /// Records `count` credits made at `now_ms`.
    pub fn record(&mut self, now_ms: u64, count: u64) {
        if self.cap.is_none() || count == 0 {
            return;
        }
        self.forget_before(now_ms);
        self.recent.push_back((now_ms, count));
        self.in_window += count;
    }

    /// Moves the newest batch's stamp to `commit_ms`, when the ledger committed it: the cap bounds
    /// credits by when they reach the ledger, so a slow batch cannot bunch up with the next one.
    pub fn restamp_last(&mut self, commit_ms: u64) {
        if let Some(last) = self.recent.back_mut() {
            last.0 = last.0.max(commit_ms);
        }
    }

    /// Milliseconds until some allowance comes back.
    pub fn wait_ms(&self, now_ms: u64) -> u64 {
        self.recent.front().map_or(0, |&(time_ms, _)| (time_ms + WINDOW_MS).saturating_sub(now_ms))
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

/// The credits-per-second cap: this host's window over the embedded store, the fleet's window
/// in Redis over the shared store (every host's writer draws from it).
enum CreditCap {
    Local(Mutex<CreditLimiter>),
    Fleet { cap: u64, window: FleetCap },
}

/// Credits the crediting queue to the ledger.
pub struct LedgerWriter {
    store: Store,
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    cap: CreditCap,
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
            _ => CreditCap::Local(Mutex::new(CreditLimiter::new(config.credits_per_second_max))),
        };
        LedgerWriter {
            store,
            ledger,
            clock,
            cap,
            batch_entries_max: config.batch_entries_max.max(1),
            scenes: None,
            retries: RefusalRetries::default(),
            stats: WriterStats::default(),
        }
    }

    /// The credits-per-second cap it keeps (the fleet's on a shared store), if any.
    pub fn cap_per_second(&self) -> Option<u64> {
        match &self.cap {
            CreditCap::Fleet { cap, .. } => Some(*cap),
            CreditCap::Local(limiter) => limiter.lock().cap(),
        }
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

    /// Credits one batch from the front of the queue, as far as the cap allows now.
    pub async fn step(&self) -> Result<StepReport, WriterError> {
        self.requeue_due().await?;
        match &self.cap {
            CreditCap::Local(limiter) => {
                let now_ms = self.clock.monotonic_ms();
                let allowance = {
                    let mut limiter = limiter.lock();
                    let allowance = limiter.allowance(now_ms);
                    if allowance == 0 {
                        let wait_ms = limiter.wait_ms(now_ms).max(1);
                        return Ok(StepReport { throttled_ms: Some(wait_ms), ..StepReport::default() });
                    }
                    allowance
                };
                let max = (self.batch_entries_max as u64).min(allowance) as usize;
                let claimed = self.store.claim_queue(max).await?;
                if claimed.is_empty() {
                    return Ok(StepReport::default());
                }
                // Reserve the allowance now; the stamp moves to the ledger's commit time below.
                limiter.lock().record(now_ms, claimed.len() as u64);
                let claimed_count = claimed.len();
                let outcome = self.credit_claimed(claimed).await;
                limiter.lock().restamp_last(self.clock.monotonic_ms());
                Ok(StepReport { claimed: claimed_count, applied: outcome?, throttled_ms: None })
            }
            CreditCap::Fleet { cap, window } => {
                // An empty queue must not hold the fleet's allowance: look before reserving.
                if self.store.queue_len().await? == 0 {
                    return Ok(StepReport::default());
                }
                let (taken, ticket) = match window.take(*cap, self.batch_entries_max as u64).await? {
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
        let credits = claimed
            .iter()
            .map(|record| Credit {
                activity_id: record.activity_id.clone(),
                order_no: record.order_no.clone(),
                scene_id: record.scene_id.clone(),
                act_id: record.act_id,
                amount_cents: record.amount_cents,
                open_time_ms: record.open_time_ms,
                memo: record.bill_copy.clone(),
                token: record.token.clone(),
            })
            .collect();
        let started = std::time::Instant::now();
        let results = self.ledger.credit_batch(credits).await;
        self.stats.ledger_batch_seconds.observe(started.elapsed());
        if results.is_err() {
            self.stats.ledger_batch_errors.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the limiter never lets any one-second window hold more than the cap, whatever the
    // spacing of the requests, and still reaches the cap in a steady stream.
    #[test]
    fn limiter_holds_every_window_to_the_cap() {
        let cap = 100;
        let mut limiter = CreditLimiter::new(Some(cap));
        let mut granted = Vec::new();
        let mut now = 0u64;
        let mut rng = fastrand::Rng::with_seed(7);
        while now < 10_000 {
            let want = rng.u64(1..40);
            let take = want.min(limiter.allowance(now));
            limiter.record(now, take);
            if take > 0 {
                granted.push((now, take));
            }
            now += rng.u64(0..30);
        }
        for (start, _) in &granted {
            let in_window: u64 =
                granted.iter().filter(|(t, _)| *t >= *start && *t < start + WINDOW_MS).map(|(_, n)| n).sum();
            assert!(in_window <= cap, "{in_window} credits in the second from {start}");
        }
        let total: u64 = granted.iter().map(|(_, n)| n).sum();
        assert!(total >= cap * 9, "steady demand reached only {total} in 10 s");
    }
}
