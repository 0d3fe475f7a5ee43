//! Refunds at expiry: what no token will take goes back to the sender, exactly once.
//!
//! Every host sweeps every [`REFUND_SWEEP_INTERVAL`]. A sweep *takes* the packets due (the store
//! puts each back [`REFUND_LEASE_MS`] later, so the hosts of a fleet take disjoint packets and
//! one whose refund fails steps aside instead of holding up the rest), and refunds each. Every
//! step is idempotent, so a host that dies anywhere in them leaves the rest to the next sweep (its
//! own after a restart, or another host's once the lease lapses):
//!
//! 1. **close** the packet in the store: from then on no claim succeeds, so the claims read back
//!    are final, whatever any host's clock says;
//! 2. **grant** every claim that has no token yet (a grabber whose host died between claiming and
//!    granting): the share is theirs;
//! 3. **credit** every grab token the store holds now, ahead of the queue, so the packet account
//!    holds only what no token will take (plus what tokens the ledger refused still owe);
//! 4. write the refund entry `pr/{packet_id}`: the packet account's balance less what stored
//!    tokens still owe. A second write of the same id is a replay, and a refund entry written
//!    before is used as it is, never computed again;
//! 5. mark the packet refunded in the store, which takes it off the sweep.
//!
//! The refund is decided from the ledger and the tokens, not from the claims, so it stays exact
//! even if the store lost claims: money a stored token will take stays in the packet account.
//!
//! A packet the store only *expects* (its send named it, then the host died before storing it)
//! is rebuilt from the ledger's send entry if the debit happened, and forgotten a while after its
//! expiry otherwise.

use std::collections::HashSet;
use std::time::Duration;

use super::{PacketError, grant_claim, rebuild};
use crate::app::App;
use crate::ledger::{EntryKind, LedgerEntry, packet_account, packet_activity, wallet_account};
use crate::store::{GrantRecord, TokenStatus};

/// How often each host looks for packets due.
pub const REFUND_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How long a packet taken by one host's sweep is left to it before the sweep offers it again.
pub const REFUND_LEASE_MS: u64 = 10_000;

/// How long after its expiry an expected packet with no send in the ledger is kept before it is
/// forgotten: far beyond the ledger's operation timeout, so a send still in flight lands first.
pub const EXPECTED_GRACE_MS: u64 = 60_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Packets refunded now.
    pub refunded: usize,
    /// Packets whose steps failed; a later sweep tries again.
    pub failed: usize,
}

/// One sweep over the packets due.
pub async fn sweep(app: &App) -> SweepReport {
    let mut report = SweepReport::default();
    let due = match app.store.packets_take_due(app.clock.now_ms(), REFUND_LEASE_MS).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "packet refund sweep could not read the packets due");
            report.failed += 1;
            return report;
        }
    };
    for packet_id in due {
        match refund(app, &packet_id, false).await {
            Ok(true) => report.refunded += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, packet = %packet_id, "packet refund failed; a later sweep tries again");
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

/// Closes a packet now, before its expiry, and refunds what no token will take (an operator's
/// `POST /v1/packets/{id}/refund`: a packet sent by mistake or under a fraud hold). The same
/// steps as at expiry, so it is safe beside a sweep.
pub async fn refund_now(app: &App, packet_id: &str) -> Result<(), PacketError> {
    super::stored(app, packet_id).await?;
    refund(app, packet_id, true).await.map(|_| ())
}

/// Refunds one packet (the steps of the module docs); `true` when it is refunded now. Unless
/// `early`, a packet this host's clock does not see expired yet is left for a later sweep.
pub async fn refund(app: &App, packet_id: &str, early: bool) -> Result<bool, PacketError> {
    let state = match app.store.packet(packet_id).await? {
        Some(state) => state,
        None => return settle_expected(app, packet_id).await.map(|_| false),
    };
    if let Some(cents) = state.refunded_cents {
        app.store.packet_refunded(packet_id, cents).await?;
        return Ok(false);
    }
    let def = state.def;
    let now_ms = app.clock.now_ms();
    if !early && now_ms < def.expires_at_ms {
        return Ok(false);
    }
    let claims = app.store.packet_close(packet_id).await?;
    crate::failpoint::hit("packet.refund.after_close");
    let activity_id = packet_activity(packet_id);
    // One read of the packet's tokens: a claim with none gets its token now (a user's one
    // token per packet is the order `{act_id}_grab`).
    let mut records: Vec<GrantRecord> = app.store.grants_of(&activity_id).await?.into_iter().map(|(r, _)| r).collect();
    let holders: HashSet<i64> = records.iter().map(|record| record.act_id).collect();
    for &(act_id, index) in &claims {
        if !holders.contains(&act_id) {
            records.push(grant_claim(app, &def, act_id, index, def.app_id).await?.0);
        }
    }
    let owed_cents = credit_grabs_now(app, &activity_id, &records).await?;
    let refund_id = format!("pr/{packet_id}");
    if let Some(written) = app.ledger.entry(&refund_id).await? {
        // Written before (by a host that died before marking it): that is the refund.
        app.store.packet_refunded(packet_id, written.amount_cents).await?;
        return Ok(true);
    }
    let balance_cents = app.ledger.balance(&packet_account(packet_id)).await?;
    let refund_cents = balance_cents - owed_cents;
    if refund_cents < 0 {
        return Err(PacketError::Unavailable(format!(
            "packet `{packet_id}`: its account holds {balance_cents} cents but its tokens still owe {owed_cents}"
        )));
    }
    if refund_cents > 0 {
        let entry = LedgerEntry {
            id: refund_id,
            kind: EntryKind::PacketRefund as u32,
            debit_account: packet_account(packet_id),
            credit_account: wallet_account(def.sender_act_id),
            amount_cents: refund_cents,
            // The expiry (or now, for an early refund), not a refunder's clock at expiry: every
            // host writes the same entry.
            time_ms: def.expires_at_ms.min(if early { now_ms } else { def.expires_at_ms }),
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

/// Credits those of the packet's grab tokens `records` the ledger lacks, now; answers the cents
/// those the ledger still refuses owe (they stay parked and owed).
async fn credit_grabs_now(app: &App, activity_id: &str, records: &[GrantRecord]) -> Result<i64, PacketError> {
    let uncredited = |credited: &HashSet<String>| {
        records
            .iter()
            .filter(|record| record.status() != TokenStatus::Credited && !credited.contains(&record.flow_id()))
            .collect::<Vec<_>>()
    };
    let credited_ids = |entries: Vec<LedgerEntry>| entries.into_iter().map(|entry| entry.id).collect::<HashSet<_>>();
    let owed = uncredited(&credited_ids(app.ledger.red_packets_of(activity_id).await?));
    if !owed.is_empty() {
        app.writer.credit_keys_now(owed.iter().map(|record| record.key()).collect()).await?;
    }
    let credited = credited_ids(app.ledger.red_packets_of(activity_id).await?);
    Ok(uncredited(&credited).iter().map(|record| record.amount_cents).sum())
}

/// A packet the store expects but does not hold: rebuilt from the ledger's send entry if the
/// send's debit happened, forgotten once it plainly did not.
async fn settle_expected(app: &App, packet_id: &str) -> Result<(), PacketError> {
    if rebuild(app, packet_id).await? {
        return Ok(());
    }
    let expiry = app.store.packet_expected_expiry(packet_id).await?;
    if expiry.is_none_or(|expires_at_ms| app.clock.now_ms() >= expires_at_ms + EXPECTED_GRACE_MS) {
        app.store.packet_forget(packet_id).await?;
    }
    Ok(())
}
