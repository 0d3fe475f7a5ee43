//! The token store: the hot state of the grant path.
//!
//! It owns, per grant, the record of the minted token and its crediting status, plus the
//! indexes the rest of the host needs: each user's token list, each user's unsettled tokens, the
//! crediting queue (oldest first) and the stock counters of scenes and activities. A grant's
//! idempotency check, its stock reservation and its record are written in one transaction.
//!
//! Status moves 1 (pending) → 2 (processing, claimed by a writer) → 8 (credited). There is no
//! failed state: a token that was claimed but not completed is claimed again.

use std::collections::HashMap;

use crate::metrics::{StoreOp, timed};

mod embedded;
pub mod nonces;
mod packets;
mod redis;

pub use packets::{Claim, PACKETS_DUE_READ_MAX, PacketBook, PacketDef, PacketState};

pub use embedded::{EmbeddedStore, GROUP_COMMIT_OPS_MAX};
pub use redis::{CapTake, RedisStore, RedisStoreConfig, STOCK_SHARDS_DEFAULT, STOCK_SHARDS_MAX, cluster_nodes};

/// The most unsettled tokens read for one user at once, by every store; a user is granted far
/// fewer in a campaign, and the bound keeps one request's work finite.
pub const USER_UNSETTLED_READ_MAX: usize = 4096;

// The stock types live in a leaf module that the plugin host and the configuration use too; they
// are re-exported here because grants, restores and both backends speak in them.
pub use crate::stock::{StockLimits, StockUsed};

/// A token's crediting status, numbered as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
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
    /// The crediting-queue entry that delivered this record to a writer (a Redis stream entry
    /// id); empty when the record was not read from a queue. Never stored.
    #[prost(string, tag = "12")]
    pub queue_id: String,
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

    /// The fields its token repeats (see [`crate::issuer::kept`]).
    pub fn token_fields(&self) -> crate::issuer::kept::TokenFields<'_> {
        crate::issuer::kept::TokenFields {
            act_id: self.act_id,
            activity_id: &self.activity_id,
            scene_id: &self.scene_id,
            amount_cents: self.amount_cents,
            order_no: &self.order_no,
            open_time_ms: self.open_time_ms,
        }
    }

    /// Identifies the record across the store's tables.
    pub fn key(&self) -> GrantKey {
        GrantKey {
            activity_id: self.activity_id.clone(),
            order_no: self.order_no.clone(),
            seq: self.seq,
            queue_id: self.queue_id.clone(),
        }
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
    /// The crediting-queue entry it was delivered by, if any (see [`GrantRecord::queue_id`]).
    pub queue_id: String,
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
    /// Nothing stored: the user has had the scene's `user_max` grants in this window, counted
    /// across the fleet (stores that share state across hosts check it with the grant).
    UserRateLimited,
    /// Nothing stored: the grant was written with [`LedgerCheck::Skipped`] and the store cannot
    /// vouch for the activity; ask the ledger and write again.
    CheckLedger,
    /// Nothing stored: the store vouches for the activity (or the caller did, with
    /// [`LedgerCheck::New`]), but some of this user's credited records of it have been retired
    /// (see [`Store::retire_credited`]), so the store cannot tell a replay of one of them from a
    /// new order. Ask the ledger for this order only (the activity is known not to be clean),
    /// and do not grant without its answer: the store's replay check does not hold for it.
    CheckRetired,
}

/// What the grant path learned from the ledger before writing a grant.
///
/// The ledger outlives a lost token store: an order it has credited must never be granted again
/// with a new amount, so a grant must know the ledger does not have its order. Asking the
/// ledger on every grant costs a round trip to it; instead a store *vouches* for an activity once
/// it has been told that the ledger held none of the activity's red packets: from then on every
/// order the ledger has, the store has too (the ledger only credits what a store queued). The
/// vouch is kept in the store itself, so it is lost with the store's data, and then the grant
/// path asks the ledger again, for good if the ledger has the activity's red packets by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerCheck {
    /// Not asked. The store writes the grant only if it vouches for the activity; otherwise it
    /// answers [`GrantCommit::CheckLedger`] and writes nothing.
    Skipped,
    /// Not asked, because the caller knows the ledger can have this order only if the store has
    /// it or retired it (a group red packet's claimed share): written unless the user has
    /// retired records of the activity, then [`GrantCommit::CheckRetired`].
    New,
    /// Asked: the ledger has no entry for this order. `activity_clean`: nor for any order of the
    /// activity, so the store vouches for the activity from now on.
    Done {
        /// The ledger holds no red packet of the activity.
        activity_clean: bool,
    },
}

/// A scene's per-user window, checked by stores shared across hosts in the same step that
/// records the grant, so that a user reaching several hosts still gets at most `max` grants per
/// window and a refused grant counts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRate {
    /// Grants per window.
    pub max: u32,
    /// The window's length.
    pub window_ms: u64,
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

/// The token store the host runs on: the embedded default or Redis (single or Cluster). Both
/// keep the same records with the same rules; the conformance suite runs the platform's tests
/// against each.
#[derive(Clone)]
pub enum Store {
    /// `DATA/tokens.log`, the state in memory.
    Embedded(EmbeddedStore),
    /// Redis or Redis Cluster, shared by a fleet of hosts.
    Redis(RedisStore),
}

/// Forwards a call to whichever backend the store is, where both have the method with the same
/// arguments. `dispatch!(self, s => s.method(..))` awaits both; `dispatch!(memory self, ..)` is
/// for methods the embedded store answers from memory, at once, and only Redis's is awaited.
/// Methods whose backends differ (in arguments, or in what they need to do) are written out.
///
/// Redis's futures are boxed: they hold the client's (kilobytes), and inline they would make
/// every caller's future as large, the embedded store's callers too, whose futures are moved
/// (copied whole) as they are awaited (BENCHMARKS.md, "Futures moved, not copied").
macro_rules! dispatch {
    (memory $self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Embedded($store) => $call,
            Store::Redis($store) => Box::pin($call).await,
        }
    };
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Embedded($store) => $call.await,
            Store::Redis($store) => Box::pin($call).await,
        }
    };
}

impl Store {
    /// Stores a new grant, unless its order number is stored already (then the original comes
    /// back) or the stock cannot cover it (then nothing is stored). `user_rate` is checked here
    /// by stores shared across hosts; the embedded store leaves it to the host's limiter.
    /// The ledger is taken as checked ([`LedgerCheck::Done`]).
    pub async fn commit_grant(
        &self,
        record: GrantRecord,
        limits: StockLimits,
        user_rate: Option<UserRate>,
    ) -> Result<GrantCommit, StoreError> {
        self.commit_grant_checked(record, limits, user_rate, LedgerCheck::Done { activity_clean: false }).await
    }

    /// [`Store::commit_grant`], saying what the grant path learned from the ledger (see
    /// [`LedgerCheck`]).
    pub async fn commit_grant_checked(
        &self,
        record: GrantRecord,
        limits: StockLimits,
        user_rate: Option<UserRate>,
        check: LedgerCheck,
    ) -> Result<GrantCommit, StoreError> {
        // The embedded store serves one host, whose limiter counts the user's window.
        timed(StoreOp::Grant, async {
            match self {
                Store::Embedded(s) => s.commit_grant(record, limits, check).await,
                Store::Redis(s) => Box::pin(s.commit_grant(record, limits, user_rate, check)).await,
            }
        })
        .await
    }

    /// Readies the stock figures this scene's plugins may ask for, before they run (see
    /// [`RedisStore::refresh_plugin_stock`]); the embedded store answers them from memory.
    pub async fn prepare_plugin_stock(&self, activity_id: &str, scene_id: &str) {
        dispatch!(self, s => s.refresh_plugin_stock(activity_id, scene_id))
    }

    /// The credits-per-second window that every host's writer draws from, when the store is
    /// shared by a fleet (Redis). The embedded store serves one host and has none: that host's
    /// writer keeps its own window.
    pub fn fleet_cap(&self) -> Option<FleetCap> {
        match self {
            Store::Embedded(_) => None,
            Store::Redis(s) => Some(FleetCap { store: s.clone() }),
        }
    }

    /// Whether a lookup is answered from this process's memory (no round trip): the grant path
    /// then checks for a replay before anything else, and otherwise only before refusing.
    pub fn lookup_is_local(&self) -> bool {
        matches!(self, Store::Embedded(_))
    }

    /// Takes up to `max` tokens from the crediting queue and marks them processing; tokens
    /// claimed earlier by a writer that did not finish are taken again.
    pub async fn claim_queue(&self, max: usize) -> Result<Vec<GrantRecord>, StoreError> {
        timed(StoreOp::Claim, async { dispatch!(self, s => s.claim_queue(max)) }).await
    }

    /// Marks the named tokens processing, returning those not yet credited.
    pub async fn claim_keys(&self, keys: Vec<GrantKey>) -> Result<Vec<GrantRecord>, StoreError> {
        dispatch!(self, s => s.claim_keys(keys))
    }

    /// Marks the named tokens credited and takes them off the queue. Call only after the ledger
    /// has them.
    pub async fn complete(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        timed(StoreOp::Complete, async { dispatch!(self, s => s.complete(keys)) }).await
    }

    /// Stores a token a client kept, if the server no longer has it (see
    /// [`EmbeddedStore::restore`]).
    /// `limits` are the scene's current bounds, for stores that spread stock over buckets.
    pub async fn restore(
        &self,
        record: GrantRecord,
        credited: bool,
        limits: StockLimits,
    ) -> Result<RestoreOutcome, StoreError> {
        // The embedded store keeps stock in one counter, with no buckets to spread it over.
        match self {
            Store::Embedded(s) => s.restore(record, credited).await,
            Store::Redis(s) => s.restore(record, credited, limits).await,
        }
    }

    /// Takes tokens the ledger refused off the crediting queue so they stop blocking it.
    pub async fn park(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        dispatch!(self, s => s.park(keys))
    }

    /// Puts every parked token back in the crediting queue; returns how many.
    pub async fn requeue_parked(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.requeue_parked())
    }

    /// Puts the given parked tokens back in the crediting queue; returns how many moved.
    pub async fn requeue_parked_keys(&self, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.requeue_parked_keys(keys))
    }

    /// How many tokens are parked.
    pub async fn parked_len(&self) -> Result<u64, StoreError> {
        dispatch!(memory self, s => s.parked_len())
    }

    /// The stored grant with this order number.
    pub async fn lookup(&self, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
        timed(StoreOp::Lookup, async { dispatch!(self, s => s.lookup(activity_id, order_no)) }).await
    }

    /// The user's tokens that are not yet credited, oldest first.
    pub async fn unsettled_for_user(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        dispatch!(memory self, s => s.unsettled_for_user(act_id))
    }

    /// The keys of the user's oldest `USER_UNSETTLED_READ_MAX` unsettled tokens.
    pub async fn unsettled_keys_prefix(&self, act_id: i64) -> Result<Vec<GrantKey>, StoreError> {
        dispatch!(memory self, s => s.unsettled_keys_prefix(act_id))
    }

    /// Up to `limit` of the user's tokens strictly older than `before`, newest first.
    pub async fn user_tokens(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        dispatch!(memory self, s => s.user_tokens(act_id, before, limit))
    }

    /// Forgets the signed requests' nonces whose time has passed (Redis lets them expire by
    /// themselves); whether memory was freed that the allocator could give back.
    pub fn forget_expired_nonces(&self, now_ms: u64) -> bool {
        match self {
            Store::Embedded(store) => store.forget_expired_nonces(now_ms),
            Store::Redis(_) => false,
        }
    }

    /// Whether this is the first use of a signed request's `nonce` by `app_id`, in requests
    /// stamped `timestamp_s`; remembers it for `ttl_ms` (in the host's memory when embedded, for
    /// the whole fleet on Redis).
    pub async fn first_use_of_nonce(
        &self,
        app_id: i64,
        nonce: &str,
        timestamp_s: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        timed(StoreOp::Nonce, async {
            match self {
                Store::Embedded(store) => store.first_use_of_nonce(app_id, nonce, timestamp_s, now_ms, ttl_ms),
                Store::Redis(store) => store.first_use_of_nonce(app_id, nonce, timestamp_s, ttl_ms).await,
            }
        })
        .await
    }

    /// How many tokens wait in the crediting queue (claimed or not).
    pub async fn queue_len(&self) -> Result<u64, StoreError> {
        dispatch!(memory self, s => s.queue_len())
    }

    /// Stock used by a scene, or by the whole activity when `scene_id` is `None`.
    pub async fn stock_used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, StoreError> {
        dispatch!(memory self, s => s.stock_used(activity_id, scene_id))
    }

    /// Every stored grant of one activity, and whether each is parked; for reconciliation and
    /// tests, never on the grant path. Retired records are not among them: see
    /// [`Store::retired_of`].
    pub async fn grants_of(&self, activity_id: &str) -> Result<Vec<(GrantRecord, bool)>, StoreError> {
        dispatch!(memory self, s => s.grants_of(activity_id))
    }

    /// Retires up to `max` records credited at least `retain_ms` ago: each leaves the hot store
    /// (its record and every index of it), while the stock it used stays counted, its count and
    /// cents are added to the activity's retired totals ([`Store::retired_of`]) and its user is
    /// marked as having retired records of the activity (so a grant of theirs the store cannot
    /// find asks the ledger, [`GrantCommit::CheckRetired`]). The ledger keeps every credited
    /// token, and replays of a retired order are answered from it. Returns how many were
    /// retired; fewer than `max` means none is due now.
    pub async fn retire_credited(&self, retain_ms: u64, max: usize) -> Result<usize, StoreError> {
        timed(StoreOp::Retire, async { dispatch!(self, s => s.retire_credited(retain_ms, max)) }).await
    }

    /// What the retired records of one activity add up to, per scene: reconciliation counts
    /// them as issued (the ledger holds them; the store no longer does).
    pub async fn retired_of(&self, activity_id: &str) -> Result<HashMap<String, StockUsed>, StoreError> {
        dispatch!(memory self, s => s.retired_of(activity_id))
    }
}

/// Records a retirement pass takes at most: one pass is one journal group on the embedded store,
/// one script per shard on Redis, so it must not hold either long.
pub const RETIRE_BATCH_MAX: usize = 2048;

/// How long a credited record stays in the hot store by default before it is retired
/// (`--retain-credited-s`): long past any client's retry of the same grant, short enough that
/// the store holds the night's backlog and not its history.
pub const RETAIN_CREDITED_S_DEFAULT: u64 = 600;

/// The longest retention `--retain-credited-s` accepts (a week).
pub const RETAIN_CREDITED_S_MAX: u64 = 7 * 24 * 3600;

/// A fleet's credits-per-second window, kept in the store its hosts share (see
/// [`Store::fleet_cap`]). A writer takes room before it claims a batch and settles it with the
/// credits really made once the ledger has committed them.
#[derive(Clone)]
pub struct FleetCap {
    store: RedisStore,
}

impl FleetCap {
    /// Takes room for up to `want` credits in a window of `cap` per second, or says how long
    /// until some comes back.
    pub async fn take(&self, cap: u64, want: u64) -> Result<CapTake, StoreError> {
        self.store.cap_take(cap, want).await
    }

    /// Settles a ticket from [`FleetCap::take`] with the credits really made (0 when nothing was
    /// claimed), stamped now: the cap bounds credits by when they reach the ledger.
    pub async fn settle(&self, ticket: &str, credits: u64) -> Result<(), StoreError> {
        self.store.cap_settle(ticket, credits).await
    }
}

impl crate::stock::StockSource for Store {
    fn used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, String> {
        match self {
            Store::Embedded(s) => s.stock_used(activity_id, scene_id).map_err(|error| error.to_string()),
            Store::Redis(s) => s.stock_used_for_plugin(activity_id, scene_id).map_err(|error| error.to_string()),
        }
    }
}
