//! A circuit breaker in front of a backend: once it failed, callers skip it for a while instead
//! of each waiting for its deadline, and one caller at a time tries it again.
//!
//! The grant path uses the ledger's to skip its replay lookup, the wallet reads use it (and the
//! token store's) to answer degraded at once during an outage (see `wallet::degraded`). Writes
//! that move money never consult a breaker: they try the backend and fail on its own answer.

use std::sync::atomic::{AtomicU64, Ordering};

/// How long callers skip the ledger after it failed: a ledger outage costs one failed try a
/// second (each waiting at most the ledger's operation deadline), not one per request, and a
/// ledger that is back is used again within a second.
pub const LEDGER_RETRY_AFTER_MS: u64 = 1_000;

/// How long wallet reads skip the token store after it failed; as for the ledger.
pub const STORE_RETRY_AFTER_MS: u64 = 1_000;

/// Closed (every caller asks the backend) until a failure opens it for `retry_after_ms`; then
/// the first caller to come along is let through as the probe, and the others keep skipping for
/// another `retry_after_ms`. A success closes it.
#[derive(Debug)]
pub struct Breaker {
    /// 0 while closed; else the monotonic ms from which the next probe may go.
    open_until_ms: AtomicU64,
    retry_after_ms: u64,
}

impl Breaker {
    /// A closed breaker that, once open, lets a probe through every `retry_after_ms`.
    pub const fn new(retry_after_ms: u64) -> Breaker {
        Breaker { open_until_ms: AtomicU64::new(0), retry_after_ms }
    }

    /// Whether the caller may ask the backend now (`now_ms` monotonic). While open, exactly
    /// one caller per `retry_after_ms` is told yes.
    pub fn allows(&self, now_ms: u64) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now_ms < until {
            return false;
        }
        let next = self.next_probe_ms(now_ms);
        self.open_until_ms.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// The backend failed at `now_ms` (monotonic, taken when it failed, not when it was asked:
    /// a deadline that ran out must not make the pause shorter).
    pub fn failed(&self, now_ms: u64) {
        self.open_until_ms.store(self.next_probe_ms(now_ms), Ordering::Release);
    }

    /// The backend answered: closed again.
    pub fn succeeded(&self) {
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Release);
        }
    }

    /// Whether it is open: the backend failed and has not answered since.
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    fn next_probe_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.retry_after_ms).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a failure makes callers skip the backend until the retry time, then lets exactly
    // one probe through per retry time, and a success closes the breaker.
    #[test]
    fn one_probe_per_retry_time_after_a_failure() {
        let breaker = Breaker::new(1_000);
        assert!(breaker.allows(5) && breaker.allows(5), "closed: everybody asks");
        breaker.failed(10);
        assert!(breaker.is_open());
        assert!(!breaker.allows(10) && !breaker.allows(1_009), "open: nobody asks");
        assert!(breaker.allows(1_010), "the probe");
        assert!(!breaker.allows(1_010) && !breaker.allows(2_009), "one probe at a time");
        assert!(breaker.allows(2_010), "the next probe, a retry time later");
        breaker.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.allows(2_011) && breaker.allows(2_011), "closed again");
    }
}
