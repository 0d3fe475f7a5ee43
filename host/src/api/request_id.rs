//! Request ids: every answer carries `x-request-id`, and the host's log lines of that request
//! name it (the `request` span), so an operator finds a client's request in the logs.
//!
//! A client's own `x-request-id` is kept when it is 1 to [`CLIENT_ID_CHARS_MAX`] characters of
//! `A-Z a-z 0-9 . _ : -` (as a proxy in front would have set it); otherwise the host makes one:
//! a random prefix per process and a counter, unique across a fleet's hosts.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::HeaderMap;

/// The header, in requests and answers.
pub const HEADER: &str = "x-request-id";

/// The longest client id kept.
pub const CLIENT_ID_CHARS_MAX: usize = 64;

/// This process's prefix: 8 random hex digits.
static PREFIX: LazyLock<String> = LazyLock::new(|| format!("{:08x}", fastrand::u32(..)));

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The request's id: the client's when acceptable, else a fresh one.
pub fn of(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(fresh, str::to_owned)
}

fn acceptable(id: &str) -> bool {
    (1..=CLIENT_ID_CHARS_MAX).contains(&id.len())
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-'))
}

fn fresh() -> String {
    format!("{}-{:x}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a well-formed client id is kept and anything else replaced by a fresh, unique one.
    #[test]
    fn client_ids_are_kept_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "req-42.a_b:c".parse().unwrap());
        assert_eq!(of(&headers), "req-42.a_b:c");
        for bad in ["", "has space", "quote\"", &"x".repeat(CLIENT_ID_CHARS_MAX + 1)] {
            headers.insert(HEADER, bad.parse().unwrap());
            let id = of(&headers);
            assert_ne!(id, bad);
            assert!(id.starts_with(PREFIX.as_str()), "{id}");
        }
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
