//! Built-in reconciliation: per scene with reconciliation on, compares what the token store
//! issued, what the ledger credited and what the scene's stock allows, and reports findings.
//!
//! It reads whole tables, so it runs on demand (`GET /v1/activities/{id}/reconciliation`), never
//! on the grant path, one at a time per host. `POST …/reconciliation:repair` also applies the
//! repairs the findings propose ([`plan_repairs`] decides which grants each one selects).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::json;

use crate::clock::Clock;
use crate::config::{Activity, Snapshot};
use crate::ledger::{EntryKind, Ledger, LedgerEntry};
use crate::store::{GrantKey, GrantRecord, StockUsed, Store, TokenStatus};

/// One reconciliation runs at a time per host: it reads a whole activity, and compares the books
/// on the blocking pool.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Why a reconciliation did not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// No such activity is served.
    #[error("unknown activity `{0}`")]
    UnknownActivity(String),
    /// Another reconciliation is running on this host.
    #[error("a reconciliation is already running on this host")]
    Busy,
    /// The store or the ledger could not be read; nothing was repaired; retry.
    #[error("{0}")]
    Unavailable(String),
}

/// What a reconciliation reads: the served scenes, the token store, the ledger and the time.
pub struct Sources<'a> {
    /// The scenes being served.
    pub snapshot: Arc<Snapshot>,
    /// The token store.
    pub store: &'a Store,
    /// The ledger.
    pub ledger: &'a Ledger,
    /// The time, for the age of in-flight grants.
    pub clock: &'a dyn Clock,
}

/// The answer of a reconciliation: each scene's books, and with a repair, what was done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The activity.
    pub activity_id: String,
    /// The books of each scene with reconciliation on.
    pub scenes: Vec<SceneBooks>,
    /// The repairs, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repairs: Option<Vec<Repair>>,
}

/// A repair the host applied (or could not), for one scene.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Repair {
    /// The scene.
    pub scene_id: String,
    /// The code of the finding that proposed it.
    pub code: String,
    /// What was done.
    pub action: RepairAction,
    /// How it went: `applied`, and what it selected and credited, an `error` or a `reason`.
    pub result: serde_json::Value,
}

/// A repair to apply: what a finding proposes for its scene, with the grants it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRepair {
    /// The scene.
    pub scene_id: String,
    /// The code of the finding that proposed it.
    pub code: String,
    /// The repair.
    pub action: RepairAction,
    /// The grants to credit now (for [`RepairAction::RequeueInFlightOlderThanMs`]).
    pub keys: Vec<GrantKey>,
}

/// One scene's books.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SceneBooks {
    /// The scene.
    pub scene_id: String,
    /// Grants issued: those the store holds and those it retired.
    pub issued_count: u64,
    /// Their cents.
    pub issued_cents: i64,
    /// Of the issued grants, those credited and retired from the store after their retention
    /// (the ledger holds them; see [`crate::retention`]).
    pub retired_count: u64,
    /// Their cents.
    pub retired_cents: i64,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
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
    retired: impl Fn(&str) -> StockUsed,
) -> Vec<SceneBooks> {
    let mut books: BTreeMap<&str, SceneBooks> = BTreeMap::new();
    for (scene_id, scene) in &activity.scenes {
        if scene.reconciliation.is_some() || scene.plugins.reconciliation.is_some() {
            let retired = retired(scene_id);
            books.insert(
                scene_id,
                SceneBooks {
                    scene_id: scene_id.to_string(),
                    stock_used: stock(scene_id),
                    issued_count: retired.count,
                    issued_cents: retired.cents,
                    retired_count: retired.count,
                    retired_cents: retired.cents,
                    ..SceneBooks::default()
                },
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

/// The repairs the findings propose, each action once per scene however many findings propose
/// it, with the grants each selects from `grants` (the store's grants, each with whether it is
/// parked).
pub fn plan_repairs(books: &[SceneBooks], grants: &[(GrantRecord, bool)], now_ms: u64) -> Vec<PlannedRepair> {
    let mut planned = Vec::new();
    for scene_books in books {
        let mut done = Vec::new();
        for finding in &scene_books.findings {
            let Some(action) = finding.repair_action else { continue };
            if done.contains(&action) {
                continue;
            }
            done.push(action);
            let keys = match action {
                // In flight = in the store, not credited, not parked; crediting is idempotent, so
                // crediting them now is always safe.
                RepairAction::RequeueInFlightOlderThanMs(age_ms) => {
                    let cutoff = now_ms.saturating_sub(age_ms);
                    grants
                        .iter()
                        .filter(|(grant, parked)| {
                            !parked
                                && grant.scene_id == scene_books.scene_id
                                && grant.status() != TokenStatus::Credited
                                && grant.open_time_ms <= cutoff
                        })
                        .map(|(grant, _)| grant.key())
                        .collect()
                }
                RepairAction::RecountStock => Vec::new(),
            };
            planned.push(PlannedRepair {
                scene_id: scene_books.scene_id.clone(),
                code: finding.code.clone(),
                action,
                keys,
            });
        }
    }
    planned
}

/// `GET …/reconciliation`: the books of every scene of the activity with reconciliation on.
pub async fn check(sources: &Sources<'_>, activity_id: &str) -> Result<Report, ReconcileError> {
    let judged = judge(sources, activity_id).await?;
    Ok(Report { activity_id: activity_id.to_owned(), scenes: judged.books, repairs: None })
}

/// `POST …/reconciliation:repair`: the books, then the repairs they propose, applied in turn.
/// `credit` credits grants to the ledger now and answers how many it credited (the ledger
/// writer's `credit_keys_now`; passed in, so that this module does not depend on the writer).
pub async fn repair<F, Fut, E>(
    sources: &Sources<'_>,
    activity_id: &str,
    mut credit: F,
) -> Result<Report, ReconcileError>
where
    F: FnMut(Vec<GrantKey>) -> Fut,
    Fut: Future<Output = Result<usize, E>>,
    E: std::fmt::Display,
{
    let judged = judge(sources, activity_id).await?;
    let mut repairs = Vec::new();
    for planned in plan_repairs(&judged.books, &judged.grants, judged.now_ms) {
        let result = match planned.action {
            RepairAction::RequeueInFlightOlderThanMs(_) => {
                let selected = planned.keys.len();
                match credit(planned.keys).await {
                    Ok(credited) => json!({ "applied": true, "selected": selected, "credited": credited }),
                    Err(error) => json!({ "applied": false, "error": error.to_string() }),
                }
            }
            RepairAction::RecountStock => {
                json!({ "applied": false, "reason": "recounting stock is not automated yet; see the finding" })
            }
        };
        repairs.push(Repair { scene_id: planned.scene_id, code: planned.code, action: planned.action, result });
    }
    Ok(Report { activity_id: activity_id.to_owned(), scenes: judged.books, repairs: Some(repairs) })
}

/// The books of an activity, judged, with what they were made from.
struct Judged {
    books: Vec<SceneBooks>,
    grants: Vec<(GrantRecord, bool)>,
    now_ms: u64,
    /// Held until the reconciliation, repairs included, is done.
    _running: tokio::sync::SemaphorePermit<'static>,
}

/// Reads the activity's grants, ledger entries and stock counters, and reconciles and judges
/// them off the async workers.
async fn judge(sources: &Sources<'_>, activity_id: &str) -> Result<Judged, ReconcileError> {
    let activity: Arc<Activity> = sources
        .snapshot
        .activity(activity_id)
        .ok_or_else(|| ReconcileError::UnknownActivity(activity_id.to_owned()))?
        .clone();
    let running = RUNNING.try_acquire().map_err(|_| ReconcileError::Busy)?;
    let now_ms = sources.clock.now_ms();
    let unavailable = |error: String| ReconcileError::Unavailable(error);
    let (grants, retired) = held_and_retired(sources.store, &activity.id).await?;
    let entries = sources.ledger.red_packets_of(&activity.id).await.map_err(|e| unavailable(e.to_string()))?;
    let mut used = std::collections::HashMap::new();
    for scene_id in activity.scenes.keys() {
        let stock =
            sources.store.stock_used(&activity.id, Some(scene_id)).await.map_err(|e| unavailable(e.to_string()))?;
        used.insert(scene_id.clone(), stock);
    }
    // Comparing the books is CPU work over every grant of the activity: off the async workers.
    let (books, grants) = tokio::task::spawn_blocking(move || {
        let mut books = reconcile(
            &activity,
            &grants,
            &entries,
            |scene_id| used.get(scene_id).copied().unwrap_or_default(),
            |scene_id| retired.get(scene_id).copied().unwrap_or_default(),
        );
        judge_with_plugins(&activity, &mut books, now_ms);
        (books, grants)
    })
    .await
    .map_err(|error| unavailable(error.to_string()))?;
    Ok(Judged { books, grants, now_ms, _running: running })
}

/// Reads of the held grants a retirement may interleave with before they are given up.
const HELD_READ_ATTEMPTS: usize = 8;

/// The activity's grants the store holds and what its retired ones add up to, as of one moment:
/// a record retired between reading the grants and reading the totals would count twice (or,
/// read the other way round, not at all), so the totals are read before and after the grants
/// and the read is taken only when they agree (they only grow, and each record leaves the
/// grants and joins the totals in one step).
async fn held_and_retired(
    store: &Store,
    activity_id: &str,
) -> Result<(Vec<(GrantRecord, bool)>, HashMap<String, StockUsed>), ReconcileError> {
    let unavailable = |error: crate::store::StoreError| ReconcileError::Unavailable(error.to_string());
    let mut before = store.retired_of(activity_id).await.map_err(unavailable)?;
    for _ in 0..HELD_READ_ATTEMPTS {
        let grants = store.grants_of(activity_id).await.map_err(unavailable)?;
        let after = store.retired_of(activity_id).await.map_err(unavailable)?;
        if after == before {
            return Ok((grants, after));
        }
        before = after;
    }
    Err(ReconcileError::Unavailable(format!(
        "records kept leaving the token store over {HELD_READ_ATTEMPTS} reads of the activity's grants; retry"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scene_id: &str, order_no: &str, open_time_ms: u64, status: TokenStatus) -> GrantRecord {
        GrantRecord {
            activity_id: "eve".into(),
            order_no: order_no.into(),
            scene_id: scene_id.into(),
            open_time_ms,
            status: status.code(),
            ..GrantRecord::default()
        }
    }

    fn finding(code: &str, repair_action: Option<RepairAction>) -> Finding {
        Finding { repair_action, source: "plugin", ..Finding::builtin(code, String::new(), "") }
    }

    // Proves a requeue selects the scene's in-flight grants old enough (not credited, not parked,
    // not another scene's, not younger than the age), and each action is planned once per scene.
    #[test]
    fn requeue_selects_old_in_flight_grants_once_per_scene() {
        let requeue = RepairAction::RequeueInFlightOlderThanMs(1_000);
        let books = [
            SceneBooks {
                scene_id: "rain".into(),
                findings: vec![
                    finding("stuck", Some(requeue)),
                    finding("stuck-again", Some(requeue)),
                    finding("note", None),
                    finding("recount", Some(RepairAction::RecountStock)),
                ],
                ..SceneBooks::default()
            },
            SceneBooks { scene_id: "quiet".into(), findings: vec![finding("fine", None)], ..SceneBooks::default() },
        ];
        let grants = [
            (grant("rain", "old", 8_000, TokenStatus::Pending), false),
            (grant("rain", "at-cutoff", 9_000, TokenStatus::Processing), false),
            (grant("rain", "young", 9_500, TokenStatus::Pending), false),
            (grant("rain", "credited", 1_000, TokenStatus::Credited), false),
            (grant("rain", "parked", 1_000, TokenStatus::Pending), true),
            (grant("quiet", "other-scene", 1_000, TokenStatus::Pending), false),
        ];
        let planned = plan_repairs(&books, &grants, 10_000);
        let summary: Vec<(&str, &str, RepairAction, Vec<&str>)> = planned
            .iter()
            .map(|p| {
                let orders = p.keys.iter().map(|key| key.order_no.as_str()).collect();
                (p.scene_id.as_str(), p.code.as_str(), p.action, orders)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("rain", "stuck", requeue, vec!["old", "at-cutoff"]),
                ("rain", "recount", RepairAction::RecountStock, vec![]),
            ]
        );
    }
}
