"""hb-inventory in Python: a random split of the remaining budget ("double mean"), mirroring
plugins/inventory/src/lib.rs. World `inventory-plugin`; class `Inventory`.
Setting `reserve_cents` (default 0). Rust's i128 arithmetic is plain int arithmetic here, with
division rounding toward zero (trunc_div), not Python's floor division."""
from wit_world import exports
from wit_world.exports.inventory import Allocation, Allocation_Amount, Allocation_OutOfStock, AmountRequest
from wit_world.imports.types import CallContext

from hb_common import I64_MAX, I64_MIN, Rng, invalid_input, setting_i64, trunc_div


def split(request: AmountRequest, reserve_cents: int, rng: Rng) -> Allocation:
    lo, hi = request.min_cents, request.max_cents
    count = request.stock.count_remaining  # int | None
    if count == 0:
        return Allocation_OutOfStock()
    budget = request.stock.budget_remaining_cents
    if budget is None:
        requested = request.requested_cents
        if requested is not None and lo <= requested <= hi:
            return Allocation_Amount(requested)
        return Allocation_Amount(rng.range_i64(lo, hi))
    available = max(I64_MIN, min(I64_MAX, budget - reserve_cents))  # i64::saturating_sub
    if available < lo:
        return Allocation_OutOfStock()
    if count == 1:
        return Allocation_Amount(min(available, hi))
    if count is None:
        upper = min(hi, available)
    else:
        upper = max(min(hi, trunc_div(2 * available, count), available - lo * (count - 1)), lo)
    return Allocation_Amount(rng.range_i64(lo, upper))


class Inventory(exports.Inventory):
    def choose(self, ctx: CallContext, request: AmountRequest) -> Allocation:
        reserve_cents = setting_i64(ctx, "reserve_cents", 0)
        if request.min_cents > request.max_cents:
            raise invalid_input(f"min_cents `{request.min_cents}` is above max_cents `{request.max_cents}`")
        return split(request, reserve_cents, Rng.from_ctx(ctx))
