//! Crash points for the crash tests: `HONGBAO_FAILPOINTS=name,name` makes the process abort
//! (as `kill -9` would: no destructor, no flush) the first time it passes a named point, so a
//! test can stop a host exactly between two steps that must survive a crash between them; a
//! stall point ([`stall`]) instead stops the thread that passes it, for good.
//! Unset, as in every real deployment, a point costs one load of a flag read at start.

use std::sync::LazyLock;

/// The points this process aborts at, from `HONGBAO_FAILPOINTS`.
static ARMED: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::env::var("HONGBAO_FAILPOINTS")
        .map(|names| names.split(',').map(|name| name.trim().to_owned()).filter(|name| !name.is_empty()).collect())
        .unwrap_or_default()
});

/// Stops the calling thread for good if `name` is armed: the work it was doing never finishes
/// (a plugin compile that never ends, for the test that the host serves meanwhile).
pub fn stall(name: &str) {
    if !ARMED.is_empty() && ARMED.iter().any(|armed| armed == name) {
        eprintln!("hongbao: failpoint `{name}` hit; this thread stops here");
        loop {
            std::thread::park();
        }
    }
}

/// Aborts the process if `name` is armed.
pub fn hit(name: &str) {
    if !ARMED.is_empty() && ARMED.iter().any(|armed| armed == name) {
        eprintln!("hongbao: failpoint `{name}` hit; aborting");
        std::process::abort();
    }
}
