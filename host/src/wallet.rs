//! The wallet: what a user sees and does with their money while the ledger catches up.
//!
//! Balance = what the ledger has credited + the user's tokens it has not credited yet. The token
//! store is read first and the ledger second, and a token counts as pending only if that ledger
//! snapshot does not have it; so a token the writer credits in between is counted once (by the
//! ledger), never twice and never zero times.
//!
//! The HTTP reads go through [`degraded`]: with one backend down they answer from the other,
//! marked degraded; withdrawals never do.

pub mod degraded;

use crate::issuer::TokenError;
use crate::issuer::watch::ForgeryWatch;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::app::App;
use crate::ledger::{EntryKind, LedgerEntry, LedgerError, LedgerWallet, WithdrawalRequest};
use crate::store::{FlowPosition, GrantRecord, RestoreOutcome, StockLimits, StoreError, TokenStatus};
use crate::writer::WriterError;
pub use degraded::{FiguresCache, FlowView, LedgerFigures, SummaryView, flow_view, summary_view};

/// The most flow items one page returns.
pub const FLOW_PAGE_ITEMS_MAX: usize = 100;

/// The page size when none is asked for.
pub const FLOW_PAGE_ITEMS_DEFAULT: usize = 20;

/// How many passes of forced crediting a withdrawal makes for a user with more pending tokens
/// than one pass reads (each pass credits up to `USER_UNSETTLED_READ_MAX`).
const WITHDRAW_CREDIT_PASSES_MAX: usize = 64;

/// The most tokens one restore request may carry; a client restoring more sends several.
pub const RESTORE_TOKENS_MAX: usize = 256;

/// Why a wallet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalletError {
    /// A field is out of its domain.
    #[error("{0}")]
    BadRequest(String),
    /// Not enough money, even after crediting everything pending.
    #[error("insufficient balance: {balance_cents} cents available")]
    InsufficientBalance {
        /// What is there.
        balance_cents: i64,
    },
    /// A request id reused for a different withdrawal.
    #[error("request id `{0}` was already used for a different withdrawal")]
    RequestConflict(String),
    /// A backend failed; nothing changed; retry.
    #[error("{0}")]
    Unavailable(String),
    /// The user holds more pending tokens than one request reads; a withdrawal credits them
    /// (and can then be retried), a balance cannot be shown until then.
    #[error("{0}")]
    TooManyPending(String),
}

impl From<StoreError> for WalletError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TooManyUnsettled { .. } => WalletError::TooManyPending(error.to_string()),
            other => WalletError::Unavailable(other.to_string()),
        }
    }
}

impl From<LedgerError> for WalletError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::InsufficientBalance { balance_cents } => WalletError::InsufficientBalance { balance_cents },
            LedgerError::RequestConflict(id) => WalletError::RequestConflict(id),
            LedgerError::AmountOutOfRange(amount) => {
                WalletError::BadRequest(format!("amount_cents `{amount}` is out of range"))
            }
            other => WalletError::Unavailable(other.to_string()),
        }
    }
}

impl From<WriterError> for WalletError {
    fn from(error: WriterError) -> Self {
        match error {
            WriterError::Store(error) => error.into(),
            WriterError::Ledger(error) => error.into(),
        }
    }
}

/// `GET /v1/wallets/{act_id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WalletSummary {
    /// The user.
    pub act_id: i64,
    /// Credited + pending.
    pub balance_cents: i64,
    /// What the ledger holds for the user (after withdrawals).
    pub credited_cents: i64,
    /// Granted but not yet credited.
    pub pending_cents: i64,
    /// How many tokens are pending.
    pub pending_count: usize,
    /// Every red packet ever granted to the user, credited or not.
    pub total_income_cents: i64,
}

/// Reads the user's balance as described in the module docs, and remembers the ledger's
/// figures for reads during a ledger outage. Either backend down is an error.
pub async fn summary(app: &App, act_id: i64) -> Result<WalletSummary, WalletError> {
    let unsettled = app.store.unsettled_for_user(act_id).await?;
    let flow_ids: Vec<String> = unsettled.iter().map(GrantRecord::flow_id).collect();
    let read_at_ms = app.clock.now_ms();
    let ledger = app.ledger.wallet(act_id, &flow_ids).await?;
    Ok(whole_summary(app, act_id, &unsettled, &flow_ids, &ledger, read_at_ms))
}

/// The summary from a store read (`unsettled`, with their `flow_ids`) and the ledger snapshot
/// taken after it (asked at `read_at_ms`), whose figures it remembers.
fn whole_summary(
    app: &App,
    act_id: i64,
    unsettled: &[GrantRecord],
    flow_ids: &[String],
    ledger: &LedgerWallet,
    read_at_ms: u64,
) -> WalletSummary {
    app.wallet_figures.record(act_id, LedgerFigures::read(ledger, unsettled.iter().zip(flow_ids), read_at_ms));
    let mut pending_cents = 0i64;
    let mut pending_count = 0;
    for (record, flow_id) in unsettled.iter().zip(flow_ids) {
        if !ledger.credited_flow_ids.contains(flow_id) {
            pending_cents = pending_cents.saturating_add(record.amount_cents);
            pending_count += 1;
        }
    }
    WalletSummary {
        act_id,
        balance_cents: ledger.balance_cents.saturating_add(pending_cents),
        credited_cents: ledger.balance_cents,
        pending_cents,
        pending_count,
        total_income_cents: ledger.income_cents.saturating_add(pending_cents),
    }
}

/// One line of the wallet flow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowItem {
    /// Stable id: `rp/{activity}/{order_no}`, `wd/{act_id}/{request_id}`, `ps/{packet_id}` or
    /// `pr/{packet_id}`.
    pub id: String,
    /// `red_packet`, `withdrawal`, `packet_sent`, `packet_grabbed` or `packet_refund`.
    pub kind: &'static str,
    /// `pending`, `processing` or `credited` for red packets and grabs; `done` for the rest.
    pub status: &'static str,
    /// Positive for money in, negative for money out.
    pub amount_cents: i64,
    /// When it happened (a red packet's open time).
    pub time_ms: u64,
    /// The bill copy of a red packet.
    pub bill_copy: String,
    /// The order number or the withdrawal's request id.
    pub reference: String,
    /// The activity of a red packet.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub activity_id: String,
    /// The scene of a red packet.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scene_id: String,
}

/// One page of the flow.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FlowPage {
    /// Newest first.
    pub items: Vec<FlowItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Encodes a flow position as an opaque cursor.
pub fn encode_cursor(position: &FlowPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", position.time_ms, position.flow_id))
}

/// The flow position a client's `cursor` names: 400 unless it is one [`encode_cursor`] made.
pub fn decode_cursor(cursor: &str) -> Result<FlowPosition, WalletError> {
    let bad = || WalletError::BadRequest("cursor is not one this server issued".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (time, flow_id) = text.split_once(':').ok_or_else(bad)?;
    Ok(FlowPosition { time_ms: time.parse().map_err(|_| bad())?, flow_id: flow_id.to_owned() })
}

/// The flow's name for a red packet: campaign grants are `red_packet`, a group red packet's
/// grabs (activity `pk.{packet_id}`) `packet_grabbed`.
fn red_packet_kind(activity_id: &str) -> &'static str {
    if activity_id.starts_with(crate::ledger::PACKET_ACTIVITY_PREFIX) { "packet_grabbed" } else { "red_packet" }
}

fn entry_item(entry: LedgerEntry) -> FlowItem {
    let (kind, status, sign) = match entry.kind() {
        EntryKind::Withdrawal => ("withdrawal", "done", -1),
        EntryKind::PacketSent => ("packet_sent", "done", -1),
        EntryKind::PacketRefund => ("packet_refund", "done", 1),
        EntryKind::RedPacket | EntryKind::Funding => (red_packet_kind(&entry.activity_id), "credited", 1),
    };
    FlowItem {
        kind,
        status,
        amount_cents: sign * entry.amount_cents,
        time_ms: entry.time_ms,
        bill_copy: entry.memo,
        reference: entry.reference,
        activity_id: entry.activity_id,
        scene_id: entry.scene_id,
        id: entry.id,
    }
}

fn token_item(record: GrantRecord) -> FlowItem {
    FlowItem {
        id: record.flow_id(),
        kind: red_packet_kind(&record.activity_id),
        status: if record.status() == TokenStatus::Processing { "processing" } else { "pending" },
        amount_cents: record.amount_cents,
        time_ms: record.open_time_ms,
        bill_copy: record.bill_copy,
        reference: record.order_no,
        activity_id: record.activity_id,
        scene_id: record.scene_id,
    }
}

/// A page of the user's flow: credited red packets and withdrawals from the ledger merged with
/// pending tokens from the store, newest first. Each source gives at most `limit` items older
/// than the cursor, so the newest `limit` of their union is exactly the page. Either backend
/// down is an error ([`flow_view`] degrades instead).
pub async fn flow(app: &App, act_id: i64, limit: Option<usize>, cursor: Option<&str>) -> Result<FlowPage, WalletError> {
    let (limit, before) = flow_bounds(limit, cursor)?;
    let tokens = app.store.user_tokens(act_id, before.as_ref(), limit).await?;
    let unsettled: Vec<String> =
        tokens.iter().filter(|r| r.status() != TokenStatus::Credited).map(GrantRecord::flow_id).collect();
    let credited = app.ledger.wallet(act_id, &unsettled).await?.credited_flow_ids;
    let entries = app.ledger.user_entries(act_id, before.as_ref(), limit).await?;
    Ok(merged_page(entries, tokens, &credited, limit))
}

/// The page size and the position a flow request names.
fn flow_bounds(limit: Option<usize>, cursor: Option<&str>) -> Result<(usize, Option<FlowPosition>), WalletError> {
    let limit = limit.unwrap_or(FLOW_PAGE_ITEMS_DEFAULT);
    if limit == 0 || limit > FLOW_PAGE_ITEMS_MAX {
        return Err(WalletError::BadRequest(format!("limit `{limit}` must be 1..={FLOW_PAGE_ITEMS_MAX}")));
    }
    Ok((limit, cursor.map(decode_cursor).transpose()?))
}

/// The ledger's entries and the store's tokens it has not credited (`credited`: which of the
/// page's unsettled tokens it has), as one page.
fn merged_page(
    entries: Vec<LedgerEntry>,
    tokens: Vec<GrantRecord>,
    credited: &std::collections::HashSet<String>,
    limit: usize,
) -> FlowPage {
    let mut items: Vec<FlowItem> = entries.into_iter().map(entry_item).collect();
    items.extend(
        tokens
            .into_iter()
            .filter(|record| record.status() != TokenStatus::Credited && !credited.contains(&record.flow_id()))
            .map(token_item),
    );
    page_of(items, limit)
}

/// The newest `limit` of `items` (each source gave at most `limit` older than the cursor), with
/// the cursor to the next page.
fn page_of(mut items: Vec<FlowItem>, limit: usize) -> FlowPage {
    items.sort_by(|a, b| (b.time_ms, &b.id).cmp(&(a.time_ms, &a.id)));
    items.dedup_by(|a, b| a.id == b.id);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = match (more || items.len() == limit, items.last()) {
        (true, Some(last)) => Some(encode_cursor(&FlowPosition { time_ms: last.time_ms, flow_id: last.id.clone() })),
        _ => None,
    };
    FlowPage { items, next_cursor }
}

/// `POST /v1/wallets/{act_id}/withdrawals`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"request_id": "w-0001", "amount_cents": 100}))]
pub struct WithdrawalBody {
    /// The client's idempotency key: `[A-Za-z0-9._:-]{1,128}`.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    pub request_id: String,
    /// Cents to withdraw.
    #[schema(minimum = 1)]
    pub amount_cents: i64,
}

/// The answer to a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WithdrawalAnswer {
    /// The request id.
    pub request_id: String,
    /// Cents withdrawn.
    pub amount_cents: i64,
    /// The wallet balance after it (credited + pending).
    pub balance_cents: i64,
    /// Whether this request id had been done before.
    pub replayed: bool,
}

/// Whether `request_id` is a client idempotency key this API takes: `[A-Za-z0-9._:-]{1,128}`
/// (withdrawals and group red packet sends).
pub fn is_valid_request_id(request_id: &str) -> bool {
    !request_id.is_empty()
        && request_id.len() <= 128
        && request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Credits the user's pending tokens ahead of the queue, then debits the wallet.
pub async fn withdraw(app: &App, act_id: i64, body: WithdrawalBody) -> Result<WithdrawalAnswer, WalletError> {
    if !is_valid_request_id(&body.request_id) {
        return Err(WalletError::BadRequest("request_id must match [A-Za-z0-9._:-]{1,128}".into()));
    }
    if body.amount_cents <= 0 {
        return Err(WalletError::BadRequest(format!("amount_cents `{}` must be positive", body.amount_cents)));
    }
    // Credit everything pending first. A user past the per-read bound is credited in passes.
    app.writer.credit_user_fully_now(act_id, WITHDRAW_CREDIT_PASSES_MAX).await?;
    let withdrawal = app
        .ledger
        .withdraw(WithdrawalRequest {
            act_id,
            request_id: body.request_id.clone(),
            amount_cents: body.amount_cents,
            time_ms: app.clock.now_ms(),
        })
        .await?;
    let balance = summary(app, act_id).await?;
    Ok(WithdrawalAnswer {
        request_id: body.request_id,
        amount_cents: withdrawal.entry.amount_cents,
        balance_cents: balance.balance_cents,
        replayed: withdrawal.replayed,
    })
}

/// `POST /v1/wallets/{act_id}/tokens:restore`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// Tokens as the client holds them, at most 256.
    #[schema(max_items = 256)]
    pub tokens: Vec<String>,
}

/// What happened to one restored token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RestoreItem {
    /// The token's order number, when it could be read.
    pub order_no: Option<String>,
    /// `restored`, `already_present`, `already_credited` or `rejected`.
    pub result: &'static str,
    /// For `rejected`: a stable code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// For `rejected`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn rejected(order_no: Option<String>, code: &'static str, message: String) -> RestoreItem {
    RestoreItem { order_no, result: "rejected", code: Some(code), message: Some(message) }
}

/// A restore's refusal: its code and message.
type Refusal = (&'static str, String);

/// What a verified token is restored with (its bill copy and the stock bounds it is spread
/// over), or why it is refused: a campaign token needs its activity served with restores on; a
/// group red packet's grab needs the packet in the store with this very share claimed by the
/// token's user (so no restore can claim a share nobody grabbed).
async fn restore_terms(
    app: &App,
    snapshot: &crate::config::Snapshot,
    token: &crate::issuer::pb::RedPacketToken,
) -> Result<Result<(String, StockLimits), Refusal>, WalletError> {
    if let Some(packet_id) = token.activity_id.strip_prefix(crate::ledger::PACKET_ACTIVITY_PREFIX) {
        // Rebuilt from the ledger if the store lost it.
        let state = match crate::packet::stored(app, packet_id).await {
            Ok(state) => state,
            Err(crate::packet::PacketError::NotFound(_)) => {
                return Ok(Err(("unknown_activity", format!("packet `{packet_id}` is not held"))));
            }
            Err(error) => return Err(WalletError::Unavailable(error.to_string())),
        };
        let claimed = state.claims.iter().any(|&(act_id, index)| {
            act_id == token.act_id && state.def.shares.get(index as usize) == Some(&token.amount_cents)
        });
        if !claimed || token.order_no != crate::packet::grab_order_no(token.act_id) {
            return Ok(Err(("ledger_conflict", "the packet holds no such share for this user".into())));
        }
        let bill_copy = crate::packet::grab_bill_copy(&state.def);
        return Ok(Ok((bill_copy, crate::packet::grab_limits())));
    }
    let Some(activity) = snapshot.activity(&token.activity_id) else {
        return Ok(Err(("unknown_activity", format!("activity `{}` is not served", token.activity_id))));
    };
    if !activity.restore_enabled {
        ForgeryWatch::note(&app.forgery.restore_disabled);
        let message = format!("activity `{}` takes no restored tokens (`restore: false`)", token.activity_id);
        return Ok(Err(("restore_disabled", message)));
    }
    let scene = snapshot.scene(&token.activity_id, &token.scene_id);
    let bill_copy = scene
        .map(|scene| crate::capability::bill_copy::render(scene, None, token.amount_cents, token.rain_id, token.stage))
        .unwrap_or_default();
    // Restored stock is spread over the scene's current bounds (it is never refused).
    let budget = activity.budget_cents;
    let limits = match scene {
        Some(scene) => scene.stock_limits(budget),
        None => StockLimits { activity_budget_cents: budget, ..StockLimits::default() },
    };
    Ok(Ok((bill_copy, limits)))
}

/// Verifies each token and registers again those the server no longer has. Restoring twice
/// changes nothing; forged or altered tokens, and tokens of another user, are rejected.
pub async fn restore(app: &App, act_id: i64, body: RestoreBody) -> Result<Vec<RestoreItem>, WalletError> {
    if body.tokens.len() > RESTORE_TOKENS_MAX {
        return Err(WalletError::BadRequest(format!("at most {RESTORE_TOKENS_MAX} tokens per request")));
    }
    let snapshot = app.registry.snapshot();
    let mut items = Vec::with_capacity(body.tokens.len());
    for text in &body.tokens {
        let verified = match app.issuer.verify(text) {
            Ok(verified) => verified,
            Err(error) => {
                let (counter, code) = match error {
                    TokenError::RetiredKey(_) => (&app.forgery.restore_retired_key, "retired_key"),
                    _ => (&app.forgery.restore_failed, "invalid_token"),
                };
                ForgeryWatch::note(counter);
                tracing::warn!(act_id, %error, "forgery watch: a restored token was refused");
                items.push(rejected(None, code, error.to_string()));
                continue;
            }
        };
        let token = verified.token;
        let order_no = Some(token.order_no.clone());
        if token.act_id != act_id {
            items.push(rejected(order_no, "wrong_user", format!("token belongs to act_id `{}`", token.act_id)));
            continue;
        }
        if token.amount_cents <= 0 || token.open_time_ms < 0 {
            items.push(rejected(order_no, "invalid_token", "token amount or time is out of range".into()));
            continue;
        }
        let terms = match restore_terms(app, &snapshot, &token).await? {
            Ok(terms) => terms,
            Err((code, message)) => {
                items.push(rejected(order_no, code, message));
                continue;
            }
        };
        let (bill_copy, limits) = terms;
        let record = GrantRecord {
            bill_copy,
            activity_id: token.activity_id,
            order_no: token.order_no,
            scene_id: token.scene_id,
            act_id: token.act_id,
            amount_cents: token.amount_cents,
            open_time_ms: token.open_time_ms as u64,
            status: TokenStatus::Pending.code(),
            seq: 0,
            token: verified.text,
            app_id: token.app_id,
            queue_id: String::new(),
        };
        // The store may have lost the token after the ledger credited it: then it is paid, and
        // it goes back into the store as credited so that its stock counts again.
        if let Some(entry) = app.ledger.entry(&record.flow_id()).await? {
            if entry.amount_cents != record.amount_cents || entry.act_id != record.act_id {
                items.push(rejected(
                    order_no,
                    "ledger_conflict",
                    "the ledger holds this order with another amount".into(),
                ));
                continue;
            }
            app.store.restore(record, true, limits).await?;
            items.push(RestoreItem { order_no, result: "already_credited", code: None, message: None });
            continue;
        }
        let (activity_id, restored_order) = (record.activity_id.clone(), record.order_no.clone());
        let result = match app.store.restore(record, false, limits).await? {
            RestoreOutcome::Restored => {
                // Legitimate after a lost store; a steady stream of them is a forgery signal.
                ForgeryWatch::note(&app.forgery.restored_unknown);
                tracing::warn!(act_id, activity = %activity_id, order_no = %restored_order,
                    "forgery watch: restored a token neither the store nor the ledger had");
                "restored"
            }
            RestoreOutcome::AlreadyPresent => "already_present",
        };
        items.push(RestoreItem { order_no, result, code: None, message: None });
    }
    Ok(items)
}
