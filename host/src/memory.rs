//! Giving freed memory back to the operating system.
//!
//! When the embedded token store retires a night's credited records, the allocator keeps the
//! freed pages for the process (glibc's malloc returns memory to the system only from the top of
//! its heaps), so the host's resident memory would stay at its peak although the store holds
//! only the backlog. [`give_back`] asks glibc to return every free page (`malloc_trim(0)`, which
//! since glibc 2.8 releases free pages inside the heaps too, with `madvise`).

/// Allocator arenas a serving process uses at most (glibc's default is eight per core).
///
/// Plugin hooks run in `block_in_place` sections, so the runtime keeps a pool of threads that
/// comes and goes with the load, and glibc gives threads arenas of their own up to its limit:
/// memory freed on one thread's arena is not reused by the others, and the host's resident
/// memory crept up rain after rain. Measured (BENCHMARKS.md, "Retention"): eight rains of
/// ≈ 38k grants on the embedded store took the host from 77 MB to 127 MB with the default and
/// from 66 MB to 105 MB with two arenas, at the same grant rate.
pub const ARENAS_MAX: i32 = 2;

/// Caps the allocator's arenas at [`ARENAS_MAX`] (glibc); a no-op elsewhere. Call it before the
/// runtime's threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::limit_arenas(ARENAS_MAX);
}

/// Returns the allocator's free pages to the system, where the platform can (glibc); a no-op
/// elsewhere. It takes the allocator's locks briefly: call it after large frees, not per request.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    unsafe extern "C" {
        /// glibc: releases free memory from the heaps; `pad` bytes are kept at the top. Returns 1
        /// when memory was released.
        fn malloc_trim(pad: usize) -> i32;
        /// glibc: sets an allocator parameter; returns 1 on success.
        fn mallopt(param: i32, value: i32) -> i32;
    }

    /// `M_ARENA_MAX` in glibc's `malloc.h`.
    const M_ARENA_MAX: i32 = -8;

    pub(super) fn limit_arenas(arenas: i32) {
        // SAFETY: `mallopt` takes no pointers; `M_ARENA_MAX` only bounds arenas created later.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }

    pub(super) fn trim() {
        // SAFETY: `malloc_trim` takes no pointers and may be called at any time from any
        // thread; it only changes which free pages the allocator keeps mapped.
        unsafe {
            malloc_trim(0);
        }
    }
}
