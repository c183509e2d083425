//! The snapshot being answered, and on a primary the hosts' reports as of it. The engine
//! publishes a new pair atomically; readers (DNS workers, admin, write-back) load them without
//! locks; subscribers (write-back) are woken on every publish instead of polling.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use tokio::sync::watch;

use crate::reports::Reports;
use crate::zone::Snapshot;

pub struct Published {
    current: ArcSwap<Snapshot>,
    /// A primary's reports, stored before their snapshot (each says which one it goes with);
    /// None before its first publish, and on a secondary.
    reports: ArcSwapOption<Reports>,
    /// The generation of the snapshot last published.
    changed: watch::Sender<u64>,
}

impl Published {
    pub fn new(first: Snapshot) -> Published {
        let generation = first.generation;
        Published {
            current: ArcSwap::from_pointee(first),
            reports: ArcSwapOption::empty(),
            changed: watch::Sender::new(generation),
        }
    }

    /// The current snapshot (cheap; hold it only for the duration of one answer).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot, to keep across awaits.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The hosts' reports last published, if any (a primary's, see [`Published::publish_with`]).
    pub fn reports(&self) -> Option<Arc<Reports>> {
        self.reports.load_full()
    }

    /// The hosts' reports last published, or else what the current snapshot says of its hosts
    /// (a secondary's).
    pub fn reports_or_transferred(&self) -> Arc<Reports> {
        self.reports()
            .unwrap_or_else(|| Arc::new(Reports::transferred(&self.load())))
    }

    /// Makes `snap` the answered snapshot, `reports` the reports as of it, and wakes every
    /// subscriber.
    pub fn publish_with(&self, snap: Arc<Snapshot>, reports: Arc<Reports>) {
        self.reports.store(Some(reports));
        self.publish_arc(snap);
    }

    /// Makes `snap` the answered snapshot and wakes every subscriber.
    pub fn publish(&self, snap: Snapshot) {
        self.publish_arc(Arc::new(snap));
    }

    /// [`Published::publish`] for a snapshot the caller keeps reading.
    pub fn publish_arc(&self, snap: Arc<Snapshot>) {
        let generation = snap.generation;
        self.current.store(snap);
        self.changed.send_replace(generation);
    }

    /// Woken (with the new generation) on every publish after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
