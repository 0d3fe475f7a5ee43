//! `hb-compensation`: exponential back-off, then release the stock or alert.
//!
//! Attempt `n` (1, 2, ...) up to `max_attempts` is retried after `initial_ms · 2^(n-1)`, capped at
//! `max_ms`. After that, a grant that never reached the token store gives its reserved stock back
//! (nothing is owed), and every other step raises an alert (credits are owed and stay visible to
//! reconciliation).
//!
//! Settings: `initial_ms` (default 100), `max_ms` (default 10000), `max_attempts` (default 5).

use hongbao_sdk::prelude::*;

struct Compensation;

impl CompensationGuest for Compensation {
    fn decide(ctx: CallContext, failure: Failure) -> Result<Remedy, PluginError> {
        let initial_ms = setting_u64(&ctx, "initial_ms", 100)?;
        let max_ms = setting_u64(&ctx, "max_ms", 10_000)?;
        let max_attempts = setting_u64(&ctx, "max_attempts", 5)?;
        Ok(remedy(&failure, initial_ms, max_ms, max_attempts))
    }
}

fn remedy(failure: &Failure, initial_ms: u64, max_ms: u64, max_attempts: u64) -> Remedy {
    if u64::from(failure.attempt) <= max_attempts {
        return Remedy::RetryAfterMs(backoff_ms(failure.attempt, initial_ms, max_ms));
    }
    if failure.step == Step::StoreGrant {
        return Remedy::ReleaseStock;
    }
    Remedy::GiveUpAndAlert(format!("gave up after {} attempts: {}", failure.attempt, failure.error_code))
}

/// `initial_ms · 2^(attempt-1)`, saturating, capped at `max_ms`.
fn backoff_ms(attempt: u32, initial_ms: u64, max_ms: u64) -> u64 {
    let doublings = attempt.saturating_sub(1);
    let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
    initial_ms.saturating_mul(factor).min(max_ms)
}

hongbao_sdk::compensation::export_compensation!(Compensation);

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(step: Step, attempt: u32) -> Failure {
        Failure {
            step,
            attempt,
            error_code: "store_unavailable".into(),
            error_message: "timed out".into(),
            order_no: None,
            amount_cents: None,
            first_failed_ms: 0,
        }
    }

    #[test]
    fn backs_off_then_releases_or_alerts() {
        let decide = |step, attempt| remedy(&failure(step, attempt), 100, 10_000, 5);
        assert_eq!(decide(Step::StoreGrant, 1), Remedy::RetryAfterMs(100));
        assert_eq!(decide(Step::StoreGrant, 2), Remedy::RetryAfterMs(200));
        assert_eq!(decide(Step::LedgerCredit, 5), Remedy::RetryAfterMs(1_600));
        assert_eq!(decide(Step::StoreGrant, 6), Remedy::ReleaseStock);
        assert_eq!(
            decide(Step::LedgerCredit, 6),
            Remedy::GiveUpAndAlert("gave up after 6 attempts: store_unavailable".into())
        );
        assert_eq!(remedy(&failure(Step::LedgerCredit, 20), 100, 10_000, 100), Remedy::RetryAfterMs(10_000));
        assert_eq!(backoff_ms(200, u64::MAX / 2, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(64, 1, u64::MAX), 1 << 63);
        assert_eq!(backoff_ms(65, 1, u64::MAX), u64::MAX);
        assert_eq!(backoff_ms(0, 100, 10_000), 100);
    }
}
