//! Readiness: which sources have not yet delivered a full state, which are stale, and whether a
//! snapshot including all of them has been published (`/readyz`, and the engine's gate on
//! allocating before every source is known).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Readiness: which sources have not yet delivered a full state, which are stale, and whether a
/// snapshot including all of them has been published.
#[derive(Default)]
pub struct Health {
    inner: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    pending: BTreeSet<String>,
    stale: BTreeMap<String, String>,
    published: bool,
}

impl Health {
    pub fn expect(&self, source: &str) {
        self.inner
            .lock()
            .unwrap()
            .pending
            .insert(source.to_string());
    }
    pub fn forget(&self, source: &str) {
        let mut s = self.inner.lock().unwrap();
        s.pending.remove(source);
        s.stale.remove(source);
    }
    pub fn synced(&self, source: &str) {
        self.inner.lock().unwrap().pending.remove(source);
    }
    pub fn set_stale(&self, source: &str, why: Option<String>) {
        let mut s = self.inner.lock().unwrap();
        match why {
            Some(w) => s.stale.insert(source.to_string(), w),
            None => s.stale.remove(source),
        };
    }
    pub fn all_synced(&self) -> bool {
        self.inner.lock().unwrap().pending.is_empty()
    }
    pub fn set_published(&self) {
        self.inner.lock().unwrap().published = true;
    }
    /// (ready, human-readable detail for `/readyz`).
    pub fn report(&self) -> (bool, String) {
        let s = self.inner.lock().unwrap();
        let ready = s.published && s.pending.is_empty();
        let mut lines = vec![if ready {
            "ready".to_string()
        } else {
            "not ready".to_string()
        }];
        lines.extend(
            s.pending
                .iter()
                .map(|p| format!("pending: {p} (first full list not done)")),
        );
        lines.extend(
            s.stale
                .iter()
                .map(|(p, w)| format!("stale: {p} ({w}); serving its last-known entries")),
        );
        (ready, lines.join("\n") + "\n")
    }
}
