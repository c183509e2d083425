//! Handing freed memory back to the system. The server's allocator (mimalloc, see `main.rs`)
//! keeps freed pages for reuse in the heap of the thread that used them: after a burst (a
//! first load, many zone transfers at once) the server would otherwise sit at its peak for as
//! long as nothing else allocates on those threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// mimalloc's `arena_eager_commit` option (`mi_option_e` in mimalloc.h: index 4 in v2, where it
/// was `eager_region_commit`, and in v3; libmimalloc-sys names neither).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets the allocator's options, unless the environment sets them (`MIMALLOC_*`). Must run before
/// the first allocation (mimalloc reserves its first arena then, with the options it has): the
/// server calls it from a constructor (`main.rs`). Allocates nothing.
///
/// Arenas are not committed eagerly: on Linux mimalloc commits a whole arena chunk up front by
/// default, and the pages it then hands back after a large change (a secondary's first transfer)
/// stay partly resident. Measured on a secondary at 100,000 hosts (`benches/memory.sh`'s set-up,
/// five starts each): VmRSS 77.6–81.5 MiB without eager commit against 81.7–87.5 MiB with it, and
/// about 3 MiB less at 1,000 hosts.
pub fn configure_allocator() {
    // SAFETY: getenv of a NUL-terminated name (no allocation, unlike std::env), and an option
    // set; no other precondition.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// Bumped by [`release_when_idle`]; each runtime worker releases once per new value.
static WANTED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RELEASED: Cell<u64> = const { Cell::new(0) };
}

/// Releases what the calling thread's heap holds free (and glibc's, which still serves C code
/// and builds without mimalloc).
pub fn release_now() {
    // SAFETY: both only release memory that is already free; neither has preconditions.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::malloc_trim(0);
    }
}

/// Asks every worker of the async runtime to release its freed memory the next time it has
/// nothing to do ([`on_park`]): mimalloc releases a thread's pages only on that thread.
pub fn release_when_idle() {
    WANTED.fetch_add(1, Ordering::Relaxed);
}

/// The runtime's `on_thread_park` hook: cheap unless a release was asked for since this
/// thread's last one.
pub fn on_park() {
    let wanted = WANTED.load(Ordering::Relaxed);
    RELEASED.with(|seen| {
        if seen.get() != wanted {
            seen.set(wanted);
            release_now();
        }
    });
}
