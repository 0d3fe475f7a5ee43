//! Counts of each scene plugin's calls, answers, failures by code and instantiations, kept across
//! reloads and shown by `GET /v1/plugins`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::failure::PluginFailure;

/// Bytes kept of the last failure's message: enough for a guest's exception or panic message
/// and where it was raised, bounded because a guest chooses what it says.
pub const LAST_FAILURE_BYTES_MAX: usize = 512;

/// Counts of one scene plugin's calls, kept across reloads.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that answered.
    pub ok: AtomicU64,
    /// Calls that failed, by [`PluginFailure::code`] (in the order of `FAILURE_CODES`).
    failures: [AtomicU64; FAILURE_CODES.len()],
    /// Fresh instances created.
    pub instantiations: AtomicU64,
    /// Total nanoseconds inside calls.
    pub call_ns: AtomicU64,
    /// The latest failure's code and message (a guest's exception or panic message included),
    /// at most [`LAST_FAILURE_BYTES_MAX`] bytes of it.
    last_failure: Mutex<Option<(&'static str, String)>>,
}

const FAILURE_CODES: [&str; 9] = [
    "plugin_not_loaded",
    "plugin_warming",
    "plugin_instantiate",
    "plugin_deadline",
    "plugin_instructions",
    "plugin_memory",
    "plugin_trap",
    "plugin_error",
    "plugin_invalid_output",
];

impl PluginStats {
    pub(super) fn count_failure(&self, failure: &PluginFailure) {
        if let Some(index) = FAILURE_CODES.iter().position(|code| *code == failure.code()) {
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
        let mut message = failure.to_string();
        if message.len() > LAST_FAILURE_BYTES_MAX {
            let mut end = LAST_FAILURE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        *self.last_failure.lock() = Some((failure.code(), message));
    }

    /// The latest failure's code and (bounded) message.
    pub fn last_failure(&self) -> Option<(&'static str, String)> {
        self.last_failure.lock().clone()
    }

    /// Failed calls by failure code, every code listed.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURE_CODES.iter().zip(&self.failures).map(|(code, count)| (*code, count.load(Ordering::Relaxed)))
    }

    /// A JSON view for `GET /v1/plugins`.
    pub fn to_json(&self) -> serde_json::Value {
        let failures: serde_json::Map<String, serde_json::Value> =
            self.failures().map(|(code, count)| (code.to_owned(), count.into())).collect();
        serde_json::json!({
            "calls": self.calls.load(Ordering::Relaxed),
            "ok": self.ok.load(Ordering::Relaxed),
            "failures": failures,
            "instantiations": self.instantiations.load(Ordering::Relaxed),
            "call_ns_total": self.call_ns.load(Ordering::Relaxed),
            "last_failure": self.last_failure().map(|(code, message)| serde_json::json!({ "code": code, "message": message })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_failure() -> [PluginFailure; 9] {
        [
            PluginFailure::NotLoaded(String::new()),
            PluginFailure::Warming,
            PluginFailure::Instantiate(String::new()),
            PluginFailure::Deadline(1),
            PluginFailure::Instructions(1),
            PluginFailure::MemoryCap(1),
            PluginFailure::Trap(String::new()),
            PluginFailure::PluginError(String::new()),
            PluginFailure::InvalidOutput(String::new()),
        ]
    }

    // Proves every failure's code has its own counter: a code missing from `FAILURE_CODES`
    // would be dropped from the stats without a word.
    #[test]
    fn every_failure_code_is_counted() {
        let stats = PluginStats::default();
        for failure in every_failure() {
            stats.count_failure(&failure);
        }
        stats.count_failure(&PluginFailure::Deadline(9));
        let json = stats.to_json();
        assert_eq!(json["failures"].as_object().map(serde_json::Map::len), Some(FAILURE_CODES.len()));
        for failure in every_failure() {
            let expected = if failure.code() == "plugin_deadline" { 2 } else { 1 };
            assert_eq!(json["failures"][failure.code()], expected, "{}", failure.code());
        }
        assert_eq!(json["calls"], 0);
    }

    // Proves the last failure keeps the guest's message, bounded on a character boundary.
    #[test]
    fn the_last_failure_keeps_a_bounded_message() {
        let stats = PluginStats::default();
        assert!(stats.last_failure().is_none());
        stats.count_failure(&PluginFailure::Trap(format!("panicked at lib.rs:3: {}", "红".repeat(400))));
        let (code, message) = stats.last_failure().unwrap();
        assert_eq!(code, "plugin_trap");
        assert!(message.starts_with("plugin trapped: panicked at lib.rs:3"), "{message}");
        assert!(message.len() <= LAST_FAILURE_BYTES_MAX && message.len() > LAST_FAILURE_BYTES_MAX - 4);
    }
}
