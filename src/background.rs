//! Background threads (the engine's rebuilds, the file source's parsing) yield the CPU to the
//! DNS workers: on a core that also answers, a rebuild would otherwise take its time slices
//! from the UDP worker and queries would wait in the socket buffer for as long as it runs.

use tracing::debug;

/// The nice value of background threads: a CFS weight of about a tenth of a worker's, so a
/// worker that has queries waiting keeps ~90 % of a shared core; an idle core is still theirs.
const NICE: libc::c_int = 10;

/// Moves the calling thread (and the threads it starts later) to `SCHED_BATCH`, which never
/// preempts a running thread on wake-up, at nice [`NICE`]. Only ever lowers the priority, which
/// needs no privilege; a refusal is logged and ignored.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system calls on the calling thread (pid 0 / its own tid); `param` lives
        // across the call.
        let (policy, nice) = unsafe {
            (
                libc::sched_setscheduler(0, libc::SCHED_BATCH, &param),
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE),
            )
        };
        if policy != 0 || nice != 0 {
            debug!(error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
        }
    }
}
