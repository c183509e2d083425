//! How long a zone's loop waits before its next round. After a round that fetched what it
//! needed (or found nothing newer), `--refresh`. After rounds that failed (no primary answered,
//! or the transfer was refused, e.g. by a primary over its `--transfers-out`), longer each time
//! and jittered: secondaries turned away together (a DaemonSet rollout, a primary's restart)
//! come back spread out instead of together. A NOTIFY still starts a round at once.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The longest wait after failures, in refresh periods...
const MAX_PERIODS: u32 = 16;
/// ...and in time, unless --refresh itself is longer.
const MAX_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub(super) struct Backoff {
    refresh: Duration,
    /// Failed rounds in a row.
    failures: u32,
}

impl Backoff {
    pub fn new(refresh: Duration) -> Backoff {
        Backoff {
            refresh,
            failures: 0,
        }
    }

    /// The longest wait after failures: 16 refresh periods, at most 5 minutes (or one period
    /// when that is longer).
    pub fn max(&self) -> Duration {
        (self.refresh * MAX_PERIODS).min(MAX_WAIT.max(self.refresh))
    }

    /// The wait after a round that did what it had to: `--refresh`.
    pub fn succeeded(&mut self) -> Duration {
        self.failures = 0;
        self.refresh
    }

    /// The wait after the n-th failed round in a row: between half and all of
    /// `refresh × 2^(n-1)`, at most [`Backoff::max`].
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(31);
        let ceiling = self
            .refresh
            .checked_mul(1 << doublings)
            .map_or(self.max(), |c| c.min(self.max()));
        ceiling / 2 + ceiling.mul_f64(random_unit() / 2.0)
    }
}

/// A number in [0, 1) that differs between processes and calls (the jitter's only need).
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_wait_within_jitter_up_to_the_bound_and_success_resets() {
        let refresh = Duration::from_secs(5);
        let mut b = Backoff::new(refresh);
        assert_eq!(b.max(), Duration::from_secs(80));
        let mut waits = Vec::new();
        for n in 0..8u32 {
            let w = b.failed();
            let ceiling = (refresh * 2u32.pow(n)).min(b.max());
            assert!(w >= ceiling / 2 && w <= ceiling, "failure {}: {w:?}", n + 1);
            waits.push(w);
        }
        // Jitter: the eight waits are not all at the same point of their ranges.
        let points: Vec<u128> = waits
            .iter()
            .enumerate()
            .map(|(n, w)| {
                w.as_nanos() * 1000 / (refresh * 2u32.pow(n as u32)).min(b.max()).as_nanos()
            })
            .collect();
        assert!(points.iter().any(|p| *p != points[0]), "{points:?}");
        assert_eq!(b.succeeded(), refresh);
        assert!(b.failed() <= refresh, "from the start again");
        // A long refresh is its own bound; a short one sixteen periods.
        assert_eq!(
            Backoff::new(Duration::from_secs(3600)).max(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            Backoff::new(Duration::from_millis(100)).max(),
            Duration::from_millis(1600)
        );
        // Many failures do not overflow.
        let mut long = Backoff::new(Duration::from_secs(3600));
        for _ in 0..100 {
            assert!(long.failed() <= Duration::from_secs(3600));
        }
    }
}
