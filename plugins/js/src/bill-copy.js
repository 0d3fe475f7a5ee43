// hb-bill-copy in JavaScript: the bill text for an award in zh-CN or en, mirroring
// plugins/bill-copy/src/lib.rs. World `bill-copy-plugin`; the export is the interface
// `hongbao:plugin/bill-copy@0.1.0`, named `billCopy` (camelCase) in JS.
import { pickLocale, setting, unsupported, yuan } from './common.js';

const LOCALES = ['zh-CN', 'en'];

function text(locale, rainId, scene, amount) {
  const rain = rainId > 0;
  if (locale === 'zh-CN') return rain ? `${scene} 第${rainId}场 · 恭喜获得${amount}元` : `${scene} · 恭喜获得${amount}元`;
  if (locale === 'en') return rain ? `${scene} rain #${rainId}: you got ¥${amount}` : `${scene}: you got ¥${amount}`;
  // Unreachable: pickLocale only answers entries of LOCALES.
  throw unsupported(`locale \`${locale}\``);
}

export const billCopy = {
  /** render(ctx: CallContext, award: Award): BillText — throw { tag, val } for the WIT `err`. */
  render(ctx, award) {
    const dflt = pickLocale(setting(ctx, 'default_locale'), LOCALES, 'zh-CN');
    const locale = pickLocale(ctx.locale, LOCALES, dflt);
    return { locale, text: text(locale, ctx.rainId, award.sceneName, yuan(award.amountCents)) };
  },
};
