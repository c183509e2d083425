//! The one writer: applies source events to the registry, reconciles the allocator, persists the
//! table, then publishes a new snapshot. Runs on its own thread, so fsync and rebuilds never stall
//! the DNS workers; queries only ever see complete snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tracing::{error, info, warn};

use crate::alloc::{Change, Table};
use crate::metrics::{FamilyLabels, Metrics};
use crate::pipeline::Pipeline;
use crate::source::SourceEvent;
use crate::zone::{unix_now, Snapshot};

/// What a store says about a commit.
#[derive(Debug)]
pub enum Commit {
    /// The new table is durable (and, for a shared store, every new claim is ours).
    Done,
    /// Another instance claimed first: this is the store's table now. The engine adopts it and
    /// reconciles again; it never overwrites the other claim.
    Conflict(Table),
}

/// Persists the allocation table: the file store, or a store shared by many instances.
pub trait Store: Send {
    /// Makes `changes` durable (each host's allocation before and after; `table` is the whole
    /// table after them). Returns only once they would survive a crash.
    fn commit(&mut self, changes: &[Change], table: &Table) -> anyhow::Result<Commit>;
}

impl Store for crate::alloc::file_store::FileStore {
    fn commit(&mut self, changes: &[Change], table: &Table) -> anyhow::Result<Commit> {
        self.apply(changes, table)?;
        Ok(Commit::Done)
    }
}

/// How many times one rebuild adopts a conflicting shared table before giving up until the next.
const MAX_CONFLICT_RETRIES: usize = 8;

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
    fn synced(&self, source: &str) {
        self.inner.lock().unwrap().pending.remove(source);
    }
    pub fn set_stale(&self, source: &str, why: Option<String>) {
        let mut s = self.inner.lock().unwrap();
        match why {
            Some(w) => s.stale.insert(source.to_string(), w),
            None => s.stale.remove(source),
        };
    }
    fn all_synced(&self) -> bool {
        self.inner.lock().unwrap().pending.is_empty()
    }
    fn set_published(&self) {
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

pub struct Engine {
    pub pipeline: Pipeline,
    pub store: Box<dyn Store>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Engine {
    fn apply(&mut self, ev: SourceEvent) -> bool {
        match ev {
            SourceEvent::Unit { key, entries } => self.pipeline.set_unit(key, entries),
            SourceEvent::RemoveUnit(key) => self.pipeline.remove_unit(&key),
            SourceEvent::RemoveCluster(c) => self.pipeline.remove_cluster(&c),
            SourceEvent::Synced(name) => {
                self.health.synced(&name);
                true
            }
            SourceEvent::StoreChanged(table) => self.adopt(table),
        }
    }

    /// Takes a table written by another instance (seen through the store's watch) as the truth.
    fn adopt(&mut self, table: Table) -> bool {
        if table == *self.pipeline.allocator.table() {
            return false;
        }
        if let Err(errors) = self.pipeline.allocator.validate(&table) {
            error!(errors = %errors.join("; "), "shared allocation table fails validation; not adopting it");
            return false;
        }
        self.pipeline.adopt(table);
        true
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, rx: Receiver<SourceEvent>) {
        // Holds are checked on a fixed beat, not after a quiet spell: sources that keep sending
        // events which change nothing (resyncs, rewritten comments) must not postpone expiry.
        const EXPIRY_CHECK: Duration = Duration::from_secs(5);
        let mut dirty = false;
        let mut next_check = Instant::now() + EXPIRY_CHECK;
        loop {
            let wait = next_check.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    dirty |= self.apply(ev);
                    while let Ok(ev) = rx.try_recv() {
                        dirty |= self.apply(ev);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_check {
                dirty |= self.hold_expired();
                next_check = Instant::now() + EXPIRY_CHECK;
            }
            // Allocate only once every source delivered its full state: instances that see the
            // same hosts then allocate them in the same (sorted) order and agree.
            if dirty && self.health.all_synced() {
                dirty = !self.rebuild();
            }
        }
    }

    fn hold_expired(&self) -> bool {
        self.pipeline.holds_due(unix_now())
    }

    /// One pass sources → registry → allocator → store → snapshot, over the hosts the changes
    /// since the last pass touched. Returns false when the allocations could not be persisted:
    /// nothing new is published then, and the pass is retried.
    pub fn rebuild(&mut self) -> bool {
        let started = Instant::now();
        let hosts = self.pipeline.pending();
        let mut attempts = 0;
        let mut commit_took = Duration::ZERO;
        let mut reconcile_took = Duration::ZERO;
        let outcome = loop {
            let reconcile_started = Instant::now();
            let outcome = self.pipeline.reconcile(unix_now());
            reconcile_took += reconcile_started.elapsed();
            let changes = self.pipeline.allocator.take_changes();
            if changes.is_empty() {
                break outcome;
            }
            let store = &mut self.store;
            let (committed, took) = self.pipeline.render_while(|table| {
                let started = Instant::now();
                (store.commit(&changes, table), started.elapsed())
            });
            commit_took += took;
            match committed {
                Ok(Commit::Done) => break outcome,
                Ok(Commit::Conflict(theirs)) if attempts < MAX_CONFLICT_RETRIES => {
                    attempts += 1;
                    warn!(
                        attempts,
                        "another instance claimed first; adopting its table and retrying"
                    );
                    self.pipeline.allocator.rollback(&changes);
                    self.pipeline.adopt(theirs);
                }
                result => {
                    let why = match result {
                        Err(e) => format!("{e:#}"),
                        _ => "too many conflicting claims".to_string(),
                    };
                    error!(error = %why, "cannot persist allocations; not publishing new VIPs, will retry");
                    self.metrics.store_errors.inc();
                    // Memory must not run ahead of the store: the next pass starts from what is durable.
                    self.pipeline.allocator.rollback(&changes);
                    return false;
                }
            }
        };
        self.log_outcome(&outcome);
        let build_started = Instant::now();
        let snap = self.pipeline.publish();
        let build_took = build_started.elapsed();
        self.record_metrics(&snap);
        let serial = snap.serial;
        let served = snap.served_hosts();
        // The metric first: whoever sees the new answers also sees how long they took.
        let took = started.elapsed();
        self.metrics.snapshot_build.observe(took.as_secs_f64());
        self.snapshot.store(Arc::new(snap));
        if hosts > 1000 {
            // Before readiness: a first load should not be reported ready at its peak.
            release_freed_memory();
        }
        self.health.set_published();
        info!(
            serial,
            hosts = served,
            touched = hosts,
            entries = self.pipeline.registry.entry_count(),
            took_ms = took.as_millis() as u64,
            // Merging and allocating; the durable write (while the zone is rendered); the rest
            // of the rendering and the snapshot.
            reconcile_ms = reconcile_took.as_millis() as u64,
            commit_ms = commit_took.as_millis() as u64,
            build_ms = build_took.as_millis() as u64,
            "snapshot published"
        );
        true
    }

    fn log_outcome(&self, outcome: &crate::alloc::Outcome) {
        // A first load of 100,000 hosts must not write 100,000 lines: each kind is logged one
        // line per host up to LOG_EACH, then once with the count.
        let each = |n: usize| n.min(LOG_EACH);
        for (host, ip) in &outcome.allocated[..each(outcome.allocated.len())] {
            info!(%host, %ip, "VIP allocated");
        }
        if outcome.allocated.len() > LOG_EACH {
            info!(
                more = outcome.allocated.len() - LOG_EACH,
                total = outcome.allocated.len(),
                "VIPs allocated (the rest: `globaldns allocations`, /debug/hosts)"
            );
        }
        for (host, old, new) in &outcome.displaced {
            warn!(%host, %old, new = ?new, "auto VIP displaced by an address written in a ServiceEntry");
            self.metrics.vip_conflicts.inc();
        }
        for (host, family) in &outcome.exhausted[..each(outcome.exhausted.len())] {
            error!(%host, family, "VIP range exhausted: host not served");
        }
        if outcome.exhausted.len() > LOG_EACH {
            error!(
                more = outcome.exhausted.len() - LOG_EACH,
                total = outcome.exhausted.len(),
                "VIP range exhausted: more hosts not served (widen --vip-range)"
            );
        }
        self.metrics
            .vip_exhausted
            .inc_by(outcome.exhausted.len() as u64);
        for host in &outcome.released[..each(outcome.released.len())] {
            info!(%host, hold_secs = self.pipeline.allocator.hold_secs, "host gone; VIP held");
        }
        if outcome.released.len() > LOG_EACH {
            info!(
                more = outcome.released.len() - LOG_EACH,
                "more hosts gone; VIPs held"
            );
        }
        for host in &outcome.reclaimed[..each(outcome.reclaimed.len())] {
            info!(%host, "host back within its hold; VIP given back");
        }
        if outcome.reclaimed.len() > LOG_EACH {
            info!(
                more = outcome.reclaimed.len() - LOG_EACH,
                "more hosts back; VIPs given back"
            );
        }
        for host in &outcome.expired[..each(outcome.expired.len())] {
            info!(%host, "hold expired; VIP freed");
        }
        if outcome.expired.len() > LOG_EACH {
            info!(
                more = outcome.expired.len() - LOG_EACH,
                "more holds expired; VIPs freed"
            );
        }
    }

    fn record_metrics(&self, snap: &Snapshot) {
        let m = &self.metrics;
        let served = snap.served_hosts();
        m.hosts_served.set(served as i64);
        m.hosts_unserved.set((snap.host_count() - served) as i64);
        m.zone_serial.set(i64::from(snap.serial));
        let table = self.pipeline.allocator.table();
        let v4 = table.values().filter(|a| a.ipv4.is_some()).count();
        let v6 = table.values().filter(|a| a.ipv6.is_some()).count();
        m.vips_allocated
            .get_or_create(&FamilyLabels { family: "ipv4" })
            .set(v4 as i64);
        m.vips_allocated
            .get_or_create(&FamilyLabels { family: "ipv6" })
            .set(v6 as i64);
        m.vips_held
            .set(table.values().filter(|a| a.released_at.is_some()).count() as i64);
    }
}

/// Hands the pages freed by a large pass (a first load's parse trees, a replaced snapshot) back
/// to the kernel now: allocators keep freed memory for reuse, and the server then sits at its
/// peak for as long as nothing else allocates. The server's allocator is mimalloc; glibc's
/// malloc still serves C code and builds without it.
fn release_freed_memory() {
    // SAFETY: both only release memory that is already free; neither has preconditions.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::malloc_trim(0);
    }
}

/// Per pass, how many hosts of one kind (allocated, exhausted, …) get a log line of their own.
const LOG_EACH: usize = 50;

/// Parses `--vip-range` values, refusing overlaps (one address must belong to one range).
pub fn check_ranges(ranges: &[IpNet]) -> anyhow::Result<()> {
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                anyhow::bail!("--vip-range {a} and {b} overlap");
            }
        }
    }
    if ranges.is_empty() {
        anyhow::bail!("at least one --vip-range is needed");
    }
    Ok(())
}
