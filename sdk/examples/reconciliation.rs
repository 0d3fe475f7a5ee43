//! A reconciliation plugin: flags a scene whose ledger holds more cents than were granted, and
//! credits that lag more than a minute behind (which the host can requeue).

use hongbao_sdk::prelude::*;

struct Plugin;

impl ReconciliationGuest for Plugin {
    fn judge(ctx: CallContext, summary: SceneSummary) -> Result<Vec<Finding>, PluginError> {
        let mut findings = Vec::new();
        if summary.credited_cents > summary.issued_cents {
            findings.push(Finding {
                code: "over_credited".into(),
                severity: Severity::Critical,
                message: format!("credited {} > issued {}", yuan(summary.credited_cents), yuan(summary.issued_cents)),
                repair: None,
            });
        }
        let lag_ms = summary.oldest_in_flight_ms.map_or(0, |t| ctx.now_ms.saturating_sub(t));
        if lag_ms > 60_000 {
            findings.push(Finding {
                code: "credit_lag".into(),
                severity: Severity::Warning,
                message: format!("{} grants wait for crediting, the oldest for {lag_ms} ms", summary.in_flight_count),
                repair: Some(RepairAction::RequeueInFlightOlderThanMs(60_000)),
            });
        }
        Ok(findings)
    }
}

hongbao_sdk::reconciliation::export_reconciliation!(Plugin);
