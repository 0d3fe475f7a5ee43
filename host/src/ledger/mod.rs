//! The ledger: where money really moves, in double entry.
//!
//! Accounts: `funding/{activity}` (the company's money flowing into a campaign; the only kind of
//! account allowed below zero), `budget/{activity}` (what the campaign may still pay out),
//! `wallet/{act_id}` (a user's money) and `payouts` (what users have withdrawn). Every entry debits
//! one account and credits another by the same amount, so the balances always sum to zero.
//!
//! Each entry has an id that the storage keeps unique: `rp/{activity}/{order_no}` for a red packet,
//! `wd/{act_id}/{request_id}` for a withdrawal, `fund/{activity}/{total}` for funding. Crediting
//! the same red packet twice finds the id taken and changes nothing, which is what makes
//! redelivery from the crediting queue harmless.

mod books;
mod embedded;
mod kept;
mod postgres;
mod rules;
mod sharded;

pub use embedded::EmbeddedLedger;
pub use sharded::{PostgresLedger, budget_share, shard_of};

use crate::store::{FlowPosition, GrantRecord};

/// The ledger the host runs on: the embedded default or PostgreSQL (one database, or several
/// shards of one ledger). Both keep the same books with the same rules; the conformance suite
/// runs the platform's tests against each, and against two PostgreSQL shards.
#[derive(Clone)]
pub enum Ledger {
    /// `DATA/ledger.log`, the books in memory.
    Embedded(EmbeddedLedger),
    /// A PostgreSQL database.
    Postgres(PostgresLedger),
}

/// Forwards a call to whichever ledger this is; both have every method with the same
/// arguments. `dispatch!(self, l => l.method(..))` awaits both; `dispatch!(memory self, ..)` is
/// for reads the embedded ledger answers from memory, at once, and only PostgreSQL's is awaited.
macro_rules! dispatch {
    (memory $self:ident, $ledger:ident => $call:expr) => {
        match $self {
            Ledger::Embedded($ledger) => $call,
            Ledger::Postgres($ledger) => $call.await,
        }
    };
    ($self:ident, $ledger:ident => $call:expr) => {
        match $self {
            Ledger::Embedded($ledger) => $call.await,
            Ledger::Postgres($ledger) => $call.await,
        }
    };
}

impl Ledger {
    /// Tops the activity's budget account up to `budget_cents` in total (idempotent).
    pub async fn fund_activity(&self, activity_id: String, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        dispatch!(self, l => l.fund_activity(activity_id, budget_cents, time_ms))
    }

    /// Credits a batch of red packets in one transaction: one result per credit, in order.
    pub async fn credit_batch(&self, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        dispatch!(self, l => l.credit_batch(credits))
    }

    /// Debits a wallet, once per request id, never below zero.
    pub async fn withdraw(&self, request: WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
        self.transfer(LedgerEntry::withdrawal(&request)).await
    }

    /// Writes one entry that moves money out of an account that may not go below zero (a
    /// withdrawal, a group red packet's send or refund): once per entry id (the same id with the
    /// same amount answers the entry written first, another amount is a conflict), never
    /// overdrawing its debit account. The answer's balance is the debit account's.
    pub async fn transfer(&self, entry: LedgerEntry) -> Result<Withdrawal, LedgerError> {
        dispatch!(self, l => l.transfer(entry))
    }

    /// The user's balance and income, and which of `flow_ids` are credited, in one snapshot.
    pub async fn wallet(&self, act_id: i64, flow_ids: &[String]) -> Result<LedgerWallet, LedgerError> {
        dispatch!(memory self, l => l.wallet(act_id, flow_ids))
    }

    /// Up to `limit` of the user's entries strictly older than `before`, newest first.
    pub async fn user_entries(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        dispatch!(memory self, l => l.user_entries(act_id, before, limit))
    }

    /// The entry with this id.
    pub async fn entry(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        dispatch!(memory self, l => l.entry(id))
    }

    /// An account's balance.
    pub async fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        dispatch!(memory self, l => l.balance(account))
    }

    /// Whether any red packet of the activity was ever credited. The grant path asks once per
    /// activity and store, to learn whether the store can vouch for the activity's order numbers
    /// alone (see [`crate::store::Store::commit_grant`]).
    pub async fn has_red_packets(&self, activity_id: &str) -> Result<bool, LedgerError> {
        dispatch!(memory self, l => l.has_red_packets(activity_id))
    }

    /// The red packet entries of one activity, for reconciliation; never on the grant path.
    pub async fn red_packets_of(&self, activity_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        dispatch!(memory self, l => l.red_packets_of(activity_id))
    }

    /// Every entry, for audits and tests; never on a request path.
    pub async fn all_entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        dispatch!(memory self, l => l.all_entries())
    }

    /// Every account with its balance, for audits and tests.
    pub async fn all_balances(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        dispatch!(memory self, l => l.all_balances())
    }
}

/// The largest single amount the ledger accepts: an activity's whole budget fits in one funding
/// entry, and it is far below the point where sums of many could overflow `i64`.
pub const ENTRY_CENTS_MAX: i64 = crate::config::BUDGET_CENTS_MAX;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A red packet credited to a wallet.
    RedPacket = 1,
    /// A withdrawal out of a wallet.
    Withdrawal = 2,
    /// Money put into an activity's budget, or moved between the budget's parts on two ledger
    /// shards (a loan and its arrival, `fund/{activity}/lent/…` and `fund/{activity}/came/…`):
    /// movements of the campaign's money that belong to no user.
    Funding = 3,
    /// A group red packet sent: the sender's wallet into the packet's account.
    PacketSent = 4,
    /// A group red packet's unclaimed shares back from its account to the sender.
    PacketRefund = 5,
}

/// One ledger entry as stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LedgerEntry {
    /// Unique id (see the module docs).
    #[prost(string, tag = "1")]
    pub id: String,
    /// [`EntryKind`] as a number.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// The account debited.
    #[prost(string, tag = "3")]
    pub debit_account: String,
    /// The account credited.
    #[prost(string, tag = "4")]
    pub credit_account: String,
    /// Always positive.
    #[prost(int64, tag = "5")]
    pub amount_cents: i64,
    /// For red packets the token's open time, so the wallet flow keeps its order when a pending
    /// token becomes credited; otherwise the time of the entry.
    #[prost(uint64, tag = "6")]
    pub time_ms: u64,
    /// The user, for red packets and withdrawals.
    #[prost(int64, tag = "7")]
    pub act_id: i64,
    /// The bill copy, for red packets.
    #[prost(string, tag = "8")]
    pub memo: String,
    /// The activity, for red packets and funding.
    #[prost(string, tag = "9")]
    pub activity_id: String,
    /// The scene, for red packets.
    #[prost(string, tag = "10")]
    pub scene_id: String,
    /// The order number of a red packet or the request id of a withdrawal.
    #[prost(string, tag = "11")]
    pub reference: String,
    /// For red packets, the signed token as the client holds it: a retried grant whose token the
    /// store has lost still gets the original token back, never a new amount. For a group red
    /// packet's send, the packet's definition (`crate::packet::PacketDef`, base64 protobuf), so
    /// that a retried send gets the same shares back and the books say how the total was split.
    #[prost(string, tag = "12")]
    pub token: String,
}

impl LedgerEntry {
    /// The entry that tops an activity's budget up by `top_up_cents` to `budget_cents` in total;
    /// its id names the total, so funding the same total twice is one entry.
    pub fn funding(activity_id: &str, budget_cents: i64, top_up_cents: i64, time_ms: u64) -> LedgerEntry {
        LedgerEntry {
            id: format!("fund/{activity_id}/{budget_cents}"),
            kind: EntryKind::Funding as u32,
            debit_account: format!("funding/{activity_id}"),
            credit_account: budget_account(activity_id),
            amount_cents: top_up_cents,
            time_ms,
            activity_id: activity_id.to_owned(),
            ..LedgerEntry::default()
        }
    }

    /// The entry that credits one red packet from its activity's budget to the user's wallet.
    pub fn red_packet(credit: &Credit) -> LedgerEntry {
        LedgerEntry {
            id: crate::store::red_packet_flow_id(&credit.activity_id, &credit.order_no),
            kind: EntryKind::RedPacket as u32,
            debit_account: budget_account(&credit.activity_id),
            credit_account: wallet_account(credit.act_id),
            amount_cents: credit.amount_cents,
            time_ms: credit.open_time_ms,
            act_id: credit.act_id,
            memo: credit.memo.clone(),
            activity_id: credit.activity_id.clone(),
            scene_id: credit.scene_id.clone(),
            reference: credit.order_no.clone(),
            token: credit.token.clone(),
        }
    }

    /// The entry that pays a withdrawal out of the user's wallet; its id is
    /// `wd/{act_id}/{request_id}`.
    pub fn withdrawal(request: &WithdrawalRequest) -> LedgerEntry {
        LedgerEntry {
            id: format!("wd/{}/{}", request.act_id, request.request_id),
            kind: EntryKind::Withdrawal as u32,
            debit_account: wallet_account(request.act_id),
            credit_account: PAYOUTS_ACCOUNT.to_owned(),
            amount_cents: request.amount_cents,
            time_ms: request.time_ms,
            act_id: request.act_id,
            reference: request.request_id.clone(),
            ..LedgerEntry::default()
        }
    }

    /// The entry's kind.
    pub fn kind(&self) -> EntryKind {
        match self.kind {
            2 => EntryKind::Withdrawal,
            3 => EntryKind::Funding,
            4 => EntryKind::PacketSent,
            5 => EntryKind::PacketRefund,
            _ => EntryKind::RedPacket,
        }
    }
}

/// A red packet to credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// The activity paying.
    pub activity_id: String,
    /// The grant's order number.
    pub order_no: String,
    /// The scene.
    pub scene_id: String,
    /// The user paid.
    pub act_id: i64,
    /// Cents, positive.
    pub amount_cents: i64,
    /// The token's open time.
    pub open_time_ms: u64,
    /// The bill copy.
    pub memo: String,
    /// The signed token.
    pub token: String,
}

impl Credit {
    /// The credit for a stored grant: its bill copy is the entry's memo.
    pub fn of(record: &GrantRecord) -> Credit {
        Credit {
            activity_id: record.activity_id.clone(),
            order_no: record.order_no.clone(),
            scene_id: record.scene_id.clone(),
            act_id: record.act_id,
            amount_cents: record.amount_cents,
            open_time_ms: record.open_time_ms,
            memo: record.bill_copy.clone(),
            token: record.token.clone(),
        }
    }
}

/// What crediting one red packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditResult {
    /// The entry was written now.
    Applied,
    /// The entry existed already: a redelivery.
    AlreadyCredited,
    /// The activity's budget account cannot pay it; nothing written. Grants are checked against
    /// the budget, so this means the books disagree (for example an activity not funded yet).
    BudgetExhausted,
    /// The ledger already has this order number with a different amount or user; nothing
    /// written. Reconciliation reports it.
    Conflict,
}

/// A withdrawal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRequest {
    /// The user.
    pub act_id: i64,
    /// The client's idempotency key.
    pub request_id: String,
    /// Cents, positive.
    pub amount_cents: i64,
    /// When it was asked.
    pub time_ms: u64,
}

/// A withdrawal (or another [`Ledger::transfer`]) done.
#[derive(Debug, Clone, PartialEq)]
pub struct Withdrawal {
    /// The entry written (or found, for a replay).
    pub entry: LedgerEntry,
    /// The debited account's balance after it (now, for a replay).
    pub balance_cents: i64,
    /// Whether this entry id had been written before.
    pub replayed: bool,
}

/// A user's money as the ledger sees it, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerWallet {
    /// The wallet account's balance: credited red packets minus withdrawals.
    pub balance_cents: i64,
    /// All red packets ever credited.
    pub income_cents: i64,
    /// Of the flow ids asked about, those that the ledger has credited.
    pub credited_flow_ids: std::collections::HashSet<String>,
}

/// Why the ledger refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The wallet does not hold enough; nothing changed.
    #[error("insufficient balance: wallet holds {balance_cents} cents")]
    InsufficientBalance {
        /// The credited balance.
        balance_cents: i64,
    },
    /// The request id was used before with a different amount.
    #[error("request id `{0}` was already used for a different withdrawal")]
    RequestConflict(String),
    /// The amount is not positive or too large.
    #[error("amount `{0}` is out of range")]
    AmountOutOfRange(i64),
    /// The storage failed; nothing changed; retry.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The `--ledger` databases are not the shard list a deployment first started with (another
    /// order, another number, or one database twice); nothing was written. Not retryable.
    #[error("ledger shard layout: {0}")]
    ShardLayout(String),
    /// A PostgreSQL url does not parse; nothing was tried. Not retryable.
    #[error("bad PostgreSQL url: {0}")]
    BadUrl(String),
}

/// The account a user's money is kept in.
pub fn wallet_account(act_id: i64) -> String {
    format!("wallet/{act_id}")
}

/// The account an activity pays red packets from. A group red packet's grabs are red packets of
/// its own activity `pk.{packet_id}` ([`packet_activity`]), paid from the packet's account.
pub fn budget_account(activity_id: &str) -> String {
    match activity_id.strip_prefix(PACKET_ACTIVITY_PREFIX) {
        Some(packet_id) => packet_account(packet_id),
        None => format!("budget/{activity_id}"),
    }
}

/// What a group red packet's activity id starts with; configured activity ids cannot contain `.`
/// ([`crate::config::is_valid_id`]), so no campaign can take one.
pub const PACKET_ACTIVITY_PREFIX: &str = "pk.";

/// The activity a group red packet's grabs are granted in: `pk.{packet_id}`.
pub fn packet_activity(packet_id: &str) -> String {
    format!("{PACKET_ACTIVITY_PREFIX}{packet_id}")
}

/// The account that holds a group red packet's money between its send and its grabs or refund.
pub fn packet_account(packet_id: &str) -> String {
    format!("packet/{packet_id}")
}

/// Withdrawn money leaves through this account.
pub const PAYOUTS_ACCOUNT: &str = "payouts";
