//! Built-in reconciliation: per scene with reconciliation on, compares what the token store
//! issued, what the ledger credited and what the scene's stock allows, and reports findings.
//!
//! It reads whole tables, so it runs on demand (`GET /v1/activities/{id}/reconciliation`), never
//! on the grant path.

use std::collections::BTreeMap;

use crate::config::Activity;
use crate::ledger::{EntryKind, LedgerEntry};
use crate::store::{GrantRecord, StockUsed, TokenStatus};

/// One scene's books.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SceneBooks {
    /// The scene.
    pub scene_id: String,
    /// Grants the store holds.
    pub issued_count: u64,
    /// Their cents.
    pub issued_cents: i64,
    /// Red packet entries in the ledger.
    pub credited_count: u64,
    /// Their cents.
    pub credited_cents: i64,
    /// Grants not yet credited.
    pub in_flight_count: u64,
    /// Their cents.
    pub in_flight_cents: i64,
    /// The store's stock counter.
    pub stock_used: StockUsed,
    /// What does not add up.
    pub findings: Vec<Finding>,
}

/// Something that does not add up, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A stable code.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// What would repair it.
    pub repair: &'static str,
}

/// Reconciles every scene of `activity` that has reconciliation on.
pub fn reconcile(
    activity: &Activity,
    grants: &[(GrantRecord, bool)],
    entries: &[LedgerEntry],
    stock: impl Fn(&str) -> StockUsed,
) -> Vec<SceneBooks> {
    let mut books: BTreeMap<&str, SceneBooks> = BTreeMap::new();
    for (scene_id, scene) in &activity.scenes {
        if scene.reconciliation.is_some() {
            books.insert(
                scene_id,
                SceneBooks { scene_id: scene_id.to_string(), stock_used: stock(scene_id), ..SceneBooks::default() },
            );
        }
    }
    let mut credited_ids = std::collections::HashSet::new();
    for entry in entries.iter().filter(|e| e.kind() == EntryKind::RedPacket && e.activity_id == activity.id) {
        credited_ids.insert(entry.id.as_str());
        if let Some(scene) = books.get_mut(entry.scene_id.as_str()) {
            scene.credited_count += 1;
            scene.credited_cents += entry.amount_cents;
        }
    }
    for (grant, parked) in grants.iter().filter(|(g, _)| g.activity_id == activity.id) {
        let Some(scene) = books.get_mut(grant.scene_id.as_str()) else { continue };
        if *parked {
            scene.findings.push(Finding {
                code: "parked_token",
                message: format!("order `{}` was refused by the ledger and is parked", grant.order_no),
                repair: "fund the activity (raise budget_cents) or correct the conflicting entry; parked tokens are queued again on funding",
            });
        }
        scene.issued_count += 1;
        scene.issued_cents += grant.amount_cents;
        let credited = credited_ids.contains(grant.flow_id().as_str());
        if !credited {
            scene.in_flight_count += 1;
            scene.in_flight_cents += grant.amount_cents;
            if grant.status() == TokenStatus::Credited {
                scene.findings.push(Finding {
                    code: "credited_status_without_entry",
                    message: format!("order `{}` is marked credited but the ledger has no entry", grant.order_no),
                    repair: "requeue the token; crediting is idempotent",
                });
            }
        }
    }
    for (scene_id, scene_books) in &mut books {
        let tolerance = activity.scenes[*scene_id].reconciliation.as_ref().map_or(0, |r| r.tolerance_cents);
        if scene_books.credited_cents > scene_books.issued_cents + tolerance {
            scene_books.findings.push(Finding {
                code: "credited_exceeds_issued",
                message: format!(
                    "ledger credited {} cents but the store holds grants for {} cents",
                    scene_books.credited_cents, scene_books.issued_cents
                ),
                repair: "ask clients to restore their tokens; the store lost grants the ledger has",
            });
        }
        if (scene_books.stock_used.cents - scene_books.issued_cents).abs() > tolerance {
            scene_books.findings.push(Finding {
                code: "stock_counter_mismatch",
                message: format!(
                    "stock counter says {} cents, grants add up to {} cents",
                    scene_books.stock_used.cents, scene_books.issued_cents
                ),
                repair: "recount the stock from the grants",
            });
        }
    }
    books.into_values().collect()
}
