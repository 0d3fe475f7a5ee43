//! Nonces of signed requests, with their app and timestamp, remembered while the timestamp is
//! within the window, so that a captured request is accepted once. The embedded store keeps
//! them in memory, bounded; Redis keeps them for the whole fleet
//! (`RedisStore::first_use_of_nonce`).

use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, RandomState};

use super::StoreError;
use crate::split_map::SplitMap;

/// The most nonces one embedded host remembers at once: five minutes' worth at 13,000 signed
/// requests a second, above what one embedded host serves, in about 160 MB at most (a 128-bit
/// digest and its expiry bucket, about 40 bytes each). Past it, new requests are refused as
/// unavailable until old nonces expire: forgetting a live nonce would let its request be
/// replayed.
pub const NONCES_REMEMBERED_MAX: usize = 4_000_000;

/// Below this capacity the table of nonces is left as it is when nonces expire.
const SHRINK_ABOVE_CAPACITY: usize = 4096;

/// Nonces seen, as 128-bit digests, with the second after which each may be forgotten.
#[derive(Debug)]
pub struct NonceMemory {
    /// A split map, so that a burst of requests grows it a part at a time (see `split_map`).
    seen: SplitMap<u128, ()>,
    expiring: BTreeMap<u64, Vec<u128>>,
    /// Two independently keyed hashers, for a digest no client can aim collisions at.
    keys: (RandomState, RandomState),
}

impl Default for NonceMemory {
    fn default() -> Self {
        NonceMemory {
            seen: SplitMap::default(),
            expiring: BTreeMap::new(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }
}

impl NonceMemory {
    /// Forgets the nonces whose time has passed at `now_ms`; whether the table gave room back.
    /// A rain's nonces leave a table sized for its peak: once three quarters have expired it
    /// shrinks, so memory follows the last five minutes, not the busiest ones.
    pub fn forget_expired(&mut self, now_ms: u64) -> bool {
        let now_s = now_ms / 1000;
        let mut forgot = false;
        while let Some(entry) = self.expiring.first_entry() {
            if *entry.key() > now_s {
                break;
            }
            for digest in entry.remove() {
                self.seen.remove(&digest);
            }
            forgot = true;
        }
        // Summing the parts' capacities is 64 reads: only worth it when something went.
        if !forgot {
            return false;
        }
        let capacity = self.seen.capacity();
        if capacity > SHRINK_ABOVE_CAPACITY && self.seen.len() * 4 < capacity {
            self.seen.shrink();
            return self.seen.capacity() < capacity;
        }
        false
    }

    /// Whether this is the first use of `nonce` by `app_id` in requests stamped `timestamp_s`
    /// (the timestamp is signed: a replay carries the same); remembers it until `now_ms +
    /// ttl_ms` (to the second above).
    pub fn first_use(
        &mut self,
        app_id: i64,
        nonce: &str,
        timestamp_s: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        self.forget_expired(now_ms);
        let request = (app_id, timestamp_s, nonce);
        let digest = (u128::from(self.keys.0.hash_one(request)) << 64) | u128::from(self.keys.1.hash_one(request));
        if self.seen.contains_key(&digest) {
            return Ok(false);
        }
        if self.seen.len() >= NONCES_REMEMBERED_MAX {
            return Err(StoreError::Unavailable(format!(
                "{NONCES_REMEMBERED_MAX} nonces remembered; retry when older ones expire"
            )));
        }
        self.seen.insert(digest, ());
        self.expiring.entry(now_ms.saturating_add(ttl_ms).div_ceil(1000)).or_default().push(digest);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a nonce is accepted once per app and timestamp within its time, and again after it
    // expired.
    #[test]
    fn a_nonce_is_accepted_once_within_its_time() {
        let mut memory = NonceMemory::default();
        assert!(memory.first_use(1, "abc", 1, 1_000, 600).unwrap());
        assert!(!memory.first_use(1, "abc", 1, 1_500, 600).unwrap());
        assert!(memory.first_use(2, "abc", 1, 1_500, 600).unwrap(), "another app's nonce");
        assert!(memory.first_use(1, "abc", 2, 1_500, 600).unwrap(), "another request: signed at another second");
        assert!(!memory.first_use(1, "abc", 1, 1_999, 600).unwrap(), "kept to the second above");
        assert!(memory.first_use(1, "abc", 1, 2_000, 600).unwrap(), "expired, forgotten");
        assert_eq!(memory.seen.len(), 3, "app 1's again, app 2's and the other second's");
    }

    // Proves the table gives its room back once a burst of nonces has expired.
    #[test]
    fn expired_nonces_give_their_room_back() {
        let mut memory = NonceMemory::default();
        for n in 0..100_000 {
            assert!(memory.first_use(1, &n.to_string(), 1, 1_000, 1_000).unwrap());
        }
        let peak = memory.seen.capacity();
        assert!(!memory.forget_expired(1_999), "not yet expired");
        assert!(memory.forget_expired(2_000));
        assert!(memory.first_use(1, "later", 3, 3_000, 1_000).unwrap());
        assert_eq!(memory.seen.len(), 1);
        assert!(memory.seen.capacity() <= SHRINK_ABOVE_CAPACITY, "{} of {peak} kept", memory.seen.capacity());
    }
}
