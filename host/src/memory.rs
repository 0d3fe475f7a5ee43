//! The process's allocator: jemalloc, what it has handed out, and giving freed memory back.
//!
//! Every hongbao process allocates through jemalloc ([`ALLOCATOR`]), not glibc's malloc.
//! Measured on the embedded host (BENCHMARKS.md, "The allocator", `bench suite --only
//! embedded` on one machine): one grant a request went from 12.8–13.0k grants/s with glibc as
//! the host had tuned it (two arenas, a fixed mmap threshold) and 15.1k with glibc's defaults to
//! 15.7–16.4k, batches of 16 from 15.0–17.4k and 20.1k to 23.0–24.2k, and resident memory a
//! pending token from 1,530 to 1,435 bytes. jemalloc keeps same-sized allocations together in
//! slabs and serves each thread from a small cache in front of a few shared arenas; glibc's
//! arenas are either one per thread (their free memory not shared) or, capped, contended.
//!
//! jemalloc's background thread ([`start_background_purge`]) returns pages that stayed free for
//! its decay time to the system without a grant waiting on it; [`give_back`] returns them at
//! once, after the retention sweep frees a night's credited records. Fuzzing builds
//! (`cfg(fuzzing)`) keep the system allocator, whose allocations the sanitizers watch.

/// The allocator of every hongbao process (the server, its tests and benchmarks).
#[cfg(not(fuzzing))]
#[global_allocator]
pub static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets the allocator's own thread return pages that stayed free for its decay time (10 s) to
/// the system, instead of the threads that allocate (the grants') doing it in passing. Call it
/// once when the server starts; a no-op without jemalloc.
pub fn start_background_purge() {
    #[cfg(not(fuzzing))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "the allocator's background thread did not start; freed pages go back when threads allocate");
    }
}

/// Returns the allocator's free pages to the system now (every arena's). It takes the arenas'
/// locks briefly: call it after large frees, not per request. A no-op without jemalloc.
pub fn give_back() {
    #[cfg(not(fuzzing))]
    jemalloc::purge_all_arenas();
}

/// Bytes the allocator has handed out and not had back (jemalloc's `stats.allocated`, read
/// after advancing its statistics' epoch); `None` where it does not tell.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(not(fuzzing))]
    {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::allocated::read().ok().map(|bytes| bytes as u64)
    }
    #[cfg(fuzzing)]
    None
}

#[cfg(not(fuzzing))]
#[allow(unsafe_code)]
mod jemalloc {
    /// `arena.<i>.purge` with `MALLCTL_ARENAS_ALL` (4096) for `<i>`: every arena's unused dirty
    /// pages go back to the system.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";

    pub(super) fn purge_all_arenas() {
        // SAFETY: the name is NUL-terminated; `arena.<i>.purge` neither reads nor writes a
        // value, so every pointer is null and the length zero, as jemalloc requires of it.
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if status != 0 {
            tracing::debug!(status, "the allocator did not purge its arenas");
        }
    }
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    /// Far more than the other tests running beside this one allocate or free meanwhile.
    const BLOCK_BYTES: u64 = 512 << 20;

    // Proves the figure is the allocator's own count: it holds a block while the block lives
    // and lets it go when it is freed.
    #[test]
    fn heap_in_use_counts_what_is_allocated() {
        let block = vec![0u8; BLOCK_BYTES as usize];
        let during = heap_in_use().expect("jemalloc tells");
        assert!(during >= BLOCK_BYTES, "{during}");
        drop(std::hint::black_box(block));
        let after = heap_in_use().expect("jemalloc tells");
        assert!(after + BLOCK_BYTES / 2 <= during, "{during} → {after}");
    }
}
