//! The write transaction: source changes → registry (which hosts a change touches) → allocator
//! (only those hosts) → store (durable) → the hosts' reports and the zone builder (only their
//! names) → snapshot, as one call, [`Pipeline::pass`]. The registry and the allocator are
//! private to it: nothing else can publish a VIP the store has not made durable. A change to one
//! file or object costs what it touches, not the size of the mesh; the first load is the same
//! pass with every host touched.

mod defer;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ipnet::IpNet;
use tracing::warn;

use crate::alloc::store::{Commit, Store};
use crate::alloc::{AllocReport, Allocator, Table};
use crate::host_view::{Conflict, HostView, Rules};
use crate::registry::{Registry, SourceKey, UnitChange};
use crate::report::HostReport;
use crate::reports::Reports;
use crate::serviceentry::Entry;
use crate::zone::{key, Snapshot, ZoneBuilder, ZoneConfig};

use defer::{Deferrals, Ended};

pub struct Pipeline {
    registry: Registry,
    allocator: Allocator,
    zone: ZoneBuilder,
    /// Every host's report, published beside the zone (which takes only what becomes records).
    reports: Reports,
    rules: Rules,
    /// Hosts in conflict among those rendered into the zone.
    conflicts: Conflicts,
    /// Hosts whose view or allocation may have changed since the last publish (in any order,
    /// repeated: sorted and de-duplicated once per pass, cheaper than a set at a first load).
    pending: Vec<String>,
    /// The pending hosts' reports as last reconciled, for the publish that follows.
    reconciled: Vec<(String, Option<HostReport>)>,
    /// Nothing published yet: the first pass also covers every host of the stored table (one
    /// that no source lists any more must be put on hold).
    first: bool,
    /// A large share of the hosts was rendered since the last publish (its tables are compacted).
    large: bool,
    /// Hosts waiting for another instance's claim of their VIP.
    deferrals: Deferrals,
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
            reports: Reports::default(),
            rules: Rules {
                prefer_istio_status,
                ..Rules::default()
            },
            conflicts: Conflicts::default(),
            pending: Vec::new(),
            reconciled: Vec::new(),
            first: true,
            large: false,
            deferrals: Deferrals::default(),
        }
    }

    /// Whether eligible entries get their VIP written into `spec.addresses` (`--write-back spec`):
    /// their hosts count as routable by the home cluster's default sidecars.
    pub fn spec_write_back(mut self, on: bool) -> Pipeline {
        self.rules.spec_write_back = on;
        self
    }

    /// The cluster whose view this pipeline answers (default `local`).
    pub fn home_cluster(mut self, home: &str) -> Pipeline {
        self.rules.home = home.to_string();
        self
    }

    /// The first serial will be at least `floor`.
    pub fn serial_floor(&mut self, floor: u32) {
        self.zone.serial_floor(floor);
    }

    /// Keeps a journal of the zone's changes from now on (for IXFR).
    pub fn keep_journal(&mut self) {
        self.zone.keep_journal();
    }

    /// What the zone's rendering depends on besides the hosts (see `ZoneBuilder::fingerprint`).
    pub fn zone_fingerprint(&self) -> String {
        self.zone.fingerprint()
    }

    /// Continues a previous run's journal at the first snapshot.
    pub fn resume_journal(&mut self, lineage: crate::zone::Lineage) {
        self.zone.resume(lineage);
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

    fn note(&mut self, delta: Option<UnitChange>) -> bool {
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
    pub fn census(&self) -> crate::alloc::Census {
        self.allocator.census()
    }

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
        self.deferrals.set_grace(store.claim_defer());
        let mut claims = ClaimCounts::default();
        let outcome = loop {
            let reconcile_started = Instant::now();
            let outcome = self.reconcile(now, started);
            claims.deferred += self.start_deferrals(&outcome, started);
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
        self.end_deferrals(&outcome, &mut claims);
        let build_started = Instant::now();
        let (snapshot, reports) = self.publish();
        Ok(Pass {
            snapshot,
            reports,
            claims,
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

    /// Hosts of this pass that were not allowed to claim a VIP start waiting (if they were not
    /// already); returns how many started now.
    fn start_deferrals(&mut self, outcome: &AllocReport, clock: Instant) -> usize {
        outcome
            .deferred
            .iter()
            .filter(|h| self.deferrals.start(h, clock))
            .count()
    }

    /// After a successful commit: the waiting hosts of this pass that are not deferred any more
    /// stop waiting, counted by how.
    fn end_deferrals(&mut self, outcome: &AllocReport, claims: &mut ClaimCounts) {
        if self.deferrals.is_empty() {
            return;
        }
        let deferred: HashSet<&str> = outcome.deferred.iter().map(String::as_str).collect();
        let allocated: HashSet<&str> = outcome.allocated.iter().map(|(h, _)| h.as_str()).collect();
        for host in &self.pending {
            if deferred.contains(host.as_str()) || !self.deferrals.is_waiting(host) {
                continue;
            }
            let has_vip = self.allocator.vips(host).next().is_some();
            match self
                .deferrals
                .end(host, has_vip, allocated.contains(host.as_str()))
            {
                Some(Ended::Adopted) => claims.adopted += 1,
                Some(Ended::Claimed) => claims.claimed_after_grace += 1,
                Some(Ended::Dropped) | None => {}
            }
        }
    }

    /// When the grace of a host waiting for another instance's claim runs out next.
    pub fn next_deferral_due(&self) -> Option<Instant> {
        self.deferrals.next_due()
    }

    /// Makes the waiting hosts whose grace ran out at `now` pending (every waiting host with
    /// `all`: the store's policy changed); returns whether there were any.
    pub fn wake_deferred(&mut self, now: Instant, all: bool) -> bool {
        let due = self.deferrals.due(now, all);
        let any = !due.is_empty();
        self.pending.extend(due);
        any
    }

    /// Hosts waiting for another instance's claim.
    pub fn deferred(&self) -> usize {
        self.deferrals.len()
    }

    /// Merges the pending hosts and brings their allocations in line (a host that needs a new
    /// VIP while another instance claims first may have to wait: `defer.rs`); the changes are
    /// then made durable (`pass`) before `publish` shows them.
    fn reconcile(&mut self, now: u64, clock: Instant) -> AllocReport {
        let mut out = AllocReport::default();
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
            let wants = view.as_ref().is_some_and(|v| v.wants_vip).into();
            let claim = self.deferrals.may_claim(host, clock);
            self.allocator
                .reconcile_host(host, wants, claim, now, &mut out);
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
            let wants = view.as_ref().is_some_and(|v| v.wants_vip).into();
            let claim = self.deferrals.may_claim(&host, clock);
            self.allocator
                .reconcile_host(&host, wants, claim, now, &mut out);
            if let Err(at) = self.pending.binary_search(&host) {
                self.pending.insert(at, host.clone());
                views.push((host, view));
            }
        }
        self.allocator.settle(&mut out);
        // Reports are made only now that every VIP of the pass is known.
        self.reconciled = make_reports(views, &self.allocator);
        if !out.deferred.is_empty() {
            let deferred: HashSet<&str> = out.deferred.iter().map(String::as_str).collect();
            let reports = &self.reports;
            self.reconciled.retain_mut(|(host, report)| {
                if !deferred.contains(host.as_str()) {
                    return true;
                }
                // A new host waiting for another instance's claim is not rendered yet: the zone
                // (and its serial, which secondaries follow) changes once, when the VIP comes,
                // as on the claimer.
                if reports.get(host).is_none() {
                    return false;
                }
                if let Some(r) = report.as_mut().filter(|r| !r.served) {
                    r.reason = Some(DEFERRED_REASON);
                }
                true
            });
        }
        out
    }

    /// Renders the reconciled hosts into the zone while `commit` makes the pass's allocations
    /// durable on another thread (the fsync of a first load then costs no wall time); returns
    /// what `commit` returned. Nothing is visible before [`Pipeline::publish`]: if the commit
    /// fails, the hosts stay pending and the next pass renders them again from what is durable.
    fn render_while<R: Send>(&mut self, commit: impl FnOnce(&Table) -> R + Send) -> R {
        let table = self.allocator.table();
        let reconciled = std::mem::take(&mut self.reconciled);
        let mut into = Rendering {
            zone: &mut self.zone,
            reports: &mut self.reports,
            conflicts: &mut self.conflicts,
        };
        let hosts = self.registry.host_count();
        std::thread::scope(|scope| {
            let committed = scope.spawn(move || commit(table));
            self.large |= into.render(reconciled, hosts);
            committed.join().expect("store commit thread")
        })
    }

    /// Renders what is left to render and returns the new snapshot, with the reports as of it.
    fn publish(&mut self) -> (Snapshot, Reports) {
        let reconciled = std::mem::take(&mut self.reconciled);
        let hosts = self.registry.host_count();
        let mut into = Rendering {
            zone: &mut self.zone,
            reports: &mut self.reports,
            conflicts: &mut self.conflicts,
        };
        self.large |= into.render(reconciled, hosts);
        self.pending.clear();
        self.first = false;
        if std::mem::take(&mut self.large) {
            self.zone.compact();
            self.reports.compact();
        }
        let snapshot = self.zone.snapshot();
        self.reports.serial = snapshot.serial;
        self.reports.generation = snapshot.generation;
        (snapshot, self.reports.clone())
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

/// Why a host is not served while it waits for another instance's claim of its VIP.
const DEFERRED_REASON: &str = "waiting for the claimer instance's VIP claim (--claim-defer)";

/// Hosts whose claim waited for another instance, as one pass changed them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimCounts {
    /// Started waiting.
    pub deferred: usize,
    /// Got their VIP from another instance's claim while waiting.
    pub adopted: usize,
    /// Claimed here after all (the grace ran out, or this instance became the claimer).
    pub claimed_after_grace: usize,
}

/// What one pass did, for the engine to publish, log and count.
pub struct Pass {
    pub snapshot: Snapshot,
    /// Every host's report as of `snapshot`.
    pub reports: Reports,
    pub claims: ClaimCounts,
    pub outcome: AllocReport,
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

/// Where reconciled reports go: the reports as such, and what of them becomes records.
struct Rendering<'a> {
    zone: &'a mut ZoneBuilder,
    reports: &'a mut Reports,
    conflicts: &'a mut Conflicts,
}

impl Rendering<'_> {
    /// Applies `reconciled` reports; returns whether they were a large share of `hosts`.
    fn render(&mut self, reconciled: Vec<(String, Option<HostReport>)>, hosts: usize) -> bool {
        let n = reconciled.len();
        let large = n > 1000 && n * 4 > hosts;
        if large {
            self.zone.reserve(n);
            self.reports.reserve(n);
        }
        for (host, report) in reconciled {
            // Valid hosts always have a key; the registry holds no other.
            let Some(k) = key::of_host(&host) else {
                continue;
            };
            let old = self.reports.get_at(&k);
            if old == report.as_ref() {
                continue;
            }
            let was = Conflicts::kinds(old.and_then(|r| r.conflict.as_deref()));
            let new = report.as_ref().and_then(|r| r.conflict.as_deref());
            if was != (false, false) || new.is_some() {
                self.conflicts.replace(&host, was, new);
            }
            // A report that changed gives a new serial even when its records did not.
            if !self
                .zone
                .set_host_at(k.clone(), report.as_ref().and_then(HostReport::zone_host))
            {
                self.zone.touch();
            }
            self.reports.set(k, report);
        }
        large
    }
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
mod tests;
