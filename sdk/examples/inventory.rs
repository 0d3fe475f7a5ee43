//! An inventory plugin: a uniformly random amount between the scene's bounds, drawn from the
//! call's seed (so a replay draws the same), refusing once the budget cannot pay the minimum.

use hongbao_sdk::prelude::*;

struct Plugin;

impl InventoryGuest for Plugin {
    fn choose(ctx: CallContext, request: AmountRequest) -> Result<Allocation, PluginError> {
        let mut upper = request.max_cents;
        if let Some(budget) = request.stock.budget_remaining_cents {
            upper = upper.min(budget);
        }
        if request.stock.count_remaining == Some(0) || upper < request.min_cents {
            return Ok(Allocation::OutOfStock);
        }
        let amount = Rng::from_ctx(&ctx).range_i64(request.min_cents..=upper);
        Ok(Allocation::Amount(amount))
    }
}

hongbao_sdk::inventory::export_inventory!(Plugin);
