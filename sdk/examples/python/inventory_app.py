"""An inventory plugin in Python: a uniformly random amount between the scene's bounds, drawn from
the call's seed (so a replay draws the same), refusing once the budget cannot pay the minimum.
The same decisions as sdk/examples/inventory.rs, and the same amount: `Rng` in hb_common is the
SDK's generator (never the module-level `random`, which warm calls would continue).

World `inventory-plugin`: class `Inventory`. An option is `None`; variant cases are classes."""
from wit_world import exports
from wit_world.exports.inventory import Allocation, Allocation_Amount, Allocation_OutOfStock, AmountRequest
from wit_world.imports.types import CallContext

from hb_common import Rng


class Inventory(exports.Inventory):
    def choose(self, ctx: CallContext, request: AmountRequest) -> Allocation:
        upper = request.max_cents
        budget = request.stock.budget_remaining_cents
        if budget is not None:
            upper = min(upper, budget)
        if request.stock.count_remaining == 0 or upper < request.min_cents:
            return Allocation_OutOfStock()
        return Allocation_Amount(Rng.from_ctx(ctx).range_i64(request.min_cents, upper))
