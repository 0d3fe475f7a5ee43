"""hb-bill-copy in Python: the bill text for an award in zh-CN or en, mirroring
plugins/bill-copy/src/lib.rs. World `bill-copy-plugin`: the app module defines a class named
after the exported interface (`BillCopy`) implementing `wit_world.exports.BillCopy`."""
from wit_world import exports
from wit_world.exports.bill_copy import Award, BillText
from wit_world.imports.types import CallContext

from hb_common import pick_locale, setting, unsupported, yuan

LOCALES = ["zh-CN", "en"]


def text(locale: str, rain_id: int, scene: str, amount: str) -> str:
    rain = rain_id > 0
    if locale == "zh-CN":
        return f"{scene} 第{rain_id}场 · 恭喜获得{amount}元" if rain else f"{scene} · 恭喜获得{amount}元"
    if locale == "en":
        return f"{scene} rain #{rain_id}: you got ¥{amount}" if rain else f"{scene}: you got ¥{amount}"
    # Unreachable: pick_locale only answers entries of LOCALES.
    raise unsupported(f"locale `{locale}`")


class BillCopy(exports.BillCopy):
    def render(self, ctx: CallContext, award: Award) -> BillText:
        default = pick_locale(setting(ctx, "default_locale"), LOCALES, "zh-CN")
        locale = pick_locale(ctx.locale, LOCALES, default)
        return BillText(locale=locale, text=text(locale, ctx.rain_id, award.scene_name, yuan(award.amount_cents)))
