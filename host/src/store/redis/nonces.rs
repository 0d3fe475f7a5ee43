//! Nonces of signed requests, remembered fleet-wide: `P:n:{APP/NONCE}` set with `NX` and an
//! expiry, so that the same signed request sent to two hosts is accepted once. Each nonce hashes
//! to its own slot, so one busy app spreads over a cluster.

use super::RedisStore;
use crate::store::StoreError;

impl RedisStore {
    /// Whether this is the first use of `nonce` by `app_id` in the fleet; remembers it for
    /// `ttl_ms`.
    pub async fn first_use_of_nonce(&self, app_id: i64, nonce: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let key = format!("{}:n:{{{app_id}/{nonce}}}", self.inner.config.prefix);
        let mut conn = self.conn();
        let set: Option<String> = self
            .timed(async move {
                redis::cmd("SET").arg(key).arg("1").arg("NX").arg("PX").arg(ttl_ms).query_async(&mut conn).await
            })
            .await?;
        Ok(set.is_some())
    }
}
