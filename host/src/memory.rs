//! Giving freed memory back to the operating system.
//!
//! When the embedded token store retires a night's credited records, the allocator keeps the
//! freed pages for the process (glibc's malloc returns memory to the system only from the top of
//! its heaps), so the host's resident memory would stay at its peak although the store holds
//! only the backlog. [`give_back`] asks glibc to return every free page (`malloc_trim(0)`, which
//! since glibc 2.8 releases free pages inside the heaps too, with `madvise`).

/// Allocator arenas a serving process uses at most (glibc's default is eight per core).
///
/// Plugin hooks used to run in `block_in_place` sections (they run inline now), so the runtime
/// kept a pool of threads that came and went with the load; blocking tasks (file reads, PostgreSQL
/// and Redis clients' threads) still do, and glibc gives threads arenas of their own up to its limit:
/// memory freed on one thread's arena is not reused by the others, and the host's resident
/// memory crept up rain after rain. Measured (BENCHMARKS.md, "Retention"): eight rains of
/// ≈ 38k grants on the embedded store took the host from 77 MB to 127 MB with the default and
/// from 66 MB to 105 MB with two arenas, at the same grant rate.
pub const ARENAS_MAX: i32 = 2;

/// Allocations of this size or more get pages of their own (`mmap`), which go back to the system
/// when freed, and the threshold stays here.
///
/// glibc starts at 128 KiB but raises the threshold to the size of any mapped block freed, up to
/// 32 MiB, after which large buffers (a journal group's frame, a grown map's table, a batch of
/// ledger entries) come from the heaps, and a heap keeps freed memory that sits below live
/// blocks. Measured on the embedded host (BENCHMARKS.md, "Retention"): by environment first,
/// eight rains came back to 78.5 MB after the nonce window with the threshold fixed, against
/// 86.4 MB with the dynamic one; set here, the retention run kept 16 and 63 bytes a grant
/// after the window in two runs, where the dynamic threshold had kept 44 and 170.
pub const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Caps the allocator's arenas at [`ARENAS_MAX`] and fixes its mmap threshold at
/// [`MMAP_THRESHOLD_BYTES`] (glibc); a no-op elsewhere. Call it before the runtime's threads
/// start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::limit_arenas(ARENAS_MAX);
        glibc::fix_mmap_threshold(MMAP_THRESHOLD_BYTES);
    }
}

/// Returns the allocator's free pages to the system, where the platform can (glibc); a no-op
/// elsewhere. It takes the allocator's locks briefly: call it after large frees, not per request.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::trim();
}

/// Bytes the allocator has handed out and not had back (glibc's `mallinfo2`: the heaps' chunks
/// in use and the mapped blocks), every arena; `None` where the platform does not tell.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return glibc::in_use();
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    return None;
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
        /// The address of a symbol; `RTLD_DEFAULT` (null on glibc) searches the process.
        fn dlsym(handle: *mut std::ffi::c_void, symbol: *const std::ffi::c_char) -> *mut std::ffi::c_void;
    }

    /// glibc ≥ 2.33's `mallinfo2`: the allocator's statistics, summed over its arenas. Looked up
    /// when first asked for, not linked, so that the host still starts on an older glibc.
    type MallInfo2Fn = unsafe extern "C" fn() -> MallInfo2;

    /// glibc's `struct mallinfo2` (`malloc.h`), every field a `size_t`.
    #[repr(C)]
    #[allow(dead_code, reason = "the layout glibc writes; two fields are read")]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }

    pub(super) fn in_use() -> Option<u64> {
        static MALLINFO2: std::sync::OnceLock<Option<MallInfo2Fn>> = std::sync::OnceLock::new();
        let mallinfo2 = MALLINFO2.get_or_init(|| {
            // SAFETY: `dlsym` reads the NUL-terminated name; a null handle is glibc's
            // `RTLD_DEFAULT`. A non-null result is glibc's `mallinfo2`, whose C signature is
            // `struct mallinfo2 mallinfo2(void)`, the type it is cast to.
            unsafe {
                let symbol = dlsym(std::ptr::null_mut(), c"mallinfo2".as_ptr());
                (!symbol.is_null()).then(|| std::mem::transmute::<*mut std::ffi::c_void, MallInfo2Fn>(symbol))
            }
        });
        // SAFETY: `mallinfo2` takes no arguments and returns its statistics by value.
        let info = unsafe { (*mallinfo2)?() };
        Some((info.uordblks + info.hblkhd) as u64)
    }

    /// `M_ARENA_MAX` in glibc's `malloc.h`.
    const M_ARENA_MAX: i32 = -8;

    /// `M_MMAP_THRESHOLD` in glibc's `malloc.h`; setting it also turns the dynamic threshold off.
    const M_MMAP_THRESHOLD: i32 = -3;

    pub(super) fn fix_mmap_threshold(bytes: i32) {
        // SAFETY: `mallopt` takes no pointers; the threshold only decides how later allocations
        // are served.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, bytes);
        }
    }

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
