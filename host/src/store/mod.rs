//! The token store: the hot state of the grant path.
//!
//! It owns, per grant, the record of the minted token and its crediting status, plus the
//! indexes the rest of the host needs: each user's token list, each user's unsettled tokens, the
//! crediting queue (oldest first) and the stock counters of scenes and activities. A grant's
//! idempotency check, its stock reservation and its record are written in one transaction.
//!
//! Status moves 1 (pending) → 2 (processing, claimed by a writer) → 8 (credited). There is no
//! failed state: a token that was claimed but not completed is claimed again.

mod embedded;

pub use embedded::{EmbeddedStore, GROUP_COMMIT_OPS_MAX, USER_UNSETTLED_READ_MAX};

/// A token's crediting status, numbered as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Granted, waiting in the crediting queue.
    Pending = 1,
    /// Claimed by a ledger writer; the ledger may or may not have it yet.
    Processing = 2,
    /// The ledger has the entry.
    Credited = 8,
}

impl TokenStatus {
    /// The seed's number for this status.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The status with the seed's number `code`.
    pub fn from_code(code: u32) -> Option<TokenStatus> {
        match code {
            1 => Some(TokenStatus::Pending),
            2 => Some(TokenStatus::Processing),
            8 => Some(TokenStatus::Credited),
            _ => None,
        }
    }
}

/// What the store keeps of one grant.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrantRecord {
    /// The activity; order numbers are unique within it.
    #[prost(string, tag = "1")]
    pub activity_id: String,
    /// `${actID}_${scene_id}_${rain_id}_${award_type}_${stage}`.
    #[prost(string, tag = "2")]
    pub order_no: String,
    /// The scene that granted it.
    #[prost(string, tag = "3")]
    pub scene_id: String,
    /// The user.
    #[prost(int64, tag = "4")]
    pub act_id: i64,
    /// The amount in cents.
    #[prost(int64, tag = "5")]
    pub amount_cents: i64,
    /// When it was granted (the token's open time).
    #[prost(uint64, tag = "6")]
    pub open_time_ms: u64,
    /// The seed's status number (see [`TokenStatus`]).
    #[prost(uint32, tag = "7")]
    pub status: u32,
    /// Position in the crediting queue, assigned by the store.
    #[prost(uint64, tag = "8")]
    pub seq: u64,
    /// The signed token as the client holds it.
    #[prost(string, tag = "9")]
    pub token: String,
    /// The text shown on the user's bill.
    #[prost(string, tag = "10")]
    pub bill_copy: String,
    /// The app the grant came through.
    #[prost(int64, tag = "11")]
    pub app_id: i64,
}

impl GrantRecord {
    /// The record's status; unknown numbers read as pending, which is always safe because
    /// crediting is idempotent.
    pub fn status(&self) -> TokenStatus {
        TokenStatus::from_code(self.status).unwrap_or(TokenStatus::Pending)
    }

    /// The id this grant has in the wallet flow and in the ledger: `rp/{activity}/{order_no}`.
    pub fn flow_id(&self) -> String {
        red_packet_flow_id(&self.activity_id, &self.order_no)
    }

    /// Identifies the record across the store's tables.
    pub fn key(&self) -> GrantKey {
        GrantKey { activity_id: self.activity_id.clone(), order_no: self.order_no.clone(), seq: self.seq }
    }
}

/// The id of a red packet in the wallet flow and the ledger.
pub fn red_packet_flow_id(activity_id: &str, order_no: &str) -> String {
    format!("rp/{activity_id}/{order_no}")
}

/// Names one stored grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantKey {
    /// The activity.
    pub activity_id: String,
    /// The order number.
    pub order_no: String,
    /// The queue position.
    pub seq: u64,
}

/// The stock bounds a grant is checked against, taken from the scene version the request
/// started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StockLimits {
    /// The activity's whole budget: the sum of all its grants never exceeds it.
    pub activity_budget_cents: i64,
    /// The scene's count of grants, when its inventory counts.
    pub scene_count_max: Option<u64>,
    /// The scene's budget, when its inventory has one.
    pub scene_budget_cents: Option<i64>,
}

/// Which bound a grant hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockOut {
    /// The scene has handed out its count.
    SceneCount,
    /// The scene's budget cannot pay this amount.
    SceneBudget,
    /// The activity's budget cannot pay this amount.
    ActivityBudget,
}

/// The outcome of writing a grant.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantCommit {
    /// Stored; stock reserved; queued for crediting.
    Granted(GrantRecord),
    /// The order number was already stored: this is its original record.
    Replayed(GrantRecord),
    /// Nothing stored.
    OutOfStock(StockOut),
}

/// The outcome of restoring a client's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// The server had lost it; it is stored and queued again.
    Restored,
    /// The server has it already; nothing changed.
    AlreadyPresent,
}

/// Used units of a scene's or an activity's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StockUsed {
    /// Grants made.
    pub count: u64,
    /// Cents granted.
    pub cents: i64,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed; the operation did not happen and may be retried.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down.
    #[error("token store is closed")]
    Closed,
    /// A user holds more unsettled tokens than one request reads; answering with part of them
    /// would show a wrong balance, so the request fails instead.
    #[error("user `{act_id}` has more than {max} unsettled tokens")]
    TooManyUnsettled {
        /// The user.
        act_id: i64,
        /// The bound.
        max: usize,
    },
}

/// A position in a user's wallet flow: items strictly older than it come next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowPosition {
    /// The item's time.
    pub time_ms: u64,
    /// The item's flow id, which breaks ties between items of the same millisecond.
    pub flow_id: String,
}

/// The keys `(act_id, time_ms, flow_id)` of a user's flow index that come strictly before
/// `before` (all of the user's keys when `None`). The token store and the ledger both page their
/// flow indexes with it, so their pages line up exactly when the wallet merges them.
pub fn flow_index_range(act_id: i64, before: Option<&FlowPosition>) -> std::ops::Range<(i64, u64, &str)> {
    match before {
        Some(position) => (act_id, 0, "")..(act_id, position.time_ms, position.flow_id.as_str()),
        None => (act_id, 0, "")..(act_id.saturating_add(1), 0, ""),
    }
}
