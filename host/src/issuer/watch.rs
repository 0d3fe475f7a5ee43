//! The forgery watch (seed `001_…`: if the token scheme is ever broken, monitoring must notice and
//! the system must be able to degrade): counts of tokens that fail their signature, are signed by
//! a retired key, or were never issued, each also logged. `GET /v1/security` (admin) shows them;
//! a rise is the signal to retire a key (`hongbao keys retire`) or switch restore off for an
//! activity (`restore: false`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters, since the host started.
#[derive(Debug, Default)]
pub struct ForgeryWatch {
    /// `tokens:verify` calls whose token is malformed, unsigned by a known key or altered.
    pub verify_failed: AtomicU64,
    /// `tokens:verify` calls whose token is signed by a retired key.
    pub verify_retired_key: AtomicU64,
    /// `tokens:verify` calls with a validly signed token that neither the store nor the ledger
    /// knows: it was never issued, or the store lost it.
    pub verify_never_issued: AtomicU64,
    /// Restored tokens refused for their signature.
    pub restore_failed: AtomicU64,
    /// Restored tokens refused because their key is retired.
    pub restore_retired_key: AtomicU64,
    /// Restores refused because the activity switched restore off.
    pub restore_disabled: AtomicU64,
    /// Tokens restored that neither the store nor the ledger had: legitimate after a lost
    /// store, a forgery otherwise.
    pub restored_unknown: AtomicU64,
}

impl ForgeryWatch {
    /// Counts one event.
    pub fn note(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.counts().into_iter().map(|(event, count)| (event.to_owned(), count.into())).collect(),
        )
    }

    /// Every event's count, by name.
    pub fn counts(&self) -> [(&'static str, u64); 7] {
        [
            ("verify_failed", self.verify_failed.load(Relaxed)),
            ("verify_retired_key", self.verify_retired_key.load(Relaxed)),
            ("verify_never_issued", self.verify_never_issued.load(Relaxed)),
            ("restore_failed", self.restore_failed.load(Relaxed)),
            ("restore_retired_key", self.restore_retired_key.load(Relaxed)),
            ("restore_disabled", self.restore_disabled.load(Relaxed)),
            ("restored_unknown", self.restored_unknown.load(Relaxed)),
        ]
    }
}
