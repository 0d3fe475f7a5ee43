//! `hb-inventory`: a random split of the remaining budget ("double mean").
//!
//! With `c` packets and `a` cents left, each grant is drawn uniformly from
//! `min ..= min(max, 2a/c, a - min·(c-1))`: on average `a/c`, never so much that the packets after
//! it could not get their minimum, and the last packet takes what is left. So a scene with `N`
//! packets and budget `B` hands out exactly `B` in exactly `N` grants (given `min·N <= B` and
//! `max >= B`). The draw comes from the call's seed, so a replay draws the same amount.
//!
//! Settings: `reserve_cents` (default 0), cents of the budget to keep back.

use hongbao_sdk::prelude::*;

struct Inventory;

impl InventoryGuest for Inventory {
    fn choose(ctx: CallContext, request: AmountRequest) -> Result<Allocation, PluginError> {
        let reserve_cents = setting_i64(&ctx, "reserve_cents", 0)?;
        if request.min_cents > request.max_cents {
            return Err(PluginError::InvalidInput(format!(
                "min_cents `{}` is above max_cents `{}`",
                request.min_cents, request.max_cents
            )));
        }
        Ok(split(&request, reserve_cents, &mut Rng::from_ctx(&ctx)))
    }
}

/// The amount for one grant.
///
/// - No packets left: out of stock.
/// - No budget limit: a uniform draw from `min..=max` (or `requested_cents` if it is in range).
/// - Budget `a` (after the reserve) below `min`: out of stock.
/// - The last packet takes the rest, `min(a, max)`.
/// - Otherwise a draw from `min..=upper`, `upper = min(max, 2a/c, a - min·(c-1))` (at least `min`),
///   or `min(max, a)` when the count is unlimited.
///
/// If `min·N <= B` and `max >= B`, granting until out of stock hands out exactly `B` in `N`
/// grants: every draw leaves at least `min` for each packet after it, and the last takes the rest.
fn split(request: &AmountRequest, reserve_cents: i64, rng: &mut Rng) -> Allocation {
    let (min, max) = (request.min_cents, request.max_cents);
    let count = request.stock.count_remaining;
    if count == Some(0) {
        return Allocation::OutOfStock;
    }
    let Some(budget) = request.stock.budget_remaining_cents else {
        return match request.requested_cents {
            Some(requested) if (min..=max).contains(&requested) => Allocation::Amount(requested),
            _ => Allocation::Amount(rng.range_i64(min..=max)),
        };
    };
    let available = budget.saturating_sub(reserve_cents);
    if available < min {
        return Allocation::OutOfStock;
    }
    let upper = match count {
        Some(1) => return Allocation::Amount(available.min(max)),
        None => max.min(available),
        Some(count) => {
            // i128: `2a` and `min·(c-1)` can overflow i64 for extreme inputs.
            let (a, c, low) = (i128::from(available), i128::from(count), i128::from(min));
            let upper = i128::from(max).min(2 * a / c).min(a - low * (c - 1)).max(low);
            // Between `min` and `max`, so it fits in i64.
            upper as i64
        }
    };
    Allocation::Amount(rng.range_i64(min..=upper))
}

hongbao_sdk::inventory::export_inventory!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(min: i64, max: i64, count: Option<u64>, budget: Option<i64>) -> AmountRequest {
        AmountRequest {
            requested_cents: None,
            min_cents: min,
            max_cents: max,
            stock: Stock { count_remaining: count, budget_remaining_cents: budget },
        }
    }

    // The money invariant: N packets and budget B hand out exactly B in exactly N grants, whatever
    // the seed, as long as the minimum fits (min·N <= B) and the maximum does not cut the last
    // packet short (max >= B).
    #[test]
    fn sequential_grants_hand_out_exactly_the_budget() {
        let cases = [(1, 1), (1, 100), (10, 100), (100, 100), (7, 8_888), (50, 20_000), (1_000, 1_000_000)];
        for (packets, budget) in cases {
            for min in [1, budget / packets / 2, budget / packets] {
                let min = min.max(1);
                for seed in 0..50 {
                    let mut rng = Rng::new(seed);
                    let (mut count, mut left, mut granted, mut grants) = (packets as u64, budget, 0, 0);
                    loop {
                        match split(&request(min, budget, Some(count), Some(left)), 0, &mut rng) {
                            Allocation::OutOfStock => break,
                            Allocation::Amount(amount) => {
                                assert!(amount >= min && amount <= left, "seed {seed}: {amount} of {left}");
                                granted += amount;
                                grants += 1;
                                left -= amount;
                                count -= 1;
                            }
                        }
                        assert!(grants <= packets, "more grants than packets");
                    }
                    assert_eq!((granted, grants), (budget, packets), "N={packets} B={budget} min={min} seed={seed}");
                }
            }
        }
    }

    #[test]
    fn edges() {
        let mut rng = Rng::new(1);
        assert_eq!(split(&request(1, 10, Some(0), Some(100)), 0, &mut rng), Allocation::OutOfStock);
        assert_eq!(split(&request(5, 10, Some(3), Some(4)), 0, &mut rng), Allocation::OutOfStock);
        // The reserve is kept back.
        assert_eq!(split(&request(5, 10, Some(3), Some(12)), 8, &mut rng), Allocation::OutOfStock);
        // The last packet takes the rest, capped by max.
        assert_eq!(split(&request(1, 10, Some(1), Some(7)), 0, &mut rng), Allocation::Amount(7));
        assert_eq!(split(&request(1, 10, Some(1), Some(70)), 0, &mut rng), Allocation::Amount(10));
        // No budget: the requested amount if in range, else a draw within the bounds.
        let mut with_request = request(1, 10, None, None);
        with_request.requested_cents = Some(8);
        assert_eq!(split(&with_request, 0, &mut rng), Allocation::Amount(8));
        with_request.requested_cents = Some(80);
        let Allocation::Amount(amount) = split(&with_request, 0, &mut rng) else { panic!("out of stock") };
        assert!((1..=10).contains(&amount));
        // Unlimited count: never more than is left.
        for _ in 0..100 {
            let Allocation::Amount(amount) = split(&request(1, 100, None, Some(30)), 0, &mut rng) else {
                panic!("out of stock")
            };
            assert!((1..=30).contains(&amount));
        }
    }

    // A replay with the same seed draws the same amount.
    #[test]
    fn same_seed_same_amount() {
        let draw = |seed| split(&request(1, 1_000, Some(10), Some(5_000)), 0, &mut Rng::new(seed));
        assert_eq!(draw(42), draw(42));
    }
}
