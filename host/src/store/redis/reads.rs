//! Reads: a grant by order number, a user's unsettled tokens and wallet flow, stock figures
//! (summed over the buckets, and cached for plugins), and an activity's grants for
//! reconciliation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;

use super::reply::{value_string, value_u64};
use super::scripts::{GrantsOfArgs, GrantsSinceArgs, LookupArgs, UnsettledArgs, UserTokensArgs};
use super::stored::{decode_row, decode_value};
use super::{RedisStore, member, unavailable};
use crate::store::{FlowPosition, GrantKey, GrantRecord, StockUsed, StoreError, TokenStatus, USER_UNSETTLED_READ_MAX};

/// Grants read per script call when a reconciliation walks an activity: bounds each call's run
/// (Redis runs nothing else meanwhile) and its reply.
pub(super) const GRANTS_READ_PER_CALL: usize = 512;

/// How long a stock figure read for a plugin is handed out again. Summing the buckets costs one
/// read per shard; a plugin's figure (the inventory plugin splits "what is left") may be this
/// stale, because the grant script still checks the stock itself, atomically.
const PLUGIN_STOCK_FRESH_MS: u64 = 50;

/// The most stock figures kept for plugins. Scenes come and go with reloads; past this the
/// table starts again empty, so it never holds more than a campaign's worth.
const PLUGIN_STOCK_FIGURES_MAX: usize = 4096;

/// Stock figures read for plugins: (activity, scene) → (when read, figure).
pub(super) type StockSeen = HashMap<(String, Option<String>), (Instant, StockUsed)>;

impl RedisStore {
    /// The stored grant with this order number, found by the actID it begins with.
    pub async fn lookup(&self, activity_id: &str, order_no: &str) -> Result<Option<GrantRecord>, StoreError> {
        let Some(act_id) = order_no.split('_').next().and_then(|id| id.parse::<i64>().ok()) else {
            return Ok(None);
        };
        let key = self.keys(self.shard_of_user(act_id)).record(&member(activity_id, order_no));
        let mut conn = self.conn();
        let value: Value = self.timed(LookupArgs { record: key }.invocation().invoke_async(&mut conn)).await?;
        match value {
            Value::Nil => Ok(None),
            value => decode_value(Some(&value)).map(Some),
        }
    }

    /// The user's tokens not yet credited, oldest first (by seq, as the embedded store).
    pub async fn unsettled_for_user(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        let unsettled = self.unsettled_read(act_id).await?;
        if unsettled.len() > USER_UNSETTLED_READ_MAX {
            return Err(StoreError::TooManyUnsettled { act_id, max: USER_UNSETTLED_READ_MAX });
        }
        Ok(unsettled)
    }

    /// The keys of the user's oldest `USER_UNSETTLED_READ_MAX` unsettled tokens.
    pub async fn unsettled_keys_prefix(&self, act_id: i64) -> Result<Vec<GrantKey>, StoreError> {
        let mut unsettled = self.unsettled_read(act_id).await?;
        unsettled.truncate(USER_UNSETTLED_READ_MAX);
        Ok(unsettled.iter().map(GrantRecord::key).collect())
    }

    /// Up to one more than `USER_UNSETTLED_READ_MAX` of the user's unsettled tokens (the oldest
    /// by open time), by seq.
    async fn unsettled_read(&self, act_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        let keys = self.keys(self.shard_of_user(act_id));
        let args = UnsettledArgs {
            user_tokens: keys.user_tokens(act_id),
            record_prefix: keys.record_prefix(),
            max: USER_UNSETTLED_READ_MAX,
        };
        let mut conn = self.conn();
        let rows: Vec<Vec<Value>> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
        let mut unsettled = rows.iter().map(|row| decode_row(row)).collect::<Result<Vec<_>, _>>()?;
        unsettled.sort_unstable_by_key(|record| record.seq);
        Ok(unsettled)
    }

    /// Up to `limit` of the user's tokens strictly older than `before`, newest first.
    pub async fn user_tokens(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let keys = self.keys(self.shard_of_user(act_id));
        let args = UserTokensArgs {
            user_tokens: keys.user_tokens(act_id),
            record_prefix: keys.record_prefix(),
            before_ms: before.map(|position| position.time_ms),
            limit,
        };
        let mut conn = self.conn();
        // Rows: [flow id, time, record, status, seq], newest first by time; ties come in any order
        // and are put in flow-id order here (byte order, like the embedded store and the ledger).
        let rows: Vec<Vec<Value>> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
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
            let record = decode_value(row.get(2))?;
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
            let key = self.keys(shard).stock(activity_id);
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
        if seen.len() > PLUGIN_STOCK_FIGURES_MAX {
            seen.clear();
        }
        for (key, read) in stale.into_iter().zip(reads) {
            if let Ok(used) = read {
                seen.insert(key, (Instant::now(), used));
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
            let keys = self.keys(shard);
            let mut first = 0;
            loop {
                let args = GrantsOfArgs {
                    legacy_grants: keys.legacy_activity_grants(activity_id),
                    parked: keys.parked(),
                    record_prefix: keys.record_prefix(),
                    first,
                    last: first + GRANTS_READ_PER_CALL - 1,
                };
                let mut conn = self.conn();
                let rows: Vec<Vec<Value>> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
                for row in &rows {
                    all.push(parked_row(row)?);
                }
                if rows.len() < GRANTS_READ_PER_CALL {
                    break;
                }
                first += GRANTS_READ_PER_CALL;
            }
            let mut after = String::new();
            loop {
                let args = GrantsSinceArgs {
                    activity_grants: keys.activity_grants(activity_id),
                    parked: keys.parked(),
                    record_prefix: keys.record_prefix(),
                    after,
                    count: GRANTS_READ_PER_CALL,
                    member_prefix: format!("{activity_id}/"),
                };
                let mut conn = self.conn();
                let reply: Vec<Value> = self.timed(args.invocation().invoke_async(&mut conn)).await?;
                let read = value_u64(reply.first())?;
                after = value_string(reply.get(1))?;
                for row in reply.iter().skip(2) {
                    let Value::Array(row) = row else { return Err(unavailable(format!("grant row: {row:?}"))) };
                    all.push(parked_row(row)?);
                }
                if read < GRANTS_READ_PER_CALL as u64 {
                    break;
                }
            }
        }
        all.sort_by_key(|(record, _)| record.order_no.clone());
        Ok(all)
    }
}

/// Decodes a row `[parked 0/1, stored record]`: the record, and whether it is parked (a
/// credited one never is).
fn parked_row(row: &[Value]) -> Result<(GrantRecord, bool), StoreError> {
    let parked = value_u64(row.first())? == 1;
    let record = decode_row(row)?;
    let parked = parked && record.status() != TokenStatus::Credited;
    Ok((record, parked))
}
