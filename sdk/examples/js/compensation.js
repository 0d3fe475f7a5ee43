// A compensation plugin in JavaScript: retry every failed step after a fixed `retry_ms` (default
// 500) up to `max_attempts` times (default 3), then give up and alert. The same decisions as
// sdk/examples/compensation.rs.
//
// World `compensation-plugin`: export `compensation`. Enums (`failure.step`) and variant tags are
// kebab-case strings.
import { settingU64 } from './common.js';

export const compensation = {
  /** decide(ctx: CallContext, failure: Failure): Remedy */
  decide(ctx, failure) {
    const retryMs = settingU64(ctx, 'retry_ms', 500n);
    const maxAttempts = settingU64(ctx, 'max_attempts', 3n);
    if (BigInt(failure.attempt) <= maxAttempts) return { tag: 'retry-after-ms', val: retryMs };
    // Nothing was granted yet: hand the reserved stock back.
    if (failure.step === 'store-grant') return { tag: 'release-stock' };
    return { tag: 'give-up-and-alert', val: `${failure.errorCode}: ${failure.errorMessage}` };
  },
};
