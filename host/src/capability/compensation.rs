//! Built-in compensation: when a step fails (a ledger write, a store write), how long to wait
//! before trying again. Crediting never gives up (there is no failed state); a scene's
//! compensation settings shape the schedule, and the plugin issue adds the other decisions
//! (release stock, give up and alert).

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::config::{Compensation, Scene};
use crate::plugin::bindings::compensation::exports::hongbao::plugin::compensation::{Failure, Remedy, Step};
use crate::plugin::{CallInput, FailurePolicy};
use crate::store::{GrantKey, GrantRecord};

/// Refused tokens tracked for retry decisions at most; beyond it, a refused token simply waits
/// for funding (the built-in behaviour) and a warning is logged.
pub const REFUSALS_TRACKED_MAX: usize = 100_000;

/// What happens to a token the ledger refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalOutcome {
    /// It stays parked until the activity is funded (the built-in).
    Wait,
    /// It goes back to the crediting queue at this monotonic time.
    RetryAt(u64),
    /// Retrying stopped; someone must look. It stays parked and owed.
    Alert(String),
}

/// The scene's compensation plugin's decisions about tokens the ledger refused: when to try
/// again, and when to stop and alert.
#[derive(Default)]
pub struct RefusalRetries {
    tracked: Mutex<HashMap<GrantKey, Retry>>,
}

#[derive(Clone, Copy)]
struct Retry {
    attempt: u32,
    first_failed_ms: u64,
    due_ms: Option<u64>,
}

impl RefusalRetries {
    /// Decides about `record`, which the ledger refused with `code` (`budget_exhausted` or
    /// `conflict`). Scenes without a compensation plugin wait for funding.
    pub fn on_refused(
        &self,
        scene: Option<&Scene>,
        record: &GrantRecord,
        code: &str,
        now_ms: u64,
        monotonic_ms: u64,
    ) -> RefusalOutcome {
        let key = record.key();
        let Some((scene, plugin)) = scene.and_then(|s| s.plugins.compensation.as_ref().map(|p| (s, p))) else {
            // The scene or its plugin is gone (a reload): nothing to decide any more.
            self.settled(std::slice::from_ref(&key));
            return RefusalOutcome::Wait;
        };
        let retry = {
            let mut tracked = self.tracked.lock();
            if tracked.len() >= REFUSALS_TRACKED_MAX && !tracked.contains_key(&key) {
                tracing::warn!(order_no = %record.order_no, "too many refused tokens tracked; this one waits for funding");
                return RefusalOutcome::Wait;
            }
            let retry =
                tracked.entry(key.clone()).or_insert(Retry { attempt: 0, first_failed_ms: now_ms, due_ms: None });
            retry.attempt = retry.attempt.saturating_add(1);
            *retry
        };
        let input = CallInput {
            award_type: &scene.award_type,
            app_id: record.app_id,
            act_id: record.act_id,
            now_ms,
            random_seed: fastrand::u64(..),
            ..CallInput::default()
        };
        let failure = Failure {
            step: Step::LedgerRefused,
            attempt: retry.attempt,
            error_code: code.to_owned(),
            error_message: format!("the ledger refused order `{}`: {code}", record.order_no),
            order_no: Some(record.order_no.clone()),
            amount_cents: Some(record.amount_cents),
            first_failed_ms: retry.first_failed_ms,
        };
        let outcome = match plugin.decide(&plugin.context(&input), &failure).0 {
            Ok(Remedy::RetryAfterMs(ms)) => RefusalOutcome::RetryAt(monotonic_ms.saturating_add(ms)),
            // Credits are owed: releasing stock is not possible here, so it means giving up.
            Ok(Remedy::ReleaseStock) => RefusalOutcome::Alert("the compensation plugin released the stock".into()),
            Ok(Remedy::GiveUpAndAlert(reason)) => RefusalOutcome::Alert(reason),
            Err(failure) => match plugin.spec().on_failure {
                FailurePolicy::FailClosed => RefusalOutcome::Alert(format!("compensation plugin failed: {failure}")),
                FailurePolicy::FailOpen | FailurePolicy::Builtin => RefusalOutcome::Wait,
            },
        };
        let mut tracked = self.tracked.lock();
        match &outcome {
            RefusalOutcome::RetryAt(due) => {
                if let Some(retry) = tracked.get_mut(&key) {
                    retry.due_ms = Some(*due);
                }
            }
            RefusalOutcome::Wait | RefusalOutcome::Alert(_) => {
                tracked.remove(&key);
            }
        }
        outcome
    }

    /// Refused tokens whose retry time has come; each is returned once per decision.
    pub fn due(&self, monotonic_ms: u64) -> Vec<GrantKey> {
        let mut tracked = self.tracked.lock();
        if tracked.is_empty() {
            return Vec::new();
        }
        tracked
            .iter_mut()
            .filter(|(_, retry)| retry.due_ms.is_some_and(|due| due <= monotonic_ms))
            .map(|(key, retry)| {
                retry.due_ms = None;
                key.clone()
            })
            .collect()
    }

    /// Schedules `keys` again at `monotonic_ms` (their requeue failed).
    pub fn retry_at(&self, keys: &[GrantKey], monotonic_ms: u64) {
        let mut tracked = self.tracked.lock();
        for key in keys {
            if let Some(retry) = tracked.get_mut(key) {
                retry.due_ms = Some(monotonic_ms);
            }
        }
    }

    /// Forgets tokens that were credited.
    pub fn settled(&self, keys: &[GrantKey]) {
        let mut tracked = self.tracked.lock();
        if tracked.is_empty() {
            return;
        }
        for key in keys {
            tracked.remove(key);
        }
    }

    /// Tokens waiting for a retry decision's time.
    pub fn len(&self) -> usize {
        self.tracked.lock().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.tracked.lock().is_empty()
    }
}

/// The schedule used when a scene has compensation off.
pub const DEFAULT_SCHEDULE: Compensation = Compensation { retry_initial_ms: 50, retry_max_ms: 5_000 };

/// Milliseconds to wait before attempt `attempt` (1 for the first retry): doubling from
/// `retry_initial_ms`, capped at `retry_max_ms`.
pub fn retry_after_ms(schedule: &Compensation, attempt: u32) -> u64 {
    let doublings = attempt.saturating_sub(1).min(30);
    schedule.retry_initial_ms.saturating_mul(1u64 << doublings).min(schedule.retry_max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the schedule doubles from the initial delay and stops at the cap.
    #[test]
    fn schedule_doubles_to_the_cap() {
        let schedule = Compensation { retry_initial_ms: 100, retry_max_ms: 1_000 };
        let delays: Vec<u64> = (1..=6).map(|attempt| retry_after_ms(&schedule, attempt)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }
}
