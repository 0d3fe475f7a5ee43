//! Refunds at expiry: what nobody claimed goes back to the sender, exactly once.
//!
//! Every host sweeps every [`REFUND_SWEEP_INTERVAL`]; a packet due is taken by one host under a
//! lease, and its steps are each idempotent, so a host that dies anywhere in them leaves the
//! rest to the next sweep (its own after a restart, or another host's once the lease lapses):
//!
//! 1. **close** the packet in the store: from then on no claim succeeds, so the claims read back
//!    are final, whatever any host's clock says;
//! 2. **grant** every claim that has no token yet (a grabber whose host died between claiming and
//!    granting): the share is theirs;
//! 3. write the refund entry `pr/{packet_id}` (total − claimed) in the ledger: a second write of
//!    the same id is a replay, never a second refund;
//! 4. mark the packet refunded in the store, which takes it off the sweep.
//!
//! A packet the store only *expects* (its send named it, then the host died before storing it)
//! is created from the ledger's send entry if the debit happened, and forgotten otherwise.

use std::time::Duration;

use super::{PacketError, grab_order_no, grant_claim};
use crate::app::App;
use crate::ledger::{EntryKind, LedgerEntry, packet_account, packet_activity, wallet_account};

/// How often each host looks for packets due.
pub const REFUND_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How long a host holds a packet it refunds before another may take it over.
pub const REFUND_LEASE_MS: u64 = 10_000;

/// How long after its expiry an expected packet with no send in the ledger is kept before it is
/// forgotten: far beyond the ledger's operation timeout, so a send still in flight lands first.
pub const EXPECTED_GRACE_MS: u64 = 60_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Packets refunded now.
    pub refunded: usize,
    /// Packets whose steps failed; the next sweep tries again.
    pub failed: usize,
}

/// One sweep over the packets due.
pub async fn sweep(app: &App) -> SweepReport {
    let mut report = SweepReport::default();
    let due = match app.store.packets_due(app.clock.now_ms()).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "packet refund sweep could not read the packets due");
            report.failed += 1;
            return report;
        }
    };
    for packet_id in due {
        match app.store.packet_lease(&packet_id, REFUND_LEASE_MS).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, packet = %packet_id, "packet refund lease failed");
                report.failed += 1;
                continue;
            }
        }
        match refund(app, &packet_id).await {
            Ok(true) => report.refunded += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, packet = %packet_id, "packet refund failed; the next sweep tries again");
                report.failed += 1;
            }
        }
    }
    report
}

/// Runs [`sweep`] until `shutdown` turns true.
pub async fn run(app: std::sync::Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFUND_SWEEP_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        sweep(&app).await;
    }
}

/// Closes a packet now, before its expiry, and refunds what nobody claimed (an operator's
/// `POST /v1/packets/{id}/refund`: a packet sent by mistake or under a fraud hold). The same
/// steps as at expiry, so it is safe beside a sweep.
pub async fn refund_now(app: &App, packet_id: &str) -> Result<(), PacketError> {
    if !super::is_packet_id(packet_id) || app.store.packet(packet_id).await?.is_none() {
        return Err(PacketError::NotFound(packet_id.chars().take(32).collect()));
    }
    refund(app, packet_id).await.map(|_| ())
}

/// Refunds one packet due (the steps of the module docs); `true` when it is refunded now.
pub async fn refund(app: &App, packet_id: &str) -> Result<bool, PacketError> {
    let state = match app.store.packet(packet_id).await? {
        Some(state) => state,
        None => return settle_expected(app, packet_id).await.map(|_| false),
    };
    if let Some(cents) = state.refunded_cents {
        app.store.packet_refunded(packet_id, cents).await?;
        return Ok(false);
    }
    let def = state.def;
    let claims = app.store.packet_close(packet_id).await?;
    crate::failpoint::hit("packet.refund.after_close");
    let activity_id = packet_activity(packet_id);
    let mut claimed_cents = 0i64;
    for &(act_id, index) in &claims {
        claimed_cents += def.shares[index as usize];
        if app.store.lookup(&activity_id, &grab_order_no(act_id)).await?.is_none() {
            grant_claim(app, &def, act_id, index, def.app_id).await?;
        }
    }
    let refund_id = format!("pr/{packet_id}");
    if let Some(written) = app.ledger.entry(&refund_id).await? {
        // Written before (by a host that died before marking it): that is the refund.
        app.store.packet_refunded(packet_id, written.amount_cents).await?;
        return Ok(true);
    }
    let refund_cents = def.total_cents - claimed_cents;
    if refund_cents > 0 {
        let entry = LedgerEntry {
            id: refund_id,
            kind: EntryKind::PacketRefund as u32,
            debit_account: packet_account(packet_id),
            credit_account: wallet_account(def.sender_act_id),
            amount_cents: refund_cents,
            // The expiry, not the refunder's clock: every host writes the same entry.
            time_ms: def.expires_at_ms,
            act_id: def.sender_act_id,
            memo: def.greeting.clone(),
            reference: def.request_id.clone(),
            ..LedgerEntry::default()
        };
        app.ledger.transfer(entry).await?;
        crate::failpoint::hit("packet.refund.after_ledger");
    }
    app.store.packet_refunded(packet_id, refund_cents).await?;
    tracing::info!(packet = %packet_id, refund_cents, claims = claims.len(), "packet refunded");
    Ok(true)
}

/// A packet the store expects but does not hold: stored from the ledger's send entry if the
/// send's debit happened, forgotten once it plainly did not.
async fn settle_expected(app: &App, packet_id: &str) -> Result<(), PacketError> {
    match super::rebuild(app, packet_id).await? {
        true => {}
        false => {
            let due = app.store.packets_due(app.clock.now_ms().saturating_sub(EXPECTED_GRACE_MS)).await?;
            if due.iter().any(|id| id == packet_id) {
                app.store.packet_forget(packet_id).await?;
            }
        }
    }
    Ok(())
}
