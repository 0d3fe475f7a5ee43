// A reconciliation plugin in JavaScript: flags a scene whose ledger holds more cents than were
// granted, and credits that lag more than a minute behind (which the host can requeue). The same
// decisions as sdk/examples/reconciliation.rs.
//
// World `reconciliation-plugin`: export `reconciliation`; return an array of findings.
import { yuan } from './common.js';

export const reconciliation = {
  /** judge(ctx: CallContext, summary: SceneSummary): Finding[] */
  judge(ctx, summary) {
    const findings = [];
    if (summary.creditedCents > summary.issuedCents) {
      findings.push({
        code: 'over_credited',
        severity: 'critical',
        message: `credited ${yuan(summary.creditedCents)} > issued ${yuan(summary.issuedCents)}`,
        repair: undefined,
      });
    }
    const oldest = summary.oldestInFlightMs;
    const lagMs = oldest == null || oldest > ctx.nowMs ? 0n : ctx.nowMs - oldest; // saturating_sub
    if (lagMs > 60_000n) {
      findings.push({
        code: 'credit_lag',
        severity: 'warning',
        message: `${summary.inFlightCount} grants wait for crediting, the oldest for ${lagMs} ms`,
        repair: { tag: 'requeue-in-flight-older-than-ms', val: 60_000n },
      });
    }
    return findings;
  },
};
