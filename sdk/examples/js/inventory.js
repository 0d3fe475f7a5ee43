// An inventory plugin in JavaScript: a uniformly random amount between the scene's bounds, drawn
// from the call's seed (so a replay draws the same), refusing once the budget cannot pay the
// minimum. The same decisions as sdk/examples/inventory.rs, and the same amount: `Rng` in
// common.js is the SDK's generator (Math.random would be replayable too, but a different one).
//
// World `inventory-plugin`: export `inventory`. An option<T> is `T | undefined`.
import { Rng } from './common.js';

export const inventory = {
  /** choose(ctx: CallContext, request: AmountRequest): Allocation */
  choose(ctx, request) {
    let upper = request.maxCents;
    const budget = request.stock.budgetRemainingCents;
    if (budget != null && budget < upper) upper = budget;
    if (request.stock.countRemaining === 0n || upper < request.minCents) return { tag: 'out-of-stock' };
    return { tag: 'amount', val: Rng.fromCtx(ctx).rangeI64(request.minCents, upper) };
  },
};
