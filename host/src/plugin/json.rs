//! The JSON forms of a plugin call — its context, each capability's input and answer — shared
//! by `hongbao plugin run` (which reads the input and prints the answer), the decision log
//! (which records both) and `hongbao plugin replay` (which reads a record back and compares
//! answers), so that a record is exactly what `plugin run` takes.

use serde_json::{Value, json};

use super::bindings::bill_copy::exports::hongbao::plugin::bill_copy as bill_copy_wit;
use super::bindings::compensation::exports::hongbao::plugin::compensation as compensation_wit;
use super::bindings::inventory::exports::hongbao::plugin::inventory as inventory_wit;
use super::bindings::rate_limit::exports::hongbao::plugin::rate_limit as rate_limit_wit;
use super::bindings::reconciliation::exports::hongbao::plugin::reconciliation as reconciliation_wit;
use super::bindings::types::{CallContext, Stock};
use super::failure::PluginFailure;

/// A call context as `plugin run` reads it (`settings` an object of strings).
pub fn context(ctx: &CallContext) -> Value {
    let settings: serde_json::Map<String, Value> =
        ctx.settings.iter().map(|(key, value)| (key.clone(), Value::String(value.clone()))).collect();
    json!({
        "activity_id": ctx.activity_id, "scene_id": ctx.scene_id, "award_type": ctx.award_type,
        "app_id": ctx.app_id, "act_id": ctx.act_id, "rain_id": ctx.rain_id, "stage": ctx.stage,
        "now_ms": ctx.now_ms, "random_seed": ctx.random_seed, "locale": ctx.locale, "settings": settings,
    })
}

/// A stock as `plugin run` reads it.
pub fn stock(stock: &Stock) -> Value {
    json!({ "count_remaining": stock.count_remaining, "budget_remaining_cents": stock.budget_remaining_cents })
}

/// `bill-copy.render`'s input.
pub fn award(award: &bill_copy_wit::Award) -> Value {
    json!({ "amount_cents": award.amount_cents, "scene_name": award.scene_name, "activity_name": award.activity_name })
}

/// `inventory.choose`'s input (its stock under `stock`).
pub fn amount_request(request: &inventory_wit::AmountRequest) -> Value {
    json!({
        "requested_cents": request.requested_cents, "min_cents": request.min_cents,
        "max_cents": request.max_cents, "stock": stock(&request.stock),
    })
}

/// `compensation.decide`'s input.
pub fn failure(failure: &compensation_wit::Failure) -> Value {
    let step = match failure.step {
        compensation_wit::Step::StoreGrant => "store-grant",
        compensation_wit::Step::LedgerCredit => "ledger-credit",
        compensation_wit::Step::LedgerRefused => "ledger-refused",
        compensation_wit::Step::WithdrawalCredit => "withdrawal-credit",
    };
    json!({
        "step": step, "attempt": failure.attempt, "error_code": failure.error_code,
        "error_message": failure.error_message, "order_no": failure.order_no,
        "amount_cents": failure.amount_cents, "first_failed_ms": failure.first_failed_ms,
    })
}

/// `reconciliation.judge`'s input.
pub fn summary(summary: &reconciliation_wit::SceneSummary) -> Value {
    json!({
        "issued_count": summary.issued_count, "issued_cents": summary.issued_cents,
        "credited_count": summary.credited_count, "credited_cents": summary.credited_cents,
        "in_flight_count": summary.in_flight_count, "in_flight_cents": summary.in_flight_cents,
        "oldest_in_flight_ms": summary.oldest_in_flight_ms, "parked_count": summary.parked_count,
        "stock_used_count": summary.stock_used_count, "stock_used_cents": summary.stock_used_cents,
    })
}

/// A bill text.
pub fn bill_text(text: &bill_copy_wit::BillText) -> Value {
    json!({ "locale": text.locale, "text": text.text })
}

/// A rate-limit decision.
pub fn decision(decision: &rate_limit_wit::Decision) -> Value {
    match decision {
        rate_limit_wit::Decision::Allow => json!({ "decision": "allow" }),
        rate_limit_wit::Decision::Reject(reason) => json!({ "decision": "reject", "reason": reason }),
    }
}

/// An inventory allocation.
pub fn allocation(allocation: &inventory_wit::Allocation) -> Value {
    match allocation {
        inventory_wit::Allocation::Amount(cents) => json!({ "amount_cents": cents }),
        inventory_wit::Allocation::OutOfStock => json!({ "out_of_stock": true }),
    }
}

/// A compensation remedy.
pub fn remedy(remedy: &compensation_wit::Remedy) -> Value {
    match remedy {
        compensation_wit::Remedy::RetryAfterMs(ms) => json!({ "remedy": "retry_after_ms", "ms": ms }),
        compensation_wit::Remedy::ReleaseStock => json!({ "remedy": "release_stock" }),
        compensation_wit::Remedy::GiveUpAndAlert(reason) => json!({ "remedy": "give_up_and_alert", "reason": reason }),
    }
}

/// Reconciliation findings.
pub fn findings(findings: &[reconciliation_wit::Finding]) -> Value {
    json!({ "findings": findings.iter().map(|finding| json!({
        "code": finding.code,
        "severity": format!("{:?}", finding.severity).to_lowercase(),
        "message": finding.message,
        "repair": finding.repair.as_ref().map(|repair| format!("{repair:?}")),
    })).collect::<Vec<_>>() })
}

/// A call's outcome as `plugin run` prints it: `{"result": …}` or `{"failure": {"code",
/// "message"}}`.
pub fn outcome(result: &Result<Value, PluginFailure>) -> Value {
    match result {
        Ok(value) => json!({ "result": value }),
        Err(failure) => json!({ "failure": { "code": failure.code(), "message": failure.to_string() } }),
    }
}
