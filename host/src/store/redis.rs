//! The Redis token store: the hot state of a fleet of hosts, on one Redis or a Redis Cluster.
//!
//! ## Key layout
//!
//! Every key starts with the deployment's prefix (`hb` unless configured) and carries a hash tag
//! `{N}`, the *shard*: `N = actID mod shards` for everything that belongs to a user. One user's
//! keys therefore share a hash slot, and so do the crediting queue and the stock bucket of that
//! shard. That is what lets the common grant be **one Lua script, one round trip**: it checks
//! the order number, the user's rate window and the shard's stock bucket, and writes the record,
//! the user's indexes, the stock and the queue entry atomically, on a single Redis or a Cluster.
//!
//! | key (shard `N`)                 | type   | holds                                             |
//! |---------------------------------|--------|---------------------------------------------------|
//! | `P:{N}:g:ACTIVITY/ORDER_NO`     | hash   | `r` record (protobuf), `st` status, `sq` seq, `u` actID, `m` member |
//! | `P:{N}:ut:ACTID`                | zset   | the user's flow ids, scored by open time          |
//! | `P:{N}:uu:ACTID`                | zset   | the user's unsettled tokens, scored by seq        |
//! | `P:{N}:q`                       | stream | the shard's crediting queue (consumer group `writers`) |
//! | `P:{N}:pk`                      | zset   | tokens the ledger refused, parked, scored by seq  |
//! | `P:{N}:seq`                     | string | the shard's sequence; a record's seq is `n * shards + N` |
//! | `P:{N}:st:ACTIVITY`             | hash   | stock bucket `N` of the activity: `a:n`, `a:c`, `s:SCENE:n`, `s:SCENE:c` used |
//! | `P:{N}:ag:ACTIVITY`             | zset   | the activity's grants in this shard (reconciliation) |
//! | `P:{N}:rl:ACTIVITY/SCENE/ACTID/WINDOW` | string | the user's grants in a rate window, expiring with it |
//! | `P:{N}:ok:ACTIVITY`             | string | present: this shard vouches for the activity (the grant path skips its ledger lookup; see `LedgerCheck`) |
//! | `P:{cap}:w`                     | zset   | the fleet's credits in the last second (the writer's cap) |
//! | `P:{meta}`                      | hash   | the deployment's shard count                       |
//!
//! ## Stock in buckets
//!
//! A hot scene's stock is split into one bucket per shard, each on its own slot, so that a rain
//! on one scene spreads over the whole cluster. Bucket `N` may use `limit / shards` (plus one of
//! the remainder) of each bound. A grant first tries its own shard's bucket inside the grant
//! script; when that bucket cannot cover it, it reserves what it needs from the other buckets,
//! taking part of the amount from each if need be, and then records the grant as already
//! reserved. Only when all buckets together cannot cover it is it out of stock, and everything
//! reserved on the way is given back. So stock is never oversold (every bucket checks its share
//! atomically) and never stranded (a grant can use the remainders of every bucket). A host that
//! dies between reserving in other buckets and recording the grant strands that reservation:
//! the one window where stock can be lost, never money.
//!
//! ## Crediting queue
//!
//! Each shard's queue is a stream read by the consumer group `writers`; every host's writer is
//! a consumer and takes a share. A claim script reads new entries and entries another consumer
//! has held longer than the reclaim timeout (`XAUTOCLAIM`), marks their records processing and
//! returns them; completing acknowledges and deletes the entries. A record's status, not the
//! stream, is the truth: an entry whose token is already credited is dropped when read, so
//! redelivery is harmless, and the ledger is idempotent anyway.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{
    FlowPosition, GrantCommit, GrantKey, GrantRecord, LedgerCheck, RestoreOutcome, StockLimits, StockOut, StockUsed,
    StoreError, TokenStatus, USER_UNSETTLED_READ_MAX, UserRate,
};

/// Shards (hash tags) a deployment uses unless configured: enough to spread a hot scene's stock
/// and the crediting queue over a few cluster nodes, few enough that a writer polls every queue
/// cheaply.
pub const STOCK_SHARDS_DEFAULT: u32 = 16;

/// The most shards a deployment may have.
pub const STOCK_SHARDS_MAX: u32 = 1024;

/// The consumer group of the crediting queues.
const GROUP: &str = "writers";

/// How long a writer's reservation in the fleet's credit window counts while its batch is in
/// flight: longer than a ledger batch may take (the PostgreSQL ledger gives up after 5 s), so
/// a slow batch never lets the window overfill, and short enough that the allowance of a host
/// that died mid-batch comes back.
const CAP_LEASE_MS: u64 = 15_000;

/// Grants read per call when a reconciliation walks an activity.
const SCAN_CHUNK: usize = 512;

/// How to reach Redis and lay out the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://HOST:PORT[/DB]` for one server, `redis-cluster://HOST:PORT,HOST:PORT,…` for a
    /// cluster (any of its nodes; the rest are discovered).
    pub url: String,
    /// The prefix of every key, so that deployments can share a Redis.
    pub prefix: String,
    /// Hash-tag shards; fixed for the life of a deployment (checked on start).
    pub shards: u32,
    /// How long a claimed queue entry may stay unacknowledged before another writer takes it.
    pub reclaim_after_ms: u64,
    /// The longest one operation may take before it fails as unavailable.
    pub op_timeout_ms: u64,
}

impl RedisStoreConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> RedisStoreConfig {
        RedisStoreConfig {
            url: url.into(),
            prefix: "hb".into(),
            shards: STOCK_SHARDS_DEFAULT,
            reclaim_after_ms: 5_000,
            op_timeout_ms: 2_000,
        }
    }
}

/// One connection handle over a single Redis or a cluster; both multiplex, reconnect on their
/// own and are cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            // The manager notices a dropped connection only when a command fails on it, then
            // reconnects: one more try makes a Redis that came back work at once. (The cluster
            // client retries on its own.)
            Conn::Single(c) => Box::pin(async move {
                match c.req_packed_command(cmd).await {
                    Err(error) if error.is_connection_dropped() || error.is_io_error() => {
                        c.req_packed_command(cmd).await
                    }
                    result => result,
                }
            }),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A handle on the Redis token store; clones share connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    config: RedisStoreConfig,
    /// This host's name in the consumer groups: unique per process start, so a restarted host
    /// never mistakes a dead predecessor's claims for its own.
    consumer: String,
    /// Round-robin start for claims, so every shard's queue is served.
    next_shard: AtomicU64,
    /// Tickets of the fleet-wide credit window.
    next_ticket: AtomicU64,
    /// Stock figures handed to plugins, by (activity, scene), with when they were read.
    stock_seen: parking_lot::Mutex<StockSeen>,
}

/// Stock figures read for plugins: (activity, scene) → (when read, figure).
type StockSeen = std::collections::HashMap<(String, Option<String>), (std::time::Instant, StockUsed)>;

/// How long a stock figure read for a plugin is handed out again. Summing the buckets costs one
/// read per shard; a plugin's figure (the inventory plugin splits "what is left") may be this
/// stale, because the grant script still checks the stock itself, atomically.
const PLUGIN_STOCK_FRESH_MS: u64 = 50;

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

/// Whether a Redis error says a queue's consumer group is missing (after a restart lost it).
fn is_nogroup(error: &redis::RedisError) -> bool {
    error.to_string().contains("NOGROUP")
}

/// The node URLs (`redis://HOST:PORT`) of a `redis-cluster://HOST:PORT,…` store URL; `None`
/// for a single-server URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let nodes = url.strip_prefix("redis-cluster://")?;
    Some(nodes.split(',').map(|node| format!("redis://{}", node.trim())).collect())
}

/// Bucket `shard`'s share of `limit`.
fn share(limit: i64, shard: u32, shards: u32) -> i64 {
    let shards = i64::from(shards);
    let shard = i64::from(shard);
    limit / shards + i64::from(shard < limit % shards)
}

/// `activity/order_no`: how a grant is named inside its shard.
fn member(activity_id: &str, order_no: &str) -> String {
    format!("{activity_id}/{order_no}")
}

fn split_member(member: &str) -> Option<(&str, &str)> {
    member.split_once('/')
}

impl RedisStore {
    /// Connects, checks the deployment's shard count and makes sure every queue has its consumer
    /// group. Fails when Redis cannot be reached.
    pub async fn connect(config: RedisStoreConfig) -> Result<RedisStore, StoreError> {
        if config.shards == 0 || config.shards > STOCK_SHARDS_MAX {
            return Err(StoreError::Unavailable(format!(
                "store shards must be between 1 and {STOCK_SHARDS_MAX}, not {}",
                config.shards
            )));
        }
        let timeout = Duration::from_millis(config.op_timeout_ms);
        let conn = if let Some(nodes) = cluster_nodes(&config.url) {
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()
                .map_err(unavailable)?;
            let connect = client.get_async_connection();
            let conn =
                tokio::time::timeout(timeout * 2, connect).await.map_err(|_| unavailable("connect timed out"))?;
            Conn::Cluster(conn.map_err(unavailable)?)
        } else {
            let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2);
            let connect = ConnectionManager::new_with_config(client, manager_config);
            let conn =
                tokio::time::timeout(timeout * 2, connect).await.map_err(|_| unavailable("connect timed out"))?;
            Conn::Single(conn.map_err(unavailable)?)
        };
        let consumer = format!("host-{:016x}", fastrand::u64(..));
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                config,
                consumer,
                next_shard: AtomicU64::new(0),
                next_ticket: AtomicU64::new(fastrand::u64(..) >> 16),
                stock_seen: parking_lot::Mutex::new(std::collections::HashMap::new()),
            }),
        };
        store.check_shards().await?;
        for shard in 0..store.shards() {
            store.ensure_group(shard).await?;
            store.forget_gone_consumers(shard).await;
        }
        Ok(store)
    }

    fn shards(&self) -> u32 {
        self.inner.config.shards
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// `P:{N}`: the start of every key of shard `N`.
    fn tag(&self, shard: u32) -> String {
        format!("{}:{{{shard}}}", self.inner.config.prefix)
    }

    fn shard_of_user(&self, act_id: i64) -> u32 {
        (act_id.rem_euclid(i64::from(self.shards()))) as u32
    }

    fn shard_of_seq(&self, seq: u64) -> u32 {
        (seq % u64::from(self.shards())) as u32
    }

    /// Runs `work` within the operation timeout.
    async fn timed<T>(&self, work: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(Duration::from_millis(self.inner.config.op_timeout_ms), work).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        }
    }

    async fn check_shards(&self) -> Result<(), StoreError> {
        let key = format!("{}:{{meta}}", self.inner.config.prefix);
        let mut conn = self.conn();
        let shards = self.shards();
        let stored: u32 = self
            .timed(async move {
                let _: () = redis::cmd("HSETNX").arg(&key).arg("shards").arg(shards).query_async(&mut conn).await?;
                redis::cmd("HGET").arg(&key).arg("shards").query_async(&mut conn).await
            })
            .await?;
        if stored != shards {
            return Err(StoreError::Unavailable(format!(
                "this Redis holds a deployment with {stored} shards (prefix `{}`); start with --store-shards {stored}",
                self.inner.config.prefix
            )));
        }
        Ok(())
    }

    async fn ensure_group(&self, shard: u32) -> Result<(), StoreError> {
        let queue = format!("{}:q", self.tag(shard));
        let mut conn = self.conn();
        let created: redis::RedisResult<()> = self
            .timed(async move {
                Ok(redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&queue)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await)
            })
            .await?;
        match created {
            Ok(()) => Ok(()),
            Err(error) if error.to_string().contains("BUSYGROUP") => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Removes from a queue's group the consumers of hosts long gone: nothing pending and idle
    /// for an hour. Every host start adds one; without this the group's list only grows.
    async fn forget_gone_consumers(&self, shard: u32) {
        let queue = format!("{}:q", self.tag(shard));
        let mut conn = self.conn();
        let key = queue.clone();
        let listed = self
            .timed(async move {
                redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(GROUP).query_async::<Vec<Value>>(&mut conn).await
            })
            .await;
        let Ok(consumers) = listed else { return };
        for consumer in consumers {
            let fields = match consumer {
                Value::Array(fields) => fields,
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => continue,
            };
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| value_string(pair.first()).is_ok_and(|key| key == name))
                    .and_then(|pair| pair.get(1))
            };
            let (Ok(name), Ok(pending), Ok(idle_ms)) =
                (value_string(field("name")), value_u64(field("pending")), value_u64(field("idle")))
            else {
                continue;
            };
            if pending == 0 && idle_ms > 3_600_000 && name != self.inner.consumer {
                let mut conn = self.conn();
                let key = queue.clone();
                let _ = self
                    .timed(async move {
                        redis::cmd("XGROUP")
                            .arg("DELCONSUMER")
                            .arg(key)
                            .arg(GROUP)
                            .arg(name)
                            .query_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            }
        }
    }

    /// Stores a new grant (see [`super::Store::commit_grant`]).
    pub async fn commit_grant(
        &self,
        record: GrantRecord,
        limits: StockLimits,
        user_rate: Option<UserRate>,
        check: LedgerCheck,
    ) -> Result<GrantCommit, StoreError> {
        let shard = self.shard_of_user(record.act_id);
        let mode = GrantMode::Grant(check);
        let first = self.run_grant_script(&record, shard, Some(&limits), user_rate, false, mode).await?;
        if !matches!(first, Written::Stock(_)) {
            return Ok(own_write(first, &record).into_commit(record));
        }
        // The shard's own bucket cannot cover this grant: reserve it across all buckets. The
        // reservation is named by this attempt, so that a script run twice (a retry after a lost
        // reply) reserves and releases once, and two requests for one order never mix theirs.
        let attempt = format!("{:016x}", fastrand::u64(..));
        let (reserved, missing) = self.reserve_walk(&record, shard, &limits, &attempt).await?;
        if missing != [0, 0, 0] {
            self.release(&record, &reserved, &attempt).await;
            return Ok(GrantCommit::OutOfStock(if missing[0] > 0 {
                StockOut::SceneCount
            } else if missing[1] > 0 {
                StockOut::SceneBudget
            } else {
                StockOut::ActivityBudget
            }));
        }
        match self.run_grant_script(&record, shard, Some(&limits), user_rate, true, mode).await {
            Ok(written) => match own_write(written, &record) {
                Written::Granted(seq) => {
                    self.forget_reservation(&record, &reserved, &attempt);
                    Ok(Written::Granted(seq).into_commit(record))
                }
                other => {
                    self.release(&record, &reserved, &attempt).await;
                    Ok(other.into_commit(record))
                }
            },
            // Unknown whether the grant was written: keep the reservation (never oversell).
            Err(error) => Err(error),
        }
    }

    /// Runs the grant script. `reserved`: the stock was already taken from the buckets.
    async fn run_grant_script(
        &self,
        record: &GrantRecord,
        shard: u32,
        limits: Option<&StockLimits>,
        user_rate: Option<UserRate>,
        reserved: bool,
        mode: GrantMode,
    ) -> Result<Written, StoreError> {
        let tag = self.tag(shard);
        let shards = self.shards();
        let member = member(&record.activity_id, &record.order_no);
        let mut stored = record.clone();
        stored.status = TokenStatus::Pending.code();
        stored.seq = 0;
        stored.queue_id.clear();
        let (rate_key, rate_max, rate_window_ms) = match (mode, user_rate) {
            (GrantMode::Grant(_), Some(rate)) if rate.max > 0 && rate.window_ms > 0 => {
                let window_start = record.open_time_ms - record.open_time_ms % rate.window_ms;
                (
                    format!("{tag}:rl:{}/{}/{}/{window_start}", record.activity_id, record.scene_id, record.act_id),
                    rate.max,
                    rate.window_ms,
                )
            }
            _ => (format!("{tag}:rl:-"), 0, 0),
        };
        let (share_count, share_scene_cents, share_activity_cents) = match limits {
            Some(limits) => (
                limits.scene_count_max.map_or(-1, |max| share(max.min(i64::MAX as u64) as i64, shard, shards)),
                limits.scene_budget_cents.map_or(-1, |max| share(max, shard, shards)),
                share(limits.activity_budget_cents, shard, shards),
            ),
            None => (-1, -1, -1),
        };
        let mut invocation = GRANT_SCRIPT.prepare_invoke();
        invocation
            .key(format!("{tag}:g:{member}"))
            .key(format!("{tag}:ut:{}", record.act_id))
            .key(format!("{tag}:uu:{}", record.act_id))
            .key(format!("{tag}:q"))
            .key(format!("{tag}:seq"))
            .key(format!("{tag}:st:{}", record.activity_id))
            .key(format!("{tag}:ag:{}", record.activity_id))
            .key(rate_key)
            .key(format!("{tag}:ok:{}", record.activity_id))
            .arg(stored.encode_to_vec())
            .arg(record.act_id)
            .arg(&member)
            .arg(record.flow_id())
            .arg(record.open_time_ms)
            .arg(record.amount_cents)
            .arg(&record.scene_id)
            .arg(shards)
            .arg(shard)
            .arg(if reserved { "1" } else { "0" })
            .arg(share_count)
            .arg(share_scene_cents)
            .arg(share_activity_cents)
            .arg(rate_max)
            .arg(rate_window_ms)
            .arg(match mode {
                GrantMode::Grant(_) => "grant",
                GrantMode::Restore { credited: false } => "restore",
                GrantMode::Restore { credited: true } => "restore-credited",
            })
            .arg(match mode {
                GrantMode::Grant(LedgerCheck::Skipped) => "skipped",
                GrantMode::Grant(LedgerCheck::Done { activity_clean: true }) => "clean",
                _ => "checked",
            });
        let mut conn = self.conn();
        let reply: Vec<Value> = self.timed(invocation.invoke_async(&mut conn)).await?;
        parse_grant_reply(&reply)
    }

    /// Reserves one grant's stock from the buckets, starting at the grant's own shard and
    /// taking from each what it can within its share. Answers the buckets that hold part of it
    /// and what no bucket had room for (`[scene count, scene cents, activity cents]`); nothing is
    /// given back here. On an error, what was taken is given back.
    async fn reserve_walk(
        &self,
        record: &GrantRecord,
        shard: u32,
        limits: &StockLimits,
        attempt: &str,
    ) -> Result<(Vec<u32>, [i64; 3]), StoreError> {
        let shards = self.shards();
        let amount = record.amount_cents;
        let mut want = [1_i64, amount, amount];
        let mut reserved: Vec<u32> = Vec::new();
        for step in 0..shards {
            if want == [0, 0, 0] {
                break;
            }
            let bucket = (shard + step) % shards;
            let shares = [
                limits.scene_count_max.map_or(-1, |max| share(max.min(i64::MAX as u64) as i64, bucket, shards)),
                limits.scene_budget_cents.map_or(-1, |max| share(max, bucket, shards)),
                share(limits.activity_budget_cents, bucket, shards),
            ];
            reserved.push(bucket);
            match self.reserve_in(record, bucket, want, shares, attempt).await {
                Ok(taken) => {
                    if taken == [0, 0, 0] {
                        reserved.pop();
                    }
                    for (wanted, got) in want.iter_mut().zip(taken) {
                        *wanted -= got;
                    }
                }
                Err(error) => {
                    self.release(record, &reserved, attempt).await;
                    return Err(error);
                }
            }
        }
        Ok((reserved, want))
    }

    /// Takes what it can of `want` from one bucket within `shares` (`-1`: unbounded).
    async fn reserve_in(
        &self,
        record: &GrantRecord,
        bucket: u32,
        want: [i64; 3],
        shares: [i64; 3],
        attempt: &str,
    ) -> Result<[i64; 3], StoreError> {
        let mut invocation = RESERVE_SCRIPT.prepare_invoke();
        invocation
            .key(format!("{}:st:{}", self.tag(bucket), record.activity_id))
            .arg(&record.scene_id)
            .arg(want[0])
            .arg(want[1])
            .arg(want[2])
            .arg(shares[0])
            .arg(shares[1])
            .arg(shares[2])
            .arg(attempt);
        let mut conn = self.conn();
        let taken: Vec<i64> = self.timed(invocation.invoke_async(&mut conn)).await?;
        match taken.as_slice() {
            [count, scene_cents, activity_cents] => Ok([*count, *scene_cents, *activity_cents]),
            _ => Err(unavailable("reserve script answered out of shape")),
        }
    }

    /// Gives back what `attempt` reserved in these buckets; a failure is logged (the stock
    /// stays used, never oversold).
    async fn release(&self, record: &GrantRecord, reserved: &[u32], attempt: &str) {
        for bucket in reserved {
            let mut invocation = RELEASE_SCRIPT.prepare_invoke();
            invocation
                .key(format!("{}:st:{}", self.tag(*bucket), record.activity_id))
                .arg(&record.scene_id)
                .arg(attempt);
            let mut conn = self.conn();
            let released: Result<i64, StoreError> = self.timed(invocation.invoke_async(&mut conn)).await;
            if let Err(error) = released {
                tracing::error!(%error, bucket, activity = %record.activity_id, scene = %record.scene_id,
                    "stock reservation could not be given back; it stays used");
            }
        }
    }

    /// Drops the names of a reservation that became a grant (the stock stays used), in the
    /// background: the grant is answered without waiting for it.
    fn forget_reservation(&self, record: &GrantRecord, reserved: &[u32], attempt: &str) {
        let keys: Vec<String> =
            reserved.iter().map(|bucket| format!("{}:st:{}", self.tag(*bucket), record.activity_id)).collect();
        let field = format!("rv:{attempt}");
        let store = self.clone();
        tokio::spawn(async move {
            for key in keys {
                let mut conn = store.conn();
                let field = field.clone();
                let forgot = store
                    .timed(async move { redis::cmd("HDEL").arg(key).arg(field).query_async::<i64>(&mut conn).await })
                    .await;
                if let Err(error) = forgot {
                    tracing::warn!(%error, "a kept stock reservation's name stays in its bucket");
                }
            }
        });
    }

    /// Stores a token a client kept, if the server no longer has it; counted against stock in
    /// the user's shard, never refused for it.
    ///
    /// `limits` are the scene's current bounds: the restored amount is spread over the buckets
    /// within their shares, as a grant would be, and only what no bucket has room for is put
    /// over its own bucket's share. A bucket over its share while others still have room would
    /// let them grant past the limit.
    pub async fn restore(
        &self,
        record: GrantRecord,
        credited: bool,
        limits: StockLimits,
    ) -> Result<RestoreOutcome, StoreError> {
        let shard = self.shard_of_user(record.act_id);
        if self.lookup(&record.activity_id, &record.order_no).await?.is_some() {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        let attempt = format!("{:016x}", fastrand::u64(..));
        let forced = format!("{attempt}f");
        let (reserved, missing) = self.reserve_walk(&record, shard, &limits, &attempt).await?;
        let release_forced = missing != [0, 0, 0];
        if release_forced {
            // Every bucket is full: the rest goes over the own bucket's share (never refused).
            if let Err(error) = self.reserve_in(&record, shard, missing, [-1, -1, -1], &forced).await {
                self.release(&record, &reserved, &attempt).await;
                return Err(error);
            }
        }
        let written = self.run_grant_script(&record, shard, None, None, true, GrantMode::Restore { credited }).await;
        // "Present" here is a concurrent restore of the same token or this script run twice
        // (a retry after a lost reply); which one cannot be told apart, so the stock stays
        // counted: at worst counted twice, never given away twice.
        if written.is_ok() {
            self.forget_reservation(&record, &reserved, &attempt);
            if release_forced {
                self.forget_reservation(&record, &[shard], &forced);
            }
        }
        match written? {
            Written::Present => Ok(RestoreOutcome::AlreadyPresent),
            Written::Granted(_) => Ok(RestoreOutcome::Restored),
            other => Err(unavailable(format!("restore answered {other:?}"))),
        }
    }

    /// Claims up to `max` queued tokens, shard by shard, starting where the last claim stopped.
    pub async fn claim_queue(&self, max: usize) -> Result<Vec<GrantRecord>, StoreError> {
        let shards = self.shards();
        let start = (self.inner.next_shard.fetch_add(1, Ordering::Relaxed) % u64::from(shards)) as u32;
        let mut claimed = Vec::new();
        for step in 0..shards {
            if claimed.len() >= max {
                break;
            }
            let shard = (start + step) % shards;
            let want = max - claimed.len();
            let result = self.claim_shard(shard, want).await;
            let records = match result {
                Err(ClaimError::NoGroup) => {
                    self.ensure_group(shard).await?;
                    match self.claim_shard(shard, want).await {
                        Ok(records) => records,
                        Err(ClaimError::NoGroup) => return Err(unavailable("crediting queue has no consumer group")),
                        Err(ClaimError::Store(error)) => return Err(error),
                    }
                }
                Err(ClaimError::Store(error)) => return Err(error),
                Ok(records) => records,
            };
            claimed.extend(records);
        }
        Ok(claimed)
    }

    async fn claim_shard(&self, shard: u32, want: usize) -> Result<Vec<GrantRecord>, ClaimError> {
        let tag = self.tag(shard);
        let mut invocation = CLAIM_SCRIPT.prepare_invoke();
        invocation
            .key(format!("{tag}:q"))
            .key(format!("{tag}:pk"))
            .arg(GROUP)
            .arg(&self.inner.consumer)
            .arg(want)
            .arg(self.inner.config.reclaim_after_ms)
            .arg(format!("{tag}:g:"));
        let mut conn = self.conn();
        let work = invocation.invoke_async::<Vec<Vec<Value>>>(&mut conn);
        let rows = match tokio::time::timeout(Duration::from_millis(self.inner.config.op_timeout_ms), work).await {
            Err(_) => return Err(ClaimError::Store(unavailable("timed out"))),
            Ok(Err(error)) if is_nogroup(&error) => return Err(ClaimError::NoGroup),
            Ok(Err(error)) => return Err(ClaimError::Store(unavailable(error))),
            Ok(Ok(rows)) => rows,
        };
        rows.iter()
            .map(|row| decode_row(row, TokenStatus::Processing))
            .collect::<Result<_, _>>()
            .map_err(ClaimError::Store)
    }

    /// Marks the named tokens processing, returning those not yet credited.
    pub async fn claim_keys(&self, keys: Vec<GrantKey>) -> Result<Vec<GrantRecord>, StoreError> {
        let mut claimed = Vec::with_capacity(keys.len());
        for (shard, keys) in self.by_shard(keys) {
            let tag = self.tag(shard);
            let mut invocation = CLAIM_KEYS_SCRIPT.prepare_invoke();
            invocation.key(format!("{tag}:q")).arg(format!("{tag}:g:"));
            for key in &keys {
                invocation.arg(member(&key.activity_id, &key.order_no)).arg(&key.queue_id);
            }
            let mut conn = self.conn();
            let rows: Vec<Vec<Value>> = self.timed(invocation.invoke_async(&mut conn)).await?;
            for row in &rows {
                claimed.push(decode_row(row, TokenStatus::Processing)?);
            }
        }
        Ok(claimed)
    }

    /// Groups keys by the shard their seq names.
    fn by_shard(&self, keys: Vec<GrantKey>) -> Vec<(u32, Vec<GrantKey>)> {
        let mut groups: std::collections::BTreeMap<u32, Vec<GrantKey>> = std::collections::BTreeMap::new();
        for key in keys {
            groups.entry(self.shard_of_seq(key.seq)).or_default().push(key);
        }
        groups.into_iter().collect()
    }

    /// Marks the named tokens credited and takes them off the queue.
    pub async fn complete(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        self.keys_script(&COMPLETE_SCRIPT, keys).await.map(|_| ())
    }

    /// Takes refused tokens off the crediting queue (they stay unsettled and owed).
    pub async fn park(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        self.keys_script(&PARK_SCRIPT, keys).await.map(|_| ())
    }

    /// Puts the given parked tokens back in the queue; returns how many moved.
    pub async fn requeue_parked_keys(&self, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        self.keys_script(&REQUEUE_SCRIPT, keys).await
    }

    /// Runs a per-shard script over `(member, seq, queue id)` triples; sums its answers.
    async fn keys_script(&self, script: &Script, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        let mut total = 0;
        for (shard, keys) in self.by_shard(keys) {
            for chunk in keys.chunks(SCAN_CHUNK) {
                let tag = self.tag(shard);
                let mut invocation = script.prepare_invoke();
                invocation.key(format!("{tag}:q")).key(format!("{tag}:pk")).arg(GROUP).arg(&tag);
                for key in chunk {
                    invocation.arg(member(&key.activity_id, &key.order_no)).arg(key.seq).arg(&key.queue_id);
                }
                let mut conn = self.conn();
                let moved: u64 = self.timed(invocation.invoke_async(&mut conn)).await?;
                total += moved;
            }
        }
        Ok(total)
    }

    /// Puts every parked token back in the queue; returns how many.
    pub async fn requeue_parked(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for shard in 0..self.shards() {
            let tag = self.tag(shard);
            let mut invocation = REQUEUE_ALL_SCRIPT.prepare_invoke();
            invocation.key(format!("{tag}:q")).key(format!("{tag}:pk"));
            let mut conn = self.conn();
            let moved: u64 = self.timed(invocation.invoke_async(&mut conn)).await?;
            total += moved;
        }
        Ok(total)
    }

    /// How many tokens are parked, over all shards.
    pub async fn parked_len(&self) -> Result<u64, StoreError> {
        self.sum_per_shard("ZCARD", "pk").await
    }

    /// How many entries the crediting queues hold (claimed or not), over all shards.
    pub async fn queue_len(&self) -> Result<u64, StoreError> {
        self.sum_per_shard("XLEN", "q").await
    }

    async fn sum_per_shard(&self, command: &str, suffix: &str) -> Result<u64, StoreError> {
        let counts = futures_util::future::join_all((0..self.shards()).map(|shard| {
            let key = format!("{}:{suffix}", self.tag(shard));
            let mut conn = self.conn();
            let command = command.to_owned();
            self.timed(async move { redis::cmd(&command).arg(key).query_async::<u64>(&mut conn).await })
        }))
        .await;
        counts.into_iter().try_fold(0, |sum, count| Ok(sum + count?))
    }

    /// The stored grant with this order number, found by the actID it begins with.
    pub async fn lookup(&self, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
        let Some(act_id) = order_no.split('_').next().and_then(|id| id.parse::<i64>().ok()) else {
            return Ok(None);
        };
        let tag = self.tag(self.shard_of_user(act_id));
        let key = format!("{tag}:g:{}", member(activity_id, order_no));
        let mut conn = self.conn();
        let values: Vec<Value> = self
            .timed(
                async move { redis::cmd("HMGET").arg(key).arg("r").arg("st").arg("sq").query_async(&mut conn).await },
            )
            .await?;
        if matches!(values.first(), None | Some(Value::Nil)) {
            return Ok(None);
        }
        let mut row = vec![Value::BulkString(Vec::new())];
        row.extend(values);
        decode_row(&row, TokenStatus::Pending).map(Some)
    }

    /// The user's tokens not yet credited, oldest first.
    pub async fn unsettled_for_user(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        let tag = self.tag(self.shard_of_user(act_id));
        let mut invocation = UNSETTLED_SCRIPT.prepare_invoke();
        invocation.key(format!("{tag}:uu:{act_id}")).arg(format!("{tag}:g:")).arg(USER_UNSETTLED_READ_MAX);
        let mut conn = self.conn();
        let rows: Vec<Vec<Value>> = self.timed(invocation.invoke_async(&mut conn)).await?;
        if rows.len() > USER_UNSETTLED_READ_MAX {
            return Err(StoreError::TooManyUnsettled { act_id, max: USER_UNSETTLED_READ_MAX });
        }
        rows.iter().map(|row| decode_row(row, TokenStatus::Pending)).collect()
    }

    /// The keys of the user's oldest `USER_UNSETTLED_READ_MAX` unsettled tokens.
    pub async fn unsettled_keys_prefix(&self, act_id: i64) -> Result<Vec<GrantKey>, StoreError> {
        let key = format!("{}:uu:{act_id}", self.tag(self.shard_of_user(act_id)));
        let mut conn = self.conn();
        let rows: Vec<(String, u64)> = self
            .timed(async move {
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(USER_UNSETTLED_READ_MAX - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(member, seq)| {
                let (activity_id, order_no) = split_member(&member)?;
                Some(GrantKey {
                    activity_id: activity_id.into(),
                    order_no: order_no.into(),
                    seq,
                    queue_id: String::new(),
                })
            })
            .collect())
    }

    /// Up to `limit` of the user's tokens strictly older than `before`, newest first.
    pub async fn user_tokens(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let tag = self.tag(self.shard_of_user(act_id));
        let mut invocation = USER_TOKENS_SCRIPT.prepare_invoke();
        invocation
            .key(format!("{tag}:ut:{act_id}"))
            .arg(format!("{tag}:g:"))
            .arg(before.map_or(String::new(), |position| position.time_ms.to_string()))
            .arg(limit);
        let mut conn = self.conn();
        // Rows: [flow id, time, record, status, seq], newest first by time; ties come in any order
        // and are put in flow-id order here (byte order, like the embedded store and the ledger).
        let rows: Vec<Vec<Value>> = self.timed(invocation.invoke_async(&mut conn)).await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let flow_id = value_string(row.first())?;
            let time_ms = value_u64(row.get(1))?;
            if let Some(position) = before
                && time_ms == position.time_ms
                && flow_id.as_str() >= position.flow_id.as_str()
            {
                continue;
            }
            if matches!(row.get(2), None | Some(Value::Nil)) {
                continue;
            }
            let fields = [
                Value::Nil,
                row[2].clone(),
                row.get(3).cloned().unwrap_or(Value::Nil),
                row.get(4).cloned().unwrap_or(Value::Nil),
            ];
            let record = decode_row(&fields, TokenStatus::Pending)?;
            found.push((time_ms, flow_id, record));
        }
        found.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, _, record)| record).collect())
    }

    /// Stock used by a scene, or by the activity when `scene_id` is `None`: the sum of the
    /// buckets.
    pub async fn stock_used(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, StoreError> {
        let (count_field, cents_field) = match scene_id {
            Some(scene) => (format!("s:{scene}:n"), format!("s:{scene}:c")),
            None => ("a:n".to_owned(), "a:c".to_owned()),
        };
        let reads = futures_util::future::join_all((0..self.shards()).map(|shard| {
            let key = format!("{}:st:{activity_id}", self.tag(shard));
            let (count_field, cents_field) = (count_field.clone(), cents_field.clone());
            let mut conn = self.conn();
            self.timed(async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(count_field)
                    .arg(cents_field)
                    .query_async::<(Option<u64>, Option<i64>)>(&mut conn)
                    .await
            })
        }))
        .await;
        let mut used = StockUsed::default();
        for read in reads {
            let (count, cents) = read?;
            used.count += count.unwrap_or(0);
            used.cents = used.cents.saturating_add(cents.unwrap_or(0));
        }
        Ok(used)
    }

    /// Makes sure the stock figures a plugin of this scene may ask for (the scene's and the
    /// activity's) are at most `PLUGIN_STOCK_FRESH_MS` old, reading the stale ones. The grant
    /// path calls it before the scene's plugins run, so that the plugins' synchronous host calls
    /// never wait on Redis: a plugin call must not block a thread on the network (under load,
    /// threads blocked on reads that need the runtime to progress stalled the whole host).
    pub async fn refresh_plugin_stock(&self, activity_id: &str, scene_id: &str) {
        let fresh = Duration::from_millis(PLUGIN_STOCK_FRESH_MS);
        let keys = [(activity_id.to_owned(), Some(scene_id.to_owned())), (activity_id.to_owned(), None)];
        let stale: Vec<_> = {
            let seen = self.inner.stock_seen.lock();
            keys.into_iter().filter(|key| seen.get(key).is_none_or(|(read_at, _)| read_at.elapsed() >= fresh)).collect()
        };
        let reads = futures_util::future::join_all(
            stale.iter().map(|(activity_id, scene_id)| self.stock_used(activity_id, scene_id.as_deref())),
        )
        .await;
        let mut seen = self.inner.stock_seen.lock();
        // Scenes come and go with reloads; the table never holds more than a campaign's worth.
        if seen.len() > 4096 {
            seen.clear();
        }
        for (key, read) in stale.into_iter().zip(reads) {
            if let Ok(used) = read {
                seen.insert(key, (std::time::Instant::now(), used));
            }
        }
    }

    /// The stock figure last read for plugins by [`RedisStore::refresh_plugin_stock`], for
    /// synchronous callers (plugin host functions). It never reads Redis itself: a figure not
    /// read yet (Redis was down when the grant path refreshed it) is an error the plugin sees.
    pub fn stock_used_for_plugin(&self, activity_id: &str, scene_id: Option<&str>) -> Result<StockUsed, StoreError> {
        let key = (activity_id.to_owned(), scene_id.map(str::to_owned));
        match self.inner.stock_seen.lock().get(&key) {
            Some((_, used)) => Ok(*used),
            None => Err(unavailable("the stock figure has not been read from Redis yet")),
        }
    }

    /// Every stored grant of one activity, and whether each is parked.
    pub async fn grants_of(&self, activity_id: &str) -> Result<Vec<(GrantRecord, bool)>, StoreError> {
        let mut all = Vec::new();
        for shard in 0..self.shards() {
            let tag = self.tag(shard);
            let mut start = 0;
            loop {
                let mut invocation = GRANTS_OF_SCRIPT.prepare_invoke();
                invocation
                    .key(format!("{tag}:ag:{activity_id}"))
                    .key(format!("{tag}:pk"))
                    .arg(format!("{tag}:g:"))
                    .arg(start)
                    .arg(start + SCAN_CHUNK - 1);
                let mut conn = self.conn();
                let rows: Vec<Vec<Value>> = self.timed(invocation.invoke_async(&mut conn)).await?;
                for row in &rows {
                    let parked = value_u64(row.first())? == 1;
                    let record = decode_row(row, TokenStatus::Pending)?;
                    all.push((record.clone(), parked && record.status() != TokenStatus::Credited));
                }
                if rows.len() < SCAN_CHUNK {
                    break;
                }
                start += SCAN_CHUNK;
            }
        }
        all.sort_by_key(|(record, _)| record.order_no.clone());
        Ok(all)
    }

    /// Takes up to `want` credits from the fleet's window of `cap` credits per second. Returns
    /// the credits taken and a ticket for [`RedisStore::cap_settle`], or nothing taken and the
    /// milliseconds until some allowance comes back. The window is on the Redis server's clock,
    /// so hosts' clocks do not matter.
    pub async fn cap_take(&self, cap: u64, want: u64) -> Result<CapTake, StoreError> {
        let ticket = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{ticket}", self.inner.consumer);
        let mut invocation = CAP_TAKE_SCRIPT.prepare_invoke();
        invocation.key(self.cap_key()).arg(want).arg(cap).arg(&member).arg(CAP_LEASE_MS);
        let mut conn = self.conn();
        let (taken, wait_ms): (u64, u64) = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(if taken > 0 { CapTake::Taken { taken, ticket: member } } else { CapTake::Wait { wait_ms: wait_ms.max(1) } })
    }

    /// Restamps a ticket at the ledger's commit time with the credits really made, so the cap
    /// bounds credits by when they reach the ledger.
    pub async fn cap_settle(&self, ticket: &str, credits: u64) -> Result<(), StoreError> {
        let mut invocation = CAP_SETTLE_SCRIPT.prepare_invoke();
        invocation.key(self.cap_key()).arg(ticket).arg(credits);
        let mut conn = self.conn();
        self.timed(invocation.invoke_async::<i64>(&mut conn)).await.map(|_| ())
    }

    fn cap_key(&self) -> String {
        format!("{}:{{cap}}:w", self.inner.config.prefix)
    }
}

/// What [`RedisStore::cap_take`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapTake {
    /// Credits may start; settle the ticket after the ledger commit.
    Taken {
        /// How many.
        taken: u64,
        /// Names the reservation in the window.
        ticket: String,
    },
    /// The window is full.
    Wait {
        /// Until some allowance comes back.
        wait_ms: u64,
    },
}

enum ClaimError {
    NoGroup,
    Store(StoreError),
}

#[derive(Debug, Clone, Copy)]
enum GrantMode {
    Grant(LedgerCheck),
    Restore { credited: bool },
}

/// A replay of this very grant (the same signed token) is this attempt's own write, seen again
/// because the script ran twice (a retry after a lost reply): it counts as granted.
fn own_write(written: Written, record: &GrantRecord) -> Written {
    match written {
        Written::Replayed(original) if original.token == record.token => Written::Granted(original.seq),
        other => other,
    }
}

/// What the grant script answered.
#[derive(Debug)]
enum Written {
    Granted(u64),
    Replayed(GrantRecord),
    Present,
    RateLimited,
    Stock(StockOut),
    CheckLedger,
}

impl Written {
    fn into_commit(self, mut record: GrantRecord) -> GrantCommit {
        match self {
            Written::Granted(seq) => {
                record.seq = seq;
                record.status = TokenStatus::Pending.code();
                GrantCommit::Granted(record)
            }
            Written::Replayed(original) => GrantCommit::Replayed(original),
            Written::RateLimited => GrantCommit::UserRateLimited,
            Written::Stock(out) => GrantCommit::OutOfStock(out),
            Written::CheckLedger => GrantCommit::CheckLedger,
            // Only a restore answers "present".
            Written::Present => GrantCommit::Replayed(record),
        }
    }
}

fn value_string(value: Option<&Value>) -> Result<String, StoreError> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).map_err(unavailable),
        Some(Value::SimpleString(text)) => Ok(text.clone()),
        Some(Value::Int(n)) => Ok(n.to_string()),
        other => Err(unavailable(format!("expected a string, got {other:?}"))),
    }
}

fn value_u64(value: Option<&Value>) -> Result<u64, StoreError> {
    match value {
        Some(Value::Int(n)) => u64::try_from(*n).map_err(unavailable),
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).map_err(unavailable)?.parse().map_err(unavailable),
        other => Err(unavailable(format!("expected a number, got {other:?}"))),
    }
}

/// Decodes `[queue id, record, status, seq]`; the status defaults to `default` when missing.
fn decode_row(row: &[Value], default: TokenStatus) -> Result<GrantRecord, StoreError> {
    let bytes = match row.get(1) {
        Some(Value::BulkString(bytes)) => bytes,
        other => return Err(unavailable(format!("grant record missing: {other:?}"))),
    };
    let mut record =
        GrantRecord::decode(bytes.as_slice()).map_err(|error| unavailable(format!("corrupt grant record: {error}")))?;
    record.status = match row.get(2) {
        Some(Value::Nil) | None => default.code(),
        status => value_u64(status)? as u32,
    };
    record.seq = value_u64(row.get(3))?;
    record.queue_id = match row.first() {
        Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
        _ => String::new(),
    };
    Ok(record)
}

fn parse_grant_reply(reply: &[Value]) -> Result<Written, StoreError> {
    let kind = value_string(reply.first())?;
    match kind.as_str() {
        "ok" => Ok(Written::Granted(value_u64(reply.get(1))?)),
        "replay" => {
            let row = [Value::Nil, reply[1].clone(), reply[2].clone(), reply[3].clone()];
            decode_row(&row, TokenStatus::Pending).map(Written::Replayed)
        }
        "present" => Ok(Written::Present),
        "rate" => Ok(Written::RateLimited),
        "check" => Ok(Written::CheckLedger),
        "stock" => Ok(Written::Stock(match value_string(reply.get(1))?.as_str() {
            "scene_count" => StockOut::SceneCount,
            "scene_budget" => StockOut::SceneBudget,
            _ => StockOut::ActivityBudget,
        })),
        other => Err(unavailable(format!("grant script answered `{other}`"))),
    }
}

/// The grant (and restore) script; see the module docs for the keys.
static GRANT_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local mode = ARGV[16]
if redis.call('EXISTS', KEYS[1]) == 1 then
  if mode ~= 'grant' then return {'present'} end
  local v = redis.call('HMGET', KEYS[1], 'r', 'st', 'sq')
  return {'replay', v[1], v[2], v[3]}
end
if mode == 'grant' and redis.call('EXISTS', KEYS[9]) == 0 then
  if ARGV[17] == 'skipped' then return {'check'} end
  if ARGV[17] == 'clean' then redis.call('SET', KEYS[9], '1') end
end
local amount = tonumber(ARGV[6])
local scene = ARGV[7]
local fn, fc = 's:' .. scene .. ':n', 's:' .. scene .. ':c'
local reserved = ARGV[10] == '1'
if mode == 'grant' then
  local rate_max = tonumber(ARGV[14])
  if rate_max > 0 and tonumber(redis.call('GET', KEYS[8]) or '0') >= rate_max then
    return {'rate'}
  end
  if not reserved then
    local b = redis.call('HMGET', KEYS[6], fn, fc, 'a:c')
    local n, c, a = tonumber(b[1] or '0'), tonumber(b[2] or '0'), tonumber(b[3] or '0')
    local sn, sc, sa = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
    if sn >= 0 and n + 1 > sn then return {'stock', 'scene_count'} end
    if sc >= 0 and c + amount > sc then return {'stock', 'scene_budget'} end
    if a + amount > sa then return {'stock', 'activity_budget'} end
  end
end
local shards = tonumber(ARGV[8])
local seq = redis.call('INCR', KEYS[5]) * shards + tonumber(ARGV[9])
local st = '1'
if mode == 'restore-credited' then st = '8' end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'st', st, 'sq', seq, 'u', ARGV[2], 'm', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[7], seq, ARGV[3])
if st == '1' then
  redis.call('ZADD', KEYS[3], seq, ARGV[3])
  redis.call('XADD', KEYS[4], '*', 'm', ARGV[3])
end
if not reserved then
  redis.call('HINCRBY', KEYS[6], fn, 1)
  redis.call('HINCRBY', KEYS[6], fc, ARGV[6])
end
redis.call('HINCRBY', KEYS[6], 'a:n', 1)
if not reserved then
  redis.call('HINCRBY', KEYS[6], 'a:c', ARGV[6])
end
if mode == 'grant' and tonumber(ARGV[14]) > 0 then
  redis.call('INCR', KEYS[8])
  redis.call('PEXPIRE', KEYS[8], ARGV[15])
end
return {'ok', seq}
",
    )
});

/// Takes what it can of `[scene count, scene cents, activity cents]` from one bucket, within
/// the bucket's shares (`-1`: unbounded), and notes it under the attempt's name (`rv:ATTEMPT`).
/// Answers what it took; run again for the same attempt, it answers the same and takes nothing.
static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local marker = 'rv:' .. ARGV[8]
local prior = redis.call('HGET', KEYS[1], marker)
if prior then
  local t = {}
  for v in string.gmatch(prior, '[^,]+') do t[#t + 1] = tonumber(v) end
  return t
end
local fn, fc = 's:' .. ARGV[1] .. ':n', 's:' .. ARGV[1] .. ':c'
local b = redis.call('HMGET', KEYS[1], fn, fc, 'a:c')
local used = {tonumber(b[1] or '0'), tonumber(b[2] or '0'), tonumber(b[3] or '0')}
local taken = {}
for i = 1, 3 do
  local want, limit = tonumber(ARGV[1 + i]), tonumber(ARGV[4 + i])
  local take = want
  if limit >= 0 then take = math.max(0, math.min(want, limit - used[i])) end
  taken[i] = take
end
if taken[1] > 0 then redis.call('HINCRBY', KEYS[1], fn, taken[1]) end
if taken[2] > 0 then redis.call('HINCRBY', KEYS[1], fc, taken[2]) end
if taken[3] > 0 then redis.call('HINCRBY', KEYS[1], 'a:c', taken[3]) end
if taken[1] > 0 or taken[2] > 0 or taken[3] > 0 then
  redis.call('HSET', KEYS[1], marker,
    string.format('%d,%d,%d', taken[1], taken[2], taken[3]))
end
return taken
",
    )
});

/// Gives back what [`RESERVE_SCRIPT`] took for an attempt, once: the name goes with it.
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local marker = 'rv:' .. ARGV[2]
local prior = redis.call('HGET', KEYS[1], marker)
if not prior then return 0 end
local fields = {'s:' .. ARGV[1] .. ':n', 's:' .. ARGV[1] .. ':c', 'a:c'}
local i = 0
for v in string.gmatch(prior, '[^,]+') do
  i = i + 1
  if tonumber(v) > 0 then redis.call('HINCRBY', KEYS[1], fields[i], '-' .. v) end
end
redis.call('HDEL', KEYS[1], marker)
return 1
",
    )
});

/// Claims from one shard's queue: entries idle past the reclaim timeout first, then new ones.
/// Entries whose token is credited, parked or gone are acknowledged and dropped. Rows:
/// `[queue id, record, status, seq]`.
static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
local function take(entries)
  for _, e in ipairs(entries) do
    local id, fields = e[1], e[2]
    local m = fields and fields[2]
    local v = m and redis.call('HMGET', ARGV[5] .. m, 'r', 'st', 'sq')
    if not v or not v[1] or v[2] == '8' or redis.call('ZSCORE', KEYS[2], m) then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
    else
      if v[2] == '1' then redis.call('HSET', ARGV[5] .. m, 'st', '2') end
      out[#out + 1] = {id, v[1], '2', v[3]}
    end
  end
end
local want = tonumber(ARGV[3])
local reclaimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0', 'COUNT', want)
take(reclaimed[2])
if #out < want then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want - #out, 'STREAMS', KEYS[1], '>')
  if fresh then take(fresh[1][2]) end
end
return out
",
    )
});

/// Marks named tokens processing; rows as [`CLAIM_SCRIPT`]'s. ARGV: grant key start, then
/// (member, queue id) pairs.
static CLAIM_KEYS_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 2, #ARGV, 2 do
  local g = ARGV[1] .. ARGV[i]
  local v = redis.call('HMGET', g, 'r', 'st', 'sq')
  if v[1] and v[2] ~= '8' then
    if v[2] == '1' then redis.call('HSET', g, 'st', '2') end
    out[#out + 1] = {ARGV[i + 1], v[1], '2', v[3]}
  end
end
return out
",
    )
});

/// Completes tokens: status 8, off the user's unsettled set, the parked set and the queue.
/// ARGV: group, shard tag, then (member, seq, queue id) triples.
static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 3, #ARGV, 3 do
  local m, qid = ARGV[i], ARGV[i + 2]
  local g = ARGV[2] .. ':g:' .. m
  local v = redis.call('HMGET', g, 'st', 'u')
  if v[1] and v[1] ~= '8' then
    redis.call('HSET', g, 'st', '8')
    redis.call('ZREM', ARGV[2] .. ':uu:' .. v[2], m)
    n = n + 1
  end
  redis.call('ZREM', KEYS[2], m)
  if qid ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], qid)
    redis.call('XDEL', KEYS[1], qid)
  end
end
return n
",
    )
});

/// Parks refused tokens: into the parked set, their queue entries acknowledged and dropped.
static PARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 3, #ARGV, 3 do
  local m, seq, qid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local st = redis.call('HGET', ARGV[2] .. ':g:' .. m, 'st')
  if st and st ~= '8' then
    redis.call('ZADD', KEYS[2], seq, m)
    n = n + 1
  end
  if qid ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], qid)
    redis.call('XDEL', KEYS[1], qid)
  end
end
return n
",
    )
});

/// Puts named parked tokens back in the queue.
static REQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 3, #ARGV, 3 do
  local m = ARGV[i]
  if redis.call('ZREM', KEYS[2], m) == 1 then
    redis.call('XADD', KEYS[1], '*', 'm', m)
    n = n + 1
  end
end
return n
",
    )
});

/// Puts every parked token of a shard back in the queue.
static REQUEUE_ALL_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, m in ipairs(members) do
  redis.call('XADD', KEYS[1], '*', 'm', m)
end
redis.call('DEL', KEYS[2])
return #members
",
    )
});

/// A user's unsettled tokens, oldest first, at most ARGV[2] + 1 (one more than may be read,
/// so the caller can tell the bound was passed).
static UNSETTLED_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(members) do
  local v = redis.call('HMGET', ARGV[1] .. m, 'r', 'st', 'sq')
  if v[1] then out[#out + 1] = {'', v[1], v[2], v[3]} end
end
return out
",
    )
});

/// A user's tokens for the wallet flow, newest first: the `limit` newest strictly before the
/// time ARGV[2] (all when empty), plus every token at exactly that time, so the caller can cut
/// ties by flow id. Rows: `[flow id, time, record, status, seq]`.
static USER_TOKENS_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local limit = tonumber(ARGV[3])
local rows = {}
if ARGV[2] == '' then
  rows = redis.call('ZREVRANGE', KEYS[1], 0, limit - 1, 'WITHSCORES')
else
  local same = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2], 'WITHSCORES')
  local older = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
  for _, x in ipairs(same) do rows[#rows + 1] = x end
  for _, x in ipairs(older) do rows[#rows + 1] = x end
end
local out = {}
for i = 1, #rows, 2 do
  local flow = rows[i]
  local v = redis.call('HMGET', ARGV[1] .. string.sub(flow, 4), 'r', 'st', 'sq')
  out[#out + 1] = {flow, rows[i + 1], v[1], v[2], v[3]}
end
return out
",
    )
});

/// One chunk of an activity's grants in a shard. Rows: `[parked 0/1, record, status, seq]`.
static GRANTS_OF_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3])
local out = {}
for _, m in ipairs(members) do
  local v = redis.call('HMGET', ARGV[1] .. m, 'r', 'st', 'sq')
  if v[1] then
    local parked = 0
    if redis.call('ZSCORE', KEYS[2], m) then parked = 1 end
    out[#out + 1] = {parked, v[1], v[2], v[3]}
  end
end
return out
",
    )
});

/// Takes up to ARGV[1] of the fleet's ARGV[2] credits per second, on the server's clock.
/// Members are `ticket:count`. A settled ticket is scored by its ledger commit time and counts
/// for one second after it; a ticket still in flight is scored `now + lease` (ARGV[4]), so it
/// counts however long its batch takes, until its host settles it or the lease runs out (a
/// host that died). Answers `{taken, wait_ms}`.
static CAP_TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used, wait = 0, 1000
for i = 1, #members, 2 do
  used = used + tonumber(string.match(members[i], ':(%d+)$'))
  local score = tonumber(members[i + 1])
  if score > now then
    -- In flight: it settles within milliseconds, usually; look again soon.
    wait = math.min(wait, 20)
  else
    wait = math.min(wait, score + 1000 - now)
  end
end
local take = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if take > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3] .. ':' .. take)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 5000)
  return {take, 0}
end
return {0, math.max(1, wait)}
",
    )
});

/// Replaces a ticket's reservation with the credits made, stamped now.
static CAP_SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, m in ipairs(members) do
  if string.sub(m, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then redis.call('ZREM', KEYS[1], m) end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 20000)
end
return 1
",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the buckets' shares add up to the limit exactly, for any limit and shard count.
    #[test]
    fn shares_sum_to_the_limit() {
        for shards in [1, 2, 3, 16, 17] {
            for limit in [0, 1, 5, 15, 16, 17, 1_000, 999_999_999_999] {
                let total: i64 = (0..shards).map(|shard| share(limit, shard, shards)).sum();
                assert_eq!(total, limit, "{shards} shards, limit {limit}");
            }
        }
    }
}
