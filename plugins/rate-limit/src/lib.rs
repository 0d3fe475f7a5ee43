//! `hb-rate-limit`: how many grants a user may take per time window, by tier.
//!
//! Users listed in `vip_act_ids` may take `vip_max` grants per `window_ms`, everyone else
//! `user_max`. The count lives in the host counter `user/{act_id}` (a fixed window, scoped to the
//! scene by the host), so the plugin itself stays stateless.

use hongbao_sdk::prelude::*;

struct RateLimit;

impl RateLimitGuest for RateLimit {
    fn check(ctx: CallContext) -> Result<Decision, PluginError> {
        let window_ms = setting_u64(&ctx, "window_ms", 10_000)?;
        let user_max = setting_i64(&ctx, "user_max", 1)?;
        let vip_max = setting_i64(&ctx, "vip_max", 3)?;
        let vip = is_listed(setting(&ctx, "vip_act_ids").unwrap_or(""), ctx.act_id)?;
        let (tier, limit) = if vip { ("vip", vip_max) } else { ("standard", user_max) };

        let taken = host::counter_add(&format!("user/{}", ctx.act_id), 1, Some(window_ms))
            .map_err(|error| PluginError::HostFailed(format!("counter_add: {error:?}")))?;
        if taken > limit {
            return Ok(Decision::Reject(format!("{tier} users may take {limit} per {window_ms} ms")));
        }
        Ok(Decision::Allow)
    }
}

/// Whether `act_id` is in the comma-separated `list` (blanks and empty entries are ignored). An
/// entry that is not a number is an error rather than a silent miss: a typo would otherwise demote
/// a VIP without a trace.
fn is_listed(list: &str, act_id: i64) -> Result<bool, PluginError> {
    let mut listed = false;
    for entry in list.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let id: i64 = entry
            .parse()
            .map_err(|_| PluginError::InvalidInput(format!("setting `vip_act_ids`: `{entry}` is not an act id")))?;
        listed |= id == act_id;
    }
    Ok(listed)
}

hongbao_sdk::rate_limit::export_rate_limit!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_list_parsing() {
        assert_eq!(is_listed("10001, 10002", 10002), Ok(true));
        assert_eq!(is_listed("10001,", 10001), Ok(true));
        assert_eq!(is_listed("", 10001), Ok(false));
        assert_eq!(is_listed("100010", 10001), Ok(false));
        assert!(matches!(is_listed("10001,vip", 10001), Err(PluginError::InvalidInput(_))));
    }
}
