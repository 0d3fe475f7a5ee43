//! Nonces of signed requests, remembered for the timestamp window so that a captured request is
//! accepted once. The embedded store keeps them in memory, bounded; Redis keeps them for the
//! whole fleet (`RedisStore::first_use_of_nonce`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::StoreError;

/// The most nonces one embedded host remembers at once: a window's worth at about 3,000 signed
/// requests a second (about 100 MB at most). Past it, new requests are refused as unavailable
/// until old nonces expire; forgetting a live nonce would let its request be replayed.
pub const NONCES_REMEMBERED_MAX: usize = 1_000_000;

/// Nonces seen, with when each may be forgotten.
#[derive(Debug, Default)]
pub struct NonceMemory {
    seen: HashMap<(i64, Arc<str>), u64>,
    /// In order of expiry: every nonce is kept for the same time.
    expiry: VecDeque<(u64, i64, Arc<str>)>,
}

impl NonceMemory {
    /// Whether this is the first use of `nonce` by `app_id`; remembers it until
    /// `now_ms + ttl_ms`.
    pub fn first_use(&mut self, app_id: i64, nonce: &str, now_ms: u64, ttl_ms: u64) -> Result<bool, StoreError> {
        while let Some((expires_ms, ..)) = self.expiry.front() {
            if *expires_ms > now_ms {
                break;
            }
            let (_, app, nonce) = self.expiry.pop_front().expect("looked at the front");
            self.seen.remove(&(app, nonce));
        }
        let nonce: Arc<str> = Arc::from(nonce);
        if self.seen.contains_key(&(app_id, nonce.clone())) {
            return Ok(false);
        }
        if self.seen.len() >= NONCES_REMEMBERED_MAX {
            return Err(StoreError::Unavailable(format!(
                "{NONCES_REMEMBERED_MAX} nonces remembered; retry when older ones expire"
            )));
        }
        let expires_ms = now_ms.saturating_add(ttl_ms);
        self.seen.insert((app_id, nonce.clone()), expires_ms);
        self.expiry.push_back((expires_ms, app_id, nonce));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a nonce is accepted once per app within its time, and again after it expired.
    #[test]
    fn a_nonce_is_accepted_once_within_its_time() {
        let mut memory = NonceMemory::default();
        assert!(memory.first_use(1, "abc", 1_000, 600).unwrap());
        assert!(!memory.first_use(1, "abc", 1_500, 600).unwrap());
        assert!(memory.first_use(2, "abc", 1_500, 600).unwrap(), "another app's nonce");
        assert!(memory.first_use(1, "abc", 1_600, 600).unwrap(), "expired, forgotten");
        assert_eq!(memory.seen.len(), 2);
    }
}
