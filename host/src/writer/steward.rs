//! The payment steward (seed 000): the writer's rate follows the ledger's health.
//!
//! Within `--credits-per-second`, the writer's limit moves the way TCP's congestion window and
//! Vector's adaptive request concurrency move, additive increase and multiplicative decrease on a
//! latency signal. Each credit batch's time is compared with what batches of its size usually
//! take (a baseline per size class, [`SIZE_CLASSES`]). When the recent batches take well over
//! their baseline ([`OVERLOAD_RATIO`] times it, and [`OVERLOAD_EXCESS_MS`] more), or a batch
//! fails, the limit drops to [`DECREASE_FACTOR`] of the rate the writer reached, at most once
//! per [`DECREASE_INTERVAL_MS`]. While batches take about their baseline, the limit climbs back
//! by [`INCREASE_SHARE_PER_S`] of its reference per second (the reference is the cap, or, for an
//! uncapped writer, the fastest rate it reached), and an uncapped writer is uncapped again once
//! its limit is twice that rate.
//!
//! Why latency and not only errors: a ledger that slows down is queueing. Pushing as hard as
//! before only lengthens its queue for everyone else who uses it, until timeouts turn slowness
//! into errors; the seed's steward throttles traffic toward a struggling bank before it falls
//! over. Why a baseline per batch size: a batch of 512 entries takes longer than a batch of 3,
//! and an idle writer credits small batches. Why the baseline drifts up slowly: a ledger whose
//! new normal is slower (a busier server, a heavier trigger) must not hold the writer at its
//! floor for ever; after about [`BASELINE_RISE_MS`] of slow batches the slower time is the
//! baseline and the limit climbs again.
//!
//! The steward only ever lowers the writer's rate below the cap: on a fleet every host's writer
//! still takes its credits from the fleet-wide window, so the fleet never exceeds the fleet cap.
//! Forced credits (a withdrawal, a group packet's send, a repair) never wait for it; their
//! batches are observed like any other, since they tell the ledger's health just as well.
//!
//! It is a plain state machine fed with the time, so tests drive it with a hand-moved clock.

use std::collections::VecDeque;

/// Batch size classes with a baseline each: sizes 1, 2–3, 4–7, … 512–1023 and above.
pub const SIZE_CLASSES: usize = 11;

/// The time constant of a baseline's rise: batches slower than their baseline move it up by
/// the share of this time since the class's previous batch (at most [`BASELINE_RISE_STEP_MS`]),
/// whatever the batch rate. The steward answers a *rise* in batch time, as Vector's adaptive
/// concurrency compares each round trip with the recent ones: a step up is acted on for a few
/// seconds (two or three halvings), then it is the norm, and only a further rise (the queue the
/// writer's own pace builds) backs off again. With a baseline that never moved, a ledger that is
/// merely slower would hold the writer at its floor; measured with 30 s here, the steward halved
/// the limit nine times to 80/s on a ledger whose pace no longer depended on it
/// (BENCHMARKS.md, "The payment steward").
pub const BASELINE_RISE_MS: f64 = 5_000.0;

/// The longest time one batch's rise counts.
pub const BASELINE_RISE_STEP_MS: u64 = 1_000;

/// How far one batch faster than its baseline moves the baseline down: quickly, so that a
/// ledger that recovers, or a baseline learnt on a cold start, is seen at once.
pub const BASELINE_FALL_WEIGHT: f64 = 0.2;

/// The weight of the newest batch in the recent latency figures: a few batches in a row must be
/// slow before the steward acts, so one preempted batch on a busy machine does not.
pub const RECENT_WEIGHT: f64 = 0.3;

/// Recent batches this many times slower than their baseline mean the ledger is struggling.
pub const OVERLOAD_RATIO: f64 = 2.0;

/// …and at least this many milliseconds slower: a ledger in memory whose 1 ms batches take 3 ms
/// on a loaded machine is not struggling.
pub const OVERLOAD_EXCESS_MS: f64 = 100.0;

/// Recent batches at most this many times their baseline (or less than half the excess above
/// it) mean the ledger is healthy and the limit may climb; in between, the limit holds.
pub const HEALTHY_RATIO: f64 = 1.5;

/// What a back-off keeps of the rate the writer reached (the classic halving of AIMD).
pub const DECREASE_FACTOR: f64 = 0.5;

/// At most one back-off per interval: a back-off shows in the batches that follow it, not in the
/// ones already in flight.
pub const DECREASE_INTERVAL_MS: u64 = 1_000;

/// The share of the reference the limit climbs per second of healthy batches: from a halving
/// back to the cap in five seconds.
pub const INCREASE_SHARE_PER_S: f64 = 0.1;

/// The longest time one observation's climb counts: after a quiet spell the limit climbs as if
/// one second had passed, not all of it at once.
pub const INCREASE_ELAPSED_MS_MAX: u64 = 1_000;

/// The lowest limit: whatever the ledger's state, the queue keeps draining, slowly (a failing
/// ledger's steps are also spaced by the writer's failure back-off). A cap below it is its own
/// floor: the steward never lifts the limit above the cap.
pub const LIMIT_FLOOR_PER_S: f64 = 50.0;

/// How long after a back-off the limit's reason reads `backing_off` rather than `adaptive`.
pub const BACKING_OFF_SHOWN_MS: u64 = 5_000;

/// The window of the rate the writer reached.
const RATE_WINDOW_MS: u64 = 1_000;

/// Batches remembered for the rate: one per batch within [`RATE_WINDOW_MS`]; past the bound,
/// the newest entry absorbs the count.
const RATE_SAMPLES_MAX: usize = 4_096;

/// Why the limit is where it is: the `reason` label of `hongbao_writer_limit_credits_per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitReason {
    /// At `--credits-per-second`.
    Cap,
    /// No cap and no trouble seen.
    Uncapped,
    /// Below the cap, climbing back while the ledger is healthy.
    Adaptive,
    /// Lowered within the last [`BACKING_OFF_SHOWN_MS`].
    BackingOff,
}

impl LimitReason {
    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            LimitReason::Cap => "cap",
            LimitReason::Uncapped => "uncapped",
            LimitReason::Adaptive => "adaptive",
            LimitReason::BackingOff => "backing_off",
        }
    }
}

/// The latency a batch size class usually has.
#[derive(Debug, Clone, Copy, Default)]
struct Baseline {
    /// `None` until the class's first batch.
    latency_ms: Option<f64>,
    /// When the class's previous batch was seen.
    seen_ms: u64,
}

/// The steward's state (see the module docs).
#[derive(Debug)]
pub struct Steward {
    /// The cap (`None`: uncapped).
    ceiling_per_s: Option<f64>,
    /// Whether it adapts at all; a fixed-rate writer keeps the cap.
    adaptive: bool,
    /// The current limit; `None` only while uncapped and untroubled. Never above the cap.
    limit_per_s: Option<f64>,
    baselines: [Baseline; SIZE_CLASSES],
    /// Smoothed ratio of recent batch times to their baselines.
    recent_ratio: f64,
    /// Smoothed milliseconds recent batches took above their baselines.
    recent_excess_ms: f64,
    /// When the limit last moved up (or was set), on the monotonic clock.
    last_climb_ms: u64,
    /// When the limit last dropped.
    last_decrease_ms: Option<u64>,
    /// (time, credits) of recent batches, for the rate reached.
    recent_credits: VecDeque<(u64, u64)>,
    recent_credits_sum: u64,
    /// The fastest rate reached over a window, the reference of an uncapped writer.
    peak_rate_per_s: f64,
    /// Back-offs so far.
    backoffs: u64,
}

impl Steward {
    /// A steward under `cap` credits per second (`None`: uncapped); `adaptive: false` keeps the
    /// limit at the cap whatever the ledger does (the fixed-rate writer, for comparisons).
    pub fn new(cap: Option<u64>, adaptive: bool) -> Steward {
        let ceiling_per_s = cap.map(|cap| cap as f64);
        Steward {
            ceiling_per_s,
            adaptive,
            limit_per_s: ceiling_per_s,
            baselines: [Baseline::default(); SIZE_CLASSES],
            recent_ratio: 1.0,
            recent_excess_ms: 0.0,
            last_climb_ms: 0,
            last_decrease_ms: None,
            recent_credits: VecDeque::new(),
            recent_credits_sum: 0,
            peak_rate_per_s: 0.0,
            backoffs: 0,
        }
    }

    /// The limit now in credits per second (`None`: none).
    pub fn limit_per_s(&self) -> Option<f64> {
        self.limit_per_s
    }

    /// The cap it keeps under (`None`: uncapped).
    pub fn cap_per_s(&self) -> Option<u64> {
        self.ceiling_per_s.map(|cap| cap as u64)
    }

    /// The limit as a whole number of credits per second for the window (at least 1).
    pub fn limit_whole(&self) -> Option<u64> {
        self.limit_per_s.map(|limit| (limit.round() as u64).max(1))
    }

    /// Why the limit is where it is.
    pub fn reason(&self, now_ms: u64) -> LimitReason {
        match (self.limit_per_s, self.ceiling_per_s) {
            (None, _) => LimitReason::Uncapped,
            (Some(limit), Some(ceiling)) if limit >= ceiling => LimitReason::Cap,
            _ if self.last_decrease_ms.is_some_and(|at| now_ms.saturating_sub(at) < BACKING_OFF_SHOWN_MS) => {
                LimitReason::BackingOff
            }
            _ => LimitReason::Adaptive,
        }
    }

    /// Back-offs since start.
    pub fn backoffs(&self) -> u64 {
        self.backoffs
    }

    /// The baseline batch time of `entries`-sized batches, in milliseconds, once one was seen.
    pub fn baseline_ms(&self, entries: usize) -> Option<f64> {
        self.baselines[size_class(entries)].latency_ms
    }

    /// A batch of `entries` credits that the ledger answered in `latency_ms`, at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, entries: usize, latency_ms: f64) {
        self.count_credits(now_ms, entries as u64);
        let baseline = &mut self.baselines[size_class(entries)];
        let since_ms = now_ms.saturating_sub(baseline.seen_ms).min(BASELINE_RISE_STEP_MS);
        baseline.seen_ms = now_ms;
        let Some(base_ms) = baseline.latency_ms else {
            baseline.latency_ms = Some(latency_ms);
            self.climb(now_ms);
            return;
        };
        // A floor under the baseline keeps the ratio meaningful for sub-millisecond batches.
        let base_ms = base_ms.max(0.1);
        let ratio = latency_ms / base_ms;
        let excess_ms = (latency_ms - base_ms).max(0.0);
        self.recent_ratio += RECENT_WEIGHT * (ratio - self.recent_ratio);
        self.recent_excess_ms += RECENT_WEIGHT * (excess_ms - self.recent_excess_ms);
        let weight = if latency_ms > base_ms { since_ms as f64 / BASELINE_RISE_MS } else { BASELINE_FALL_WEIGHT };
        baseline.latency_ms = Some(base_ms + weight * (latency_ms - base_ms));
        if self.recent_ratio >= OVERLOAD_RATIO && self.recent_excess_ms >= OVERLOAD_EXCESS_MS {
            self.decrease(now_ms);
        } else if self.recent_ratio <= HEALTHY_RATIO || self.recent_excess_ms <= OVERLOAD_EXCESS_MS / 2.0 {
            self.climb(now_ms);
        }
    }

    /// A batch the ledger failed, at `now_ms`.
    pub fn observe_error(&mut self, now_ms: u64) {
        self.decrease(now_ms);
    }

    fn count_credits(&mut self, now_ms: u64, credits: u64) {
        while let Some(&(at, count)) = self.recent_credits.front() {
            if at + RATE_WINDOW_MS > now_ms {
                break;
            }
            self.recent_credits.pop_front();
            self.recent_credits_sum -= count;
        }
        let full = self.recent_credits.len() >= RATE_SAMPLES_MAX;
        match self.recent_credits.back_mut() {
            Some(last) if full => last.1 += credits,
            _ => self.recent_credits.push_back((now_ms, credits)),
        }
        self.recent_credits_sum += credits;
        let rate = self.rate_per_s();
        if self.limit_per_s.is_none() {
            self.peak_rate_per_s = self.peak_rate_per_s.max(rate);
        }
    }

    /// Credits over the last window, per second.
    fn rate_per_s(&self) -> f64 {
        self.recent_credits_sum as f64 * 1_000.0 / RATE_WINDOW_MS as f64
    }

    /// The figure the limit climbs by and returns to: the cap, or the fastest rate an uncapped
    /// writer reached.
    fn reference_per_s(&self) -> f64 {
        self.ceiling_per_s.unwrap_or(self.peak_rate_per_s.max(LIMIT_FLOOR_PER_S))
    }

    /// The lowest limit: [`LIMIT_FLOOR_PER_S`], or the cap when it is lower.
    fn floor_per_s(&self) -> f64 {
        self.ceiling_per_s.map_or(LIMIT_FLOOR_PER_S, |ceiling| ceiling.min(LIMIT_FLOOR_PER_S))
    }

    fn decrease(&mut self, now_ms: u64) {
        if !self.adaptive || self.last_decrease_ms.is_some_and(|at| now_ms.saturating_sub(at) < DECREASE_INTERVAL_MS) {
            return;
        }
        let floor = self.floor_per_s();
        let reached = match self.limit_per_s {
            Some(limit) => limit.min(self.rate_per_s().max(floor)),
            None => self.rate_per_s(),
        };
        self.limit_per_s = Some((reached * DECREASE_FACTOR).max(floor));
        self.last_decrease_ms = Some(now_ms);
        self.last_climb_ms = now_ms;
        self.backoffs += 1;
    }

    fn climb(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_climb_ms).min(INCREASE_ELAPSED_MS_MAX);
        self.last_climb_ms = now_ms;
        let Some(limit) = self.limit_per_s else { return };
        let reference = self.reference_per_s();
        let raised = limit + INCREASE_SHARE_PER_S * reference * elapsed_ms as f64 / 1_000.0;
        self.limit_per_s = match self.ceiling_per_s {
            Some(ceiling) => Some(raised.min(ceiling)),
            None if raised >= 2.0 * reference => None,
            None => Some(raised),
        };
    }
}

/// The size class of a batch of `entries`: ⌊log2⌋, the last class taking every larger size.
fn size_class(entries: usize) -> usize {
    (entries.max(1).ilog2() as usize).min(SIZE_CLASSES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of batches of `entries` every `every_ms`, each taking `latency_ms`,
    /// starting at `*now_ms`, and returns the lowest limit seen.
    fn run(
        steward: &mut Steward,
        now_ms: &mut u64,
        seconds: u64,
        every_ms: u64,
        entries: usize,
        latency_ms: f64,
    ) -> f64 {
        let mut lowest = f64::INFINITY;
        let end = *now_ms + seconds * 1_000;
        while *now_ms < end {
            *now_ms += every_ms;
            steward.observe(*now_ms, entries, latency_ms);
            lowest = lowest.min(steward.limit_per_s().unwrap_or(f64::INFINITY));
        }
        lowest
    }

    // Proves the steward backs off when batches take far longer than their baseline, never below
    // the floor, says so, and climbs back to the cap once the ledger is healthy again.
    #[test]
    fn backs_off_on_slow_batches_and_climbs_back_to_the_cap() {
        let mut steward = Steward::new(Some(10_000), true);
        let mut now_ms = 1_000_000;
        // Healthy: 100 batches of 100 a second at 20 ms each.
        assert_eq!(run(&mut steward, &mut now_ms, 5, 10, 100, 20.0), 10_000.0);
        assert_eq!(steward.reason(now_ms), LimitReason::Cap);
        // The ledger slows to 400 ms a batch.
        let lowest = run(&mut steward, &mut now_ms, 3, 10, 100, 400.0);
        assert!(lowest < 10_000.0 * 0.6, "backed off to {lowest}");
        assert!(lowest >= LIMIT_FLOOR_PER_S);
        assert!(steward.backoffs() >= 1);
        assert_eq!(steward.reason(now_ms), LimitReason::BackingOff);
        // Healthy again: the limit climbs back to the cap, a tenth of it a second.
        run(&mut steward, &mut now_ms, 12, 10, 100, 20.0);
        assert_eq!(steward.limit_per_s(), Some(10_000.0));
        assert_eq!(steward.reason(now_ms), LimitReason::Cap);
    }

    // Proves one slow batch on a busy machine moves nothing, nor do slow batches of a fast
    // ledger that stay within the excess that counts.
    #[test]
    fn a_lone_slow_batch_or_a_small_excess_is_not_an_overload() {
        let mut steward = Steward::new(Some(1_000), true);
        let mut now_ms = 0;
        run(&mut steward, &mut now_ms, 2, 10, 8, 1.0);
        now_ms += 10;
        steward.observe(now_ms, 8, 250.0);
        run(&mut steward, &mut now_ms, 1, 10, 8, 1.0);
        // An in-memory ledger at 1 ms slowed to 30 ms: thirty times, but 29 ms.
        run(&mut steward, &mut now_ms, 2, 10, 8, 30.0);
        assert_eq!(steward.backoffs(), 0);
        assert_eq!(steward.limit_per_s(), Some(1_000.0));
    }

    // Proves a failed batch backs off at once, at most once per interval however many fail.
    #[test]
    fn errors_back_off_once_per_interval() {
        let mut steward = Steward::new(Some(2_000), true);
        let mut now_ms = 0;
        run(&mut steward, &mut now_ms, 2, 10, 20, 5.0);
        for _ in 0..10 {
            now_ms += 10;
            steward.observe_error(now_ms);
        }
        assert_eq!(steward.backoffs(), 1);
        assert_eq!(steward.limit_per_s(), Some(1_000.0), "half the rate reached (2,000/s)");
        now_ms += DECREASE_INTERVAL_MS;
        steward.observe_error(now_ms);
        assert_eq!(steward.backoffs(), 2);
    }

    // Proves a lasting slower ledger becomes the baseline: the steward does not keep the writer
    // at its floor for ever.
    #[test]
    fn a_lasting_slowdown_becomes_the_norm() {
        let mut steward = Steward::new(Some(5_000), true);
        let mut now_ms = 0;
        run(&mut steward, &mut now_ms, 2, 10, 50, 10.0);
        run(&mut steward, &mut now_ms, 120, 100, 50, 300.0);
        assert_eq!(steward.limit_per_s(), Some(5_000.0), "baseline {:?}", steward.baseline_ms(50));
    }

    // Proves an uncapped writer is held at half the rate it reached when the ledger struggles,
    // and uncapped again once healthy; and that a fixed-rate writer never moves.
    #[test]
    fn uncapped_and_fixed_writers() {
        let mut steward = Steward::new(None, true);
        let mut now_ms = 0;
        run(&mut steward, &mut now_ms, 2, 10, 100, 10.0);
        assert_eq!(steward.reason(now_ms), LimitReason::Uncapped);
        run(&mut steward, &mut now_ms, 1, 10, 100, 500.0);
        let limit = steward.limit_per_s().expect("a limit after trouble");
        assert!(limit <= 10_000.0 * DECREASE_FACTOR + 1.0, "{limit}");
        run(&mut steward, &mut now_ms, 30, 10, 100, 10.0);
        assert_eq!(steward.limit_per_s(), None);
        assert_eq!(steward.reason(now_ms), LimitReason::Uncapped);

        let mut fixed = Steward::new(Some(300), false);
        let mut now_ms = 0;
        run(&mut fixed, &mut now_ms, 2, 10, 10, 5.0);
        run(&mut fixed, &mut now_ms, 2, 10, 10, 900.0);
        fixed.observe_error(now_ms);
        assert_eq!((fixed.limit_per_s(), fixed.backoffs()), (Some(300.0), 0));
    }

    // Regression: a cap below the floor was lifted to the floor by a back-off (a writer capped at
    // 30/s credited 50/s after one ledger error). Whatever happens, the limit stays under the cap.
    #[test]
    fn the_limit_never_exceeds_a_cap_below_the_floor() {
        for cap in [1, 10, 30, 49] {
            let mut steward = Steward::new(Some(cap), true);
            let mut now_ms = 0;
            for round in 0..50 {
                now_ms += 700;
                if round % 3 == 0 {
                    steward.observe_error(now_ms);
                } else {
                    steward.observe(now_ms, 5, if round % 2 == 0 { 900.0 } else { 2.0 });
                }
                let limit = steward.limit_per_s().expect("capped");
                assert!(limit <= cap as f64 && limit > 0.0, "cap {cap}: limit {limit}");
                assert!(steward.limit_whole().is_some_and(|whole| whole <= cap), "cap {cap}");
            }
        }
    }

    // Proves batch sizes have baselines of their own: small batches after large ones are not
    // judged against the large ones' time, nor large ones against the small ones'.
    #[test]
    fn each_batch_size_has_its_own_baseline() {
        let mut steward = Steward::new(Some(50_000), true);
        let mut now_ms = 0;
        run(&mut steward, &mut now_ms, 2, 10, 3, 2.0);
        run(&mut steward, &mut now_ms, 2, 20, 512, 180.0);
        assert_eq!(steward.backoffs(), 0);
        assert_eq!(steward.baseline_ms(3).map(f64::round), Some(2.0));
    }
}
