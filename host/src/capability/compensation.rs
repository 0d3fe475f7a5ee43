//! Built-in compensation: when a step fails (a ledger write, a store write), how long to wait
//! before trying again. Crediting never gives up (there is no failed state); a scene's
//! compensation settings shape the schedule, and the plugin issue adds the other decisions
//! (release stock, give up and alert).

use crate::config::Compensation;

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
