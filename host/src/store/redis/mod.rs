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
//! | `P:{N}:g:ACTIVITY/ORDER_NO`     | string | `STATUS SEQ|ACTID|SCENE|CENTS|RECORD`: the record (protobuf, token kept by its signature) behind what scripts read (see `stored.rs`) |
//! | `P:{N}:ut:ACTID`                | zset   | the user's flow ids, scored by open time          |
//! | `P:{N}:q`                       | stream | the shard's crediting queue (consumer group `writers`) |
//! | `P:{N}:pk`                      | zset   | tokens the ledger refused, parked, scored by seq  |
//! | `P:{N}:seq`                     | string | the shard's sequence; a record's seq is `n * shards + N` |
//! | `P:{N}:st:ACTIVITY`             | hash   | stock bucket `N` of the activity: `a:n`, `a:c`, `s:SCENE:n`, `s:SCENE:c` used |
//! | `P:{N}:ga:ACTIVITY`             | stream | the activity's grants in this shard, entry `SEQ-0` a grant's order number, field `o` (reconciliation; the whole member, field `m`, and before that `P:{N}:ag:ACTIVITY`, a zset, in earlier versions) |
//! | `P:{N}:rl:ACTIVITY/SCENE/ACTID/WINDOW` | string | the user's grants in a rate window, expiring with it |
//! | `P:{N}:ok:ACTIVITY`             | string | present: this shard vouches for the activity (the grant path skips its ledger lookup; see `LedgerCheck`) |
//! | `P:{cap}:w`                     | zset   | the fleet's credits in the last second (the writer's cap) |
//! | `P:n:{APP/TIMESTAMP/B}`         | hash   | signed requests' nonces of one timestamp second, in bucket `B` of 1,024, kept while the timestamp is acceptable (see `nonces.rs`) |
//! | `P:{pk.ID}:d` / `:s` / `:c`     | string / hash / hash | a group red packet: definition, state (`expect`, `closed`, `refund`), claims actID → share (see `packets.rs`); expire a day after the refund |
//! | `P:{pko}:open`                  | zset   | packets not yet refunded, scored by when a sweep should look (expiry, then a lease later) |
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
//! returns them; completing acknowledges the entries and drops them (`scripts/queue.lua`: the
//! stream is trimmed up to its oldest entry still claimed). A record's status, not the
//! stream, is the truth: an entry whose token is already credited is dropped when read, so
//! redelivery is harmless, and the ledger is idempotent anyway.
//!
//! ## Where things are
//!
//! - `keys.rs`: the key layout above, as functions; `stored.rs`: a grant's record as stored;
//!   `scripts.rs` + `scripts/*.lua`: the Lua scripts, each opening with its KEYS/ARGV table, and
//!   one argument struct per script (`scripts/record.lua`, prepended to each, reads a record).
//! - `grant.rs`: grants and restores; `reserve.rs`: stock taken across buckets;
//!   `queue.rs`: the crediting queues; `reads.rs`: lookups, user lists, stock figures;
//!   `cap.rs`: the fleet's credit window; `nonces.rs`: signed requests' nonces; `packets.rs`:
//!   group red packets' claims and refunds; `reply.rs`:
//!   decoding script replies.

mod cap;
mod grant;
mod keys;
mod nonces;
mod packets;
mod queue;
mod reads;
mod reply;
mod reserve;
mod retire;
mod scripts;
mod stored;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

pub use self::cap::CapTake;
use self::keys::ShardKeys;
use self::reads::StockSeen;
use super::StoreError;

/// Shards (hash tags) a deployment uses unless configured: enough to spread a hot scene's stock
/// and the crediting queue over a few cluster nodes, few enough that a writer polls every queue
/// cheaply.
pub const STOCK_SHARDS_DEFAULT: u32 = 16;

/// The most shards a deployment may have.
pub const STOCK_SHARDS_MAX: u32 = 1024;

/// How many times a connection retries a command on its own before the store answers
/// unavailable: enough to ride over a reconnect, few enough to stay within the op timeout.
const CONNECTION_RETRIES: usize = 2;

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
    /// Group red packets' definitions this host read (they never change).
    packet_defs: parking_lot::Mutex<std::collections::HashMap<String, Arc<crate::store::PacketDef>>>,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

/// The node URLs (`redis://HOST:PORT`) of a `redis-cluster://HOST:PORT,…` store URL; `None`
/// for a single-server URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let nodes = url.strip_prefix("redis-cluster://")?;
    Some(nodes.split(',').map(|node| format!("redis://{}", node.trim())).collect())
}

/// `activity/order_no`: how a grant is named inside its shard.
fn member(activity_id: &str, order_no: &str) -> String {
    format!("{activity_id}/{order_no}")
}

/// Opens one connection handle to a single Redis or a cluster, within twice the op timeout.
async fn open(config: &RedisStoreConfig) -> Result<Conn, StoreError> {
    let timeout = Duration::from_millis(config.op_timeout_ms);
    if let Some(nodes) = cluster_nodes(&config.url) {
        let client = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(CONNECTION_RETRIES as u32)
            .build()
            .map_err(unavailable)?;
        let connect = client.get_async_connection();
        let conn = tokio::time::timeout(timeout * 2, connect).await.map_err(|_| unavailable("connect timed out"))?;
        Ok(Conn::Cluster(conn.map_err(unavailable)?))
    } else {
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(CONNECTION_RETRIES);
        let connect = ConnectionManager::new_with_config(client, manager_config);
        let conn = tokio::time::timeout(timeout * 2, connect).await.map_err(|_| unavailable("connect timed out"))?;
        Ok(Conn::Single(conn.map_err(unavailable)?))
    }
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
        let conn = open(&config).await?;
        let consumer = format!("host-{:016x}", fastrand::u64(..));
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                config,
                consumer,
                next_shard: AtomicU64::new(0),
                next_ticket: AtomicU64::new(fastrand::u64(..) >> 16),
                stock_seen: parking_lot::Mutex::new(StockSeen::new()),
                packet_defs: parking_lot::Mutex::new(std::collections::HashMap::new()),
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

    /// The keys of shard `N`, all starting `P:{N}`.
    fn keys(&self, shard: u32) -> ShardKeys {
        ShardKeys::new(&self.inner.config.prefix, shard)
    }

    fn shard_of_user(&self, act_id: i64) -> u32 {
        (act_id.rem_euclid(i64::from(self.shards()))) as u32
    }

    fn shard_of_seq(&self, seq: u64) -> u32 {
        (seq % u64::from(self.shards())) as u32
    }

    /// Runs `work` within the operation timeout.
    ///
    /// Not an `async fn`, which would hold `work` twice (see [`crate::metrics::timed`]).
    fn timed<T>(
        &self,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        use futures_util::FutureExt as _;
        tokio::time::timeout(Duration::from_millis(self.inner.config.op_timeout_ms), work).map(|answer| match answer {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        })
    }

    /// Records the deployment's shard count on first start and refuses a different one later:
    /// every key's hash tag depends on it.
    async fn check_shards(&self) -> Result<(), StoreError> {
        let key = keys::meta(&self.inner.config.prefix);
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
}
