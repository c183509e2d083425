//! The one writer: routes inputs (source events, a shared store's changes) into the pipeline,
//! runs its write transaction when something changed, and publishes the snapshot it returns.
//! Runs on its own thread, so fsync and rebuilds never stall the DNS workers; queries only ever
//! see complete snapshots.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::alloc::metrics::FamilyLabels;
use crate::alloc::store::{Store, StoreEvent};
use crate::health::Health;
pub use crate::input::Input;
use crate::input::SourceEvent;
use crate::metrics::{KindLabels, Metrics};
use crate::pipeline::Pipeline;
use crate::published::Published;
use crate::reports::Reports;
use crate::zone::{unix_now, Snapshot};

pub struct Engine {
    pub pipeline: Pipeline,
    pub store: Box<dyn Store>,
    pub snapshot: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Keeps serials increasing across restarts (None: `check`-like uses, nothing kept).
    pub serial_floor: Option<crate::serial_floor::SerialFloor>,
    /// The journal kept on disk, for IXFR across restarts (None: not kept).
    pub journal_file: Option<crate::zone::JournalFile>,
}

impl Engine {
    /// Routes one input; returns whether a pass is due.
    fn apply(&mut self, input: Input) -> bool {
        match input {
            Input::Source(SourceEvent::Unit { key, entries }) => {
                self.pipeline.set_unit(key, entries)
            }
            Input::Source(SourceEvent::RemoveUnit(key)) => self.pipeline.remove_unit(&key),
            Input::Source(SourceEvent::RemoveCluster(c)) => self.pipeline.remove_cluster(&c),
            Input::Source(SourceEvent::Synced(name)) => {
                self.health.synced(&name);
                true
            }
            Input::Store(StoreEvent::Changed) => {
                let Some(table) = self.store.shared_table() else {
                    return false;
                };
                match self.pipeline.adopt(table) {
                    Ok(changed) => changed,
                    Err(errors) => {
                        error!(errors = %errors.join("; "), "shared allocation table fails validation; not adopting it");
                        false
                    }
                }
            }
            // Hosts waiting for another instance's claim are looked at again under the new rule.
            Input::Store(StoreEvent::DeferChanged) => {
                self.pipeline.wake_deferred(Instant::now(), true)
            }
        }
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, rx: Receiver<Input>) {
        // Holds are checked on a fixed beat, not after a quiet spell: sources that keep sending
        // events which change nothing (resyncs, rewritten comments) must not postpone expiry.
        const EXPIRY_CHECK: Duration = Duration::from_secs(5);
        let mut dirty = false;
        // When the oldest change not yet published arrived (globaldns_propagation_seconds).
        let mut since: Option<Instant> = None;
        let mut next_check = Instant::now() + EXPIRY_CHECK;
        loop {
            // Also woken when the grace of a host waiting for another instance's claim runs out.
            let until = self
                .pipeline
                .next_deferral_due()
                .map_or(next_check, |due| due.min(next_check));
            let wait = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    let arrived = Instant::now();
                    let mut changed = false;
                    // A shared store's change is read whole when handled (`shared_table`: the
                    // table as it is now), so several queued are one: while another instance
                    // makes a large commit, its watch reports every 20 ms and each would cost
                    // this instance a table built and compared.
                    let mut store_changed = false;
                    for ev in std::iter::once(ev).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                        match ev {
                            Input::Store(StoreEvent::Changed) => store_changed = true,
                            ev => changed |= self.apply(ev),
                        }
                    }
                    if store_changed {
                        changed |= self.apply(Input::Store(StoreEvent::Changed));
                    }
                    if changed {
                        since.get_or_insert(arrived);
                    }
                    dirty |= changed;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_check {
                dirty |= self.pipeline.holds_due(unix_now());
                next_check = Instant::now() + EXPIRY_CHECK;
            }
            if self
                .pipeline
                .next_deferral_due()
                .is_some_and(|due| due <= Instant::now())
            {
                dirty |= self.pipeline.wake_deferred(Instant::now(), false);
            }
            // Allocate only once every source delivered its full state: instances that see the
            // same hosts then allocate them in the same (sorted) order and agree.
            if dirty && self.health.all_synced() {
                let first = !self.health.report().0;
                dirty = !self.pass();
                if let Some(t) = since.filter(|_| !dirty) {
                    // Not the first load: that is start-up time, not propagation.
                    if !first {
                        self.metrics
                            .zone
                            .propagation
                            .observe(t.elapsed().as_secs_f64());
                    }
                    since = None;
                }
            }
        }
    }

    /// One write transaction, then the new snapshot is published. Returns false when the
    /// allocations could not be persisted: nothing new is published then, and the pass is
    /// retried.
    pub fn pass(&mut self) -> bool {
        let pass = match self.pipeline.pass(unix_now(), self.store.as_mut()) {
            Ok(p) => p,
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot persist allocations; not publishing new VIPs, will retry");
                self.metrics.store.errors.inc();
                return false;
            }
        };
        self.log_outcome(&pass.outcome);
        self.count_claims(&pass.claims);
        for (host, entered) in &pass.spec_conflicts {
            match entered {
                Some(clusters) => {
                    warn!(%host, %clusters, "clusters list different spec.addresses for this host; each instance answers its home cluster's")
                }
                None => info!(%host, "spec.addresses conflict resolved"),
            }
        }
        let (spec, istio_status) = pass.conflicts;
        for (kind, n) in [("spec", spec), ("istio-status", istio_status)] {
            self.metrics
                .zone
                .host_conflicts
                .get_or_create(&KindLabels { kind })
                .set(n as i64);
        }
        let snap = pass.snapshot;
        let serial = snap.serial;
        let served = pass.reports.served_hosts();
        if let Some(floor) = &mut self.serial_floor {
            floor.cover(serial);
        }
        if let Some(journal) = &mut self.journal_file {
            if let Err(e) = journal.persist(&snap) {
                // Removed: a restart starts a new lineage (secondaries transfer the zone once).
                warn!(error = %format!("{e:#}"), "cannot keep the journal on disk; IXFR across a restart is lost");
                self.journal_file = None;
            }
        }
        // The build time first: whoever sees the new answers also sees how long they took. The
        // counts and the serial after: whoever sees them can query what they count.
        self.metrics
            .zone
            .snapshot_build
            .observe(pass.took.as_secs_f64());
        let (published, reports) = (Arc::new(snap), Arc::new(pass.reports));
        self.snapshot
            .publish_with(published.clone(), reports.clone());
        self.record_metrics(&published, &reports);
        if pass.touched > 1000 {
            // Before readiness: a first load should not be reported ready at its peak.
            // The pages freed by a large pass (a first load's parse trees, a replaced
            // snapshot) go back now.
            crate::memory::release_now();
        }
        self.health.set_published();
        info!(
            serial,
            hosts = served,
            touched = pass.touched,
            entries = self.pipeline.entry_count(),
            took_ms = pass.took.as_millis() as u64,
            reconcile_ms = pass.reconcile.as_millis() as u64,
            commit_ms = pass.commit.as_millis() as u64,
            build_ms = pass.build.as_millis() as u64,
            "snapshot published"
        );
        true
    }

    fn log_outcome(&self, outcome: &crate::alloc::AllocReport) {
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
            self.metrics.alloc.vip_conflicts.inc();
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
            .alloc
            .vip_exhausted
            .inc_by(outcome.exhausted.len() as u64);
        for host in &outcome.released[..each(outcome.released.len())] {
            info!(%host, hold_secs = self.pipeline.hold_secs(), "host gone; VIP held");
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

    fn count_claims(&self, c: &crate::pipeline::ClaimCounts) {
        let m = &self.metrics.store;
        m.claims_deferred.inc_by(c.deferred as u64);
        m.claims_adopted_after_defer.inc_by(c.adopted as u64);
        m.claims_after_defer.inc_by(c.claimed_after_grace as u64);
        m.claims_waiting.set(self.pipeline.deferred() as i64);
        if c.claimed_after_grace > 0 {
            info!(
                hosts = c.claimed_after_grace,
                "claimed here after waiting for another instance's claim (none came within --claim-defer, or this instance now claims first)"
            );
        }
    }

    fn record_metrics(&self, snap: &Snapshot, reports: &Reports) {
        let z = &self.metrics.zone;
        let served = reports.served_hosts();
        z.hosts_served.set(served as i64);
        z.hosts_unserved.set((reports.host_count() - served) as i64);
        z.hosts_tcp_unroutable
            .set(reports.tcp_unroutable_hosts() as i64);
        z.serial.set(i64::from(snap.serial));
        let census = self.pipeline.census();
        let m = &self.metrics.alloc;
        m.vips_allocated
            .get_or_create(&FamilyLabels { family: "ipv4" })
            .set(census.ipv4 as i64);
        m.vips_allocated
            .get_or_create(&FamilyLabels { family: "ipv6" })
            .set(census.ipv6 as i64);
        m.vips_held.set(census.held as i64);
    }
}

/// Per pass, how many hosts of one kind (allocated, exhausted, …) get a log line of their own.
const LOG_EACH: usize = 50;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::alloc::store::{Commit, MemoryStore};
    use crate::alloc::{Allocator, Change, Table};
    use crate::zone::ZoneConfig;

    /// A shared store that counts the times its table is read.
    struct Shared {
        inner: MemoryStore,
        reads: Arc<AtomicUsize>,
    }

    impl Store for Shared {
        fn describe(&self) -> String {
            "shared".into()
        }
        fn load(&mut self) -> anyhow::Result<Table> {
            self.inner.load()
        }
        fn commit(&mut self, changes: &[Change], table: &Table) -> anyhow::Result<Commit> {
            self.inner.commit(changes, table)
        }
        fn shared_table(&mut self) -> Option<Table> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Some(self.inner.table.clone())
        }
    }

    #[test]
    fn queued_store_changes_are_read_once() {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let ranges: Vec<ipnet::IpNet> = vec!["240.10.0.0/16".parse().unwrap()];
        let allocator = Allocator::new(&ranges, 10, Table::new());
        let reads = Arc::new(AtomicUsize::new(0));
        let engine = Engine {
            pipeline: Pipeline::new(&cfg, &ranges, true, allocator),
            store: Box::new(Shared {
                inner: MemoryStore::default(),
                reads: reads.clone(),
            }),
            snapshot: Arc::new(Published::new(Snapshot::empty(&cfg, &ranges))),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            serial_floor: None,
            journal_file: None,
        };
        let (tx, rx) = mpsc::channel();
        // Queued before the engine runs: it takes them in one drain, then the channel closes.
        for _ in 0..50 {
            tx.send(Input::Store(StoreEvent::Changed)).unwrap();
        }
        tx.send(Input::Store(StoreEvent::DeferChanged)).unwrap();
        tx.send(Input::Store(StoreEvent::Changed)).unwrap();
        drop(tx);
        engine.run(rx);
        assert_eq!(reads.load(Ordering::Relaxed), 1);
    }
}
