//! The cap: no window of one second ever holds more credits than the limit.
//!
//! The cap is a window of borrowed tokens: each credit borrows one, and gives it back exactly
//! one second later. Unlike a refilling token bucket, whose capacity lets a burst exceed the rate
//! in any one second, this guarantees that no window of one second ever holds more than the cap,
//! while a steady stream still reaches the cap.

use std::collections::VecDeque;

/// The window length of the cap.
pub const WINDOW_MS: u64 = 1_000;

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

    /// Moves the cap (the payment steward's limit). Credits already in the window stay counted,
    /// so a lower cap holds back the next ones until the window has room under it.
    pub fn set_cap(&mut self, cap: Option<u64>) {
        if cap.is_none() {
            self.recent.clear();
            self.in_window = 0;
        }
        self.cap = cap;
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
