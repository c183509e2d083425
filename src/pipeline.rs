//! The data flow of DESIGN §6 as one incremental pass: source changes → registry (which hosts a
//! change touches) → allocator (only those hosts) → zone builder (only their names) → snapshot.
//! A change to one file or object costs what it touches, not the size of the mesh; the first
//! load is the same pass with every host touched.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::alloc::{Allocator, Outcome, Table};
use crate::registry::{Delta, HostView, Registry, SourceKey};
use crate::serviceentry::Entry;
use crate::zone::{HostReport, Snapshot, ZoneBuilder, ZoneConfig};

pub struct Pipeline {
    pub registry: Registry,
    pub allocator: Allocator,
    zone: ZoneBuilder,
    prefer_istio_status: bool,
    /// Hosts whose view or allocation may have changed since the last publish.
    pending: BTreeSet<String>,
    /// The pending hosts' views as last reconciled, for the publish that follows.
    views: Vec<(String, Option<HostView>)>,
    /// Nothing published yet: the first pass also covers every host of the stored table (one
    /// that no source lists any more must be put on hold).
    first: bool,
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
            prefer_istio_status,
            pending: BTreeSet::new(),
            views: Vec::new(),
            first: true,
        }
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
                self.pending.insert(owner);
            }
        }
        self.pending.extend(d.hosts);
        true
    }

    /// Takes a table another instance wrote as the truth; the hosts it changes are re-rendered.
    pub fn adopt(&mut self, table: Table) {
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

    /// Merges the pending hosts and brings their allocations in line. The allocator's changes
    /// are then taken by the caller (`allocator.take_changes()`) and made durable before
    /// [`Pipeline::publish`] shows them; on failure, `allocator.rollback` and the hosts stay
    /// pending.
    pub fn reconcile(&mut self, now: u64) -> Outcome {
        let mut out = Outcome::default();
        if self.first {
            self.pending.extend(self.allocator.table().keys().cloned());
        }
        self.pending.extend(self.allocator.take_retry());
        self.views.clear();
        self.views.reserve(self.pending.len());
        for host in &self.pending {
            let view = self.registry.merge_host(host, self.prefer_istio_status);
            let wants = view.as_ref().is_some_and(|v| v.wants_vip);
            self.allocator.reconcile_host(host, wants, now, &mut out);
            self.views.push((host.clone(), view));
        }
        if self.allocator.holds_due(now) {
            self.allocator.expire_holds(now, &mut out);
        }
        // Addresses freed in this pass (holds run out, VIPs displaced): hosts still waiting for
        // a VIP try again.
        for host in self.allocator.take_retry() {
            let view = self.registry.merge_host(&host, self.prefer_istio_status);
            let wants = view.as_ref().is_some_and(|v| v.wants_vip);
            self.allocator.reconcile_host(&host, wants, now, &mut out);
            if self.pending.insert(host.clone()) {
                self.views.push((host, view));
            }
        }
        self.allocator.settle(&mut out);
        out
    }

    /// Renders the reconciled hosts into the zone and returns the new snapshot.
    pub fn publish(&mut self) -> Snapshot {
        let large = self.views.len() > 1000 && self.views.len() * 4 > self.registry.host_count();
        for (host, view) in std::mem::take(&mut self.views) {
            let report = view.map(|v| HostReport::new(&v, self.allocator.vips(&host)));
            self.zone.set_host(&host, report);
        }
        self.pending.clear();
        self.first = false;
        if large {
            self.zone.compact();
        }
        self.zone.snapshot()
    }

    /// Hosts waiting for the next pass.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
