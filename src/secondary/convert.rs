//! Transferred records → the same snapshot a primary builds: A/AAAA owners become the zone's
//! hosts (a `*.` owner a wildcard host), `_name._tcp|_udp.HOST SRV 0 100 PORT HOST.` the host's ports,
//! and the builder derives the PTRs of the reverse zones from them, as a primary does. The SOA
//! and apex NS set are the primary's. Anything else globaldns never serves is dropped (and
//! counted, for one warning per transfer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use fnv::FnvBuildHasher;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::zone_data::{FullZone, RecordKey, TransferDelta};
use crate::serviceentry::{SrvPort, Transport};
use crate::zone::{reverse_zone_for, Snapshot, ZoneBuilder, ZoneConfig, ZoneHost};

/// What one record becomes.
enum Kind {
    /// At the apex: SOA, NS.
    Apex,
    /// A `*.` owner is a wildcard host.
    Address {
        host: String,
        ip: IpAddr,
    },
    Port {
        host: String,
        port: SrvPort,
    },
    /// In a reverse zone: derived from the addresses instead.
    Ptr,
    Dropped(RecordType),
}

fn host_of(name: &Name) -> String {
    name.to_lowercase()
        .to_ascii()
        .trim_end_matches('.')
        .to_string()
}

fn classify(apex: &Name, reverse: bool, owner: &Name, data: &RData) -> Kind {
    let at_apex = owner == apex;
    match data {
        RData::SOA(_) | RData::NS(_) if at_apex => Kind::Apex,
        RData::A(a) => address(owner, IpAddr::V4(a.0)),
        RData::AAAA(a) => address(owner, IpAddr::V6(a.0)),
        RData::PTR(_) if reverse => Kind::Ptr,
        RData::SRV(srv) => {
            // `_<name>._<tcp|udp>.<host>`, pointing at the host itself, as a primary writes it.
            let labels: Vec<&[u8]> = owner.iter().collect();
            let host = (labels.len() > 2).then(|| owner.trim_to(labels.len() - 2));
            let transport = labels.get(1).and_then(|l| Transport::from_label(l));
            match (host, transport, labels[0].strip_prefix(b"_")) {
                (Some(host), Some(transport), Some(label))
                    if srv.priority == 0
                        && srv.weight == 100
                        && srv.target == host
                        && !label.is_empty() =>
                {
                    Kind::Port {
                        host: host_of(&host),
                        port: SrvPort {
                            name: String::from_utf8_lossy(label).to_ascii_lowercase(),
                            transport,
                            number: srv.port,
                        },
                    }
                }
                _ => Kind::Dropped(RecordType::SRV),
            }
        }
        other => Kind::Dropped(other.record_type()),
    }
}

fn address(owner: &Name, ip: IpAddr) -> Kind {
    Kind::Address {
        host: host_of(owner),
        ip,
    }
}

/// What a zone holds besides its hosts.
#[derive(Default)]
struct ZoneState {
    /// The primary's NS records at the apex, by their text lower-cased (a stable order).
    ns: BTreeMap<String, Record>,
    /// The records not served as host data (PTRs, derived from the hosts instead; types
    /// globaldns does not serve), as 64-bit fingerprints: all an IXFR's deletions of them need
    /// checked against, in a twentieth of the records' memory.
    others: HashSet<u64, FnvBuildHasher>,
    /// How many of `others` are PTRs (to compare with the PTRs derived, after a whole zone).
    ptrs: usize,
}

impl ZoneState {
    /// Takes (or gives back) a record kept as a fingerprint.
    fn other(&mut self, add: bool, kind: &Kind, owner: &Name, data: &RData) {
        let f = fingerprint(owner, data);
        let changed = match add {
            true => self.others.insert(f),
            false => self.others.remove(&f),
        };
        if changed && matches!(kind, Kind::Ptr) {
            self.ptrs = if add { self.ptrs + 1 } else { self.ptrs - 1 };
        }
    }
}

/// An apex NS record's key: its text, lower-cased (names compare case-insensitively).
fn ns_key(data: &RData) -> String {
    data.to_string().to_ascii_lowercase()
}

/// The fingerprint of a record (owner and data, case-insensitive as the zone compares them).
fn fingerprint(owner: &Name, data: &RData) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (LowerName::new(owner), data).hash(&mut h);
    h.finish()
}

/// A host's addresses and ports as a transfer changes them (the zone takes them as a
/// `ZoneHost`, which puts them in order: equal zones give equal hosts, unchanged ones no work).
type Parts = (Vec<IpAddr>, Vec<SrvPort>);

/// Types of the records not served, with how many of each.
pub type Dropped = BTreeMap<RecordType, usize>;

/// Keeps the builder in step with the transferred zones, record by record: a delta touches only
/// the hosts whose records it changes, so an IXFR of one change costs one host, not the zone.
/// The builder's hosts are the zones' records: nothing else keeps them.
pub struct Assembler {
    builder: ZoneBuilder,
    reverse: Vec<Name>,
    zones: HashMap<Name, ZoneState>,
}

impl Assembler {
    pub fn new(cfg: &ZoneConfig, ranges: &[IpNet]) -> Assembler {
        let mut reverse: Vec<Name> = ranges.iter().map(reverse_zone_for).collect();
        reverse.extend(
            cfg.reverse_zones
                .iter()
                .filter_map(|z| Name::from_ascii(z).ok()),
        );
        for r in &mut reverse {
            r.set_fqdn(true);
        }
        Assembler {
            builder: ZoneBuilder::new(cfg, ranges),
            reverse,
            zones: HashMap::new(),
        }
    }

    fn is_reverse(&self, apex: &Name) -> bool {
        self.reverse.iter().any(|r| r == apex)
    }

    /// Whether zone `apex` holds the record (owner, data): what an IXFR's deletions are checked
    /// against.
    pub fn holds(&self, apex: &Name, owner: &Name, data: &RData) -> bool {
        let zone = self.zones.get(apex);
        match classify(apex, self.is_reverse(apex), owner, data) {
            Kind::Apex => match data {
                RData::NS(_) => zone.is_some_and(|z| z.ns.contains_key(&ns_key(data))),
                // The SOA is never a delta's record (it delimits them).
                _ => false,
            },
            Kind::Address { host, ip } => self
                .builder
                .host(&host)
                .is_some_and(|h| h.addresses().contains(&ip)),
            Kind::Port { host, port } => self
                .builder
                .host(&host)
                .is_some_and(|h| h.ports().contains(&port)),
            Kind::Ptr | Kind::Dropped(_) => {
                zone.is_some_and(|z| z.others.contains(&fingerprint(owner, data)))
            }
        }
    }

    /// The TTL of record `key` when zone `apex` holds it: an apex NS record's own (kept whole),
    /// any other's `shared`, the TTL the zone's records share (they are held as hosts, without
    /// theirs; see `content::SharedTtl`).
    pub fn ttl_of(
        &self,
        apex: &Name,
        (owner, data): &RecordKey,
        shared: Option<u32>,
    ) -> Option<u32> {
        let owner: Name = owner.into();
        if matches!(data, RData::NS(_)) && owner == *apex {
            let ns = &self.zones.get(apex)?.ns;
            return ns.get(&ns_key(data)).map(|r| r.ttl);
        }
        self.holds(apex, &owner, data).then_some(shared).flatten()
    }

    /// Applies `delta` of zone `apex`, whose SOA is now `soa`: the hosts it touches are rebuilt
    /// from what they had, the others are not looked at. Returns the types of
    /// the records added that are not served.
    pub fn apply(&mut self, apex: &Name, soa: &Record, delta: &TransferDelta) -> Dropped {
        let reverse = self.is_reverse(apex);
        let mut dropped = Dropped::new();
        let mut touched: HashMap<String, Parts> = HashMap::new();
        let zone = self.zones.entry(apex.clone()).or_default();
        let changes = delta
            .removed
            .iter()
            .map(|k| (false, k, 0))
            .chain(delta.added.iter().map(|(k, ttl)| (true, k, *ttl)));
        for (add, (owner, data), ttl) in changes {
            let owner: Name = owner.into();
            let kind = classify(apex, reverse, &owner, data);
            let host = match &kind {
                Kind::Address { host, .. } | Kind::Port { host, .. } => host,
                Kind::Apex => {
                    if matches!(data, RData::NS(_)) {
                        let text = ns_key(data);
                        if add {
                            zone.ns
                                .insert(text, Record::from_rdata(owner, ttl, data.clone()));
                        } else {
                            zone.ns.remove(&text);
                        }
                    }
                    continue;
                }
                Kind::Ptr | Kind::Dropped(_) => {
                    if let Kind::Dropped(t) = kind {
                        *dropped.entry(t).or_default() += usize::from(add);
                    }
                    zone.other(add, &kind, &owner, data);
                    continue;
                }
            };
            let (addresses, ports) = touched.entry(host.clone()).or_insert_with(|| {
                let had = self.builder.host(host).map(std::borrow::Cow::into_owned);
                had.unwrap_or_default().into_parts()
            });
            match (kind, add) {
                (Kind::Address { ip, .. }, true) => addresses.push(ip),
                (Kind::Address { ip, .. }, false) => addresses.retain(|a| *a != ip),
                (Kind::Port { port, .. }, true) => ports.push(port),
                (Kind::Port { port, .. }, false) => ports.retain(|p| *p != port),
                _ => {}
            }
        }
        dropped.retain(|_, n| *n > 0);
        self.set_apex(apex, soa);
        for (host, (addresses, ports)) in touched {
            self.builder
                .set_host(&host, Some(ZoneHost::new(addresses, ports)));
        }
        dropped
    }

    /// Serves `zone` (a whole zone of `apex`) in place of what `apex` held: hosts it does not
    /// list are removed, the others set (unchanged ones cost a comparison). Returns the types
    /// of the records that are not served. The records are freed before the hosts are set, so
    /// that the zone's new names take their place rather than memory of their own.
    pub fn replace(&mut self, apex: &Name, zone: FullZone) -> Dropped {
        let reverse = self.is_reverse(apex);
        let mut dropped = Dropped::new();
        let mut state = ZoneState::default();
        let mut hosts: HashMap<String, Parts> = HashMap::new();
        for r in zone.records() {
            match classify(apex, reverse, &r.name, &r.data) {
                Kind::Apex => {
                    if matches!(r.data, RData::NS(_)) {
                        state.ns.insert(ns_key(&r.data), r.clone());
                    }
                }
                Kind::Address { host, ip } => hosts.entry(host).or_default().0.push(ip),
                Kind::Port { host, port } => hosts.entry(host).or_default().1.push(port),
                kind @ (Kind::Ptr | Kind::Dropped(_)) => {
                    if let Kind::Dropped(t) = kind {
                        *dropped.entry(t).or_default() += 1;
                    }
                    state.other(true, &kind, &r.name, &r.data);
                }
            }
        }
        let FullZone { soa, records } = zone;
        drop(records);
        state.others.shrink_to_fit();
        for gone in self.builder.hosts_in(apex) {
            if !hosts.contains_key(&gone) {
                self.builder.set_host(&gone, None);
            }
        }
        self.zones.insert(apex.clone(), state);
        self.set_apex(apex, &soa);
        for (host, (addresses, ports)) in hosts {
            self.builder
                .set_host(&host, Some(ZoneHost::new(addresses, ports)));
        }
        dropped
    }

    fn set_apex(&mut self, apex: &Name, soa: &Record) {
        let ns = self
            .zones
            .get(apex)
            .map(|z| z.ns.values().cloned().collect())
            .unwrap_or_default();
        self.builder.set_apex(apex, soa.clone(), ns);
    }

    /// The snapshot of the zones as applied so far.
    pub fn snapshot(&mut self) -> Snapshot {
        self.builder.snapshot()
    }

    /// Gives back the growth slack of the tables (after a large first load).
    pub fn compact(&mut self) {
        self.builder.compact();
    }

    /// PTR records the primary has in zone `apex` (a reverse zone) that `snap` does not
    /// serve, and those it serves that the primary has not: (missing, extra).
    pub fn ptr_difference(&self, apex: &Name, snap: &Snapshot) -> (usize, usize) {
        let Some(theirs) = self.zones.get(apex).filter(|_| self.is_reverse(apex)) else {
            return (0, 0);
        };
        let ours = snap.zone_records(&LowerName::new(apex));
        let ours = ours.iter().filter(|r| r.record_type() == RecordType::PTR);
        let (mut common, mut extra) = (0, 0);
        for r in ours {
            match theirs.others.contains(&fingerprint(&r.name, &r.data)) {
                true => common += 1,
                false => extra += 1,
            }
        }
        (theirs.ptrs.saturating_sub(common), extra)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, NS, SOA, SRV};
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn soa(serial: u32) -> Record {
        let soa = SOA::new(name("ns.global."), name("h.global."), serial, 1, 1, 1, 30);
        Record::from_rdata(name("global."), 30, RData::SOA(soa))
    }

    /// Record `i` of a small universe: addresses of a few hosts (one a wildcard), their SRV
    /// records, an apex NS, a TXT that is dropped.
    fn record(i: u8) -> RecordKey {
        let host = [
            "a.ns1.global.",
            "b.ns1.global.",
            "*.ns2.global.",
            "c.ns2.global.",
        ][usize::from(i % 4)];
        let data = match i / 4 % 4 {
            0 | 1 => RData::A(A::new(240, 10, 0, i)),
            2 if !host.starts_with('*') => {
                let owner = format!("_http._tcp.{host}");
                let srv = SRV::new(0, 100, 8000 + u16::from(i), name(host));
                return (LowerName::new(&name(&owner)), RData::SRV(srv));
            }
            2 => RData::NS(NS(name("ns9.global."))),
            _ => RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![format!("{i}")])),
        };
        let owner = if matches!(data, RData::NS(_)) {
            "global."
        } else {
            host
        };
        (LowerName::new(&name(owner)), data)
    }

    fn key(r: &Record) -> RecordKey {
        (LowerName::new(&r.name), r.data.clone())
    }

    fn zone(serial: u32, present: &[bool]) -> FullZone {
        FullZone {
            soa: soa(serial),
            records: present
                .iter()
                .enumerate()
                .filter(|(_, p)| **p)
                .map(|(i, _)| {
                    let (owner, data) = record(i as u8);
                    Record::from_rdata((&owner).into(), 30, data)
                })
                .collect::<Vec<_>>()
                // As a primary sends them: a few records a message.
                .chunks(5)
                .map(<[Record]>::to_vec)
                .collect(),
        }
    }

    /// The IXFR that turns `old` into `new`, netted.
    fn delta(old: &FullZone, new: &FullZone) -> TransferDelta {
        let keys = |z: &FullZone| -> HashSet<RecordKey> { z.records().map(key).collect() };
        let (old, new) = (keys(old), keys(new));
        TransferDelta {
            removed: old.difference(&new).cloned().collect(),
            added: new.difference(&old).map(|k| (k.clone(), 30)).collect(),
        }
    }

    fn served(snap: &Snapshot) -> Vec<String> {
        let mut out: Vec<String> = snap
            .zone_records(&LowerName::new(&name("global.")))
            .iter()
            .chain(&snap.zone_records(&LowerName::new(&name("10.240.in-addr.arpa."))))
            // The reverse zone is not transferred here: its SOA is the builder's own.
            .filter(|r| r.record_type() != RecordType::SOA || r.name == name("global."))
            .map(|r| r.to_string())
            .collect();
        out.sort();
        out
    }

    /// `global.` and the reverse zone of 240.10.0.0/16, TTL 30 (also the rollout test's).
    pub(in crate::secondary) fn cfg() -> (ZoneConfig, Vec<IpNet>) {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        (cfg, vec!["240.10.0.0/16".parse().unwrap()])
    }

    /// Every kind of data a primary serves comes through a transfer into the same zone: a type
    /// this module does not handle would be dropped (`Kind::Dropped`) and fail here.
    #[test]
    fn every_kind_of_data_a_primary_serves_comes_through() {
        let (cfg, ranges) = cfg();
        let mut primary = ZoneBuilder::new(&cfg, &ranges);
        let hosts = [
            (
                "h.ns1.global",
                crate::zone::lookup_tests::host(
                    &["240.10.0.1", "fd00:10::1"],
                    &[("http", Transport::Tcp, 80), ("dns", Transport::Udp, 53)],
                ),
            ),
            ("*.ns2.global", ZoneHost::serving(&["240.10.0.2"])),
        ];
        for (host, h) in hosts {
            primary.set_host(host, Some(h));
        }
        let served_by_primary = primary.snapshot();
        let apex = name("global.");
        let mut records = served_by_primary.zone_records(&LowerName::new(&apex));
        let soa = records.remove(0);
        let mut secondary = Assembler::new(&cfg, &ranges);
        let zone = FullZone {
            soa,
            records: vec![records],
        };
        assert_eq!(secondary.replace(&apex, zone), Dropped::new());
        assert_eq!(served(&secondary.snapshot()), served(&served_by_primary));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Applying zone after zone, each as a delta or whole, serves exactly what building the
        /// last zone from nothing serves (no host keeps a stale address, port or NS), and holds
        /// exactly the records of the zone applied last (what an IXFR's deletions are checked
        /// against).
        #[test]
        fn deltas_and_whole_zones_serve_what_a_fresh_build_serves(
            steps in proptest::collection::vec(
                (proptest::collection::vec(any::<bool>(), 32), any::<bool>()), 1..6)
        ) {
            let (cfg, ranges) = cfg();
            let apex = name("global.");
            let mut incremental = Assembler::new(&cfg, &ranges);
            let mut old: Option<FullZone> = None;
            let mut snap = None;
            for (i, (present, whole)) in steps.iter().enumerate() {
                let z = zone(i as u32 + 1, present);
                match &old {
                    Some(old) if !whole => incremental.apply(&apex, &z.soa, &delta(old, &z)),
                    _ => incremental.replace(&apex, zone(i as u32 + 1, present)),
                };
                let held: HashSet<RecordKey> = z.records().map(key).collect();
                for i in 0..32 {
                    let (owner, data) = record(i);
                    let k = (owner.clone(), data.clone());
                    prop_assert_eq!(
                        incremental.holds(&apex, &(&owner).into(), &data),
                        held.contains(&k),
                        "{:?}", k
                    );
                }
                snap = Some(incremental.snapshot());
                old = Some(z);
            }
            let last = old.unwrap();
            let mut fresh = Assembler::new(&cfg, &ranges);
            fresh.replace(&apex, last);
            prop_assert_eq!(served(&snap.unwrap()), served(&fresh.snapshot()));
        }
    }

    #[test]
    fn a_reverse_zone_holds_its_ptrs_and_counts_what_it_drops() {
        let (cfg, ranges) = cfg();
        let apex = name("10.240.in-addr.arpa.");
        let ptr = |ip: &str, host: &str| {
            Record::from_rdata(
                name(&format!("{ip}.0.10.240.in-addr.arpa.")),
                30,
                RData::PTR(hickory_proto::rr::rdata::PTR(name(host))),
            )
        };
        let txt = Record::from_rdata(
            name("10.240.in-addr.arpa."),
            30,
            RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["x".into()])),
        );
        let mut a = Assembler::new(&cfg, &ranges);
        let full = FullZone {
            soa: soa(1),
            records: vec![vec![
                ptr("1", "a.global."),
                ptr("2", "b.global."),
                txt.clone(),
            ]],
        };
        assert_eq!(
            a.replace(&apex, full),
            Dropped::from([(RecordType::TXT, 1)])
        );
        let holds = |a: &Assembler, r: &Record| a.holds(&apex, &r.name, &r.data);
        assert!(holds(&a, &ptr("1", "A.GLOBAL.")), "case-insensitive");
        assert!(holds(&a, &txt));
        assert!(!holds(&a, &ptr("1", "b.global.")));
        assert!(!holds(&a, &ptr("3", "a.global.")));
        let gone = TransferDelta {
            removed: vec![key(&ptr("1", "a.global."))],
            added: vec![(key(&ptr("3", "c.global.")), 30)],
        };
        assert!(a.apply(&apex, &soa(2), &gone).is_empty());
        assert!(!holds(&a, &ptr("1", "a.global.")));
        assert!(holds(&a, &ptr("3", "c.global.")));
    }
}
