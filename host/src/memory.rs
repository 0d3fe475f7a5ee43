//! Giving freed memory back to the operating system.
//!
//! When the embedded token store retires a night's credited records, the allocator keeps the
//! freed pages for the process (glibc's malloc returns memory to the system only from the top of
//! its heaps), so the host's resident memory would stay at its peak although the store holds
//! only the backlog. [`give_back`] asks glibc to return every free page (`malloc_trim(0)`, which
//! since glibc 2.8 releases free pages inside the heaps too, with `madvise`).

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
    }

    pub(super) fn trim() {
        // SAFETY: `malloc_trim` takes no pointers and may be called at any time from any
        // thread; it only changes which free pages the allocator keeps mapped.
        unsafe {
            malloc_trim(0);
        }
    }
}
