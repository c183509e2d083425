//! Outgoing zone transfers as a whole: at most `--transfers-out` are sent at once, the rest wait
//! up to [`TransfersOut::wait`] for a turn and are then answered SERVFAIL (what BIND answers past
//! its `transfers-out`; secondaries retry later); the transfers of one snapshot share its zone's
//! [`Order`]; when the last transfer of a burst ends, the runtime's workers hand the memory it
//! used back to the system.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_proto::rr::LowerName;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Metrics;
use crate::zone::{Order, Snapshot};

/// BIND's `transfers-out` default.
pub const DEFAULT_LIMIT: usize = 10;
/// How long a transfer over the limit waits for a turn by default: well within the read
/// timeouts of secondaries (Knot's default for remote I/O is 5 s, ours 10 s).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

pub struct TransfersOut {
    slots: Semaphore,
    /// How long a transfer over the limit waits before it is answered SERVFAIL.
    pub wait: Duration,
    active: AtomicUsize,
    /// The orders in use, by snapshot generation and zone; gone with their last transfer.
    orders: Mutex<Vec<(u64, LowerName, Weak<Order>)>>,
    /// One order is made at a time: transfers of the same snapshot that arrive together wait
    /// for the first one's instead of each making its own.
    making: tokio::sync::Mutex<()>,
    metrics: Option<Arc<Metrics>>,
}

impl Default for TransfersOut {
    fn default() -> Self {
        TransfersOut::new(DEFAULT_LIMIT, DEFAULT_WAIT, None)
    }
}

/// A transfer's turn: held while it is sent.
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    out: &'a TransfersOut,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let left = self.out.active.fetch_sub(1, Ordering::Relaxed) - 1;
        if let Some(m) = &self.out.metrics {
            m.transfer.active.set(left as i64);
        }
        if left == 0 {
            crate::memory::release_when_idle();
        }
    }
}

/// Counts a transfer waiting for a turn for as long as it waits (its task may be dropped).
struct Waiting<'a>(&'a Metrics);

impl<'a> Waiting<'a> {
    fn new(m: &'a Metrics) -> Waiting<'a> {
        m.transfer.waiting.inc();
        Waiting(m)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.transfer.waiting.dec();
    }
}

impl TransfersOut {
    pub fn new(limit: usize, wait: Duration, metrics: Option<Arc<Metrics>>) -> TransfersOut {
        TransfersOut {
            slots: Semaphore::new(limit.max(1)),
            wait,
            active: AtomicUsize::new(0),
            orders: Mutex::default(),
            making: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// A turn to send a transfer, waiting up to [`TransfersOut::wait`]; None: too many are
    /// being sent.
    pub async fn slot(&self) -> Option<Slot<'_>> {
        let permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = self.metrics.as_deref().map(Waiting::new);
                tokio::time::timeout(self.wait, self.slots.acquire())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let now = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(m) = &self.metrics {
            m.transfer.active.set(now as i64);
        }
        Some(Slot {
            _permit: permit,
            out: self,
        })
    }

    fn cached(&self, generation: u64, zone: &LowerName) -> Option<Arc<Order>> {
        let orders = self.orders.lock().unwrap();
        orders
            .iter()
            .find(|(g, z, _)| *g == generation && z == zone)
            .and_then(|(_, _, o)| o.upgrade())
    }

    /// The order of `zone` in `snap`, shared with the other transfers of that snapshot; None
    /// when `zone` is not one of its zones.
    pub async fn order(&self, snap: &Snapshot, zone: &LowerName) -> Option<Arc<Order>> {
        if let Some(o) = self.cached(snap.generation, zone) {
            return Some(o);
        }
        let _making = self.making.lock().await;
        if let Some(o) = self.cached(snap.generation, zone) {
            return Some(o);
        }
        let order = Arc::new(snap.transfer_order(zone)?);
        let mut orders = self.orders.lock().unwrap();
        orders.retain(|(_, _, o)| o.strong_count() > 0);
        orders.push((snap.generation, zone.clone(), Arc::downgrade(&order)));
        Some(order)
    }
}
