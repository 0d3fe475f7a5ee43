//! Nonces of signed requests, remembered fleet-wide, so that the same signed request sent to two
//! hosts is accepted once.
//!
//! A nonce is a field of the hash `P:n:{APP/TIMESTAMP/B}`: one hash a second of request
//! timestamps and bucket `B` of [`NONCE_BUCKETS`], chosen by the nonce. The timestamp is signed,
//! so a replay names the same hash; every nonce of one timestamp may be forgotten at the same
//! moment, so the hash expires whole when its timestamp stops being acceptable. At up to 128
//! fields a hash stays in Redis's compact listpack encoding: 37 bytes a nonce at 16,000 signed
//! requests a second (`bench suite --only writer`), against 104 for a key of its own with an
//! expiry. The buckets spread one app's nonces over 1,024 slots of a cluster.

use super::RedisStore;
use crate::store::StoreError;

/// Hashes a second per app: at 128 fields each (Redis's default `hash-max-listpack-entries`)
/// every hash stays compact up to 131,072 signed requests a second per app; past that the
/// busiest hashes become hashtables, ≈ 80 bytes a nonce, and stay correct.
const NONCE_BUCKETS: u64 = 1024;

impl RedisStore {
    /// Whether this is the first use of `nonce` by `app_id` in requests stamped `timestamp_s`
    /// in the fleet; remembers it for `ttl_ms`, until the timestamp stops being acceptable.
    pub async fn first_use_of_nonce(
        &self,
        app_id: i64,
        nonce: &str,
        timestamp_s: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = nonce_key(&self.inner.config.prefix, app_id, timestamp_s, nonce);
        let mut conn = self.conn();
        // One round trip: the field, then the hash's expiry (the same for every field of it).
        let (fresh, _expiring): (bool, bool) = self
            .timed(async move {
                redis::pipe()
                    .cmd("HSETNX")
                    .arg(&key)
                    .arg(nonce)
                    .arg("")
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(fresh)
    }
}

/// `P:n:{APP/TIMESTAMP/B}`, the hash that holds `nonce` if it was used.
fn nonce_key(prefix: &str, app_id: i64, timestamp_s: u64, nonce: &str) -> String {
    format!("{prefix}:n:{{{app_id}/{timestamp_s}/{}}}", nonce_bucket(nonce))
}

/// The nonce's bucket: FNV-1a of its bytes, the same on every host of a fleet.
fn nonce_bucket(nonce: &str) -> u64 {
    let hash = nonce
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    hash % NONCE_BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_spread_over_every_bucket() {
        let mut seen = vec![0_u32; NONCE_BUCKETS as usize];
        for n in 0..(NONCE_BUCKETS * 64) {
            seen[nonce_bucket(&format!("nonce-{n:016}")) as usize] += 1;
        }
        let (least, most) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        assert!(*least > 16 && *most < 160, "buckets hold {least} to {most} of 64 on average");
    }
}
