// A rate-limit plugin in JavaScript: each user may take `max` grants (default 1) per `window_ms`
// (default 10 s), counted in a host counter that is scoped to the scene. The same decisions as
// sdk/examples/rate_limit.rs.
//
// World `rate-limit-plugin`: export `rateLimit`. Host functions come from the versioned module
// 'hongbao:plugin/host@0.1.0'; s64/u64 arguments and results are BigInt.
import { counterAdd } from 'hongbao:plugin/host@0.1.0';
import { hostCall, settingI64, settingU64 } from './common.js';

export const rateLimit = {
  /** check(ctx: CallContext): Decision */
  check(ctx) {
    const windowMs = settingU64(ctx, 'window_ms', 10_000n);
    const max = settingI64(ctx, 'max', 1n);
    const taken = hostCall(() => counterAdd(`user/${ctx.actId}`, 1n, windowMs));
    if (taken > max) return { tag: 'reject', val: `${max} per ${windowMs} ms` };
    return { tag: 'allow' };
  },
};
