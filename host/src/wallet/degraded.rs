//! Wallet reads that degrade instead of failing (seed 001 §4.2.2).
//!
//! - **Ledger down.** `GET /v1/wallets/{act_id}` answers from the token store plus the last
//!   ledger figures this host read for the user ([`FiguresCache`]), with their age; the flow
//!   answers with the tokens the store holds (pending, processing, and the credited ones it
//!   still keeps), without the ledger's entries (withdrawals, older red packets).
//! - **Token store down.** Both answer from the ledger: the credited balance and the ledger's
//!   entries; what is pending is unknown.
//! - **Both down:** 503 `unavailable`, as before.
//!
//! A degraded answer names the backend it lacks in `degraded` (`["ledger"]` or `["tokens"]`). A
//! whole answer has no `degraded` field at all, so whole answers are byte for byte what they
//! were. A number the host cannot know is `null`, never a guess: `pending_cents` with the store
//! down, `credited_cents` when the ledger is down and this host never read the user's figures,
//! and `balance_cents` and `total_income_cents` whenever a part of them is unknown.
//!
//! Reads pass through the breakers on [`App`]: once a backend failed, reads skip it for
//! [`crate::breaker::LEDGER_RETRY_AFTER_MS`] and answer degraded at once instead of each waiting
//! for its deadline, and one read a second tries it again, so answers are whole again within
//! about a second of the backend's return. Withdrawals never come here: they try both backends
//! and fail with them (see [`super::withdraw`]).
//!
//! # Pending on top of old figures
//!
//! With the ledger down, the balance shown is the remembered figures plus the tokens unsettled
//! in the store now. Counted naively, a token the figures already contain would be shown twice:
//! the writer credits a token in the ledger first and marks it credited in the store after, so
//! a token can be in the ledger's balance while the store still says processing (for a moment,
//! or for the whole outage when the writer stopped in between, since marking it again needs the
//! ledger). A token the writer credited *after* the figures were read is not in them, and
//! counting it as pending is right.
//!
//! The figures are read after a store read that listed the user's unsettled tokens, and the
//! ledger said in the same snapshot which of those it already had; [`LedgerFigures`] keeps the
//! open time of the newest of them (`contains_opened_below_ms`, usually 0: none). A token
//! unsettled now that opened after all of those was, when the figures were read, either
//! unsettled and not in the ledger, or not yet in the store (and the ledger credits only what
//! the store queued), so the figures cannot contain it: it counts as pending. A token that
//! opened no later than the newest one the figures contain might be in them: it is reported
//! apart, in `unconfirmed_cents` and `unconfirmed_count`, and counted in neither the balance
//! nor pending. The rule compares token open times with token open times only, never with this
//! host's clock, so clock skew between the hosts of a fleet cannot break it.
//!
//! What the rule cannot see, and `ledger_figures_age_ms` owns up to: credits and withdrawals
//! after the figures were read that the store no longer lists (the balance may be short by
//! them, or long by a withdrawal another host made), and a token that reached the store in the
//! instant between the two reads, was credited before the snapshot, and whose writer then
//! stopped before marking it (shown twice until the ledger is back).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{
    FlowPage, WalletError, WalletSummary, entry_item, flow_bounds, merged_page, page_of, token_item, whole_summary,
};
use crate::app::App;
use crate::ledger::{LedgerError, LedgerWallet};
use crate::store::{GrantRecord, StoreError, TokenStatus};

/// The users whose last ledger figures one host remembers: enough for every user who opened
/// their wallet on this host during a rain (a host serves a share of the users), in about
/// 43 MB (see [`FiguresCache`]). It is 16 shards × 2 generations × 28,672 users, 28,672 being
/// the most a 32,768-bucket table holds, so no table grows to twice the memory for a few users.
pub const FIGURES_USERS_MAX: usize = FIGURES_SHARDS * 2 * FIGURES_GENERATION_USERS;

/// Shards of the cache, each with its own lock, so wallet reads on many cores do not queue on
/// one mutex.
const FIGURES_SHARDS: usize = 16;

/// Users one generation of one shard holds (see [`FIGURES_USERS_MAX`]).
const FIGURES_GENERATION_USERS: usize = 28_672;

/// `degraded` of an answer made without the ledger.
pub const DEGRADED_LEDGER: &str = "ledger";

/// `degraded` of an answer made without the token store.
pub const DEGRADED_TOKENS: &str = "tokens";

/// What the ledger said about a user's wallet, as one host last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerFigures {
    /// The wallet account's balance.
    pub balance_cents: i64,
    /// Every red packet credited.
    pub income_cents: i64,
    /// When the ledger was asked (wall clock, ms): the snapshot is no older, so ages computed
    /// from it are never too young.
    pub read_at_ms: u64,
    /// One past the newest open time of the tokens the store listed unsettled that this
    /// snapshot already held; 0 when it held none (see the module docs).
    pub contains_opened_below_ms: u64,
}

impl LedgerFigures {
    /// The figures of a ledger snapshot taken after a store read that listed `unsettled`
    /// (each record with its flow id) and asked the ledger about them.
    pub fn read<'r>(
        ledger: &LedgerWallet,
        unsettled: impl IntoIterator<Item = (&'r GrantRecord, &'r String)>,
        read_at_ms: u64,
    ) -> LedgerFigures {
        let contains_opened_below_ms = unsettled
            .into_iter()
            .filter(|(_, flow_id)| ledger.credited_flow_ids.contains(*flow_id))
            .map(|(record, _)| record.open_time_ms.saturating_add(1))
            .max()
            .unwrap_or(0);
        LedgerFigures {
            balance_cents: ledger.balance_cents,
            income_cents: ledger.income_cents,
            read_at_ms,
            contains_opened_below_ms,
        }
    }
}

/// The last [`LedgerFigures`] of each user this host read, for at most [`FIGURES_USERS_MAX`]
/// users; the least recently read go first.
///
/// Each shard keeps two generations: figures are written to the current one (and taken out of
/// the previous); when the current one is full it becomes the previous one and the old previous
/// one is dropped, whole. A user's figures therefore outlive at least 28,672 other users' reads
/// in their shard, and a read costs one hash lookup or two, with no per-entry bookkeeping.
///
/// Memory: an entry is 40 bytes (the act_id and the figures) plus the table's control byte; at
/// the bound, 32 tables of at most 32,768 buckets hold them: 32 × 32,768 × 41 B ≈ 43 MB, about
/// 47 bytes a user.
pub struct FiguresCache {
    shards: Box<[Mutex<Generations>]>,
    generation_users: usize,
}

#[derive(Default)]
struct Generations {
    current: HashMap<i64, LedgerFigures>,
    previous: HashMap<i64, LedgerFigures>,
}

impl Default for FiguresCache {
    fn default() -> Self {
        FiguresCache::new()
    }
}

impl FiguresCache {
    /// An empty cache bounded by [`FIGURES_USERS_MAX`].
    pub fn new() -> FiguresCache {
        FiguresCache::with_bound(FIGURES_SHARDS, FIGURES_GENERATION_USERS)
    }

    fn with_bound(shards: usize, generation_users: usize) -> FiguresCache {
        FiguresCache { shards: (0..shards).map(|_| Mutex::default()).collect(), generation_users }
    }

    fn shard(&self, act_id: i64) -> &Mutex<Generations> {
        // Fibonacci hashing: consecutive act_ids land on different shards.
        let spread = (act_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[spread as usize % self.shards.len()]
    }

    /// The user's last figures, if this host still remembers them.
    pub fn get(&self, act_id: i64) -> Option<LedgerFigures> {
        let shard = self.shard(act_id).lock();
        shard.current.get(&act_id).or_else(|| shard.previous.get(&act_id)).copied()
    }

    /// Remembers the user's figures from a ledger read, in place of the ones before.
    pub fn record(&self, act_id: i64, figures: LedgerFigures) {
        let mut shard = self.shard(act_id).lock();
        if shard.current.len() >= self.generation_users && !shard.current.contains_key(&act_id) {
            shard.previous = std::mem::take(&mut shard.current);
        }
        shard.previous.remove(&act_id);
        shard.current.insert(act_id, figures);
    }

    /// How many users it remembers.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock()).map(|shard| shard.current.len() + shard.previous.len()).sum()
    }

    /// Whether it remembers nobody.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the store's unsettled tokens add to old figures (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingOnTop {
    /// Tokens the figures cannot contain.
    pub pending_cents: i64,
    /// How many.
    pub pending_count: usize,
    /// Tokens the figures may already contain, in neither the balance nor pending.
    pub unconfirmed_cents: i64,
    /// How many.
    pub unconfirmed_count: usize,
}

/// Splits the user's unsettled tokens into those the figures cannot contain and those they may
/// (with no figures, nothing can be counted twice: every token is pending).
pub fn pending_on_top(figures: Option<&LedgerFigures>, unsettled: &[GrantRecord]) -> PendingOnTop {
    let below = figures.map_or(0, |figures| figures.contains_opened_below_ms);
    let mut split = PendingOnTop::default();
    for record in unsettled {
        if record.open_time_ms < below {
            split.unconfirmed_cents = split.unconfirmed_cents.saturating_add(record.amount_cents);
            split.unconfirmed_count += 1;
        } else {
            split.pending_cents = split.pending_cents.saturating_add(record.amount_cents);
            split.pending_count += 1;
        }
    }
    split
}

/// The answer of `GET /v1/wallets/{act_id}`: whole, or degraded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SummaryView {
    /// Both backends answered.
    Whole(WalletSummary),
    /// One did not.
    Degraded(DegradedSummary),
}

/// A wallet summary made with one backend down; `null` is a number the host cannot know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DegradedSummary {
    /// The user.
    pub act_id: i64,
    /// Credited + pending; `null` when either is unknown.
    pub balance_cents: Option<i64>,
    /// The ledger's balance: read now with the store down; with the ledger down, the figures
    /// this host last read (`null`: it has none for this user).
    pub credited_cents: Option<i64>,
    /// Tokens not in `credited_cents`; `null` with the store down.
    pub pending_cents: Option<i64>,
    /// How many.
    pub pending_count: Option<usize>,
    /// Credited income + pending; `null` when either is unknown.
    pub total_income_cents: Option<i64>,
    /// The backends it was made without: `ledger` or `tokens`.
    pub degraded: Vec<&'static str>,
    /// With the ledger down: how long ago the ledger was asked for `credited_cents` (`null`
    /// when there are none). Absent with the store down (the ledger answered now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_figures_age_ms: Option<Option<u64>>,
    /// With the ledger down: tokens unsettled in the store that the figures may already contain,
    /// counted in neither the balance nor pending (see the module docs). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unconfirmed_cents: Option<i64>,
    /// How many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unconfirmed_count: Option<usize>,
}

/// The summary with the ledger down: `figures` (if any) plus the store's unsettled tokens.
pub fn ledger_down_summary(
    act_id: i64,
    figures: Option<LedgerFigures>,
    unsettled: &[GrantRecord],
    now_ms: u64,
) -> DegradedSummary {
    let split = pending_on_top(figures.as_ref(), unsettled);
    DegradedSummary {
        act_id,
        balance_cents: figures.map(|figures| figures.balance_cents.saturating_add(split.pending_cents)),
        credited_cents: figures.map(|figures| figures.balance_cents),
        pending_cents: Some(split.pending_cents),
        pending_count: Some(split.pending_count),
        total_income_cents: figures.map(|figures| figures.income_cents.saturating_add(split.pending_cents)),
        degraded: vec![DEGRADED_LEDGER],
        ledger_figures_age_ms: Some(figures.map(|figures| now_ms.saturating_sub(figures.read_at_ms))),
        unconfirmed_cents: Some(split.unconfirmed_cents),
        unconfirmed_count: Some(split.unconfirmed_count),
    }
}

/// The summary with the store down: the ledger's balance, pending unknown.
fn store_down_summary(act_id: i64, ledger: &LedgerWallet) -> DegradedSummary {
    DegradedSummary {
        act_id,
        balance_cents: None,
        credited_cents: Some(ledger.balance_cents),
        pending_cents: None,
        pending_count: None,
        total_income_cents: None,
        degraded: vec![DEGRADED_TOKENS],
        ledger_figures_age_ms: None,
        unconfirmed_cents: None,
        unconfirmed_count: None,
    }
}

/// `GET /v1/wallets/{act_id}`: [`super::summary`] when both backends answer, else degraded
/// (see the module docs); 503 when neither does.
pub async fn summary_view(app: &App, act_id: i64) -> Result<SummaryView, WalletError> {
    let unsettled = match from_store(app, app.store.unsettled_for_user(act_id)).await? {
        Ok(unsettled) => unsettled,
        Err(store_down) => {
            let ledger = from_ledger(app, app.ledger.wallet(act_id, &[])).await?;
            let ledger = ledger.map_err(|ledger_down| both_down(&store_down, &ledger_down))?;
            return Ok(SummaryView::Degraded(store_down_summary(act_id, &ledger)));
        }
    };
    let flow_ids: Vec<String> = unsettled.iter().map(GrantRecord::flow_id).collect();
    let read_at_ms = app.clock.now_ms();
    Ok(match from_ledger(app, app.ledger.wallet(act_id, &flow_ids)).await? {
        Ok(ledger) => SummaryView::Whole(whole_summary(app, act_id, &unsettled, &flow_ids, &ledger, read_at_ms)),
        Err(_) => SummaryView::Degraded(ledger_down_summary(
            act_id,
            app.wallet_figures.get(act_id),
            &unsettled,
            app.clock.now_ms(),
        )),
    })
}

/// The answer of `GET /v1/wallets/{act_id}/flow`: a page, and what it was made without.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowView {
    /// The items and the next cursor, as [`super::flow`] gives them.
    #[serde(flatten)]
    pub page: FlowPage,
    /// Absent when whole; `["ledger"]`: only the tokens the store holds (withdrawals and red
    /// packets the store no longer keeps are missing); `["tokens"]`: only the ledger's entries
    /// (pending red packets are missing). A cursor from a degraded page works on whole pages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'static str>,
}

/// `GET /v1/wallets/{act_id}/flow`: [`super::flow`] when both backends answer, else the page
/// of the one that does; 503 when neither does.
pub async fn flow_view(
    app: &App,
    act_id: i64,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<FlowView, WalletError> {
    let (limit, before) = flow_bounds(limit, cursor)?;
    let tokens = match from_store(app, app.store.user_tokens(act_id, before.as_ref(), limit)).await? {
        Ok(tokens) => tokens,
        Err(store_down) => {
            let entries = from_ledger(app, app.ledger.user_entries(act_id, before.as_ref(), limit)).await?;
            let entries = entries.map_err(|ledger_down| both_down(&store_down, &ledger_down))?;
            let page = page_of(entries.into_iter().map(entry_item).collect(), limit);
            return Ok(FlowView { page, degraded: vec![DEGRADED_TOKENS] });
        }
    };
    let unsettled: Vec<(&GrantRecord, String)> =
        tokens.iter().filter(|r| r.status() != TokenStatus::Credited).map(|r| (r, r.flow_id())).collect();
    let unsettled_ids: Vec<String> = unsettled.iter().map(|(_, flow_id)| flow_id.clone()).collect();
    let read_at_ms = app.clock.now_ms();
    let Ok(ledger) = from_ledger(app, app.ledger.wallet(act_id, &unsettled_ids)).await? else {
        return Ok(ledger_down_flow(tokens, limit));
    };
    let Ok(entries) = from_ledger(app, app.ledger.user_entries(act_id, before.as_ref(), limit)).await? else {
        return Ok(ledger_down_flow(tokens, limit));
    };
    // A first page with room to spare holds every token the store has for the user, so the
    // snapshot was asked about all their unsettled ones: its figures are as good as a summary's.
    if before.is_none() && tokens.len() < limit {
        let figures = LedgerFigures::read(&ledger, unsettled.iter().map(|(record, id)| (*record, id)), read_at_ms);
        app.wallet_figures.record(act_id, figures);
    }
    drop(unsettled);
    Ok(FlowView { page: merged_page(entries, tokens, &ledger.credited_flow_ids, limit), degraded: Vec::new() })
}

/// The page with the ledger down: every token the store holds, credited ones included (the
/// ledger's copies of them are not there to show).
fn ledger_down_flow(tokens: Vec<GrantRecord>, limit: usize) -> FlowView {
    let items = tokens
        .into_iter()
        .map(|record| {
            let credited = record.status() == TokenStatus::Credited;
            let mut item = token_item(record);
            if credited {
                item.status = "credited";
            }
            item
        })
        .collect();
    FlowView { page: page_of(items, limit), degraded: vec![DEGRADED_LEDGER] }
}

/// Why a backend did not answer a read.
struct Down(String);

/// 503 for a read neither backend answered.
fn both_down(store: &Down, ledger: &Down) -> WalletError {
    WalletError::Unavailable(format!("token store and ledger both unavailable: {}; {}", store.0, ledger.0))
}

/// A store read through the store's breaker: `Ok(Err(_))` when the store is down (or failed
/// less than a second ago), `Err` for an answer that is not an outage (too many pending).
async fn from_store<T>(
    app: &App,
    read: impl Future<Output = Result<T, StoreError>>,
) -> Result<Result<T, Down>, WalletError> {
    if !app.store_breaker.allows(app.clock.monotonic_ms()) {
        return Ok(Err(Down("the token store failed less than a second ago".into())));
    }
    match read.await {
        Ok(value) => {
            app.store_breaker.succeeded();
            Ok(Ok(value))
        }
        Err(error @ StoreError::TooManyUnsettled { .. }) => Err(error.into()),
        Err(error) => {
            app.store_breaker.failed(app.clock.monotonic_ms());
            tracing::debug!(%error, "token store unavailable; the wallet answers from the ledger");
            Ok(Err(Down(error.to_string())))
        }
    }
}

/// A ledger read through the ledger's breaker (the grant path's): as [`from_store`].
async fn from_ledger<T>(
    app: &App,
    read: impl Future<Output = Result<T, LedgerError>>,
) -> Result<Result<T, Down>, WalletError> {
    if !app.ledger_breaker.allows(app.clock.monotonic_ms()) {
        return Ok(Err(Down("the ledger failed less than a second ago".into())));
    }
    match read.await {
        Ok(value) => {
            app.ledger_breaker.succeeded();
            Ok(Ok(value))
        }
        Err(LedgerError::Unavailable(reason)) => {
            app.ledger_breaker.failed(app.clock.monotonic_ms());
            tracing::debug!(%reason, "ledger unavailable; the wallet answers from the token store");
            Ok(Err(Down(format!("ledger unavailable: {reason}"))))
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(open_time_ms: u64, amount_cents: i64) -> GrantRecord {
        GrantRecord {
            activity_id: "a".into(),
            order_no: format!("o{open_time_ms}"),
            open_time_ms,
            amount_cents,
            status: TokenStatus::Pending.code(),
            ..GrantRecord::default()
        }
    }

    fn figures(balance_cents: i64, contains_opened_below_ms: u64) -> LedgerFigures {
        LedgerFigures { balance_cents, income_cents: balance_cents, read_at_ms: 1_000, contains_opened_below_ms }
    }

    // Proves the cache never holds more than its bound, forgets the least recently read users
    // first, keeps a user whose figures were read again, and that its entries are the size its
    // memory figure assumes.
    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        assert_eq!(std::mem::size_of::<(i64, LedgerFigures)>(), 40, "the doc's memory figure");
        assert_eq!(FIGURES_USERS_MAX, 917_504);
        let cache = FiguresCache::with_bound(1, 100);
        for act_id in 0..150 {
            cache.record(act_id, figures(act_id, 0));
        }
        cache.record(3, figures(33, 0)); // read again: moves to the current generation
        for act_id in 150..250 {
            cache.record(act_id, figures(act_id, 0));
            assert!(cache.len() <= 200, "{} users remembered", cache.len());
        }
        assert_eq!(cache.get(3).map(|f| f.balance_cents), Some(33), "read again, kept");
        assert_eq!(cache.get(4), None, "the oldest are forgotten");
        assert_eq!(cache.get(249).map(|f| f.balance_cents), Some(249));
        assert!((150..250).all(|act_id| cache.get(act_id).is_some()), "the newest are kept");

        let sharded = FiguresCache::with_bound(FIGURES_SHARDS, 8);
        for act_id in 0..10_000 {
            sharded.record(act_id, figures(act_id, 0));
        }
        assert!(sharded.len() <= FIGURES_SHARDS * 2 * 8, "{}", sharded.len());
        assert!(sharded.get(9_999).is_some());
    }

    // Proves the figures remember the newest open time of the unsettled tokens the snapshot
    // already held, and nothing when it held none.
    #[test]
    fn figures_remember_the_newest_token_they_contain() {
        let records = [token(10, 1), token(20, 1), token(30, 1)];
        let ids: Vec<String> = records.iter().map(GrantRecord::flow_id).collect();
        let mut ledger = LedgerWallet { balance_cents: 5, income_cents: 7, ..LedgerWallet::default() };
        let read = |ledger: &LedgerWallet| LedgerFigures::read(ledger, records.iter().zip(&ids), 99);
        assert_eq!(
            read(&ledger),
            LedgerFigures { balance_cents: 5, income_cents: 7, read_at_ms: 99, contains_opened_below_ms: 0 }
        );
        ledger.credited_flow_ids.insert(ids[1].clone());
        ledger.credited_flow_ids.insert(ids[0].clone());
        assert_eq!(read(&ledger).contains_opened_below_ms, 21);
    }

    // Proves the pending rule: with figures that contain no unsettled token, or no figures,
    // every unsettled token is pending; with figures that contain some, the tokens opened no
    // later than the newest of them are unconfirmed (in neither balance nor pending), and the
    // newer ones pending on top of the figures.
    #[test]
    fn pending_on_top_of_figures_never_counts_a_token_twice() {
        let unsettled = [token(10, 100), token(20, 200), token(30, 400)];
        let all = PendingOnTop { pending_cents: 700, pending_count: 3, ..PendingOnTop::default() };
        assert_eq!(pending_on_top(None, &unsettled), all);
        assert_eq!(pending_on_top(Some(&figures(1_000, 0)), &unsettled), all);
        let split = pending_on_top(Some(&figures(1_100, 21)), &unsettled);
        assert_eq!(
            split,
            PendingOnTop { pending_cents: 400, pending_count: 1, unconfirmed_cents: 300, unconfirmed_count: 2 }
        );

        // The writer credited the 100 and the 200 before the figures were read (so they are in
        // its 1,100) but had not marked them in the store: shown once, the 400 on top.
        let answer = ledger_down_summary(7, Some(figures(1_100, 21)), &unsettled, 1_250);
        assert_eq!(
            (answer.balance_cents, answer.credited_cents, answer.pending_cents),
            (Some(1_500), Some(1_100), Some(400))
        );
        assert_eq!((answer.unconfirmed_cents, answer.ledger_figures_age_ms), (Some(300), Some(Some(250))));
        assert_eq!(answer.degraded, [DEGRADED_LEDGER]);

        // No figures: the balance is unknown, said as null, and the pending tokens are all shown.
        let unknown = serde_json::to_value(ledger_down_summary(7, None, &unsettled, 1_250)).unwrap();
        assert_eq!(unknown["credited_cents"], serde_json::Value::Null);
        assert_eq!(unknown["balance_cents"], serde_json::Value::Null);
        assert_eq!(unknown["ledger_figures_age_ms"], serde_json::Value::Null);
        assert_eq!((unknown["pending_cents"].as_i64(), unknown["degraded"][0].as_str()), (Some(700), Some("ledger")));
    }

    // Proves a whole answer keeps its exact old shape (no `degraded` field), and a store-down
    // one says pending is unknown.
    #[test]
    fn whole_answers_have_no_degraded_field() {
        let whole = SummaryView::Whole(WalletSummary {
            act_id: 1,
            balance_cents: 3,
            credited_cents: 1,
            pending_cents: 2,
            pending_count: 1,
            total_income_cents: 3,
        });
        let text = serde_json::to_string(&whole).unwrap();
        assert_eq!(
            text,
            r#"{"act_id":1,"balance_cents":3,"credited_cents":1,"pending_cents":2,"pending_count":1,"total_income_cents":3}"#
        );
        let page = FlowView { page: FlowPage { items: Vec::new(), next_cursor: None }, degraded: Vec::new() };
        assert_eq!(serde_json::to_string(&page).unwrap(), r#"{"items":[],"next_cursor":null}"#);
        let ledger = LedgerWallet { balance_cents: 5, income_cents: 9, ..LedgerWallet::default() };
        let down = serde_json::to_value(SummaryView::Degraded(store_down_summary(1, &ledger))).unwrap();
        assert_eq!(down["credited_cents"], 5);
        assert_eq!(down["pending_cents"], serde_json::Value::Null);
        assert_eq!(down["degraded"], serde_json::json!(["tokens"]));
        assert!(down.get("ledger_figures_age_ms").is_none() && down.get("unconfirmed_cents").is_none(), "{down}");
    }
}
