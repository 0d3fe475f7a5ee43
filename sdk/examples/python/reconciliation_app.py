"""A reconciliation plugin in Python: flags a scene whose ledger holds more cents than were
granted, and credits that lag more than a minute behind (which the host can requeue). The same
decisions as sdk/examples/reconciliation.rs.

World `reconciliation-plugin`: class `Reconciliation`; return a list of findings."""
from typing import List

from wit_world import exports
from wit_world.exports.reconciliation import Finding, RepairAction_RequeueInFlightOlderThanMs, SceneSummary, Severity
from wit_world.imports.types import CallContext

from hb_common import yuan


class Reconciliation(exports.Reconciliation):
    def judge(self, ctx: CallContext, summary: SceneSummary) -> List[Finding]:
        findings = []
        if summary.credited_cents > summary.issued_cents:
            findings.append(
                Finding(
                    code="over_credited",
                    severity=Severity.CRITICAL,
                    message=f"credited {yuan(summary.credited_cents)} > issued {yuan(summary.issued_cents)}",
                    repair=None,
                )
            )
        oldest = summary.oldest_in_flight_ms
        lag_ms = 0 if oldest is None else max(ctx.now_ms - oldest, 0)  # saturating_sub
        if lag_ms > 60_000:
            findings.append(
                Finding(
                    code="credit_lag",
                    severity=Severity.WARNING,
                    message=f"{summary.in_flight_count} grants wait for crediting, the oldest for {lag_ms} ms",
                    repair=RepairAction_RequeueInFlightOlderThanMs(60_000),
                )
            )
        return findings
