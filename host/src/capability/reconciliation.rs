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
    /// The oldest in-flight grant's open time, ms since the epoch.
    pub oldest_in_flight_ms: Option<u64>,
    /// Tokens the ledger refused, parked until funding.
    pub parked_count: u64,
    /// The store's stock counter.
    pub stock_used: StockUsed,
    /// What does not add up.
    pub findings: Vec<Finding>,
}

/// Something that does not add up, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A stable code.
    pub code: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// For people.
    pub message: String,
    /// What would repair it, for people.
    pub repair: String,
    /// A repair the host can apply (`POST …/reconciliation:repair`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_action: Option<RepairAction>,
    /// `builtin` or `plugin`.
    pub source: &'static str,
}

impl Finding {
    fn builtin(code: &str, message: String, repair: &str) -> Finding {
        Finding {
            code: code.to_owned(),
            severity: "critical",
            message,
            repair: repair.to_owned(),
            repair_action: None,
            source: "builtin",
        }
    }
}

/// A repair the host knows how to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairAction {
    /// Credit now the in-flight grants older than this many ms (crediting is idempotent).
    RequeueInFlightOlderThanMs(u64),
    /// Recount the stock counter from the grants.
    RecountStock,
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
        if scene.reconciliation.is_some() || scene.plugins.reconciliation.is_some() {
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
            scene.parked_count += 1;
            scene.findings.push(Finding::builtin(
                "parked_token",
                format!("order `{}` was refused by the ledger and is parked", grant.order_no),
                "fund the activity (raise budget_cents) or correct the conflicting entry; parked tokens are queued again on funding",
            ));
        }
        scene.issued_count += 1;
        scene.issued_cents += grant.amount_cents;
        let credited = credited_ids.contains(grant.flow_id().as_str());
        if !credited {
            scene.in_flight_count += 1;
            scene.in_flight_cents += grant.amount_cents;
            scene.oldest_in_flight_ms =
                Some(scene.oldest_in_flight_ms.map_or(grant.open_time_ms, |oldest| oldest.min(grant.open_time_ms)));
            if grant.status() == TokenStatus::Credited {
                scene.findings.push(Finding::builtin(
                    "credited_status_without_entry",
                    format!("order `{}` is marked credited but the ledger has no entry", grant.order_no),
                    "requeue the token; crediting is idempotent",
                ));
            }
        }
    }
    for (scene_id, scene_books) in &mut books {
        let Some(native) = activity.scenes[*scene_id].reconciliation.as_ref() else { continue };
        let tolerance = native.tolerance_cents;
        if scene_books.credited_cents > scene_books.issued_cents + tolerance {
            scene_books.findings.push(Finding::builtin(
                "credited_exceeds_issued",
                format!(
                    "ledger credited {} cents but the store holds grants for {} cents",
                    scene_books.credited_cents, scene_books.issued_cents
                ),
                "ask clients to restore their tokens; the store lost grants the ledger has",
            ));
        }
        if (scene_books.stock_used.cents - scene_books.issued_cents).abs() > tolerance {
            scene_books.findings.push(Finding::builtin(
                "stock_counter_mismatch",
                format!(
                    "stock counter says {} cents, grants add up to {} cents",
                    scene_books.stock_used.cents, scene_books.issued_cents
                ),
                "recount the stock from the grants",
            ));
        }
    }
    books.into_values().collect()
}

/// Asks each scene's reconciliation plugin to judge its books and adds its findings. A plugin
/// that fails adds a `plugin_failed` finding when its policy is `fail_closed`; otherwise the
/// built-in findings stand alone.
pub fn judge_with_plugins(activity: &Activity, books: &mut [SceneBooks], now_ms: u64) {
    use crate::plugin::bindings::reconciliation::exports::hongbao::plugin::reconciliation as wit;
    for scene_books in books {
        let Some(scene) = activity.scenes.get(&scene_books.scene_id) else { continue };
        let Some(plugin) = &scene.plugins.reconciliation else { continue };
        let summary = wit::SceneSummary {
            issued_count: scene_books.issued_count,
            issued_cents: scene_books.issued_cents,
            credited_count: scene_books.credited_count,
            credited_cents: scene_books.credited_cents,
            in_flight_count: scene_books.in_flight_count,
            in_flight_cents: scene_books.in_flight_cents,
            oldest_in_flight_ms: scene_books.oldest_in_flight_ms,
            parked_count: scene_books.parked_count,
            stock_used_count: scene_books.stock_used.count,
            stock_used_cents: scene_books.stock_used.cents,
        };
        let input = crate::plugin::CallInput {
            award_type: &scene.award_type,
            now_ms,
            random_seed: fastrand::u64(..),
            ..crate::plugin::CallInput::default()
        };
        match plugin.judge(&plugin.context(&input), &summary).0 {
            Ok(findings) => scene_books.findings.extend(findings.into_iter().map(|finding| {
                let (repair, repair_action) = match finding.repair {
                    None => (String::new(), None),
                    Some(wit::RepairAction::RequeueInFlightOlderThanMs(ms)) => (
                        format!("credit the in-flight grants older than {ms} ms"),
                        Some(RepairAction::RequeueInFlightOlderThanMs(ms)),
                    ),
                    Some(wit::RepairAction::RecountStock) => {
                        ("recount the stock from the grants".to_owned(), Some(RepairAction::RecountStock))
                    }
                    Some(wit::RepairAction::Manual(text)) => (text, None),
                };
                Finding {
                    code: finding.code,
                    severity: match finding.severity {
                        wit::Severity::Info => "info",
                        wit::Severity::Warning => "warning",
                        wit::Severity::Critical => "critical",
                    },
                    message: finding.message,
                    repair,
                    repair_action,
                    source: "plugin",
                }
            })),
            Err(failure) => {
                if plugin.spec().on_failure == crate::plugin::FailurePolicy::FailClosed {
                    scene_books.findings.push(Finding {
                        code: "plugin_failed".into(),
                        severity: "critical",
                        message: format!("the reconciliation plugin failed: {failure}"),
                        repair: "fix or replace the plugin; the built-in checks above still ran".into(),
                        repair_action: None,
                        source: "plugin",
                    });
                }
            }
        }
    }
}
