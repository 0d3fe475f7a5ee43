//! Retention: credited records leave the hot store once their retention has passed
//! (`scripts/retire.lua`), so Redis holds the backlog, not the night's history.

use std::collections::HashMap;

use super::RedisStore;
use super::keys::RETIRED_USER_BUCKETS;
use super::scripts::RetireArgs;
use crate::store::{StockUsed, StoreError};

impl RedisStore {
    /// Retires up to `max` records credited `retain_ms` or more ago (by Redis's clock), shard
    /// by shard (see [`crate::store::Store::retire_credited`]).
    pub async fn retire_credited(&self, retain_ms: u64, max: usize) -> Result<usize, StoreError> {
        let shards = self.shards();
        let per_shard = max.div_ceil(shards as usize).max(1);
        let runs = futures_util::future::join_all((0..shards).map(|shard| {
            let keys = self.keys(shard);
            let mut conn = self.conn();
            async move {
                let args = RetireArgs {
                    credited: keys.credited(),
                    tag: keys.tag(),
                    retain_ms,
                    max: per_shard,
                    shards,
                    buckets: RETIRED_USER_BUCKETS,
                };
                let (retired, _seen): (usize, usize) = self.timed(args.invocation().invoke_async(&mut conn)).await?;
                Ok::<usize, StoreError>(retired)
            }
        }))
        .await;
        let mut total = 0;
        for run in runs {
            total += run?;
        }
        Ok(total)
    }

    /// Whether the user has retired records of the activity.
    pub(super) async fn has_retired(&self, activity_id: &str, act_id: i64) -> Result<bool, StoreError> {
        let key = self.keys(self.shard_of_user(act_id)).retired_users(activity_id, act_id, self.shards());
        let mut conn = self.conn();
        self.timed(redis::cmd("SISMEMBER").arg(key).arg(act_id).query_async::<bool>(&mut conn)).await
    }

    /// What one activity's retired records add up to, per scene, over all shards.
    pub async fn retired_of(&self, activity_id: &str) -> Result<HashMap<String, StockUsed>, StoreError> {
        let reads = futures_util::future::join_all((0..self.shards()).map(|shard| {
            let key = self.keys(shard).retired_totals(activity_id);
            let mut conn = self.conn();
            self.timed(
                async move { redis::cmd("HGETALL").arg(key).query_async::<HashMap<String, i64>>(&mut conn).await },
            )
        }))
        .await;
        let mut totals: HashMap<String, StockUsed> = HashMap::new();
        for read in reads {
            for (field, value) in read? {
                // Fields are `s:SCENE:n` (count) and `s:SCENE:c` (cents); scene ids hold no `:`.
                let Some(rest) = field.strip_prefix("s:") else { continue };
                let Some((scene, kind)) = rest.rsplit_once(':') else { continue };
                let total = totals.entry(scene.to_owned()).or_default();
                match kind {
                    "n" => total.count += value.max(0) as u64,
                    "c" => total.cents = total.cents.saturating_add(value),
                    _ => {}
                }
            }
        }
        Ok(totals)
    }
}
