// hb-inventory in JavaScript: a random split of the remaining budget ("double mean"),
// mirroring plugins/inventory/src/lib.rs. World `inventory-plugin`; export `inventory`.
// Setting `reserve_cents` (default 0). Every s64/u64 is a BigInt; i128 arithmetic of the
// Rust version is plain BigInt arithmetic here (division truncates toward zero in both).
import { Rng, invalidInput, settingI64 } from './common.js';

const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const min = (a, b) => (a < b ? a : b);
const max = (a, b) => (a > b ? a : b);

function split(request, reserveCents, rng) {
  const lo = request.minCents;
  const hi = request.maxCents;
  const count = request.stock.countRemaining; // bigint | undefined
  if (count === 0n) return { tag: 'out-of-stock' };
  const budget = request.stock.budgetRemainingCents;
  if (budget === undefined) {
    const requested = request.requestedCents;
    if (requested !== undefined && requested >= lo && requested <= hi) return { tag: 'amount', val: requested };
    return { tag: 'amount', val: rng.rangeI64(lo, hi) };
  }
  const available = max(I64_MIN, min(I64_MAX, budget - reserveCents)); // i64::saturating_sub
  if (available < lo) return { tag: 'out-of-stock' };
  let upper;
  if (count === 1n) return { tag: 'amount', val: min(available, hi) };
  if (count === undefined) upper = min(hi, available);
  else upper = max(min(min(hi, (2n * available) / count), available - lo * (count - 1n)), lo);
  return { tag: 'amount', val: rng.rangeI64(lo, upper) };
}

export const inventory = {
  /** choose(ctx: CallContext, request: AmountRequest): Allocation */
  choose(ctx, request) {
    const reserveCents = settingI64(ctx, 'reserve_cents', 0n);
    if (request.minCents > request.maxCents) {
      throw invalidInput(`min_cents \`${request.minCents}\` is above max_cents \`${request.maxCents}\``);
    }
    return split(request, reserveCents, Rng.fromCtx(ctx));
  },
};
