// A bill-copy plugin in JavaScript: writes "恭喜获得8.88元" (or "you got ¥8.88") into the user's
// bill, in the requested locale if it has one, else in the `default_locale` setting (default
// `zh-CN`). The same decisions as sdk/examples/bill_copy.rs.
//
// World `bill-copy-plugin`: export the interface `hongbao:plugin/bill-copy@0.1.0` as `billCopy`.
// Return the record; throw `{ tag, val }` (see common.js) for the WIT `err`.
import { pickLocale, setting, yuan } from './common.js';

export const billCopy = {
  /** render(ctx: CallContext, award: Award): BillText */
  render(ctx, award) {
    const dflt = setting(ctx, 'default_locale') ?? 'zh-CN';
    const locale = pickLocale(ctx.locale, ['zh-CN', 'en'], dflt);
    const amount = yuan(award.amountCents);
    const text = locale === 'en' ? `${award.sceneName}: you got ¥${amount}` : `${award.sceneName} · 恭喜获得${amount}元`;
    return { locale, text };
  },
};
