//! The write transaction: source changes → registry (which hosts a change touches) → allocator
//! (only those hosts) → store (durable) → zone builder (only their names) → snapshot, as one
//! call, [`Pipeline::pass`]. The registry and the allocator are private to it: nothing else can
//! publish a VIP the store has not made durable. A change to one file or object costs what it
//! touches, not the size of the mesh; the first load is the same pass with every host touched.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ipnet::IpNet;
use tracing::warn;

use crate::alloc::store::{Commit, Store};
use crate::alloc::{Allocator, Outcome, Table};
use crate::host_view::{Conflict, HostView, Rules};
use crate::registry::{Delta, Registry, SourceKey};
use crate::serviceentry::Entry;
use crate::zone::{HostReport, Snapshot, ZoneBuilder, ZoneConfig};

pub struct Pipeline {
    registry: Registry,
    allocator: Allocator,
    zone: ZoneBuilder,
    rules: Rules,
    /// Hosts in conflict among those rendered into the zone.
    conflicts: Conflicts,
    /// Hosts whose view or allocation may have changed since the last publish (in any order,
    /// repeated: sorted and de-duplicated once per pass, cheaper than a set at a first load).
    pending: Vec<String>,
    /// The pending hosts' reports as last reconciled, for the publish that follows.
    reports: Vec<(String, Option<HostReport>)>,
    /// Nothing published yet: the first pass also covers every host of the stored table (one
    /// that no source lists any more must be put on hold).
    first: bool,
    /// A large share of the hosts was rendered since the last publish (its tables are compacted).
    large: bool,
}

impl Pipeline {
    pub fn new(
        zone: &ZoneConfig,
        ranges: &[IpNet],
        prefer_istio_status: bool,
        allocator: Allocator,
    ) -> Pipeline {
        Pipeline {
            registry: Registry::default(),
            allocator,
            zone: ZoneBuilder::new(zone, ranges),
            rules: Rules {
                prefer_istio_status,
                ..Rules::default()
            },
            conflicts: Conflicts::default(),
            pending: Vec::new(),
            reports: Vec::new(),
            first: true,
            large: false,
        }
    }

    /// The cluster whose view this pipeline answers (default `local`).
    pub fn home_cluster(mut self, home: &str) -> Pipeline {
        self.rules.home = home.to_string();
        self
    }

    /// Replaces a unit's entries; returns whether anything changed.
    pub fn set_unit(&mut self, key: SourceKey, entries: Vec<Entry>) -> bool {
        let d = self.registry.set(key, entries);
        self.note(d)
    }

    pub fn remove_unit(&mut self, key: &SourceKey) -> bool {
        let d = self.registry.remove(key);
        self.note(d)
    }

    pub fn remove_cluster(&mut self, cluster: &str) -> bool {
        let d = self.registry.remove_cluster(cluster);
        self.note(d)
    }

    fn note(&mut self, delta: Option<Delta>) -> bool {
        let Some(d) = delta else { return false };
        for ip in d.unreserved {
            self.allocator.unreserve(ip);
        }
        for ip in d.reserved {
            // An address now written by a user displaces the auto VIP on it.
            if let Some(owner) = self.allocator.reserve(ip) {
                self.pending.push(owner);
            }
        }
        self.pending.extend(d.hosts);
        true
    }

    /// Takes a table another instance wrote (seen through the store's watch) as the truth, once
    /// it validates; the hosts it changes are rendered again. Returns whether anything changed.
    pub fn adopt(&mut self, table: Table) -> Result<bool, Vec<String>> {
        if table == *self.allocator.table() {
            return Ok(false);
        }
        self.allocator.validate(&table)?;
        self.take_table(table);
        Ok(true)
    }

    fn take_table(&mut self, table: Table) {
        let mine = self.allocator.table();
        let differ: Vec<String> = mine
            .iter()
            .filter(|(h, a)| table.get(*h) != Some(*a))
            .map(|(h, _)| h.clone())
            .chain(table.keys().filter(|h| !mine.contains_key(*h)).cloned())
            .collect();
        self.pending.extend(differ);
        self.allocator.replace_table(table);
    }

    /// Whether a hold has run out (a pass is due even without a source change).
    pub fn holds_due(&self, now: u64) -> bool {
        self.allocator.holds_due(now)
    }

    /// One write transaction over the hosts the changes since the last pass touched: merge,
    /// allocate, make the allocations durable in `store` (adopting a shared store's table and
    /// trying again when another instance claimed first), render, and return the snapshot to
    /// publish. On error nothing new is visible: the allocator is back at what is durable, the
    /// hosts stay pending, and the next pass tries again.
    pub fn pass(&mut self, now: u64, store: &mut dyn Store) -> Result<Pass> {
        let started = Instant::now();
        let touched = self.pending.len();
        let (mut reconcile_took, mut commit_took) = (Duration::ZERO, Duration::ZERO);
        let mut conflicts = 0;
        let outcome = loop {
            let reconcile_started = Instant::now();
            let outcome = self.reconcile(now);
            reconcile_took += reconcile_started.elapsed();
            let changes = self.allocator.take_changes();
            if changes.is_empty() {
                break outcome;
            }
            let (committed, took) = self.render_while(|table| {
                let started = Instant::now();
                (store.commit(&changes, table), started.elapsed())
            });
            commit_took += took;
            // Memory never runs ahead of the store: whatever failed is undone before anything
            // else happens.
            match committed {
                Ok(Commit::Done) => break outcome,
                Ok(Commit::Conflict(theirs)) if conflicts < MAX_CONFLICT_RETRIES => {
                    conflicts += 1;
                    warn!(
                        attempts = conflicts,
                        "another instance claimed first; adopting its table and retrying"
                    );
                    self.allocator.rollback(&changes);
                    self.take_table(theirs);
                }
                Ok(Commit::Conflict(_)) => {
                    self.allocator.rollback(&changes);
                    bail!("too many conflicting claims");
                }
                Err(e) => {
                    self.allocator.rollback(&changes);
                    return Err(e);
                }
            }
        };
        let build_started = Instant::now();
        let snapshot = self.publish();
        Ok(Pass {
            snapshot,
            outcome,
            conflicts: (self.conflicts.spec, self.conflicts.istio_status),
            spec_conflicts: std::mem::take(&mut self.conflicts.changes),
            touched,
            took: started.elapsed(),
            reconcile: reconcile_took,
            commit: commit_took,
            build: build_started.elapsed(),
        })
    }

    /// Merges the pending hosts and brings their allocations in line; the changes are then
    /// made durable (`pass`) before `publish` shows them.
    fn reconcile(&mut self, now: u64) -> Outcome {
        let mut out = Outcome::default();
        if self.first {
            self.pending.extend(self.allocator.table().keys().cloned());
        }
        self.pending.extend(self.allocator.take_retry());
        // Sorted: instances that see the same hosts allocate them in the same order and agree.
        self.pending.sort_unstable();
        self.pending.dedup();
        self.allocator.expect(self.pending.len());
        let views = merge_all(&self.registry, &mut self.pending, &self.rules);
        for (host, view) in self.pending.iter().zip(&views) {
            let wants = view.as_ref().is_some_and(|v| v.wants_vip);
            self.allocator.reconcile_host(host, wants, now, &mut out);
        }
        let mut views: Vec<(String, Option<HostView>)> =
            self.pending.iter().cloned().zip(views).collect();
        if self.allocator.holds_due(now) {
            self.allocator.expire_holds(now, &mut out);
        }
        // Addresses freed in this pass (holds run out, VIPs displaced): hosts still waiting for
        // a VIP try again.
        for host in self.allocator.take_retry() {
            let view = self.registry.merge_host(&host, &self.rules);
            let wants = view.as_ref().is_some_and(|v| v.wants_vip);
            self.allocator.reconcile_host(&host, wants, now, &mut out);
            if let Err(at) = self.pending.binary_search(&host) {
                self.pending.insert(at, host.clone());
                views.push((host, view));
            }
        }
        self.allocator.settle(&mut out);
        // Reports are made only now that every VIP of the pass is known.
        self.reports = make_reports(views, &self.allocator);
        out
    }

    /// Renders the reconciled hosts into the zone while `commit` makes the pass's allocations
    /// durable on another thread (the fsync of a first load then costs no wall time); returns
    /// what `commit` returned. Nothing is visible before [`Pipeline::publish`]: if the commit
    /// fails, the hosts stay pending and the next pass renders them again from what is durable.
    fn render_while<R: Send>(&mut self, commit: impl FnOnce(&Table) -> R + Send) -> R {
        let table = self.allocator.table();
        let reports = std::mem::take(&mut self.reports);
        let zone = &mut self.zone;
        let conflicts = &mut self.conflicts;
        let hosts = self.registry.host_count();
        std::thread::scope(|scope| {
            let committed = scope.spawn(move || commit(table));
            self.large |= render(zone, conflicts, reports, hosts);
            committed.join().expect("store commit thread")
        })
    }

    /// Renders what is left to render and returns the new snapshot.
    fn publish(&mut self) -> Snapshot {
        let reports = std::mem::take(&mut self.reports);
        let hosts = self.registry.host_count();
        self.large |= render(&mut self.zone, &mut self.conflicts, reports, hosts);
        self.pending.clear();
        self.first = false;
        if std::mem::take(&mut self.large) {
            self.zone.compact();
        }
        self.zone.snapshot()
    }

    /// Hosts waiting for the next pass.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// ServiceEntries held, over every source.
    pub fn entry_count(&self) -> usize {
        self.registry.entry_count()
    }

    /// The allocation table as last made durable (or being made so by a pass).
    pub fn table(&self) -> &Table {
        self.allocator.table()
    }

    /// How long a VIP stays reserved after its host went away.
    pub fn hold_secs(&self) -> u64 {
        self.allocator.hold_secs
    }
}

/// How many times one pass adopts a conflicting shared table before giving up until the next.
const MAX_CONFLICT_RETRIES: usize = 8;

/// What one pass did, for the engine to publish, log and count.
pub struct Pass {
    pub snapshot: Snapshot,
    pub outcome: Outcome,
    /// Hosts whose clusters disagree, by kind: (spec, istio-status).
    pub conflicts: (usize, usize),
    /// Hosts that entered (with each cluster's addresses) or left (None) a spec conflict.
    pub spec_conflicts: Vec<(String, Option<String>)>,
    /// Hosts the pass looked at.
    pub touched: usize,
    pub took: Duration,
    /// Merging and allocating; the durable write (while the zone is rendered); the rest of the
    /// rendering and the snapshot.
    pub reconcile: Duration,
    pub commit: Duration,
    pub build: Duration,
}

/// Hosts in conflict in the zone, kept as reports are replaced (counting them per publish would
/// cost a walk over every host).
#[derive(Default)]
struct Conflicts {
    spec: usize,
    istio_status: usize,
    /// Spec-conflict transitions since the last pass: (host, Some(addresses) entered / None left).
    changes: Vec<(String, Option<String>)>,
}

impl Conflicts {
    fn kinds(c: Option<&Conflict>) -> (bool, bool) {
        c.map_or((false, false), |c| (c.spec, c.istio_status))
    }

    /// A host's report goes from one with conflict kinds `was` to one with `new`.
    fn replace(&mut self, host: &str, was: (bool, bool), new: Option<&Conflict>) {
        let is = Conflicts::kinds(new);
        self.spec = self.spec + usize::from(is.0) - usize::from(was.0);
        self.istio_status = self.istio_status + usize::from(is.1) - usize::from(was.1);
        if was.0 != is.0 {
            let detail = new.filter(|c| c.spec).map(|c| {
                let per_cluster: Vec<String> = c
                    .clusters
                    .iter()
                    .map(|(cluster, a)| format!("{cluster}={:?}", a.spec))
                    .collect();
                per_cluster.join(" ")
            });
            self.changes.push((host.to_string(), detail));
        }
    }
}

/// Applies reports to the zone; returns whether they were a large share of `hosts`.
fn render(
    zone: &mut ZoneBuilder,
    conflicts: &mut Conflicts,
    reports: Vec<(String, Option<HostReport>)>,
    hosts: usize,
) -> bool {
    let n = reports.len();
    let large = n > 1000 && n * 4 > hosts;
    if large {
        zone.reserve(n);
    }
    for (host, report) in reports {
        let was = Conflicts::kinds(zone.report(&host).and_then(|r| r.conflict.as_deref()));
        let new = report.as_ref().and_then(|r| r.conflict.as_deref());
        if was != (false, false) || new.is_some() {
            conflicts.replace(&host, was, new);
        }
        zone.set_host(&host, report);
    }
    large
}

/// Below this many hosts a pass runs on the calling thread only.
const PARALLEL_FROM: usize = 20_000;

/// Splits `items` in one chunk per core and maps each on its own thread (order kept). A first
/// load is otherwise one core busy and the others idle, right after the parse kept them all busy.
/// `f` gets `&mut`, so that it can move out of an item instead of copying it.
fn par_map<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < PARALLEL_FROM || threads < 2 {
        return items.iter_mut().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks_mut(chunk)
            .map(|part| scope.spawn(|| part.iter_mut().map(&f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("pipeline worker"))
            .collect()
    })
}

fn merge_all(registry: &Registry, hosts: &mut [String], rules: &Rules) -> Vec<Option<HostView>> {
    par_map(hosts, |h| registry.merge_host(h, rules))
}

/// The reports of the reconciled hosts; each view is moved into its report.
fn make_reports(
    mut views: Vec<(String, Option<HostView>)>,
    allocator: &Allocator,
) -> Vec<(String, Option<HostReport>)> {
    let reports = par_map(&mut views, |(host, view)| {
        view.take()
            .map(|v| HostReport::new(v, allocator.vips(host)))
    });
    views.into_iter().map(|(h, _)| h).zip(reports).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use hickory_proto::rr::{LowerName, Name, RecordType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::serviceentry::{ObjectRef, Resolution, SrvPort, Transport};
    use crate::zone::Snapshot;

    const HOLD: u64 = 50;

    fn cfg() -> ZoneConfig {
        ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        }
    }

    fn ranges() -> Vec<IpNet> {
        vec![
            "240.10.0.0/16".parse().unwrap(),
            "fd00:10::/64".parse().unwrap(),
        ]
    }

    /// Host names that overlap on purpose: parents of other hosts, wildcards above hosts and
    /// above each other, names under the name servers' parent.
    fn host_pool() -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..12 {
            v.push(format!("s{i}.ns{}.global", i % 3));
            v.push(format!("a.s{i}.ns{}.global", i % 3));
            v.push(format!("*.s{i}.ns{}.global", i % 3));
        }
        v.extend(
            [
                "*.ns0.global",
                "ns1.global",
                "*.global",
                "x.y.z.global",
                "ns.global",
            ]
            .map(String::from),
        );
        v
    }

    fn random_entry(rng: &mut StdRng, unit: usize, n: usize, pool: &[String]) -> Entry {
        let hosts: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| pool[rng.random_range(0..pool.len())].clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let addresses: Vec<IpAddr> = match rng.random_range(0..6) {
            // An address inside the VIP range: reserved, displaces whoever holds it.
            0 => vec![format!(
                "240.10.{}.{}",
                rng.random_range(0..2),
                rng.random_range(1..40)
            )
            .parse()
            .unwrap()],
            1 => vec!["10.0.0.1".parse().unwrap(), "fd00:99::1".parse().unwrap()],
            _ => vec![],
        };
        let ports = (0..rng.random_range(0..3))
            .map(|p| SrvPort {
                name: format!("p{p}"),
                transport: if rng.random_bool(0.8) {
                    Transport::Tcp
                } else {
                    Transport::Udp
                },
                number: rng.random_range(80..90),
            })
            .collect();
        Entry {
            object: ObjectRef {
                cluster: format!("c{}", unit % 2),
                namespace: "ns".into(),
                name: format!("u{unit}-e{n}"),
            },
            hosts,
            addresses,
            status_addresses: if rng.random_bool(0.1) {
                vec![("240.240.0.7".parse().unwrap(), None)]
            } else {
                vec![]
            },
            ports,
            resolution: match rng.random_range(0..5) {
                0 => Resolution::None,
                1 => Resolution::DynamicDns,
                _ => Resolution::Dns,
            },
            autoallocate: rng.random_bool(0.9),
        }
    }

    fn key(unit: usize) -> SourceKey {
        SourceKey {
            cluster: format!("c{}", unit % 2),
            unit: format!("u{unit}.yaml"),
        }
    }

    /// Everything a client can see: every record of every zone but the SOA (whose serial
    /// differs), and the answer to each type of question for many names.
    fn observable(snap: &Snapshot, names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for apex in snap.apex_names() {
            out.extend(
                snap.zone_records(&apex)
                    .iter()
                    .skip(1)
                    .map(|r| r.to_string()),
            );
        }
        for n in names {
            let name = LowerName::new(&Name::from_ascii(n).unwrap());
            for t in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::SRV,
                RecordType::PTR,
            ] {
                let a = snap.lookup(&name, t);
                out.push(format!(
                    "{n} {t}: {:?} {:?} +{} {:?}",
                    a.rcode,
                    a.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    a.authority.len(),
                    a.additional
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>(),
                ));
            }
        }
        out
    }

    fn query_names(snap: &Snapshot, pool: &[String]) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for h in pool {
            let h = h.replace('*', "q");
            let mut parts: Vec<&str> = h.split('.').collect();
            names.insert(format!("deeper.{h}"));
            names.insert(format!("_p0._tcp.{h}"));
            names.insert(format!("_tcp.{h}"));
            while parts.len() > 1 {
                names.insert(parts.join("."));
                parts.remove(0);
            }
        }
        for r in snap.hosts().values() {
            for a in &r.addresses {
                let mut rev = Name::from(a.address);
                rev.set_fqdn(true);
                names.insert(rev.to_ascii());
                names.insert(rev.base_name().to_ascii());
            }
        }
        names.into_iter().collect()
    }

    #[test]
    fn incremental_passes_serve_what_a_full_build_serves() {
        let pool = host_pool();
        // (displaced, released, reclaimed, expired) over all runs: the rules were exercised.
        let mut seen = [0usize; 4];
        for seed in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut p = Pipeline::new(
                &cfg(),
                &ranges(),
                true,
                Allocator::new(&ranges(), HOLD, Table::new()),
            );
            let mut units: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
            let mut now = 1_000;
            let mut snap = p.publish();
            for _ in 0..80 {
                let u = rng.random_range(0..8);
                if rng.random_bool(0.2) {
                    units.remove(&u);
                    p.remove_unit(&key(u));
                } else {
                    let mut entries: Vec<Entry> = (0..rng.random_range(1..5))
                        .map(|n| random_entry(&mut rng, u, n, &pool))
                        .collect();
                    // Now and then a user writes an address that is someone's VIP.
                    let vips: Vec<IpAddr> = p
                        .allocator
                        .table()
                        .values()
                        .filter_map(|a| a.ipv4.map(IpAddr::V4))
                        .collect();
                    if !vips.is_empty() && rng.random_bool(0.3) {
                        entries[0].addresses = vec![vips[rng.random_range(0..vips.len())]];
                    }
                    units.insert(u, entries.clone());
                    p.set_unit(key(u), entries);
                }
                if rng.random_bool(0.5) {
                    now += rng.random_range(0..30);
                    let out = p.reconcile(now);
                    for (n, v) in seen.iter_mut().zip([
                        out.displaced.len(),
                        out.released.len(),
                        out.reclaimed.len(),
                        out.expired.len(),
                    ]) {
                        *n += v;
                    }
                    p.allocator.take_changes();
                    snap = p.publish();
                }
            }
            p.reconcile(now);
            p.allocator.take_changes();
            snap = std::mem::replace(&mut snap, p.publish());
            drop(snap);
            let incremental = p.publish();

            // The same sources and table from scratch: nothing to change, the same answers.
            let mut full = Pipeline::new(
                &cfg(),
                &ranges(),
                true,
                Allocator::new(&ranges(), HOLD, p.allocator.table().clone()),
            );
            for (u, entries) in &units {
                full.set_unit(key(*u), entries.clone());
            }
            full.reconcile(now);
            assert_eq!(
                full.allocator.take_changes(),
                vec![],
                "seed {seed}: the incremental table is not what a full pass keeps"
            );
            let fresh = full.publish();
            assert_eq!(
                incremental.hosts(),
                fresh.hosts(),
                "seed {seed}: host reports"
            );
            assert_eq!(
                incremental.served_hosts(),
                fresh.served_hosts(),
                "seed {seed}"
            );
            let names = query_names(&fresh, &pool);
            let (a, b) = (observable(&incremental, &names), observable(&fresh, &names));
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x, y, "seed {seed}");
            }
            assert_eq!(a.len(), b.len(), "seed {seed}");
            assert!(
                fresh.served_hosts() > 5,
                "seed {seed}: too little served to compare"
            );
        }
        assert!(
            seen.iter().all(|n| *n > 0),
            "(displaced, released, reclaimed, expired): {seen:?}"
        );
    }

    #[test]
    fn a_host_waiting_for_a_vip_gets_one_when_a_hold_expires() {
        let ranges: Vec<IpNet> = vec!["240.10.0.0/30".parse().unwrap()]; // 3 usable
        let mut p = Pipeline::new(
            &cfg(),
            &ranges,
            true,
            Allocator::new(&ranges, 10, Table::new()),
        );
        let entry = |name: &str| Entry {
            object: ObjectRef {
                cluster: "c".into(),
                namespace: "ns".into(),
                name: name.into(),
            },
            hosts: vec![format!("{name}.ns.global")],
            addresses: vec![],
            status_addresses: vec![],
            ports: vec![],
            resolution: Resolution::Dns,
            autoallocate: true,
        };
        p.set_unit(key(0), ["h0", "h1", "h2", "h3"].map(entry).to_vec());
        let out = p.reconcile(100);
        assert_eq!(out.exhausted, vec![("h3.ns.global".to_string(), "IPv4")]);
        p.allocator.take_changes();
        let snap = p.publish();
        assert!(!snap.host("h3.ns.global").unwrap().served);
        // h0 goes: held for 10 s, so h3 still waits.
        p.set_unit(key(0), ["h1", "h2", "h3"].map(entry).to_vec());
        let out = p.reconcile(105);
        assert_eq!(out.released, vec!["h0.ns.global".to_string()]);
        assert!(out.allocated.is_empty());
        p.allocator.take_changes();
        p.publish();
        // The hold runs out on a pass without any source change: h3 gets the freed VIP.
        assert!(p.holds_due(115));
        let out = p.reconcile(115);
        assert_eq!(out.expired, vec!["h0.ns.global".to_string()]);
        assert_eq!(out.allocated.len(), 1, "{out:?}");
        assert!(out.exhausted.is_empty(), "{out:?}");
        p.allocator.take_changes();
        let snap = p.publish();
        assert!(snap.host("h3.ns.global").unwrap().served);
        assert!(snap.host("h0.ns.global").is_none());
    }

    #[test]
    fn parallel_stages_keep_the_order() {
        let n = PARALLEL_FROM * 2 + 7;
        let mut items: Vec<usize> = (0..n).collect();
        let expected: Vec<usize> = items.iter().map(|i| i * 3).collect();
        assert_eq!(par_map(&mut items, |i| *i * 3), expected);
        let views: Vec<(String, Option<HostView>)> = (0..n)
            .map(|i| {
                (
                    format!("h{i}.ns.global"),
                    (i % 3 != 0).then(HostView::default),
                )
            })
            .collect();
        let alloc = Allocator::new(&ranges(), HOLD, Table::new());
        let reports = make_reports(views, &alloc);
        assert_eq!(reports.len(), n);
        for (i, (host, r)) in reports.iter().enumerate() {
            assert_eq!(*host, format!("h{i}.ns.global"));
            assert_eq!(r.is_some(), i % 3 != 0, "{host}");
        }
    }
}
