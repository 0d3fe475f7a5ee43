//! Group red packets between people (seed 000): a user sends a packet into a group, others grab
//! it, each grabber is told the amount at once, and the crediting queue moves the money after.
//!
//! - **Send** (`POST /v1/packets`): the sender's pending tokens are credited first (as for a
//!   withdrawal), then one ledger entry `ps/{packet_id}` moves the total from the sender's wallet
//!   into the packet's account `packet/{packet_id}`, never overdrawing it. The split is decided
//!   now ([`split`]) and stored with the entry, so a retried send answers the same packet.
//! - **Grab** (`POST /v1/packets/{id}/grabs`): claims a share (one per user) and grants it as a
//!   red packet of the packet's activity `pk.{packet_id}` through the token store: the grabber
//!   gets a signed token at once, the wallet shows it pending, the writer credits it from the
//!   packet's account exactly once (see `store/packets.rs`).
//! - **Refund** ([`refund`]): after expiry one host closes the packet and moves what nobody
//!   claimed back to the sender, once (`pr/{packet_id}`).

pub mod refund;
pub mod split;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;

use crate::app::App;
use crate::issuer::pb::RedPacketToken;
use crate::ledger::{EntryKind, LedgerEntry, LedgerError, packet_account, packet_activity, wallet_account};
use crate::store::{
    Claim, GrantCommit, GrantRecord, LedgerCheck, PacketDef, PacketState, StockLimits, StoreError, TokenStatus,
};
use crate::writer::WriterError;

pub use self::split::Split;

/// The most shares one packet has.
pub const PACKET_SHARES_MAX: u32 = 1000;

/// The largest packet, in cents (200,000.00).
pub const PACKET_TOTAL_CENTS_MAX: i64 = 20_000_000;

/// How long a packet may be grabbed unless the sender says otherwise: a day.
pub const PACKET_EXPIRES_IN_S_DEFAULT: u64 = 86_400;

/// The longest a packet may stay open: a week.
pub const PACKET_EXPIRES_IN_S_MAX: u64 = 7 * 86_400;

/// The most users a packet's grab list may name (the app vouches for the group).
pub const PACKET_GRABBERS_MAX: usize = 2000;

/// The longest greeting, in characters.
pub const GREETING_CHARS_MAX: usize = 100;

/// Passes of forced crediting a send makes for a sender with many pending tokens.
const SEND_CREDIT_PASSES_MAX: usize = 64;

/// The scene id of every grab's token.
pub const GRAB_SCENE_ID: &str = "grab";

/// Why a packet operation failed; each maps to a stable code in `api/error.rs`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// A field is out of its domain.
    #[error("{0}")]
    BadRequest(String),
    /// No such packet.
    #[error("no packet `{0}`")]
    NotFound(String),
    /// The sender does not hold the total, even after crediting everything pending.
    #[error("insufficient balance: {balance_cents} cents available")]
    InsufficientBalance {
        /// What the sender holds.
        balance_cents: i64,
    },
    /// The request id was used for another packet.
    #[error("request id `{0}` was already used for a different packet")]
    RequestConflict(String),
    /// Every share is taken.
    #[error("every share of packet `{0}` is taken")]
    Empty(String),
    /// The packet expired.
    #[error("packet `{0}` has expired")]
    Expired(String),
    /// The user is not in the packet's group.
    #[error("act_id `{act_id}` may not grab packet `{packet_id}`")]
    NotAllowed {
        /// The packet.
        packet_id: String,
        /// The user.
        act_id: i64,
    },
    /// A backend failed; nothing changed that a retry would not finish; retry.
    #[error("{0}")]
    Unavailable(String),
    /// The sender holds more pending tokens than a send credits in one go.
    #[error("{0}")]
    TooManyPending(String),
}

impl From<StoreError> for PacketError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::TooManyUnsettled { .. } => PacketError::TooManyPending(error.to_string()),
            other => PacketError::Unavailable(other.to_string()),
        }
    }
}

impl From<LedgerError> for PacketError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::InsufficientBalance { balance_cents } => PacketError::InsufficientBalance { balance_cents },
            LedgerError::RequestConflict(id) => PacketError::RequestConflict(id),
            LedgerError::AmountOutOfRange(_) => PacketError::BadRequest(error.to_string()),
            other => PacketError::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::identity::IdentityError> for PacketError {
    fn from(error: crate::identity::IdentityError) -> Self {
        match error {
            crate::identity::IdentityError::Unavailable(message) => PacketError::Unavailable(message),
            other => PacketError::BadRequest(other.to_string()),
        }
    }
}

impl From<WriterError> for PacketError {
    fn from(error: WriterError) -> Self {
        match error {
            WriterError::Store(error) => error.into(),
            WriterError::Ledger(error) => error.into(),
        }
    }
}

/// `POST /v1/packets`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"request_id": "p-0001", "sender_act_id": 10001, "total_cents": 50, "shares": 3,
    "split": "random", "greeting": "新年快乐"}))]
pub struct SendBody {
    /// The sender's idempotency key: `[A-Za-z0-9._:-]{1,128}`.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$")]
    pub request_id: String,
    /// Who pays (or `sender_app_user_id`: exactly one of the two).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub sender_act_id: Option<i64>,
    /// Who pays, by the app's own user id (see `identity`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    pub sender_app_user_id: Option<String>,
    /// The whole amount, in cents.
    #[schema(minimum = 1)]
    pub total_cents: i64,
    /// How many shares, 1 to [`PACKET_SHARES_MAX`], at most one per cent.
    #[schema(minimum = 1, maximum = 1000)]
    pub shares: u32,
    /// `random` or `equal`.
    pub split: Split,
    /// Seconds until it expires (default [`PACKET_EXPIRES_IN_S_DEFAULT`]).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub expires_in_s: Option<u64>,
    /// Shown on the grabbers' bills.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub greeting: Option<String>,
    /// Who may grab (the app vouches for the group); absent: anyone.
    #[serde(default)]
    #[schema(max_items = 2000)]
    pub grabbers: Option<Vec<i64>>,
}

/// `POST /v1/packets/{id}/grabs`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"act_id": 20001}))]
pub struct GrabBody {
    /// The grabber (or `app_user_id`: exactly one of the two).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub act_id: Option<i64>,
    /// The grabber, by the app's own user id (see `identity`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    pub app_user_id: Option<String>,
}

/// The answer to a send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SendAnswer {
    /// Grab it at `/v1/packets/{packet_id}/grabs`.
    pub packet_id: String,
    /// The sender.
    pub sender_act_id: i64,
    /// The whole amount.
    pub total_cents: i64,
    /// How many shares.
    pub shares: usize,
    /// The rule.
    pub split: String,
    /// When it expires.
    pub expires_at_ms: u64,
    /// The sender's balance (credited + pending) after it.
    pub balance_cents: i64,
    /// Whether this request id had been sent before (the original packet is answered).
    pub replayed: bool,
}

/// The answer to a grab: the amount and the token at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GrabAnswer {
    /// The packet.
    pub packet_id: String,
    /// The grabber.
    pub act_id: i64,
    /// The grabbed share.
    pub amount_cents: i64,
    /// The grant's order number (in activity `pk.{packet_id}`).
    pub order_no: String,
    /// `base64url(SignedToken)`, for the client to keep.
    pub token: String,
    /// The token's crediting status now.
    pub status: TokenStatus,
    /// Whether this user had grabbed this packet before (the same share is answered).
    pub replayed: bool,
}

/// One grab as `GET /v1/packets/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GrabView {
    /// Who.
    pub act_id: i64,
    /// How much.
    pub amount_cents: i64,
}

/// `GET /v1/packets/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PacketView {
    /// The packet.
    pub packet_id: String,
    /// Who sent it.
    pub sender_act_id: i64,
    /// The whole amount.
    pub total_cents: i64,
    /// How many shares.
    pub shares: usize,
    /// Shares nobody has claimed.
    pub shares_left: usize,
    /// Cents nobody has claimed.
    pub cents_left: i64,
    /// The rule.
    pub split: String,
    /// The sender's words.
    pub greeting: String,
    /// When it was sent.
    pub created_ms: u64,
    /// When it expires.
    pub expires_at_ms: u64,
    /// `open`, `empty` (every share claimed), `expired` (refund pending) or `refunded`.
    pub status: &'static str,
    /// Who grabbed what, in grab order.
    pub grabs: Vec<GrabView>,
    /// Cents given back to the sender, once refunded.
    pub refunded_cents: Option<i64>,
    /// Whether the packet names who may grab.
    pub restricted: bool,
}

/// The packet id of a send: the same app, sender and request id always name the same packet,
/// and nobody without the host's key can work one out (so holding a packet's id is what lets a
/// user in the group reach it; restricted packets also check the user).
pub fn packet_id(app: &App, app_id: i64, sender_act_id: i64, request_id: &str) -> String {
    let digest = app.identities.keyed_hash("packet-id", &format!("{app_id}/{sender_act_id}/{request_id}"));
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` can be a packet id (`[0-9a-f]{20}`).
pub fn is_packet_id(text: &str) -> bool {
    text.len() == 20 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The ledger entry of a send, carrying the packet's definition.
fn send_entry(def: &PacketDef) -> LedgerEntry {
    LedgerEntry {
        id: format!("ps/{}", def.packet_id),
        kind: EntryKind::PacketSent as u32,
        debit_account: wallet_account(def.sender_act_id),
        credit_account: packet_account(&def.packet_id),
        amount_cents: def.total_cents,
        time_ms: def.created_ms,
        act_id: def.sender_act_id,
        memo: def.greeting.clone(),
        reference: def.request_id.clone(),
        token: STANDARD.encode(def.encode_to_vec()),
        ..LedgerEntry::default()
    }
}

/// The packet definition a send entry carries.
pub fn def_of_entry(entry: &LedgerEntry) -> Result<PacketDef, PacketError> {
    let bytes = STANDARD.decode(&entry.token).map_err(|error| PacketError::Unavailable(error.to_string()))?;
    PacketDef::decode(bytes.as_slice()).map_err(|error| PacketError::Unavailable(error.to_string()))
}

fn check_send(sender_act_id: i64, body: &SendBody) -> Result<(), PacketError> {
    let bad = |message: String| Err(PacketError::BadRequest(message));
    if !crate::wallet::is_valid_request_id(&body.request_id) {
        return bad("request_id must match [A-Za-z0-9._:-]{1,128}".into());
    }
    if sender_act_id <= 0 || sender_act_id == i64::MAX {
        return bad(format!("sender_act_id `{sender_act_id}` must be positive and below 2^63-1"));
    }
    if body.shares == 0 || body.shares > PACKET_SHARES_MAX {
        return bad(format!("shares `{}` must be 1 to {PACKET_SHARES_MAX}", body.shares));
    }
    if body.total_cents < i64::from(body.shares) || body.total_cents > PACKET_TOTAL_CENTS_MAX {
        return bad(format!(
            "total_cents `{}` must be at least one cent per share ({}) and at most {PACKET_TOTAL_CENTS_MAX}",
            body.total_cents, body.shares
        ));
    }
    if let Some(seconds) = body.expires_in_s
        && (seconds == 0 || seconds > PACKET_EXPIRES_IN_S_MAX)
    {
        return bad(format!("expires_in_s `{seconds}` must be 1 to {PACKET_EXPIRES_IN_S_MAX}"));
    }
    if body.greeting.as_ref().is_some_and(|greeting| greeting.chars().count() > GREETING_CHARS_MAX) {
        return bad(format!("greeting must be at most {GREETING_CHARS_MAX} characters"));
    }
    if let Some(grabbers) = &body.grabbers {
        if grabbers.is_empty() || grabbers.len() > PACKET_GRABBERS_MAX {
            return bad(format!("grabbers must name 1 to {PACKET_GRABBERS_MAX} users when given"));
        }
        if let Some(bad_id) = grabbers.iter().find(|&&id| id <= 0 || id == i64::MAX) {
            return bad(format!("grabbers: act_id `{bad_id}` must be positive and below 2^63-1"));
        }
    }
    Ok(())
}

/// Sends `sender_act_id`'s packet through `app_id` (see the module docs). The caller resolved
/// the sender named in `body` and checked who may send.
pub async fn send(app: &App, app_id: i64, sender_act_id: i64, body: SendBody) -> Result<SendAnswer, PacketError> {
    check_send(sender_act_id, &body)?;
    let now_ms = app.clock.now_ms();
    let packet_id = packet_id(app, app_id, sender_act_id, &body.request_id);
    let expires_at_ms = now_ms + body.expires_in_s.unwrap_or(PACKET_EXPIRES_IN_S_DEFAULT) * 1000;
    let mut grabbers = body.grabbers.clone().unwrap_or_default();
    grabbers.sort_unstable();
    grabbers.dedup();
    let shares = split::split(body.total_cents, body.shares as usize, body.split, &mut fastrand::Rng::new());
    let def = PacketDef {
        packet_id: packet_id.clone(),
        sender_act_id,
        app_id,
        total_cents: body.total_cents,
        shares,
        split: body.split.name().into(),
        created_ms: now_ms,
        expires_at_ms,
        greeting: body.greeting.clone().unwrap_or_default(),
        grabbers,
        request_id: body.request_id.clone(),
    };
    // Named to the refund sweep before money moves: a host dying after the debit below still
    // leaves the packet to be created (from the ledger's entry) and refunded at expiry.
    app.store.packet_expect(&packet_id, expires_at_ms).await?;
    app.writer.credit_user_fully_now(sender_act_id, SEND_CREDIT_PASSES_MAX).await?;
    let sent = app.ledger.transfer(send_entry(&def)).await?;
    crate::failpoint::hit("packet.send.after_debit");
    let def = if sent.replayed {
        // The first send's definition, from its ledger entry; the request must ask the same.
        if !same_request(&def_of_entry(&sent.entry)?, &def) {
            return Err(PacketError::RequestConflict(body.request_id));
        }
        // The stored packet (rebuilt from the ledger if the store lost it).
        stored(app, &packet_id).await?.def
    } else {
        app.store.packet_create(def, Vec::new()).await?
    };
    let balance =
        crate::wallet::summary(app, sender_act_id).await.map_err(|e| PacketError::Unavailable(e.to_string()))?;
    Ok(SendAnswer {
        packet_id,
        sender_act_id: def.sender_act_id,
        total_cents: def.total_cents,
        shares: def.shares.len(),
        split: def.split,
        expires_at_ms: def.expires_at_ms,
        balance_cents: balance.balance_cents,
        replayed: sent.replayed,
    })
}

/// Whether a retried send (`asked`, built from its body) asks for the packet `sent` was sent as:
/// the same shares, split, greeting, grab list and time open (the total the ledger compared).
fn same_request(sent: &PacketDef, asked: &PacketDef) -> bool {
    sent.shares.len() == asked.shares.len()
        && sent.split == asked.split
        && sent.greeting == asked.greeting
        && sent.grabbers == asked.grabbers
        && sent.expires_at_ms - sent.created_ms == asked.expires_at_ms - asked.created_ms
}

/// The packet, or 404. A packet the store lost (its data gone) but the ledger sent is rebuilt
/// first ([`rebuild`]).
pub(crate) async fn stored(app: &App, packet_id: &str) -> Result<PacketState, PacketError> {
    if !is_packet_id(packet_id) {
        return Err(PacketError::NotFound(packet_id.chars().take(32).collect()));
    }
    if let Some(state) = app.store.packet(packet_id).await? {
        return Ok(state);
    }
    if rebuild(app, packet_id).await?
        && let Some(state) = app.store.packet(packet_id).await?
    {
        return Ok(state);
    }
    Err(PacketError::NotFound(packet_id.to_owned()))
}

/// Stores again a packet the ledger sent but the store does not hold (it lost its data, or the
/// sending host died before storing it); `false` when the ledger has no such send.
///
/// The definition comes from the send's entry. The grabs the ledger has credited are claimed
/// first: their shares move to the front of the hand-out order (any share of the same amount
/// is the same money), so the claims stay the contiguous prefix the store hands out from. Grabs
/// that were claimed but not credited when the store lost them are not known any more: their
/// shares go back to the pool (their holders' tokens stay valid in the ledger's eyes only once
/// credited, and a later claimer of the same user gets a share again under the same order
/// number, which the ledger credits at most once). A refund the ledger holds is recorded too.
pub async fn rebuild(app: &App, packet_id: &str) -> Result<bool, PacketError> {
    let Some(sent) = app.ledger.entry(&format!("ps/{packet_id}")).await? else { return Ok(false) };
    let mut def = def_of_entry(&sent)?;
    let activity_id = packet_activity(packet_id);
    // Who is known to hold a share: the grabs the ledger credited, and the tokens the store
    // still holds (a store that lost only the packet's keys keeps its grabbers' tokens).
    let mut held: Vec<(u64, i64, i64)> = app
        .ledger
        .red_packets_of(&activity_id)
        .await?
        .iter()
        .map(|entry| (entry.time_ms, entry.act_id, entry.amount_cents))
        .collect();
    held.extend(
        app.store
            .grants_of(&activity_id)
            .await?
            .iter()
            .map(|(record, _)| (record.open_time_ms, record.act_id, record.amount_cents)),
    );
    held.sort_unstable();
    let mut rest = def.shares.clone();
    let (mut shares, mut claimers) = (Vec::with_capacity(rest.len()), Vec::<i64>::new());
    for (_, act_id, amount_cents) in held {
        if claimers.contains(&act_id) {
            continue;
        }
        if let Some(position) = rest.iter().position(|&cents| cents == amount_cents) {
            shares.push(rest.remove(position));
            claimers.push(act_id);
        }
    }
    let credited = claimers.len();
    shares.extend(rest);
    def.shares = shares;
    app.store.packet_create(def, claimers).await?;
    if let Some(refund) = app.ledger.entry(&format!("pr/{packet_id}")).await? {
        app.store.packet_close(packet_id).await?;
        app.store.packet_refunded(packet_id, refund.amount_cents).await?;
    }
    tracing::warn!(packet = %packet_id, claims = credited, "packet rebuilt from the ledger");
    Ok(true)
}

/// The order number of a user's grab: one per user per packet, so the ledger can credit it
/// only once whatever happens to the store.
pub fn grab_order_no(act_id: i64) -> String {
    format!("{act_id}_grab")
}

/// The grant record of `act_id`'s claim of share `index`, with a freshly signed token.
pub fn grab_record(app: &App, def: &PacketDef, act_id: i64, index: u32, app_id: i64, now_ms: u64) -> GrantRecord {
    let activity_id = packet_activity(&def.packet_id);
    let amount_cents = def.shares[index as usize];
    let order_no = grab_order_no(act_id);
    let mut token = RedPacketToken {
        app_id,
        act_id,
        activity_id: activity_id.clone(),
        scene_id: GRAB_SCENE_ID.into(),
        amount_cents,
        order_no: order_no.clone(),
        open_time_ms: now_ms as i64,
        rain_id: 0,
        status: i64::from(TokenStatus::Pending.code()),
        key_id: String::new(),
        award_type: "packet".into(),
        stage: index,
    };
    let token = app.issuer.mint(&mut token);
    let bill_copy = grab_bill_copy(def);
    GrantRecord {
        activity_id,
        order_no,
        scene_id: GRAB_SCENE_ID.into(),
        act_id,
        amount_cents,
        open_time_ms: now_ms,
        status: TokenStatus::Pending.code(),
        seq: 0,
        token,
        bill_copy,
        app_id,
        queue_id: String::new(),
    }
}

/// The text on a grabber's bill.
pub fn grab_bill_copy(def: &PacketDef) -> String {
    if def.greeting.is_empty() {
        format!("Red packet from {}", def.sender_act_id)
    } else {
        format!("Red packet from {}: {}", def.sender_act_id, def.greeting)
    }
}

/// Stock bounds for a grab's grant: none (the claim already decided the share, and the ledger's
/// packet account cannot pay more than the packet holds).
pub fn grab_limits() -> StockLimits {
    StockLimits {
        activity_budget_cents: crate::config::BUDGET_CENTS_MAX,
        scene_count_max: None,
        scene_budget_cents: None,
    }
}

/// Grants a claimed share unless its token is stored already; answers the stored record.
pub async fn grant_claim(
    app: &App,
    def: &PacketDef,
    act_id: i64,
    index: u32,
    app_id: i64,
) -> Result<(GrantRecord, bool), PacketError> {
    let record = grab_record(app, def, act_id, index, app_id, app.clock.now_ms());
    // A share is claimed once, so the ledger can have its token only if the store has it or
    // retired it; the store says which users have retired tokens of the packet.
    let mut committed = app.store.commit_grant_checked(record.clone(), grab_limits(), None, LedgerCheck::New).await?;
    if committed == GrantCommit::CheckRetired {
        if let Some(entry) = app.ledger.entry(&record.flow_id()).await? {
            return Ok((retired_record(&record, entry), true));
        }
        let checked = LedgerCheck::Done { activity_clean: false };
        committed = app.store.commit_grant_checked(record, grab_limits(), None, checked).await?;
    }
    match committed {
        GrantCommit::Granted(record) => Ok((record, false)),
        GrantCommit::Replayed(record) => {
            if record.amount_cents != def.shares[index as usize] {
                tracing::error!(packet = %def.packet_id, act_id, token_cents = record.amount_cents,
                    share_cents = def.shares[index as usize], "a grab's stored token and its claimed share differ");
            }
            Ok((record, true))
        }
        other => Err(PacketError::Unavailable(format!("the store refused a claimed share: {other:?}"))),
    }
}

/// A retired grab token as the ledger keeps it: credited, with the original token and amount.
fn retired_record(record: &GrantRecord, entry: LedgerEntry) -> GrantRecord {
    GrantRecord {
        amount_cents: entry.amount_cents,
        open_time_ms: entry.time_ms,
        status: TokenStatus::Credited.code(),
        token: entry.token,
        bill_copy: entry.memo,
        ..record.clone()
    }
}

/// Grabs a share of a packet for `act_id` through `app_id` (see the module docs); the caller
/// resolved the grabber named in the request.
pub async fn grab(app: &App, app_id: i64, packet_id: &str, act_id: i64) -> Result<GrabAnswer, PacketError> {
    if act_id <= 0 || act_id == i64::MAX {
        return Err(PacketError::BadRequest(format!("act_id `{act_id}` must be positive and below 2^63-1")));
    }
    // The definition only (a host keeps those it read): a grab reads no other packet state.
    let def = match app.store.packet_def(packet_id).await? {
        Some(def) => def,
        None => std::sync::Arc::new(stored(app, packet_id).await?.def),
    };
    let def = &*def;
    if !def.grabbers.is_empty() && def.grabbers.binary_search(&act_id).is_err() {
        return Err(PacketError::NotAllowed { packet_id: packet_id.to_owned(), act_id });
    }
    let (index, again) = match app.store.packet_claim(def, act_id, app.clock.now_ms()).await? {
        Claim::New(index) => (index, false),
        Claim::Again(index) => (index, true),
        Claim::Empty => return Err(PacketError::Empty(packet_id.to_owned())),
        Claim::Expired => return Err(PacketError::Expired(packet_id.to_owned())),
        Claim::Unknown => return Err(PacketError::NotFound(packet_id.to_owned())),
    };
    crate::failpoint::hit("packet.grab.after_claim");
    let (record, replayed) = grant_claim(app, def, act_id, index, app_id).await?;
    Ok(GrabAnswer {
        packet_id: packet_id.to_owned(),
        act_id,
        amount_cents: record.amount_cents,
        status: record.status(),
        order_no: record.order_no,
        token: record.token,
        replayed: replayed || again,
    })
}

/// `GET /v1/packets/{id}`. `viewer` is the user a session reads for (`None` for an app, which
/// vouches for its users): a restricted packet shows only to its sender and its grab list.
pub async fn show(app: &App, packet_id: &str, viewer: Option<i64>) -> Result<PacketView, PacketError> {
    let state = stored(app, packet_id).await?;
    let def = state.def;
    if let Some(act_id) = viewer
        && !def.grabbers.is_empty()
        && act_id != def.sender_act_id
        && def.grabbers.binary_search(&act_id).is_err()
    {
        return Err(PacketError::NotAllowed { packet_id: packet_id.to_owned(), act_id });
    }
    let grabs: Vec<GrabView> = state
        .claims
        .iter()
        .map(|&(act_id, index)| GrabView { act_id, amount_cents: def.shares[index as usize] })
        .collect();
    let claimed: i64 = grabs.iter().map(|grab| grab.amount_cents).sum();
    let status = match state.refunded_cents {
        Some(_) => "refunded",
        None if state.closed || app.clock.now_ms() >= def.expires_at_ms => "expired",
        None if grabs.len() >= def.shares.len() => "empty",
        None => "open",
    };
    Ok(PacketView {
        packet_id: def.packet_id,
        sender_act_id: def.sender_act_id,
        total_cents: def.total_cents,
        shares: def.shares.len(),
        shares_left: def.shares.len() - grabs.len(),
        cents_left: def.total_cents - claimed,
        split: def.split,
        greeting: def.greeting,
        created_ms: def.created_ms,
        expires_at_ms: def.expires_at_ms,
        status,
        grabs,
        refunded_cents: state.refunded_cents,
        restricted: !def.grabbers.is_empty(),
    })
}

/// A packet's books (`GET /v1/packets/{id}/reconciliation`, admin): every cent of the packet is
/// with a grabber (credited, or claimed and on its way), back with the sender, or in the packet
/// account while it is open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PacketBooks {
    /// The packet.
    pub packet_id: String,
    /// What the send entry moved into the packet account.
    pub sent_cents: i64,
    /// The shares claimed, by the store.
    pub claimed_cents: i64,
    /// Grabs the ledger has credited.
    pub credited_cents: i64,
    /// Grabs claimed and not credited yet (the writer's backlog for this packet).
    pub pending_cents: i64,
    /// The refund entry's amount, when written.
    pub refunded_cents: i64,
    /// The packet account's balance.
    pub account_cents: i64,
    /// Every check below holds.
    pub balanced: bool,
    /// What does not add up, for people.
    pub problems: Vec<String>,
}

/// Times a packet's books are read at most for one report while credits move its account (see
/// [`reconcile`]); a packet has at most a few hundred shares, so a few reads find a still moment.
const RECONCILE_READS_MAX: u32 = 16;

/// Reads and checks a packet's books (see [`PacketBooks`]).
pub async fn reconcile(app: &App, packet_id: &str) -> Result<PacketBooks, PacketError> {
    stored(app, packet_id).await?;
    let sent_cents = app.ledger.entry(&format!("ps/{packet_id}")).await?.map_or(0, |entry| entry.amount_cents);
    // The writer may credit a share (and the sweep refund the rest) between the reads. Every
    // entry that moves the account after its send takes from it, and is written to the ledger
    // before the store hears of it (a share is claimed before it is credited; a refund is
    // written before the store marks it), so when the account's balance is the same before and
    // after the other reads, the entries, the refund and the store's claims are of one moment.
    let mut tries = 0;
    let (refunded_cents, credited, account_cents, state) = loop {
        let before = app.ledger.balance(&packet_account(packet_id)).await?;
        let refunded_cents = app.ledger.entry(&format!("pr/{packet_id}")).await?.map_or(0, |entry| entry.amount_cents);
        let credited: Vec<LedgerEntry> = app.ledger.red_packets_of(&packet_activity(packet_id)).await?;
        let state = stored(app, packet_id).await?;
        let account_cents = app.ledger.balance(&packet_account(packet_id)).await?;
        if account_cents == before {
            break (refunded_cents, credited, account_cents, state);
        }
        tries += 1;
        if tries == RECONCILE_READS_MAX {
            return Err(PacketError::Unavailable(format!(
                "the packet's account kept moving over {RECONCILE_READS_MAX} reads of its books; retry"
            )));
        }
    };
    let credited_cents: i64 = credited.iter().map(|entry| entry.amount_cents).sum();
    let def = &state.def;
    let claimed_cents: i64 = state.claims.iter().map(|&(_, index)| def.shares[index as usize]).sum();
    let mut problems = Vec::new();
    if sent_cents != def.total_cents {
        problems.push(format!("the send entry moved {sent_cents} cents of a {} cent packet", def.total_cents));
    }
    if account_cents != sent_cents - credited_cents - refunded_cents {
        problems.push(format!(
            "the packet account holds {account_cents} cents, not sent − credited − refunded = {}",
            sent_cents - credited_cents - refunded_cents
        ));
    }
    if credited_cents > claimed_cents {
        problems.push(format!("{credited_cents} cents credited but only {claimed_cents} claimed"));
    }
    for entry in &credited {
        let claim = state.claims.iter().find(|&&(act_id, _)| grab_order_no(act_id) == entry.reference);
        match claim {
            Some(&(_, index)) if def.shares[index as usize] == entry.amount_cents => {}
            _ => problems.push(format!("credited grab `{}` matches no claimed share", entry.id)),
        }
    }
    if state.refunded_cents.is_some() && claimed_cents + refunded_cents != def.total_cents {
        problems.push(format!(
            "refunded: {claimed_cents} claimed + {refunded_cents} refunded is not the {} cent total",
            def.total_cents
        ));
    }
    Ok(PacketBooks {
        packet_id: packet_id.to_owned(),
        sent_cents,
        claimed_cents,
        credited_cents,
        pending_cents: claimed_cents - credited_cents,
        refunded_cents,
        account_cents,
        balanced: problems.is_empty(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SendBody {
        SendBody {
            request_id: "r".into(),
            sender_act_id: Some(7),
            sender_app_user_id: None,
            total_cents: 100,
            shares: 1,
            split: Split::Random,
            expires_in_s: None,
            greeting: None,
            grabbers: None,
        }
    }

    fn refused(edit: impl FnOnce(&mut SendBody)) -> bool {
        let mut body = body();
        edit(&mut body);
        matches!(check_send(7, &body), Err(PacketError::BadRequest(_)))
    }

    // Proves every bound of a send holds at its exact value and refuses one past it: shares,
    // the total (and a cent per share), the time open, the greeting, the grab list and the
    // request id.
    #[test]
    fn sends_are_bounded_exactly() {
        assert!(check_send(7, &body()).is_ok());
        let shares_max = PACKET_SHARES_MAX;
        assert!(!refused(|b| (b.shares, b.total_cents) = (shares_max, i64::from(shares_max))));
        assert!(refused(|b| (b.shares, b.total_cents) = (shares_max + 1, i64::from(shares_max) + 1)));
        assert!(refused(|b| b.shares = 0));
        assert!(refused(|b| (b.shares, b.total_cents) = (3, 2)));
        assert!(!refused(|b| b.total_cents = PACKET_TOTAL_CENTS_MAX));
        assert!(refused(|b| b.total_cents = PACKET_TOTAL_CENTS_MAX + 1));
        assert!(!refused(|b| b.expires_in_s = Some(PACKET_EXPIRES_IN_S_MAX)));
        assert!(refused(|b| b.expires_in_s = Some(PACKET_EXPIRES_IN_S_MAX + 1)));
        assert!(refused(|b| b.expires_in_s = Some(0)));
        assert!(!refused(|b| b.greeting = Some("红".repeat(GREETING_CHARS_MAX))));
        assert!(refused(|b| b.greeting = Some("红".repeat(GREETING_CHARS_MAX + 1))));
        let list = |n: usize| Some((1..=n as i64).collect::<Vec<_>>());
        assert!(!refused(|b| b.grabbers = list(PACKET_GRABBERS_MAX)));
        assert!(refused(|b| b.grabbers = list(PACKET_GRABBERS_MAX + 1)));
        assert!(refused(|b| b.grabbers = Some(Vec::new())));
        assert!(refused(|b| b.grabbers = Some(vec![0])));
        assert!(!refused(|b| b.request_id = "r".repeat(128)));
        assert!(refused(|b| b.request_id = "r".repeat(129)));
        assert!(refused(|b| b.request_id = "a/b".into()));
        assert!(matches!(check_send(0, &body()), Err(PacketError::BadRequest(_))));
    }

    // Proves a replayed send conflicts when it asks for another packet than the one sent: each
    // field the ledger does not compare (the total it does) is checked.
    #[test]
    fn a_replay_must_ask_for_the_same_packet() {
        let def = PacketDef {
            shares: vec![1, 2],
            split: "random".into(),
            created_ms: 10,
            expires_at_ms: 1010,
            grabbers: vec![3],
            ..PacketDef::default()
        };
        assert!(same_request(
            &def,
            &PacketDef { shares: vec![2, 1], created_ms: 50, expires_at_ms: 1050, ..def.clone() }
        ));
        assert!(!same_request(&def, &PacketDef { shares: vec![3], ..def.clone() }));
        assert!(!same_request(&def, &PacketDef { split: "equal".into(), ..def.clone() }));
        assert!(!same_request(&def, &PacketDef { greeting: "hi".into(), ..def.clone() }));
        assert!(!same_request(&def, &PacketDef { grabbers: vec![4], ..def.clone() }));
        assert!(!same_request(&def, &PacketDef { expires_at_ms: 2010, ..def.clone() }));
    }
}
