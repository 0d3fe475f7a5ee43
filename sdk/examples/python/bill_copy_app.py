"""A bill-copy plugin in Python: writes "恭喜获得8.88元" (or "you got ¥8.88") into the user's bill,
in the requested locale if it has one, else in the `default_locale` setting (default `zh-CN`).
The same decisions as sdk/examples/bill_copy.rs.

World `bill-copy-plugin`: the app module defines a class named after the exported interface
(`BillCopy`) implementing `wit_world.exports.BillCopy`. Return the record; raise
`Err(types.PluginError_…("…"))` (see hb_common) for the WIT `err`."""
from wit_world import exports
from wit_world.exports.bill_copy import Award, BillText
from wit_world.imports.types import CallContext

from hb_common import pick_locale, setting, yuan


class BillCopy(exports.BillCopy):
    def render(self, ctx: CallContext, award: Award) -> BillText:
        default = setting(ctx, "default_locale")
        if default is None:
            default = "zh-CN"
        locale = pick_locale(ctx.locale, ["zh-CN", "en"], default)
        amount = yuan(award.amount_cents)
        if locale == "en":
            text = f"{award.scene_name}: you got ¥{amount}"
        else:
            text = f"{award.scene_name} · 恭喜获得{amount}元"
        return BillText(locale=locale, text=text)
