//! Replays: an order number granted before gets its original answer back, never a second grant.
//!
//! Where the original answer is found, in the order the grant path looks:
//!
//! 1. [`answered_locally`]: a store in this process's memory is asked before anything else (a
//!    lookup costs nothing there).
//! 2. The store's grant commit itself ([`GrantCommit::Replayed`]): with a store across the
//!    network, the grant script finds replays, so the common new grant costs one round trip.
//! 3. [`commit_checked`]: the ledger, which outlives a lost token store and keeps every record
//!    the store retired, when the store cannot vouch for the activity
//!    ([`GrantCommit::CheckLedger`], see [`LedgerCheck`]) or has retired some of the user's
//!    records of it ([`GrantCommit::CheckRetired`]).
//! 4. [`find_answered`]: the store (across the network) and the ledger, before a refusal is
//!    answered, so that a retry of an answered grant is never refused.
//!
//! A replay is answered with the original token even if the scene was edited or removed since,
//! and it touches no stock.

use super::{GrantError, GrantResponse, answer};
use crate::app::App;
use crate::ledger::{LedgerEntry, LedgerError};
use crate::store::{
    GrantCommit, GrantRecord, LedgerCheck, StockLimits, StoreError, TokenStatus, UserRate, red_packet_flow_id,
};

/// The original answer, when the store is in this process's memory and has the order.
pub(super) async fn answered_locally(
    app: &App,
    activity_id: &str,
    order_no: &str,
) -> Result<Option<GrantResponse>, GrantError> {
    if !app.store.lookup_is_local() {
        return Ok(None);
    }
    Ok(app.store.lookup(activity_id, order_no).await?.map(|existing| answer(existing, true)))
}

/// What writing a grant came to.
pub(super) enum Committed {
    /// The store's answer.
    Store(GrantCommit),
    /// The ledger had the order: its original answer, and nothing was written.
    Ledger(GrantResponse),
}

/// Writes the grant; when the store cannot vouch for the activity, or retired some of the
/// user's records of it, asks the ledger once (see [`ask_ledger`], [`ask_ledger_retired`]) and
/// writes again with what it said.
pub(super) async fn commit_checked(
    app: &App,
    record: GrantRecord,
    limits: StockLimits,
    user_rate: Option<UserRate>,
) -> Result<Committed, StoreError> {
    let committed = app.store.commit_grant_checked(record.clone(), limits, user_rate, LedgerCheck::Skipped).await?;
    let asked = match committed {
        // Boxed: the ledger's futures are large, and inline they would make every grant's so.
        GrantCommit::CheckLedger => Box::pin(ask_ledger(app, &record.activity_id, &record.order_no)).await,
        GrantCommit::CheckRetired => Box::pin(ask_ledger_retired(app, &record.activity_id, &record.order_no)).await?,
        committed => return Ok(Committed::Store(committed)),
    };
    let check = match asked {
        Ok(check) => check,
        Err(original) => return Ok(Committed::Ledger(original)),
    };
    Ok(Committed::Store(app.store.commit_grant_checked(record, limits, user_rate, check).await?))
}

/// What the ledger says before a grant of a user whose earlier records of the activity the
/// store retired: the original answer if it has the order, else the check to write with. Unlike
/// [`ask_ledger`], a ledger that cannot answer refuses the grant (the store's replay check does
/// not cover a retired order, so granting now could answer a replay with a second token).
pub(crate) async fn ask_ledger_retired(
    app: &App,
    activity_id: &str,
    order_no: &str,
) -> Result<Result<LedgerCheck, GrantResponse>, StoreError> {
    match ledger_entry(app, activity_id, order_no).await {
        Ok(Some(entry)) => Ok(Err(answered_from_ledger(order_no.to_owned(), entry))),
        Ok(None) => Ok(Ok(LedgerCheck::Done { activity_clean: false })),
        Err(error) => Err(StoreError::Unavailable(format!(
            "this user's earlier grants of the activity left the token store and the ledger cannot be asked \
             whether this order is one of them ({error}); retry"
        ))),
    }
}

/// The original answer for an order number about to be refused, from the store (when it is
/// across the network; a local one was asked already) or else from the ledger; `None` when
/// neither has it or they cannot say.
pub(super) async fn find_answered(app: &App, activity_id: &str, order_no: &str) -> Option<GrantResponse> {
    if !app.store.lookup_is_local()
        && let Ok(Some(existing)) = app.store.lookup(activity_id, order_no).await
    {
        return Some(answer(existing, true));
    }
    let entry = ledger_entry(app, activity_id, order_no).await.ok()??;
    Some(answered_from_ledger(order_no.to_owned(), entry))
}

/// What the ledger says before a grant the store cannot vouch for (see [`LedgerCheck`]): the
/// original answer if it has the order, else the check to write the grant with. When the ledger
/// is down, grants go on without it: the store's own replay check still holds, and only a token
/// store lost at the same time could re-grant an order the ledger has, which the ledger then
/// refuses as a conflict (never paid twice).
async fn ask_ledger(app: &App, activity_id: &str, order_no: &str) -> Result<LedgerCheck, GrantResponse> {
    let unchecked = LedgerCheck::Done { activity_clean: false };
    match ledger_entry(app, activity_id, order_no).await {
        Ok(Some(entry)) => Err(answered_from_ledger(order_no.to_owned(), entry)),
        Ok(None) => Ok(match app.ledger.has_red_packets(activity_id).await {
            Ok(has) => LedgerCheck::Done { activity_clean: !has },
            Err(_) => unchecked,
        }),
        Err(_) => Ok(unchecked),
    }
}

/// The ledger's entry for an order, unless the ledger failed less than
/// [`crate::breaker::LEDGER_RETRY_AFTER_MS`] ago (then `Err` at once: a down ledger does not
/// slow every grant by its deadline; one lookup a second tries it again).
async fn ledger_entry(app: &App, activity_id: &str, order_no: &str) -> Result<Option<LedgerEntry>, LedgerError> {
    if !app.ledger_breaker.allows(app.clock.monotonic_ms()) {
        return Err(LedgerError::Unavailable("failed less than a second ago".into()));
    }
    let found = app.ledger.entry(&red_packet_flow_id(activity_id, order_no)).await;
    match &found {
        Err(error) => {
            app.ledger_breaker.failed(app.clock.monotonic_ms());
            tracing::warn!(%error, "ledger unavailable; granting on the token store's replay check alone");
        }
        Ok(_) => app.ledger_breaker.succeeded(),
    }
    found
}

/// The original answer as the ledger keeps it: credited, since the ledger has it.
pub(crate) fn answered_from_ledger(order_no: String, entry: LedgerEntry) -> GrantResponse {
    GrantResponse {
        order_no,
        amount_cents: entry.amount_cents,
        token: entry.token,
        status: TokenStatus::Credited,
        replayed: true,
        bill_copy: entry.memo,
    }
}
