//! `hb-bill-copy`: the bill text for an award, in Simplified Chinese (`zh-CN`) or English (`en`).
//!
//! The locale is the app's request if this plugin has it (or its language, `en-US` → `en`), else
//! the `default_locale` setting (matched the same way), else `zh-CN`. Inside a red-packet rain the
//! text names the round.

use hongbao_sdk::prelude::*;

/// The locales this plugin writes.
const LOCALES: [&str; 2] = ["zh-CN", "en"];

struct BillCopy;

impl BillCopyGuest for BillCopy {
    fn render(ctx: CallContext, award: Award) -> Result<BillText, PluginError> {
        // The configured default goes through the same matching (`en-US` → `en`), so any
        // `default_locale` resolves to a locale this plugin writes.
        let default = pick_locale(setting(&ctx, "default_locale"), &LOCALES, "zh-CN");
        let locale = pick_locale(ctx.locale.as_deref(), &LOCALES, default);
        let text = text(locale, ctx.rain_id, &award.scene_name, &yuan(award.amount_cents))?;
        Ok(BillText { locale: locale.to_string(), text })
    }
}

fn text(locale: &str, rain_id: i32, scene: &str, amount: &str) -> Result<String, PluginError> {
    Ok(match (locale, rain_id > 0) {
        ("zh-CN", true) => format!("{scene} 第{rain_id}场 · 恭喜获得{amount}元"),
        ("zh-CN", false) => format!("{scene} · 恭喜获得{amount}元"),
        ("en", true) => format!("{scene} rain #{rain_id}: you got ¥{amount}"),
        ("en", false) => format!("{scene}: you got ¥{amount}"),
        // Unreachable: `pick_locale` only answers entries of `LOCALES`.
        (other, _) => return Err(PluginError::Unsupported(format!("locale `{other}`"))),
    })
}

hongbao_sdk::bill_copy::export_bill_copy!(BillCopy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(text("zh-CN", 3, "除夕红包雨", "8.88").unwrap(), "除夕红包雨 第3场 · 恭喜获得8.88元");
        assert_eq!(text("zh-CN", 0, "除夕红包雨", "0.05").unwrap(), "除夕红包雨 · 恭喜获得0.05元");
        assert_eq!(text("en", 3, "Eve rain", "8.88").unwrap(), "Eve rain rain #3: you got ¥8.88");
        assert_eq!(text("en", 0, "Eve rain", "1.00").unwrap(), "Eve rain: you got ¥1.00");
        assert!(matches!(text("fr", 0, "x", "1.00"), Err(PluginError::Unsupported(_))));
    }
}
