//! A rate-limit plugin: each user may take `max` grants (default 1) per `window_ms` (default
//! 10 s), counted in a host counter that is scoped to the scene.

use hongbao_sdk::prelude::*;

struct Plugin;

impl RateLimitGuest for Plugin {
    fn check(ctx: CallContext) -> Result<Decision, PluginError> {
        let window_ms = setting_u64(&ctx, "window_ms", 10_000)?;
        let max = setting_i64(&ctx, "max", 1)?;
        let taken = host::counter_add(&format!("user/{}", ctx.act_id), 1, Some(window_ms))
            .map_err(|e| PluginError::HostFailed(format!("{e:?}")))?;
        if taken > max {
            return Ok(Decision::Reject(format!("{max} per {window_ms} ms")));
        }
        Ok(Decision::Allow)
    }
}

hongbao_sdk::rate_limit::export_rate_limit!(Plugin);
