//! Handing freed memory back to the system. The server's allocator (mimalloc, see `main.rs`)
//! keeps freed pages for reuse in the heap of the thread that used them: after a burst (a
//! first load, many zone transfers at once) the server would otherwise sit at its peak for as
//! long as nothing else allocates on those threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

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
