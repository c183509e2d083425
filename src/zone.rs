//! The immutable snapshot of everything answerable, and the lookup rules of DESIGN §3.
//!
//! Built off the hot path from the registry's merged view and the allocator's table, then swapped
//! in atomically; queries only read it. Every lookup is a hash probe per label of the query name,
//! so negative answers cost the same as positive ones whatever the zone size.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fnv::FnvBuildHasher;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{HINFO, NS, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;
use serde::Serialize;

use crate::alloc::Allocator;
use crate::registry::{AddressKind, Merged};
use crate::serviceentry::{SrvPort, Transport};

/// What the snapshot is built with (from flags).
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// Forward zones, normalised (`global`).
    pub zones: Vec<String>,
    /// Extra reverse zones (`--reverse-zone`), besides those covering the VIP ranges.
    pub reverse_zones: Vec<String>,
    /// Name servers for SOA MNAME and the apex NS set.
    pub ns: Vec<String>,
    pub ttl: u32,
}

impl ZoneConfig {
    fn ns_names(&self) -> Vec<Name> {
        let names: Vec<String> = if self.ns.is_empty() {
            vec![format!(
                "ns.{}",
                self.zones.first().map_or("global", |z| z.as_str())
            )]
        } else {
            self.ns.clone()
        };
        names.iter().filter_map(|n| fqdn(n)).collect()
    }
}

/// The reverse zone that covers a VIP range: the range truncated to an octet (IPv4) or nibble
/// (IPv6) boundary, since reverse names only split there.
pub fn reverse_zone_for(range: &IpNet) -> Name {
    let (labels_per_addr, bits_per_label) = match range {
        IpNet::V4(_) => (4u8, 8u8),
        IpNet::V6(_) => (32u8, 4u8),
    };
    let keep = range.prefix_len() / bits_per_label;
    let full = Name::from(range.network());
    // Reverse names: address labels, then in-addr.arpa / ip6.arpa (2 labels).
    let drop = usize::from(labels_per_addr - keep);
    let labels: Vec<&[u8]> = full.iter().skip(drop).collect();
    let mut name = Name::from_labels(labels).expect("labels of a valid name");
    name.set_fqdn(true);
    name
}

fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s.trim_end_matches('.')).ok()?;
    n.set_fqdn(true);
    Some(n.to_lowercase())
}

#[derive(Debug)]
pub struct Apex {
    pub name: LowerName,
    pub soa: Record,
    pub ns: Vec<Record>,
}

/// One piece of answerable data, without its owner (the node's name) or TTL (the zone's): a
/// hickory `Record` is 272 bytes, this is 24, which at 100,000 hosts is the difference between
/// a snapshot of hundreds of megabytes and one of tens. Records are made when answered.
#[derive(Clone, Debug, PartialEq)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// `0 100 <port> <target>`.
    Srv(u16, Arc<Name>),
    Ptr(Arc<Name>),
}

impl Data {
    fn record_type(&self) -> RecordType {
        match self {
            Data::A(_) => RecordType::A,
            Data::Aaaa(_) => RecordType::AAAA,
            Data::Srv(..) => RecordType::SRV,
            Data::Ptr(_) => RecordType::PTR,
        }
    }

    fn record(&self, owner: &Name, ttl: u32) -> Record {
        let rdata = match self {
            Data::A(ip) => RData::A((*ip).into()),
            Data::Aaaa(ip) => RData::AAAA((*ip).into()),
            Data::Srv(port, target) => RData::SRV(SRV::new(0, 100, *port, (**target).clone())),
            Data::Ptr(target) => RData::PTR(PTR((**target).clone())),
        };
        Record::from_rdata(owner.clone(), ttl, rdata)
    }
}

/// Master-file order of the types within a node.
const NODE_TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
];

#[derive(Debug, Default)]
struct Node {
    data: Vec<Data>,
}

impl Node {
    fn push(&mut self, d: Data) {
        if !self.data.contains(&d) {
            self.data.push(d);
        }
    }

    fn records<'a>(
        &'a self,
        owner: &'a Name,
        ttl: u32,
        qtype: RecordType,
    ) -> impl Iterator<Item = Record> + 'a {
        self.data
            .iter()
            .filter(move |d| d.record_type() == qtype)
            .map(move |d| d.record(owner, ttl))
    }

    fn all<'a>(&'a self, owner: &'a Name, ttl: u32) -> impl Iterator<Item = Record> + 'a {
        NODE_TYPES
            .iter()
            .flat_map(move |t| self.records(owner, ttl, *t))
    }
}

/// One address of a served host, with where it came from (for `/debug/hosts` and `check`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddressReport {
    pub address: IpAddr,
    /// `vip`, `spec` or `istio-status`.
    pub source: &'static str,
    /// `cluster/namespace/name` of every object that wrote it (empty for VIPs).
    pub objects: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostReport {
    pub served: bool,
    pub wildcard: bool,
    /// Why a host is not served, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub addresses: Vec<AddressReport>,
    pub ports: Vec<SrvPort>,
    pub objects: Vec<String>,
}

/// The answer to one question, before protocol concerns (EDNS, truncation) are applied.
#[derive(Debug)]
pub struct Answer<'a> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Cow<'a, Record>>,
    pub authority: Vec<&'a Record>,
    pub additional: Vec<Cow<'a, Record>>,
}

impl Answer<'_> {
    fn refused() -> Self {
        Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additional: vec![],
        }
    }
}

#[derive(Debug)]
pub struct Snapshot {
    /// False only for the placeholder served before the first full load.
    pub loaded: bool,
    pub serial: u32,
    /// Unique per snapshot built by this process: caches keyed to a snapshot compare this, never
    /// its address (a freed snapshot's memory can hold the next one).
    pub generation: u64,
    /// Longest apex first, so the first zone_of match is the closest enclosing zone.
    apexes: Vec<Apex>,
    // FNV, not SipHash: the keys come from ServiceEntries, not from clients, and hashing names is
    // much of both the rebuild and the lookup.
    nodes: HashMap<LowerName, Node, FnvBuildHasher>,
    /// Keyed by the wildcard's parent: `*.bar.global` is stored under `bar.global`.
    wildcards: HashMap<LowerName, Node, FnvBuildHasher>,
    ents: HashSet<LowerName, FnvBuildHasher>,
    ttl: u32,
    pub hosts: BTreeMap<String, HostReport>,
}

impl Snapshot {
    /// An empty snapshot (used before the first load completes).
    pub fn empty(cfg: &ZoneConfig, ranges: &[IpNet]) -> Snapshot {
        Snapshot {
            loaded: false,
            ..Snapshot::build(cfg, ranges, &Merged::default(), None, None)
        }
    }

    /// Builds the snapshot. The serial is `prev`'s when nothing answerable changed, otherwise it
    /// increases (at least to the current unix time, so restarts do not go backwards).
    pub fn build(
        cfg: &ZoneConfig,
        ranges: &[IpNet],
        merged: &Merged,
        alloc: Option<&Allocator>,
        prev: Option<&Snapshot>,
    ) -> Snapshot {
        let ttl = cfg.ttl;
        // Collected in order, then bulk-built: much cheaper than 100,000 B-tree inserts.
        let mut hosts = Vec::with_capacity(merged.hosts.len());
        for (host, view) in &merged.hosts {
            let mut addresses: Vec<AddressReport> = view
                .addresses
                .iter()
                .map(|(ip, origins)| AddressReport {
                    address: *ip,
                    source: match origins.iter().next().map(|(k, _)| *k) {
                        Some(AddressKind::IstioStatus) => "istio-status",
                        _ => "spec",
                    },
                    objects: origins.iter().map(|(_, o)| o.to_string()).collect(),
                })
                .collect();
            if view.wants_vip {
                if let Some(a) = alloc {
                    addresses.extend(a.vips(host).map(|ip| AddressReport {
                        address: ip,
                        source: "vip",
                        objects: vec![],
                    }));
                }
            }
            let reason = match () {
                _ if !addresses.is_empty() => None,
                _ if view.wants_vip => Some("no VIP could be allocated (range exhausted?)"),
                _ => Some("no address and no VIP (resolution NONE, opt-out label, or wildcard without DYNAMIC_DNS)"),
            };
            hosts.push((
                host.clone(),
                HostReport {
                    served: reason.is_none(),
                    wildcard: view.wildcard,
                    reason,
                    addresses,
                    ports: view.ports.clone(),
                    objects: view.objects.iter().map(|o| o.to_string()).collect(),
                },
            ));
        }
        let hosts: BTreeMap<String, HostReport> = hosts.into_iter().collect();

        let serial = match prev {
            Some(p) if p.hosts == hosts => p.serial,
            Some(p) => p.serial.wrapping_add(1).max(unix_now() as u32),
            None => unix_now() as u32,
        };

        let ns_names = cfg.ns_names();
        let mut apex_names: Vec<Name> = cfg.zones.iter().filter_map(|z| fqdn(z)).collect();
        let mut reverse: Vec<Name> = ranges.iter().map(reverse_zone_for).collect();
        reverse.extend(cfg.reverse_zones.iter().filter_map(|z| fqdn(z)));
        for r in reverse {
            if !apex_names.contains(&r) {
                apex_names.push(r);
            }
        }
        let mut apexes: Vec<Apex> = apex_names
            .iter()
            .map(|zone| {
                let rname = Name::from_ascii("hostmaster")
                    .unwrap()
                    .append_domain(zone)
                    .unwrap_or_else(|_| zone.clone());
                let soa = SOA::new(ns_names[0].clone(), rname, serial, 3600, 600, 86400, ttl);
                Apex {
                    name: LowerName::new(zone),
                    soa: Record::from_rdata(zone.clone(), ttl, RData::SOA(soa)),
                    ns: ns_names
                        .iter()
                        .map(|n| Record::from_rdata(zone.clone(), ttl, RData::NS(NS(n.clone()))))
                        .collect(),
                }
            })
            .collect();
        apexes.sort_by_key(|a| std::cmp::Reverse(a.name.num_labels()));

        static GENERATION: AtomicU64 = AtomicU64::new(1);
        let mut snap = Snapshot {
            loaded: true,
            serial,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            apexes,
            nodes: HashMap::default(),
            wildcards: HashMap::default(),
            ents: HashSet::default(),
            ttl,
            hosts,
        };
        // Name servers inside our zones exist (NODATA rather than NXDOMAIN for their addresses).
        for ns in &ns_names {
            if snap.zone_of(&LowerName::new(ns)).is_some() {
                snap.add_node(ns.clone());
            }
        }
        let reports = std::mem::take(&mut snap.hosts);
        for (host, report) in reports.iter().filter(|(_, r)| r.served) {
            snap.add_host(host, report);
        }
        snap.hosts = reports;
        // Exact sizes: at 100,000 hosts, growth slack would be a third of the snapshot.
        for node in snap.nodes.values_mut().chain(snap.wildcards.values_mut()) {
            node.data.shrink_to_fit();
        }
        snap.nodes.shrink_to_fit();
        snap.wildcards.shrink_to_fit();
        snap.ents.shrink_to_fit();
        snap
    }

    fn zone_of(&self, name: &LowerName) -> Option<&Apex> {
        self.apexes.iter().find(|a| a.name.zone_of(name))
    }

    /// Creates the node for `name` and records its ancestors up to the apex as empty non-terminals.
    fn add_node(&mut self, name: Name) -> &mut Node {
        let lower = LowerName::new(&name);
        self.add_ents(lower.base_name());
        self.nodes.entry(lower).or_default()
    }

    /// Records `name` and its ancestors below the apex as empty non-terminals.
    fn add_ents(&mut self, mut name: LowerName) {
        let Some(apex) = self.zone_of(&name).map(|a| a.name.clone()) else {
            return;
        };
        while name != apex && apex.zone_of(&name) {
            // Chains are always inserted whole, so a name already present has its ancestors too.
            if !self.ents.insert(name.clone()) {
                break;
            }
            name = name.base_name();
        }
    }

    fn add_host(&mut self, host: &str, report: &HostReport) {
        let Some(name) = fqdn(host) else { return };
        let node = if report.wildcard {
            // `*.a.mix.global` makes `a.mix.global` exist, but only as an empty non-terminal: a
            // shorter wildcard (`*.mix.global`) still covers it ("any name below, any depth"),
            // exactly as for a name that is only the parent of an exact host.
            let parent = LowerName::new(&name.base_name());
            self.add_ents(parent.clone());
            self.wildcards.entry(parent).or_default()
        } else {
            self.add_node(name.clone())
        };
        for a in &report.addresses {
            node.push(match a.address {
                IpAddr::V4(v4) => Data::A(v4),
                IpAddr::V6(v6) => Data::Aaaa(v6),
            });
        }
        if report.wildcard {
            return;
        }
        // One copy of the name for every SRV and PTR that points at it.
        let target = Arc::new(name.clone());
        for p in &report.ports {
            let proto = match p.transport {
                Transport::Tcp => "_tcp",
                Transport::Udp => "_udp",
            };
            let Ok(owner) =
                Name::from_labels([format!("_{}", p.name).as_bytes(), proto.as_bytes()])
                    .and_then(|n| n.append_domain(&name))
            else {
                continue;
            };
            self.add_node(owner)
                .push(Data::Srv(p.number, target.clone()));
        }
        for a in &report.addresses {
            let mut rev = Name::from(a.address);
            rev.set_fqdn(true);
            if self.zone_of(&LowerName::new(&rev)).is_some() {
                self.add_node(rev).push(Data::Ptr(target.clone()));
            }
        }
    }

    /// Answers one question (name already lower-cased by the decoder).
    pub fn lookup<'a>(&'a self, qname: &LowerName, qtype: RecordType) -> Answer<'a> {
        let Some(apex) = self.zone_of(qname) else {
            return Answer::refused();
        };
        let mut ans = Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: vec![],
            authority: vec![],
            additional: vec![],
        };
        if *qname == apex.name {
            match qtype {
                RecordType::SOA | RecordType::ANY => ans.answers.push(Cow::Borrowed(&apex.soa)),
                RecordType::NS => ans.answers.extend(apex.ns.iter().map(Cow::Borrowed)),
                _ => {}
            }
            if ans.answers.is_empty() {
                ans.authority.push(&apex.soa);
            }
            return ans;
        }

        if let Some(node) = self.nodes.get(qname) {
            self.answer_from(node, qname, qtype, apex, &mut ans);
            return ans;
        }
        // Longest wildcard first: walk up from the closest parent to the apex.
        let mut parent = qname.base_name();
        while apex.name.zone_of(&parent) {
            if let Some(node) = self.wildcards.get(&parent) {
                self.answer_from(node, qname, qtype, apex, &mut ans);
                return ans;
            }
            if parent == apex.name {
                break;
            }
            parent = parent.base_name();
        }
        if !self.ents.contains(qname) {
            ans.rcode = ResponseCode::NXDomain;
        }
        ans.authority.push(&apex.soa);
        ans
    }

    fn answer_from<'a>(
        &'a self,
        node: &'a Node,
        qname: &LowerName,
        qtype: RecordType,
        apex: &'a Apex,
        ans: &mut Answer<'a>,
    ) {
        if qtype == RecordType::ANY {
            // RFC 8482: one synthesised HINFO instead of every RRset.
            let hinfo = HINFO::new("RFC8482".into(), String::new());
            ans.answers.push(Cow::Owned(Record::from_rdata(
                Name::from(qname.clone()),
                self.ttl,
                RData::HINFO(hinfo),
            )));
            return;
        }
        // The owner is the query name, also for a wildcard match (synthesised, RFC 4592).
        let owner = Name::from(qname.clone());
        ans.answers
            .extend(node.records(&owner, self.ttl, qtype).map(Cow::Owned));
        if ans.answers.is_empty() {
            ans.authority.push(&apex.soa);
        }
        if qtype == RecordType::SRV {
            for d in &node.data {
                if let Data::Srv(_, target) = d {
                    if let Some(t) = self.nodes.get(&LowerName::new(target)) {
                        for rtype in [RecordType::A, RecordType::AAAA] {
                            ans.additional
                                .extend(t.records(target, self.ttl, rtype).map(Cow::Owned));
                        }
                    }
                }
            }
        }
    }

    /// Every record of one zone in master-file order (SOA first), for AXFR and `zonefile`.
    pub fn zone_records(&self, zone: &LowerName) -> Vec<Record> {
        let Some(apex) = self.apexes.iter().find(|a| a.name == *zone) else {
            return vec![];
        };
        let mut out = vec![apex.soa.clone()];
        out.extend(apex.ns.iter().cloned());
        // Only names whose closest enclosing zone is this one.
        let mut names: Vec<(&LowerName, &Node, bool)> = self
            .nodes
            .iter()
            .map(|(n, node)| (n, node, false))
            .chain(self.wildcards.iter().map(|(n, node)| (n, node, true)))
            .filter(|(n, _, _)| self.zone_of(n).is_some_and(|a| a.name == *zone))
            .collect();
        names.sort_by(|a, b| a.0.cmp(b.0).then(a.2.cmp(&b.2)));
        for (name, node, wildcard) in names {
            let mut owner = Name::from(name.clone());
            if wildcard {
                // Stored under its parent: `*.bar.global` lives at `bar.global`.
                owner = Name::from_labels([&b"*"[..]])
                    .and_then(|w| w.append_domain(&owner))
                    .expect("a wildcard below a valid name");
            }
            out.extend(node.all(&owner, self.ttl));
        }
        out
    }

    pub fn apex_names(&self) -> Vec<LowerName> {
        let mut v: Vec<LowerName> = self.apexes.iter().map(|a| a.name.clone()).collect();
        v.sort();
        v
    }

    pub fn served_hosts(&self) -> usize {
        self.hosts.values().filter(|h| h.served).count()
    }

    pub fn wanted_vips(merged: &Merged) -> BTreeSet<String> {
        merged
            .hosts
            .iter()
            .filter(|(_, v)| v.wants_vip)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_zones_round_to_label_boundaries() {
        let z = |s: &str| reverse_zone_for(&s.parse().unwrap()).to_ascii();
        assert_eq!(z("240.10.0.0/16"), "10.240.in-addr.arpa.");
        assert_eq!(z("240.10.0.0/30"), "0.10.240.in-addr.arpa.");
        assert_eq!(z("240.0.0.0/4"), "in-addr.arpa.");
        assert_eq!(z("fd00:10::/48"), "0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.");
    }
}
