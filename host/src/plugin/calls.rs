//! The five capability calls, one per WIT export, and the host's checks on what each answers:
//! an answer the host cannot accept is a [`PluginFailure::InvalidOutput`], counted as a failure
//! and handled by the scene's failure policy like any other.

use std::sync::atomic::Ordering;

use super::bindings::bill_copy::exports::hongbao::plugin::bill_copy::{Award, BillText};
use super::bindings::compensation::exports::hongbao::plugin::compensation::{Failure, Remedy};
use super::bindings::inventory::exports::hongbao::plugin::inventory::{Allocation, AmountRequest};
use super::bindings::rate_limit::exports::hongbao::plugin::rate_limit::Decision;
use super::bindings::reconciliation::exports::hongbao::plugin::reconciliation::{Finding, SceneSummary};
use super::bindings::types::CallContext;
use super::failure::PluginFailure;
use super::scene_plugin::{CallReport, Instance, Plugin};
use super::{json, limits};

/// The longest locale tag a bill text may name (BCP 47 tags in practice stay short).
const BILL_LOCALE_BYTES_MAX: usize = 35;

/// The longest finding code; codes are identifiers for alerts and dashboards.
const FINDING_CODE_BYTES_MAX: usize = 64;

/// The longest finding message, so findings stay readable in an operator's report.
const FINDING_MESSAGE_BYTES_MAX: usize = 4096;

impl Plugin {
    /// `bill-copy.render`.
    pub fn render(&self, ctx: &CallContext, award: &Award) -> (Result<BillText, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::BillCopy(p) => Some(p.hongbao_plugin_bill_copy().call_render(store, ctx, award)),
            _ => None,
        });
        let result = result.and_then(check_bill_text);
        self.count_invalid(&result);
        if self.records() {
            let outcome = json::outcome(&result.as_ref().map(json::bill_text).map_err(Clone::clone));
            self.record(ctx, json::award(award), &report, outcome);
        }
        (result, report)
    }

    /// `rate-limit.check`.
    pub fn check(&self, ctx: &CallContext) -> (Result<Decision, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::RateLimit(p) => Some(p.hongbao_plugin_rate_limit().call_check(store, ctx)),
            _ => None,
        });
        if self.records() {
            let outcome = json::outcome(&result.as_ref().map(json::decision).map_err(Clone::clone));
            self.record(ctx, serde_json::json!({}), &report, outcome);
        }
        (result, report)
    }

    /// `inventory.choose`; an amount outside `min-cents..=max-cents` is an invalid answer.
    pub fn choose(
        &self,
        ctx: &CallContext,
        request: &AmountRequest,
    ) -> (Result<Allocation, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Inventory(p) => Some(p.hongbao_plugin_inventory().call_choose(store, ctx, *request)),
            _ => None,
        });
        let result = result.and_then(|allocation| check_allocation(request, allocation));
        self.count_invalid(&result);
        if self.records() {
            let outcome = json::outcome(&result.as_ref().map(json::allocation).map_err(Clone::clone));
            self.record(ctx, json::amount_request(request), &report, outcome);
        }
        (result, report)
    }

    /// `compensation.decide`; retry delays are kept within [`limits::RETRY_AFTER_MS_MIN`] and
    /// [`limits::RETRY_AFTER_MS_MAX`].
    pub fn decide(&self, ctx: &CallContext, failure: &Failure) -> (Result<Remedy, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Compensation(p) => Some(p.hongbao_plugin_compensation().call_decide(store, ctx, failure)),
            _ => None,
        });
        let result = result.map(bound_retry);
        if self.records() {
            let outcome = json::outcome(&result.as_ref().map(json::remedy).map_err(Clone::clone));
            self.record(ctx, json::failure(failure), &report, outcome);
        }
        (result, report)
    }

    /// `reconciliation.judge`; more than [`limits::FINDINGS_PER_CALL_MAX`] findings, or codes
    /// that are not short identifiers, are an invalid answer.
    pub fn judge(
        &self,
        ctx: &CallContext,
        summary: &SceneSummary,
    ) -> (Result<Vec<Finding>, PluginFailure>, CallReport) {
        let (result, report) = self.call(ctx, |instance, store| match instance {
            Instance::Reconciliation(p) => Some(p.hongbao_plugin_reconciliation().call_judge(store, ctx, *summary)),
            _ => None,
        });
        let result = result.and_then(check_findings);
        self.count_invalid(&result);
        if self.records() {
            let outcome = json::outcome(&result.as_ref().map(|found| json::findings(found)).map_err(Clone::clone));
            self.record(ctx, json::summary(summary), &report, outcome);
        }
        (result, report)
    }

    /// Counts an answer the caller rejected after the call (a rule the plugin cannot see).
    pub fn count_invalid_answer(&self, failure: &PluginFailure) {
        self.count_invalid::<()>(&Err(failure.clone()));
    }

    fn count_invalid<T>(&self, result: &Result<T, PluginFailure>) {
        if let Err(failure @ PluginFailure::InvalidOutput(_)) = result {
            // `call` counted the call as ok; it was not.
            self.stats.ok.fetch_sub(1, Ordering::Relaxed);
            self.stats.count_failure(failure);
            tracing::warn!(activity = %self.scope.activity_id, scene = %self.scope.scene_id,
                plugin = %self.scope.plugin, %failure, "plugin answer rejected");
        }
    }
}

/// A bill text within [`limits::BILL_TEXT_BYTES_MAX`], with a short locale and no NUL.
fn check_bill_text(text: BillText) -> Result<BillText, PluginFailure> {
    if text.text.len() > limits::BILL_TEXT_BYTES_MAX || text.locale.len() > BILL_LOCALE_BYTES_MAX {
        Err(PluginFailure::InvalidOutput(format!(
            "bill text of {} bytes (at most {}) or locale of {} bytes (at most {BILL_LOCALE_BYTES_MAX})",
            text.text.len(),
            limits::BILL_TEXT_BYTES_MAX,
            text.locale.len()
        )))
    } else if text.text.contains('\0') {
        // No ledger stores NUL in text (PostgreSQL refuses it), and no bill needs it.
        Err(PluginFailure::InvalidOutput("bill text contains a NUL character".into()))
    } else {
        Ok(text)
    }
}

/// An allocation whose amount lies in the request's range (out of stock always passes).
fn check_allocation(request: &AmountRequest, allocation: Allocation) -> Result<Allocation, PluginFailure> {
    match allocation {
        Allocation::Amount(amount) if amount < request.min_cents || amount > request.max_cents => {
            Err(PluginFailure::InvalidOutput(format!(
                "amount {amount} is outside {}..={}",
                request.min_cents, request.max_cents
            )))
        }
        other => Ok(other),
    }
}

/// The remedy with a retry delay clamped into the host's bounds.
fn bound_retry(remedy: Remedy) -> Remedy {
    match remedy {
        Remedy::RetryAfterMs(ms) => {
            Remedy::RetryAfterMs(ms.clamp(limits::RETRY_AFTER_MS_MIN, limits::RETRY_AFTER_MS_MAX))
        }
        other => other,
    }
}

/// At most [`limits::FINDINGS_PER_CALL_MAX`] findings, each with a short identifier code and a
/// bounded message.
fn check_findings(findings: Vec<Finding>) -> Result<Vec<Finding>, PluginFailure> {
    if findings.len() > limits::FINDINGS_PER_CALL_MAX {
        return Err(PluginFailure::InvalidOutput(format!(
            "{} findings (at most {})",
            findings.len(),
            limits::FINDINGS_PER_CALL_MAX
        )));
    }
    if let Some(bad) = findings.iter().find(|f| {
        f.code.is_empty()
            || f.code.len() > FINDING_CODE_BYTES_MAX
            || !f.code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || f.message.len() > FINDING_MESSAGE_BYTES_MAX
    }) {
        return Err(PluginFailure::InvalidOutput(format!(
            "finding code `{}` must match [A-Za-z0-9_-]{{1,64}} with a message of at most 4096 bytes",
            bad.code.chars().take(FINDING_CODE_BYTES_MAX).collect::<String>()
        )));
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::super::bindings::reconciliation::exports::hongbao::plugin::reconciliation::Severity;
    use super::super::bindings::types::Stock;
    use super::*;

    fn invalid<T: std::fmt::Debug>(result: Result<T, PluginFailure>) -> String {
        match result {
            Err(PluginFailure::InvalidOutput(message)) => message,
            other => panic!("expected an invalid answer, got {other:?}"),
        }
    }

    // Proves bill texts are held to their byte bound, a short locale and no NUL, and that a
    // text at the bound passes.
    #[test]
    fn bill_texts_are_bounded_and_free_of_nul() {
        let text = |text: String, locale: &str| BillText { text, locale: locale.into() };
        let at_bound = "账".repeat(limits::BILL_TEXT_BYTES_MAX / 3);
        assert!(check_bill_text(text(at_bound, "zh-CN")).is_ok());
        let over = "x".repeat(limits::BILL_TEXT_BYTES_MAX + 1);
        assert!(invalid(check_bill_text(text(over, "en"))).starts_with("bill text of 513 bytes"));
        assert!(invalid(check_bill_text(text("ok".into(), &"x".repeat(36)))).contains("locale of 36 bytes"));
        assert_eq!(invalid(check_bill_text(text("a\0b".into(), "en"))), "bill text contains a NUL character");
    }

    // Proves an amount must lie within the request's range, inclusive, and that out of stock
    // is always an acceptable answer.
    #[test]
    fn amounts_stay_within_the_request() {
        let request = AmountRequest {
            requested_cents: None,
            min_cents: 10,
            max_cents: 20,
            stock: Stock { count_remaining: None, budget_remaining_cents: None },
        };
        for amount in [10, 15, 20] {
            assert_eq!(check_allocation(&request, Allocation::Amount(amount)), Ok(Allocation::Amount(amount)));
        }
        assert_eq!(invalid(check_allocation(&request, Allocation::Amount(9))), "amount 9 is outside 10..=20");
        assert!(check_allocation(&request, Allocation::Amount(21)).is_err());
        assert_eq!(check_allocation(&request, Allocation::OutOfStock), Ok(Allocation::OutOfStock));
    }

    // Proves retry delays are clamped into the host's bounds and other remedies pass unchanged.
    #[test]
    fn retry_delays_are_clamped() {
        assert_eq!(bound_retry(Remedy::RetryAfterMs(0)), Remedy::RetryAfterMs(limits::RETRY_AFTER_MS_MIN));
        assert_eq!(bound_retry(Remedy::RetryAfterMs(u64::MAX)), Remedy::RetryAfterMs(limits::RETRY_AFTER_MS_MAX));
        assert_eq!(bound_retry(Remedy::RetryAfterMs(1_000)), Remedy::RetryAfterMs(1_000));
        assert_eq!(bound_retry(Remedy::ReleaseStock), Remedy::ReleaseStock);
        assert_eq!(bound_retry(Remedy::GiveUpAndAlert("why".into())), Remedy::GiveUpAndAlert("why".into()));
    }

    // Proves findings are bounded in number, codes are short identifiers and messages are
    // bounded; the offending code is quoted, cut to the code bound.
    #[test]
    fn findings_are_bounded_identifiers() {
        let finding = |code: &str, message_bytes: usize| Finding {
            code: code.into(),
            severity: Severity::Warning,
            message: "m".repeat(message_bytes),
            repair: None,
        };
        assert!(check_findings(vec![finding("credit_lag", 10), finding("a-B-9", FINDING_MESSAGE_BYTES_MAX)]).is_ok());
        assert!(check_findings(Vec::new()).is_ok());
        let many = (0..=limits::FINDINGS_PER_CALL_MAX).map(|_| finding("x", 1)).collect();
        assert_eq!(invalid(check_findings(many)), "65 findings (at most 64)");
        for bad in ["", "has space", "ünïcode", &"c".repeat(FINDING_CODE_BYTES_MAX + 1)] {
            assert!(invalid(check_findings(vec![finding(bad, 1)])).starts_with("finding code `"), "{bad}");
        }
        let long = invalid(check_findings(vec![finding(&"c".repeat(100), 1)]));
        assert!(long.contains(&format!("`{}`", "c".repeat(FINDING_CODE_BYTES_MAX))), "{long}");
        assert!(check_findings(vec![finding("ok", FINDING_MESSAGE_BYTES_MAX + 1)]).is_err());
    }
}
