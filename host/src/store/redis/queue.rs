//! The crediting queues: one stream per shard, read by the consumer group [`GROUP`]; every
//! host's writer is a consumer (see "Crediting queue" in the module docs).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;

use super::reply::{value_string, value_u64};
use super::scripts::{ClaimArgs, ClaimKeysArgs, EntriesArgs, EntriesScript, QueueArgs};
use super::stored::decode_row;
use super::{RedisStore, member, unavailable};
use crate::store::{GrantKey, GrantRecord, StoreError};

/// The consumer group of the crediting queues.
const GROUP: &str = "writers";

/// Queue entries one script call takes by name: bounds the script's run (Redis runs nothing
/// else meanwhile) and its argument list.
const ENTRIES_PER_CALL_MAX: usize = 512;

/// How long a consumer with nothing pending must have been idle before it is taken for a host
/// long gone and removed from its group: far longer than any live writer's pause.
const CONSUMER_GONE_AFTER_MS: u64 = 3_600_000;

enum ClaimError {
    NoGroup,
    Store(StoreError),
}

/// Whether a Redis error says a queue's consumer group is missing (after a restart lost it).
fn is_nogroup(error: &redis::RedisError) -> bool {
    error.to_string().contains("NOGROUP")
}

impl RedisStore {
    /// Creates the shard's queue and its consumer group if they are missing.
    pub(super) async fn ensure_group(&self, shard: u32) -> Result<(), StoreError> {
        let queue = self.keys(shard).queue();
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
    /// for [`CONSUMER_GONE_AFTER_MS`]. Every host start adds one; without this the group's list
    /// only grows.
    pub(super) async fn forget_gone_consumers(&self, shard: u32) {
        let queue = self.keys(shard).queue();
        let mut conn = self.conn();
        let key = queue.clone();
        let listed = self
            .timed(async move {
                redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(GROUP).query_async::<Vec<Value>>(&mut conn).await
            })
            .await;
        let Ok(consumers) = listed else { return };
        for consumer in consumers {
            let Some((name, pending, idle_ms)) = consumer_info(consumer) else { continue };
            if pending == 0 && idle_ms > CONSUMER_GONE_AFTER_MS && name != self.inner.consumer {
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
            let records = match self.claim_shard(shard, want).await {
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
        let keys = self.keys(shard);
        let args = ClaimArgs {
            queue: keys.queue(),
            parked: keys.parked(),
            group: GROUP,
            consumer: &self.inner.consumer,
            want,
            reclaim_after_ms: self.inner.config.reclaim_after_ms,
            record_prefix: keys.record_prefix(),
        };
        let invocation = args.invocation();
        let mut conn = self.conn();
        let work = invocation.invoke_async::<Vec<Vec<Value>>>(&mut conn);
        let rows = match tokio::time::timeout(Duration::from_millis(self.inner.config.op_timeout_ms), work).await {
            Err(_) => return Err(ClaimError::Store(unavailable("timed out"))),
            Ok(Err(error)) if is_nogroup(&error) => return Err(ClaimError::NoGroup),
            Ok(Err(error)) => return Err(ClaimError::Store(unavailable(error))),
            Ok(Ok(rows)) => rows,
        };
        rows.iter().map(|row| decode_row(row)).collect::<Result<_, _>>().map_err(ClaimError::Store)
    }

    /// Marks the named tokens processing, returning those not yet credited.
    pub async fn claim_keys(&self, keys: Vec<GrantKey>) -> Result<Vec<GrantRecord>, StoreError> {
        let mut claimed = Vec::with_capacity(keys.len());
        for (shard, keys) in self.by_shard(keys) {
            let shard_keys = self.keys(shard);
            let args = ClaimKeysArgs {
                queue: shard_keys.queue(),
                record_prefix: shard_keys.record_prefix(),
                tokens: keys
                    .iter()
                    .map(|key| (member(&key.activity_id, &key.order_no), key.queue_id.clone()))
                    .collect(),
            };
            let mut conn = self.conn();
            let rows: Vec<Vec<Value>> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
            for row in &rows {
                claimed.push(decode_row(row)?);
            }
        }
        Ok(claimed)
    }

    /// Groups keys by the shard their seq names.
    fn by_shard(&self, keys: Vec<GrantKey>) -> Vec<(u32, Vec<GrantKey>)> {
        let mut groups: BTreeMap<u32, Vec<GrantKey>> = BTreeMap::new();
        for key in keys {
            groups.entry(self.shard_of_seq(key.seq)).or_default().push(key);
        }
        groups.into_iter().collect()
    }

    /// Marks the named tokens credited and takes them off the queue.
    pub async fn complete(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        self.entries_script(EntriesScript::Complete, keys).await.map(|_| ())
    }

    /// Takes refused tokens off the crediting queue (they stay unsettled and owed).
    pub async fn park(&self, keys: Vec<GrantKey>) -> Result<(), StoreError> {
        self.entries_script(EntriesScript::Park, keys).await.map(|_| ())
    }

    /// Puts the given parked tokens back in the queue; returns how many moved.
    pub async fn requeue_parked_keys(&self, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        self.entries_script(EntriesScript::Requeue, keys).await
    }

    /// Runs a per-shard script over the tokens' `(member, seq, queue id)`; sums its answers.
    async fn entries_script(&self, script: EntriesScript, keys: Vec<GrantKey>) -> Result<u64, StoreError> {
        let mut total = 0;
        for (shard, keys) in self.by_shard(keys) {
            let shard_keys = self.keys(shard);
            for chunk in keys.chunks(ENTRIES_PER_CALL_MAX) {
                let args = EntriesArgs {
                    queue: shard_keys.queue(),
                    parked: shard_keys.parked(),
                    group: GROUP,
                    tag: shard_keys.tag(),
                    entries: chunk
                        .iter()
                        .map(|key| (member(&key.activity_id, &key.order_no), key.seq, key.queue_id.as_str()))
                        .collect(),
                };
                let mut conn = self.conn();
                let moved: u64 = self.timed(args.invocation(script).invoke_async(&mut conn)).await?;
                total += moved;
            }
        }
        Ok(total)
    }

    /// Puts every parked token back in the queue; returns how many.
    pub async fn requeue_parked(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for shard in 0..self.shards() {
            let keys = self.keys(shard);
            let args = QueueArgs { queue: keys.queue(), parked: keys.parked() };
            let mut conn = self.conn();
            let moved: u64 = self.timed(args.invocation().invoke_async(&mut conn)).await?;
            total += moved;
        }
        Ok(total)
    }

    /// How many tokens are parked, over all shards.
    pub async fn parked_len(&self) -> Result<u64, StoreError> {
        self.sum_per_shard("ZCARD", |shard| self.keys(shard).parked()).await
    }

    /// How many entries the crediting queues hold (claimed or not), over all shards.
    pub async fn queue_len(&self) -> Result<u64, StoreError> {
        self.sum_per_shard("XLEN", |shard| self.keys(shard).queue()).await
    }

    async fn sum_per_shard(&self, command: &str, key: impl Fn(u32) -> String) -> Result<u64, StoreError> {
        let counts = futures_util::future::join_all((0..self.shards()).map(|shard| {
            let key = key(shard);
            let mut conn = self.conn();
            let command = command.to_owned();
            self.timed(async move { redis::cmd(&command).arg(key).query_async::<u64>(&mut conn).await })
        }))
        .await;
        counts.into_iter().try_fold(0, |sum, count| Ok(sum + count?))
    }
}

/// `(name, pending, idle ms)` of one consumer in `XINFO CONSUMERS`' answer (RESP2 or RESP3).
fn consumer_info(consumer: Value) -> Option<(String, u64, u64)> {
    let fields = match consumer {
        Value::Array(fields) => fields,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| value_string(pair.first()).is_ok_and(|key| key == name))
            .and_then(|pair| pair.get(1))
    };
    Some((value_string(field("name")).ok()?, value_u64(field("pending")).ok()?, value_u64(field("idle")).ok()?))
}
