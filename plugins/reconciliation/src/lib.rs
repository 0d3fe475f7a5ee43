//! `hb-reconciliation`: judges one scene's books.
//!
//! Findings, in this order:
//! - `credit_lag` (warning): grants wait for crediting longer than `lag_ms`; repair: requeue them.
//! - `over_credited` (critical): the ledger holds more than was granted; a person must look.
//! - `stock_drift` (warning): the stock counter and the grants disagree; repair: recount.
//! - `parked_tokens` (critical): the ledger refused tokens for lack of funds; a person must fund.
//!
//! Settings: `tolerance_cents` (default 0), `lag_ms` (default 60000).

use hongbao_sdk::prelude::*;

struct Reconciliation;

impl ReconciliationGuest for Reconciliation {
    fn judge(ctx: CallContext, summary: SceneSummary) -> Result<Vec<Finding>, PluginError> {
        let tolerance_cents = setting_i64(&ctx, "tolerance_cents", 0)?;
        let lag_ms = setting_u64(&ctx, "lag_ms", 60_000)?;
        Ok(judge(&summary, ctx.now_ms, tolerance_cents, lag_ms))
    }
}

fn judge(s: &SceneSummary, now_ms: u64, tolerance_cents: i64, lag_ms: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    // i128 throughout: sums of cents near i64::MAX must not wrap into a false "all clear".
    let tolerance = i128::from(tolerance_cents);

    if let (true, Some(oldest_ms)) = (s.in_flight_count > 0, s.oldest_in_flight_ms) {
        let waited_ms = now_ms.saturating_sub(oldest_ms);
        if waited_ms > lag_ms {
            findings.push(Finding {
                code: "credit_lag".into(),
                severity: Severity::Warning,
                message: format!(
                    "{} grants ({} cents) wait for crediting, the oldest for {waited_ms} ms",
                    s.in_flight_count, s.in_flight_cents
                ),
                repair: Some(RepairAction::RequeueInFlightOlderThanMs(lag_ms)),
            });
        }
    }
    if i128::from(s.credited_cents) > i128::from(s.issued_cents) + tolerance {
        findings.push(Finding {
            code: "over_credited".into(),
            severity: Severity::Critical,
            message: format!(
                "the ledger credited {} cents in {} entries, but only {} cents were granted in {} tokens",
                s.credited_cents, s.credited_count, s.issued_cents, s.issued_count
            ),
            repair: Some(RepairAction::Manual(
                "compare the ledger entries with the tokens, reverse entries without a token, and restore tokens \
                 the store lost"
                    .into(),
            )),
        });
    }
    if (i128::from(s.stock_used_cents) - i128::from(s.issued_cents)).abs() > tolerance {
        findings.push(Finding {
            code: "stock_drift".into(),
            severity: Severity::Warning,
            message: format!(
                "the stock counter holds {} cents in {} grants, the grants hold {} cents in {}",
                s.stock_used_cents, s.stock_used_count, s.issued_cents, s.issued_count
            ),
            repair: Some(RepairAction::RecountStock),
        });
    }
    if s.parked_count > 0 {
        findings.push(Finding {
            code: "parked_tokens".into(),
            severity: Severity::Critical,
            message: format!("{} tokens are parked: the ledger refused them", s.parked_count),
            repair: Some(RepairAction::Manual(
                "fund the activity's budget in the ledger; parked tokens are credited once it is funded".into(),
            )),
        });
    }
    findings
}

hongbao_sdk::reconciliation::export_reconciliation!(Reconciliation);

#[cfg(test)]
mod tests {
    use super::*;

    fn books() -> SceneSummary {
        SceneSummary {
            issued_count: 10,
            issued_cents: 1_000,
            credited_count: 10,
            credited_cents: 1_000,
            in_flight_count: 0,
            in_flight_cents: 0,
            oldest_in_flight_ms: None,
            parked_count: 0,
            stock_used_count: 10,
            stock_used_cents: 1_000,
        }
    }

    fn codes(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn balanced_books_have_no_findings() {
        assert!(judge(&books(), 1_000_000, 0, 60_000).is_empty());
    }

    #[test]
    fn every_finding_in_order() {
        let summary = SceneSummary {
            in_flight_count: 2,
            in_flight_cents: 300,
            oldest_in_flight_ms: Some(1_000),
            credited_cents: 1_500,
            stock_used_cents: 900,
            parked_count: 1,
            ..books()
        };
        let findings = judge(&summary, 100_000, 0, 60_000);
        assert_eq!(codes(&findings), ["credit_lag", "over_credited", "stock_drift", "parked_tokens"]);
        assert_eq!(findings[0].message, "2 grants (300 cents) wait for crediting, the oldest for 99000 ms");
        assert_eq!(findings[0].repair, Some(RepairAction::RequeueInFlightOlderThanMs(60_000)));
        assert_eq!(findings[1].severity, Severity::Critical);
        assert_eq!(findings[2].repair, Some(RepairAction::RecountStock));
        // Within tolerance, and not yet lagging.
        assert_eq!(codes(&judge(&summary, 61_000, 500, 60_000)), ["parked_tokens"]);
    }
}
