//! A bill-copy plugin: writes "恭喜获得8.88元" (or "you got ¥8.88") into the user's bill, in the
//! requested locale if it has one, else in the `default_locale` setting (default `zh-CN`).

use hongbao_sdk::prelude::*;

struct Plugin;

impl BillCopyGuest for Plugin {
    fn render(ctx: CallContext, award: Award) -> Result<BillText, PluginError> {
        let default = setting(&ctx, "default_locale").unwrap_or("zh-CN");
        let locale = pick_locale(ctx.locale.as_deref(), &["zh-CN", "en"], default).to_string();
        let amount = yuan(award.amount_cents);
        let text = match locale.as_str() {
            "en" => format!("{}: you got ¥{amount}", award.scene_name),
            _ => format!("{} · 恭喜获得{amount}元", award.scene_name),
        };
        Ok(BillText { locale, text })
    }
}

hongbao_sdk::bill_copy::export_bill_copy!(Plugin);
