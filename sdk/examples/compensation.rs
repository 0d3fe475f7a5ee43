//! A compensation plugin: retry every failed step after a fixed `retry_ms` (default 500) up to
//! `max_attempts` times (default 3), then give up and alert.

use hongbao_sdk::prelude::*;

struct Plugin;

impl CompensationGuest for Plugin {
    fn decide(ctx: CallContext, failure: Failure) -> Result<Remedy, PluginError> {
        let retry_ms = setting_u64(&ctx, "retry_ms", 500)?;
        let max_attempts = setting_u64(&ctx, "max_attempts", 3)?;
        if u64::from(failure.attempt) <= max_attempts {
            return Ok(Remedy::RetryAfterMs(retry_ms));
        }
        if failure.step == Step::StoreGrant {
            // Nothing was granted yet: hand the reserved stock back.
            return Ok(Remedy::ReleaseStock);
        }
        Ok(Remedy::GiveUpAndAlert(format!("{}: {}", failure.error_code, failure.error_message)))
    }
}

hongbao_sdk::compensation::export_compensation!(Plugin);
