//! Background threads (the engine's rebuilds, the file source's parsing, the Kubernetes
//! watches) yield the CPU to the DNS workers: on a core that also answers, a rebuild would
//! otherwise take its time slices from the UDP worker and queries would wait in the socket
//! buffer for as long as it runs.

use tracing::debug;

/// The nice value of background threads: a CFS weight of about a tenth of a worker's, so a
/// worker that has queries waiting keeps ~90 % of a shared core; an idle core is still theirs.
const NICE: i32 = 10;

/// The time slice background threads ask for (the shortest the kernel grants): a worker waits
/// for at most one slice of theirs (the default is 3 ms, the whole of the tail's budget).
/// Kernels before 6.12 ignore it.
#[cfg(target_os = "linux")]
const SLICE_NS: u64 = 100_000;

/// Moves the calling thread (and the threads it starts later) to `SCHED_BATCH`, which never
/// preempts a running thread on wake-up, at nice [`NICE`], with short slices. Only ever lowers
/// the priority, which needs no privilege; a refusal is logged and ignored.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_BATCH as u32,
            sched_flags: 0,
            sched_nice: NICE,
            sched_priority: 0,
            sched_runtime: SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: sched_setattr on the calling thread (pid 0) with an initialised attribute
        // that lives across the call.
        let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
        if set == 0 {
            return;
        }
        // Kernels that refuse the attribute (before 3.14, or a seccomp filter): the policy and
        // the nice value one at a time.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain system calls on the calling thread; `param` lives across the call.
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
