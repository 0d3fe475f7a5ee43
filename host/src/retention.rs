//! Retention: the hot state bounded by the backlog, not by history.
//!
//! A credited token's record is needed in the token store only while a client may still retry
//! its grant soon or the wallet still shows it pending. The ledger keeps a copy of every
//! credited token (the entry's `token`), so once a record has been credited for the retention
//! window (`--retain-credited-s`, [`crate::store::RETAIN_CREDITED_S_DEFAULT`]) it leaves the
//! store ([`crate::store::Store::retire_credited`]). What must stay exact stays in the store:
//! stock counters count every grant, retired or not; per-user rate windows are their own keys;
//! unsettled tokens are never retired. A replay of a retired order is answered from the ledger:
//! the store marks users with retired records per activity, and a grant of theirs that the store
//! cannot find asks the ledger ([`crate::store::GrantCommit::CheckRetired`]), even where the
//! store vouches for the activity.
//!
//! Every host runs the sweep; on Redis each shard's retirement is one script, so hosts of a
//! fleet never retire a record twice.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::store::{RETIRE_BATCH_MAX, StoreError};

/// How often a host looks for records whose retention has passed.
pub const RETIRE_SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Batches one sweep retires at most, so that a long backlog of due records is worked off over
/// several sweeps without holding the store.
const SWEEP_BATCHES_MAX: usize = 16;

/// Retires what is due, a batch at a time; how many records left the store.
///
/// # Errors
///
/// The store failed; what was retired before stays retired.
pub async fn sweep(app: &App) -> Result<usize, StoreError> {
    let mut retired = 0;
    for _ in 0..SWEEP_BATCHES_MAX {
        let count = app.store.retire_credited(app.retain_credited_ms, RETIRE_BATCH_MAX).await?;
        retired += count;
        if count < RETIRE_BATCH_MAX {
            break;
        }
    }
    Ok(retired)
}

/// Records retired from an in-process store after which the freed memory is handed back to the
/// system ([`crate::memory::give_back`]), once the sweep has caught up.
const GIVE_BACK_AFTER_RETIRED: usize = 4096;

/// Runs [`sweep`] until `shutdown` turns true. A failing store is reported once when it starts
/// failing and once when it recovers, not on every sweep. It also forgets expired nonces. With
/// the embedded store, memory freed by retired records goes back to the system once a sweep has
/// caught up, and so does the nonce table's room once it shrinks.
pub async fn run(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    let mut freed = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RETIRE_SWEEP_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let swept = sweep(&app).await;
        // Expired nonces go here too, not only when the next signed request comes.
        let nonces_shrank = app.store.forget_expired_nonces(app.clock.now_ms());
        if let Ok(retired) = swept
            && app.store.lookup_is_local()
        {
            freed += retired;
            let caught_up = retired < SWEEP_BATCHES_MAX * RETIRE_BATCH_MAX;
            if (freed >= GIVE_BACK_AFTER_RETIRED && caught_up) || nonces_shrank {
                freed = 0;
                tokio::task::spawn_blocking(crate::memory::give_back);
            }
        }
        match swept {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("retiring credited records works again");
            }
            Ok(_) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "retiring credited records failed; sweeps go on trying");
            }
            Err(_) => {}
        }
    }
}
