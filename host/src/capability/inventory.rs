//! Built-in inventory: chooses a grant's amount by the scene's rule, and states the stock bounds
//! that the store checks and reserves in the same transaction that records the grant.

use crate::config::{AmountRule, Scene};

/// Why the amount could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The caller sent `amount_cents` but the scene decides the amount.
    #[error("scene `{0}` does not let the caller set amount_cents")]
    NotAllowed(String),
    /// The scene lets the caller decide, but no amount came.
    #[error("scene `{0}` needs amount_cents")]
    Missing(String),
    /// The amount is outside the scene's range.
    #[error("amount_cents `{amount}` is outside {min}..={max}")]
    OutOfRange {
        /// What was asked.
        amount: i64,
        /// The lowest allowed.
        min: i64,
        /// The highest allowed.
        max: i64,
    },
}

/// The amount of a new grant: fixed, uniformly random in the range, or the caller's within it.
pub fn choose_amount(
    scene: &Scene,
    requested_cents: Option<i64>,
    random: &mut fastrand::Rng,
) -> Result<i64, AmountError> {
    match (&scene.amount, requested_cents) {
        (AmountRule::Caller { min_cents, max_cents }, Some(amount)) => {
            if amount < *min_cents || amount > *max_cents {
                return Err(AmountError::OutOfRange { amount, min: *min_cents, max: *max_cents });
            }
            Ok(amount)
        }
        (AmountRule::Caller { .. }, None) => Err(AmountError::Missing(scene.id.clone())),
        (_, Some(_)) => Err(AmountError::NotAllowed(scene.id.clone())),
        (AmountRule::Fixed { cents }, None) => Ok(*cents),
        (AmountRule::Random { min_cents, max_cents }, None) => Ok(random.i64(*min_cents..=*max_cents)),
    }
}
