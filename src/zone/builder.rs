//! Keeps the zone's names in step with the hosts, one host at a time, and hands out snapshots.
//!
//! Every (owner, data) pair comes from exactly one host (a host's A/AAAA and SRV records live at
//! names derived from its own, its PTR records point at it), so a host's old contributions can
//! be taken out exactly and its new ones put in, without looking at any other host. Empty
//! non-terminals are reference-counted by the names below them.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use ipnet::IpNet;

use super::changes::ChangeTracker;
use super::digest::{Canon, Digest};
use super::hosts::{self, HostShard, Hosts, ZoneHost, KEPT_SHARDS};
use super::journal::{item_digest, Item, Journal, Pending, SerialDelta};
use super::journal_file::Lineage;
use super::key::{self, Key};
use super::records::{Data, Node};
use super::{apexes, shard_index, unix_now, Apex, Shard, Snapshot, ZoneConfig, SHARDS};

pub struct ZoneBuilder {
    ttl: u32,
    /// Longest first, so that the first match is the closest enclosing zone.
    apexes: Vec<(Name, Box<[u8]>)>,
    ns_names: Vec<Name>,
    /// Name servers inside our zones: names that exist even without data, never removed.
    pinned: Vec<Key>,
    /// Their addresses (`--ns NAME=ADDRESS`), which no host's removal takes away.
    glue: Vec<(Key, Data)>,
    shards: Vec<Arc<Shard>>,
    /// The hosts the names do not say (see `hosts`).
    kept: Vec<Arc<HostShard>>,
    serial: Option<u32>,
    changed: bool,
    /// Hosts with an address (with records).
    served: usize,
    /// What changed since the last snapshot, when a journal is kept (zone transfers served).
    pending: Option<Pending>,
    journal: Journal,
    /// Each zone's digest now (with a journal, from the first snapshot on).
    digests: Vec<Digest>,
    canon: Canon,
    /// The journal of a previous run, continued at the first snapshot (`journal_file`).
    resume: Option<Lineage>,
    floor: u32,
    /// A secondary's zones: the primary's SOA and apex NS records, served as they came.
    apex_overrides: Vec<(Name, Record, Vec<Record>)>,
    /// Names whose node changed since the last snapshot, and the links between recent
    /// snapshots, for caches that forget only what changed.
    changes: ChangeTracker,
}

/// Where one piece of data lives: (under a wildcard?, owner, data).
type Contribution = (bool, Key, Data);

impl ZoneBuilder {
    pub fn new(cfg: &ZoneConfig, ranges: &[IpNet]) -> ZoneBuilder {
        let names = apexes(cfg, ranges);
        let apexes = names
            .into_iter()
            .filter_map(|n| key::of(&n).map(|k| (n, Box::from(&k[..]))))
            .collect();
        let mut b = ZoneBuilder {
            ttl: cfg.ttl,
            apexes,
            ns_names: vec![],
            pinned: vec![],
            glue: vec![],
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            kept: (0..KEPT_SHARDS).map(|_| Arc::default()).collect(),
            serial: None,
            changed: false,
            served: 0,
            pending: None,
            journal: Journal::default(),
            digests: vec![],
            canon: Canon::default(),
            resume: None,
            floor: 0,
            apex_overrides: vec![],
            changes: ChangeTracker::default(),
        };
        // Name servers inside our zones exist (NODATA rather than NXDOMAIN when they have no
        // address of a type) and carry their glue.
        for (ns, addresses) in cfg.ns_names() {
            b.ns_names.push(ns.clone());
            let Some(k) = key::of(&ns).filter(|k| b.apex_len(k).is_some()) else {
                continue;
            };
            if !b.pinned.contains(&k) {
                b.pinned.push(k.clone());
                b.create(false, &k);
            }
            for ip in addresses {
                let d = Data::address(ip);
                b.glue.push((k.clone(), d.clone()));
                b.add(false, k.clone(), d);
            }
        }
        b
    }

    /// The key length of the closest zone enclosing `key`, if any.
    fn apex_len(&self, key: &[u8]) -> Option<usize> {
        self.apexes
            .iter()
            .find(|(_, a)| key::is_at_or_below(key, a))
            .map(|(_, a)| a.len())
    }

    fn hosts(&self) -> Hosts<'_> {
        Hosts {
            shards: &self.shards,
            kept: &self.kept,
            pinned: &self.pinned,
        }
    }

    /// What the zone holds for `host` (kept, or read back from its names).
    pub fn host(&self, host: &str) -> Option<Cow<'_, ZoneHost>> {
        self.hosts().get(&key::of_host(host)?)
    }

    /// Every host whose closest enclosing zone is `apex`.
    pub fn hosts_in(&self, apex: &Name) -> Vec<String> {
        let apex = apex.to_lowercase();
        let of_apex = |k: &[u8]| {
            self.apexes
                .iter()
                .find(|(_, a)| key::is_at_or_below(k, a))
                .is_some_and(|(z, _)| *z == apex)
        };
        self.hosts()
            .all()
            .filter(|(k, _)| of_apex(k))
            .map(|(k, _)| key::to_host(&k))
            .collect()
    }

    /// Sets (with None: removes) what the zone renders for `host`. Returns whether the zone
    /// changed.
    pub fn set_host(&mut self, host: &str, input: Option<ZoneHost>) -> bool {
        // Valid hosts always have a key; the registry holds no other.
        key::of_host(host).is_some_and(|k| self.set_host_at(k, input))
    }

    /// [`ZoneBuilder::set_host`] by the host's name key (`key::of_host`), which its node and
    /// the PTRs to it then share.
    pub fn set_host_at(&mut self, k: Key, input: Option<ZoneHost>) -> bool {
        let input = input.filter(|h| *h != ZoneHost::default());
        let old = self.hosts().get(&k);
        if old.as_deref() == input.as_ref() {
            return false;
        }
        let removed = old.map(|old| (!old.addresses().is_empty(), self.contributions(&k, &old)));
        let added = input.map(|h| {
            let contributions = self.contributions(&k, &h);
            let served = !h.addresses().is_empty();
            let kept = (!self.says(&k, &h, &contributions)).then(|| Arc::new(h));
            (served, contributions, kept)
        });
        // Most hosts are not kept: their shard is not copied.
        let shard = &mut self.kept[shard_index(&k, KEPT_SHARDS)];
        match added.as_ref().and_then(|(_, _, kept)| kept.clone()) {
            Some(kept) => match Arc::make_mut(shard).get_mut(&k[..]) {
                Some(slot) => *slot = kept,
                // The same allocation as the host's node key and its PTR targets.
                None => drop(Arc::make_mut(shard).insert(k.clone(), kept)),
            },
            None if shard.contains_key(&k[..]) => drop(Arc::make_mut(shard).remove(&k[..])),
            None => {}
        }
        if let Some((served, contributions)) = removed {
            self.served -= usize::from(served);
            for (wild, k, d) in contributions {
                self.remove(wild, &k, &d);
                self.note(false, (wild, k, d));
            }
        }
        if let Some((served, contributions, _)) = added {
            self.served += usize::from(served);
            for (wild, k, d) in contributions {
                if self.pending.is_some() {
                    self.note(true, (wild, k.clone(), d.clone()));
                }
                self.add(wild, k, d);
            }
        }
        self.changed = true;
        true
    }

    /// Whether the names will say `host` in full once its `contributions` are in (see
    /// `hosts`): its node holds its addresses and ports and nothing else's but PTRs. Every
    /// address is rendered; a port is not without an address, at a wildcard, or when its SRV
    /// owner would be too long: counting the SRV data is enough (no allocation per host).
    fn says(&self, k: &Key, host: &ZoneHost, contributions: &[Contribution]) -> bool {
        let srv = contributions
            .iter()
            .filter(|(_, _, d)| matches!(d, Data::Srv { .. }))
            .count();
        // The glue shares a name server's node.
        let says = srv == host.ports.len() && !self.pinned.contains(k);
        debug_assert_eq!(says, {
            let mut own: Vec<&Data> = contributions
                .iter()
                .map(|(_, _, d)| d)
                .filter(|d| !matches!(d, Data::Ptr(_)))
                .collect();
            // As the node keeps them.
            own.sort();
            own.dedup();
            !self.pinned.contains(k) && hosts::said(own.into_iter()) == *host
        });
        says
    }

    /// A new serial at the next snapshot although no record changed (a primary's reports did:
    /// its serial has always said so).
    pub fn touch(&mut self) {
        self.changed = true;
    }

    /// The first serial will be at least `floor` (see `serial_floor`).
    pub fn serial_floor(&mut self, floor: u32) {
        self.floor = floor;
    }

    /// Keeps a journal of changes from now on, for IXFR.
    pub fn keep_journal(&mut self) {
        self.pending.get_or_insert_with(Pending::default);
    }

    /// What the rendering of records depends on besides the hosts (TTL, zones, name servers
    /// and their glue): a journal written with other flags is not continued.
    pub fn fingerprint(&self) -> String {
        let zones: Vec<String> = self.apexes.iter().map(|(n, _)| n.to_ascii()).collect();
        let ns: Vec<String> = self.ns_names.iter().map(Name::to_ascii).collect();
        format!(
            "ttl={} zones={zones:?} ns={ns:?} glue={:?}",
            self.ttl, self.glue
        )
    }

    /// Continues the journal of a previous run at the first snapshot: the same content keeps
    /// its serial, other content becomes one delta from it (see `journal_file`). Only with a
    /// journal kept, before the first snapshot.
    pub fn resume(&mut self, lineage: Lineage) {
        if self.pending.is_some() && self.serial.is_none() {
            self.resume = Some(lineage);
        }
    }

    /// The index of the zone enclosing `key` among the apexes.
    fn apex_index(&self, key: &[u8]) -> Option<usize> {
        self.apexes
            .iter()
            .position(|(_, a)| key::is_at_or_below(key, a))
    }

    /// Every zone's digest, from all its items (the first snapshot's).
    fn scan_digests(&mut self) -> Vec<Digest> {
        let mut out = vec![Digest::default(); self.apexes.len()];
        let mut canon = std::mem::take(&mut self.canon);
        for item in super::items(&self.shards) {
            if let Some(z) = self.apex_index(&item.1) {
                out[z].add(item_digest(&mut canon, &item, self.ttl));
            }
        }
        self.canon = canon;
        out
    }

    /// The journal's part of a snapshot at `serial`: the delta since the last one and the
    /// new digests; at the first, the digests from scratch and the previous run's journal
    /// continued. Returns the serial to publish (a resumed run keeps an unchanged content's).
    fn record_version(&mut self, serial: u32, now: u32) -> u32 {
        let Some(from) = self.serial else {
            self.digests = self.scan_digests();
            let serial = match self.resume.take() {
                Some(l) => self.continue_lineage(l, now),
                None => serial,
            };
            self.journal.set_head(serial, self.digests.clone().into());
            if let Some(p) = &mut self.pending {
                p.clear();
            }
            return serial;
        };
        let Some(p) = &mut self.pending else {
            return serial;
        };
        if from == serial {
            p.clear();
            return serial;
        }
        let delta = p.take(from, serial, self.digests.clone().into());
        let mut canon = std::mem::take(&mut self.canon);
        for (item, added) in delta
            .removed
            .iter()
            .map(|i| (i, false))
            .chain(delta.added.iter().map(|i| (i, true)))
        {
            if let Some(z) = self.apex_index(&item.1) {
                let d = item_digest(&mut canon, item, self.ttl);
                if added {
                    self.digests[z].add(d);
                } else {
                    self.digests[z].remove(d);
                }
            }
        }
        self.canon = canon;
        self.journal.push(delta);
        self.journal.set_head(serial, self.digests.clone().into());
        serial
    }

    /// Takes over a previous run's journal: its serial when the content is the same, else
    /// one delta from its content to ours.
    fn continue_lineage(&mut self, l: Lineage, now: u32) -> u32 {
        if *l.digests == *self.digests {
            // The same content (the digests the whole scheme trusts): no sort, no diff.
            self.journal = l.journal;
            return l.serial;
        }
        let mut current: Vec<Item> = super::items(&self.shards).collect();
        current.sort_unstable();
        let (removed, added) = super::journal_file::difference(&l.content, &current);
        self.journal = l.journal;
        if removed.is_empty() && added.is_empty() {
            return l.serial;
        }
        let serial = l.serial.wrapping_add(1).max(now);
        self.journal.push(SerialDelta {
            from: l.serial,
            to: serial,
            removed,
            added,
            from_digests: l.digests,
        });
        serial
    }

    /// Records one (owner, data) pair taken out or put in. Not before the first snapshot: a
    /// first load has no serial to be a difference from.
    fn note(&mut self, added: bool, item: Item) {
        if self.serial.is_none() {
            return;
        }
        if let Some(p) = &mut self.pending {
            if added {
                p.added(item);
            } else {
                p.removed(item);
            }
        }
    }

    /// Makes room for `hosts` more hosts (a first load), instead of growing every table in steps.
    pub fn reserve(&mut self, hosts: usize) {
        // About two names per host (its own and its PTR), one SRV name per port.
        let per = (hosts * 2).div_ceil(SHARDS);
        for s in &mut self.shards {
            Arc::make_mut(s).nodes.reserve(per);
        }
    }

    fn contributions(&self, k: &Key, host: &ZoneHost) -> Vec<Contribution> {
        // Every field named: a new kind of data is a compile error here until the zone renders
        // it.
        let ZoneHost { addresses, ports } = host;
        let mut out = Vec::new();
        // SRV records without an address are not served: they would point at a name without one.
        if addresses.is_empty() {
            return out;
        }
        let addr = |ip: &IpAddr| Data::address(*ip);
        if hosts::is_wildcard(k) {
            // `*.bar.global` is kept under `bar.global`.
            let Some(parent) = key::parent(k).map(Key::from) else {
                return out;
            };
            out.extend(addresses.iter().map(|a| (true, parent.clone(), addr(a))));
            out.sort_unstable();
            out.dedup();
            return out;
        }
        out.extend(addresses.iter().map(|a| (false, k.clone(), addr(a))));
        for p in ports {
            let label = format!("_{}", p.name.to_ascii_lowercase());
            // The SRV owner must be a valid name: a label of at most 63 bytes, 255 in all.
            if label.len() > 63 || label.len() + 6 + k.len() > key::MAX {
                continue;
            }
            out.push((
                false,
                k.clone(),
                Data::Srv {
                    transport: p.transport,
                    label: label.into_bytes().into(),
                    port: p.number,
                },
            ));
        }
        for a in addresses {
            let rk = key::reverse(*a);
            if self.apex_len(&rk).is_some() {
                out.push((false, rk, Data::Ptr(k.clone())));
            }
        }
        // A node holds a pair once: so does the journal (an address listed twice would be
        // taken out twice and put in once).
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Creates the node (or wildcard) `k` if needed.
    fn create(&mut self, wild: bool, k: &Key) {
        self.put(wild, k.clone(), None);
    }

    fn add(&mut self, wild: bool, k: Key, d: Data) {
        self.put(wild, k, Some(d));
    }

    /// Adds `d` (if any) to the node `k`, creating it, and the empty non-terminals above it,
    /// when it is new. One hash probe for the common case.
    fn put(&mut self, wild: bool, k: Key, d: Option<Data>) {
        use std::collections::hash_map::Entry;
        let shard = Arc::make_mut(&mut self.shards[shard_index(&k, SHARDS)]);
        let map = if wild {
            &mut shard.wildcards
        } else {
            &mut shard.nodes
        };
        let (fresh, changed) = match map.entry(k.clone()) {
            Entry::Vacant(v) => {
                v.insert(Node {
                    data: d.into_iter().collect(),
                });
                (true, true)
            }
            Entry::Occupied(mut o) => match d {
                Some(d) => {
                    let data = &mut o.get_mut().data;
                    let at = data.binary_search(&d);
                    if let Err(at) = at {
                        data.insert(at, d);
                    }
                    (false, at.is_err())
                }
                None => (false, false),
            },
        };
        // Wildcards are not recorded: no cache keeps an answer made from one.
        if changed && !wild {
            self.changes.touch(&k);
        }
        if fresh {
            // A wildcard makes its parent exist; a node makes its ancestors exist.
            let start = if wild { Some(&k[..]) } else { key::parent(&k) };
            self.adjust_ents(&k, start, true);
        }
    }

    fn remove(&mut self, wild: bool, k: &Key, d: &Data) {
        let pinned = !wild && self.pinned.contains(k);
        if pinned && self.glue.iter().any(|(g, gd)| g == k && gd == d) {
            // A host at a name server's name with the same address: the glue stays.
            return;
        }
        let idx = shard_index(k, SHARDS);
        let shard = Arc::make_mut(&mut self.shards[idx]);
        let map = if wild {
            &mut shard.wildcards
        } else {
            &mut shard.nodes
        };
        let Some(node) = map.get_mut(&k[..]) else {
            return;
        };
        if let Ok(i) = node.data.binary_search(d) {
            node.data.remove(i);
            if !wild {
                self.changes.touch(k);
            }
        }
        if node.data.is_empty() && !pinned {
            map.remove(&k[..]);
            let start = if wild { Some(&k[..]) } else { key::parent(k) };
            self.adjust_ents(k, start, false);
        }
    }

    /// Counts a name at `owner` in (or out of) every empty non-terminal from `start` up to, not
    /// including, the apex of its zone.
    fn adjust_ents(&mut self, owner: &[u8], start: Option<&[u8]>, up: bool) {
        let Some(apex_len) = self.apex_len(owner) else {
            return;
        };
        let mut next = start;
        while let Some(name) = next.filter(|n| n.len() > apex_len) {
            let shard = Arc::make_mut(&mut self.shards[shard_index(name, SHARDS)]);
            match (shard.ents.get_mut(name), up) {
                (Some(c), true) => *c += 1,
                (None, true) => {
                    shard.ents.insert(Key::from(name), 1);
                }
                (Some(c), false) => {
                    *c -= 1;
                    if *c == 0 {
                        shard.ents.remove(name);
                    }
                }
                (None, false) => {}
            }
            next = key::parent(name);
        }
    }

    /// Serves `soa` and `ns` (the primary's, as transferred) at the apex of `zone` instead of
    /// the ones made from the flags: a secondary answers the primary's serial. False when `zone`
    /// is not one of ours.
    pub fn set_apex(&mut self, zone: &Name, soa: Record, ns: Vec<Record>) -> bool {
        let zone = zone.to_lowercase();
        if !self.apexes.iter().any(|(z, _)| *z == zone) {
            return false;
        }
        self.apex_overrides.retain(|(z, _, _)| *z != zone);
        self.apex_overrides.push((zone, soa, ns));
        self.changed = true;
        true
    }

    /// Gives back the growth slack of every shard (after a large load, e.g. the first).
    pub fn compact(&mut self) {
        for s in &mut self.shards {
            let s = Arc::make_mut(s);
            s.nodes.values_mut().for_each(|n| n.data.shrink_to_fit());
            s.wildcards
                .values_mut()
                .for_each(|n| n.data.shrink_to_fit());
            s.nodes.shrink_to_fit();
            s.wildcards.shrink_to_fit();
            s.ents.shrink_to_fit();
        }
        for h in &mut self.kept {
            Arc::make_mut(h).shrink_to_fit();
        }
    }

    /// A snapshot of the zone as it is now. The serial increases when anything changed since the
    /// last snapshot (at least to the current unix time, so restarts do not go backwards).
    pub fn snapshot(&mut self) -> Snapshot {
        let now = unix_now() as u32;
        let mut serial = match self.serial {
            None => now.max(self.floor),
            Some(s) if self.changed => s.wrapping_add(1).max(now),
            Some(s) => s,
        };
        if self.pending.is_some() {
            serial = self.record_version(serial, now);
        }
        self.serial = Some(serial);
        self.changed = false;
        let ttl = self.ttl;
        let ns = &self.ns_names;
        let apexes = self
            .apexes
            .iter()
            .map(|(zone, k)| {
                if let Some((_, soa, ns)) = self.apex_overrides.iter().find(|(z, _, _)| z == zone) {
                    return Apex {
                        name: LowerName::new(zone),
                        key: k.clone(),
                        soa: soa.clone(),
                        ns: ns.clone(),
                    };
                }
                let rname = Name::from_ascii("hostmaster")
                    .unwrap()
                    .append_domain(zone)
                    .unwrap_or_else(|_| zone.clone());
                let soa = SOA::new(ns[0].clone(), rname, serial, 3600, 600, 86400, ttl);
                Apex {
                    name: LowerName::new(zone),
                    key: k.clone(),
                    soa: Record::from_rdata(zone.clone(), ttl, RData::SOA(soa)),
                    ns: ns
                        .iter()
                        .map(|n| Record::from_rdata(zone.clone(), ttl, RData::NS(NS(n.clone()))))
                        .collect(),
                }
            })
            .collect();
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        Snapshot {
            loaded: true,
            serial,
            generation,
            changes: self.changes.link(generation),
            apexes,
            shards: self.shards.clone(),
            kept: self.kept.clone(),
            pinned: self.pinned.clone(),
            ttl,
            served: self.served,
            journal: self.journal.clone(),
        }
    }
}
