//! The snapshot being answered. The engine publishes a new one atomically; readers (DNS workers,
//! admin) load it without locks; subscribers (write-back) are woken on every publish instead of
//! polling.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::zone::Snapshot;

pub struct Published {
    current: ArcSwap<Snapshot>,
    /// The generation of the snapshot last published.
    changed: watch::Sender<u64>,
}

impl Published {
    pub fn new(first: Snapshot) -> Published {
        let generation = first.generation;
        Published {
            current: ArcSwap::from_pointee(first),
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
