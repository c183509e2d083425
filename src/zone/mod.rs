//! The immutable snapshot of everything answerable, and the lookup rules of DESIGN §3.
//!
//! The [`ZoneBuilder`] keeps the zone up to date host by host (a change touches only the names of
//! the hosts it changes) and hands out snapshots; queries only read a snapshot, swapped in
//! atomically. Names live in shards behind `Arc`s: a snapshot shares every shard a later change
//! did not touch, so publishing after one change copies a few hundred names, not the zone. Every
//! lookup is a hash probe per label of the query name, so negative answers cost the same as
//! positive ones whatever the zone size.

mod builder;
pub mod key;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use fnv::FnvBuildHasher;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{HINFO, PTR, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;
use smallvec::SmallVec;

pub use builder::ZoneBuilder;
use key::Key;

pub use crate::report::{AddressReport, AddressSource, HostReport};

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
    key: Box<[u8]>,
    pub soa: Record,
    pub ns: Vec<Record>,
}

/// One piece of answerable data, without its owner (the node's name) or TTL (the zone's): a
/// hickory `Record` is 272 bytes, this is 24, which at 100,000 hosts is the difference between
/// a snapshot of hundreds of megabytes and one of tens. Records are made when answered.
/// Ordered, and kept sorted within a node: the answer's record order is the same whatever order
/// the hosts came in (on every replica, after any history of changes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Key),
    /// A port of the host this node is: `_<name>._<tcp|udp>.<host> SRV 0 100 <port> <host>`.
    /// Kept on the host's own node rather than as two more names per host (the SRV owner and
    /// its `_tcp` empty non-terminal), which at 100,000 hosts is a fifth of the memory; the
    /// lookup derives those names (see [`service_name`]).
    Srv {
        udp: bool,
        /// The first label, lower-cased: `_http`.
        label: Box<[u8]>,
        port: u16,
    },
}

impl Data {
    /// The type of the record this is at the node's own name (None for SRV data, whose owner
    /// is below it).
    fn record_type(&self) -> Option<RecordType> {
        match self {
            Data::A(_) => Some(RecordType::A),
            Data::Aaaa(_) => Some(RecordType::AAAA),
            Data::Ptr(_) => Some(RecordType::PTR),
            Data::Srv { .. } => None,
        }
    }

    fn record(&self, owner: &Name, ttl: u32, node: &[u8]) -> Record {
        let rdata = match self {
            Data::A(ip) => RData::A((*ip).into()),
            Data::Aaaa(ip) => RData::AAAA((*ip).into()),
            Data::Ptr(target) => RData::PTR(PTR(key::to_name(target))),
            Data::Srv { port, .. } => RData::SRV(SRV::new(0, 100, *port, key::to_name(node))),
        };
        Record::from_rdata(owner.clone(), ttl, rdata)
    }
}

/// Master-file order of the types within a node.
const NODE_TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::PTR];

/// Splits `_<name>._<tcp|udp>.<host>` into (name label, udp?, host key).
fn service_name(qkey: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let rest = key::parent(qkey)?;
    let label = &qkey[1..qkey.len() - rest.len()];
    let (udp, host) = proto_name(rest)?;
    label.starts_with(b"_").then_some((label, udp, host))
}

/// Splits `_<tcp|udp>.<host>` into (udp?, host key).
fn proto_name(qkey: &[u8]) -> Option<(bool, &[u8])> {
    let host = key::parent(qkey)?;
    match &qkey[..qkey.len() - host.len()] {
        b"\x04_tcp" => Some((false, host)),
        b"\x04_udp" => Some((true, host)),
        _ => None,
    }
}

/// The data of one name. Most names hold one record: kept inline, without an allocation.
#[derive(Clone, Debug, Default)]
struct Node {
    data: SmallVec<[Data; 1]>,
}

impl Node {
    fn records<'a>(
        &'a self,
        owner: &'a Name,
        ttl: u32,
        qtype: RecordType,
    ) -> impl Iterator<Item = Record> + 'a {
        self.data
            .iter()
            .filter(move |d| d.record_type() == Some(qtype))
            .map(move |d| d.record(owner, ttl, &[]))
    }

    fn all<'a>(&'a self, owner: &'a Name, ttl: u32) -> impl Iterator<Item = Record> + 'a {
        NODE_TYPES
            .iter()
            .flat_map(move |t| self.records(owner, ttl, *t))
    }

    /// The SRV data of `_<label>._<proto>` below this node.
    fn services<'a>(&'a self, label: &'a [u8], udp: bool) -> impl Iterator<Item = &'a Data> + 'a {
        self.data.iter().filter(
            move |d| matches!(d, Data::Srv { udp: u, label: l, .. } if *u == udp && **l == *label),
        )
    }

    fn has_proto(&self, udp: bool) -> bool {
        self.data
            .iter()
            .any(|d| matches!(d, Data::Srv { udp: u, .. } if *u == udp))
    }
}

/// How many shards the names are spread over: enough that one change copies only a few hundred
/// names at 100,000 hosts, few enough that an empty zone costs little.
const SHARDS: usize = 1024;
const HOST_SHARDS: usize = 256;

// FNV, not SipHash: the keys come from ServiceEntries, not from clients, and hashing names is
// much of both the build and the lookup.
#[derive(Clone, Debug, Default)]
struct Shard {
    nodes: HashMap<Key, Node, FnvBuildHasher>,
    /// Keyed by the wildcard's parent: `*.bar.global` is stored under `bar.global`.
    wildcards: HashMap<Key, Node, FnvBuildHasher>,
    /// Empty non-terminals, each with how many names below it hold it up.
    ents: HashMap<Key, u32, FnvBuildHasher>,
}

/// Keyed by the host's name key (shared with its node).
type HostShard = HashMap<Key, HostReport, FnvBuildHasher>;

fn shard_index(key: &[u8], shards: usize) -> usize {
    (key::hash(key) as usize) & (shards - 1)
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
    shards: Vec<Arc<Shard>>,
    hosts: Vec<Arc<HostShard>>,
    ttl: u32,
    served: usize,
    host_count: usize,
}

impl Snapshot {
    /// An empty snapshot (served as SERVFAIL before the first load completes).
    pub fn empty(cfg: &ZoneConfig, ranges: &[IpNet]) -> Snapshot {
        Snapshot {
            loaded: false,
            ..ZoneBuilder::new(cfg, ranges).snapshot()
        }
    }

    fn zone_of(&self, name: &LowerName) -> Option<&Apex> {
        self.apexes.iter().find(|a| a.name.zone_of(name))
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[shard_index(key, SHARDS)]
    }

    fn node(&self, key: &[u8]) -> Option<&Node> {
        self.shard(key).nodes.get(key)
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
        let mut buf = [0u8; key::MAX];
        let Some(len) = key::encode(qname, &mut buf) else {
            ans.rcode = ResponseCode::NXDomain;
            ans.authority.push(&apex.soa);
            return ans;
        };
        let qkey = &buf[..len];
        if let Some(node) = self.node(qkey) {
            self.answer_from(node, qname, qtype, apex, &mut ans);
            return ans;
        }
        if let Some((label, udp, host)) = service_name(qkey) {
            if let Some(node) = self.node(host) {
                if node.services(label, udp).next().is_some() {
                    self.answer_service(node, label, udp, host, qname, qtype, apex, &mut ans);
                    return ans;
                }
            }
        }
        // Longest wildcard first: walk up from the closest parent to the apex.
        let mut parent = key::parent(qkey);
        while let Some(p) = parent.filter(|p| p.len() >= apex.key.len()) {
            if let Some(node) = self.shard(p).wildcards.get(p) {
                self.answer_from(node, qname, qtype, apex, &mut ans);
                return ans;
            }
            if *p == *apex.key {
                break;
            }
            parent = key::parent(p);
        }
        if !self.is_ent(qkey) {
            ans.rcode = ResponseCode::NXDomain;
        }
        ans.authority.push(&apex.soa);
        ans
    }

    /// An empty non-terminal: counted in the shards, or `_<proto>.<host>` of a host with ports.
    fn is_ent(&self, qkey: &[u8]) -> bool {
        self.shard(qkey).ents.contains_key(qkey)
            || proto_name(qkey)
                .and_then(|(udp, host)| Some(self.node(host)?.has_proto(udp)))
                .unwrap_or(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_service<'a>(
        &'a self,
        node: &'a Node,
        label: &[u8],
        udp: bool,
        host: &[u8],
        qname: &LowerName,
        qtype: RecordType,
        apex: &'a Apex,
        ans: &mut Answer<'a>,
    ) {
        let owner = Name::from(qname.clone());
        match qtype {
            RecordType::ANY => ans.answers.push(Cow::Owned(hinfo(owner, self.ttl))),
            RecordType::SRV => {
                ans.answers.extend(
                    node.services(label, udp)
                        .map(|d| Cow::Owned(d.record(&owner, self.ttl, host))),
                );
                let target = key::to_name(host);
                for rtype in [RecordType::A, RecordType::AAAA] {
                    ans.additional
                        .extend(node.records(&target, self.ttl, rtype).map(Cow::Owned));
                }
            }
            _ => ans.authority.push(&apex.soa),
        }
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
            ans.answers
                .push(Cow::Owned(hinfo(Name::from(qname.clone()), self.ttl)));
            return;
        }
        // The owner is the query name, also for a wildcard match (synthesised, RFC 4592).
        let owner = Name::from(qname.clone());
        ans.answers
            .extend(node.records(&owner, self.ttl, qtype).map(Cow::Owned));
        if ans.answers.is_empty() {
            ans.authority.push(&apex.soa);
        }
    }

    /// Every record of one zone in master-file order (SOA first), for AXFR and `zonefile`.
    pub fn zone_records(&self, zone: &LowerName) -> Vec<Record> {
        let Some(apex) = self.apexes.iter().find(|a| a.name == *zone) else {
            return vec![];
        };
        let mut out = vec![apex.soa.clone()];
        out.extend(apex.ns.iter().cloned());
        // Only names whose closest enclosing zone is this one, each with its records.
        let mut names: Vec<(LowerName, Vec<Record>)> = Vec::new();
        for shard in &self.shards {
            for (k, node) in &shard.nodes {
                let name = key::to_name(k);
                if self
                    .zone_of(&LowerName::new(&name))
                    .is_none_or(|a| a.name != *zone)
                {
                    continue;
                }
                for d in &node.data {
                    if let Data::Srv { udp, label, .. } = d {
                        let proto: &[u8] = if *udp { b"_udp" } else { b"_tcp" };
                        if let Ok(owner) = Name::from_labels([&label[..], proto])
                            .and_then(|n| n.append_domain(&name))
                        {
                            names.push((
                                LowerName::new(&owner),
                                vec![d.record(&owner, self.ttl, k)],
                            ));
                        }
                    }
                }
                names.push((LowerName::new(&name), node.all(&name, self.ttl).collect()));
            }
            for (k, node) in &shard.wildcards {
                // Stored under its parent: `*.bar.global` lives at `bar.global`.
                let owner = Name::from_labels([&b"*"[..]])
                    .and_then(|w| w.append_domain(&key::to_name(k)))
                    .expect("a wildcard below a valid name");
                if self
                    .zone_of(&LowerName::new(&owner))
                    .is_some_and(|a| a.name == *zone)
                {
                    names.push((LowerName::new(&owner), node.all(&owner, self.ttl).collect()));
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(names.into_iter().flat_map(|(_, records)| records));
        out
    }

    pub fn apex_names(&self) -> Vec<LowerName> {
        let mut v: Vec<LowerName> = self.apexes.iter().map(|a| a.name.clone()).collect();
        v.sort();
        v
    }

    pub fn served_hosts(&self) -> usize {
        self.served
    }

    /// Every host the sources list, served or not.
    pub fn host_count(&self) -> usize {
        self.host_count
    }

    pub fn host(&self, host: &str) -> Option<&HostReport> {
        let k = key::of_host(host)?;
        self.hosts[shard_index(&k, HOST_SHARDS)].get(&k[..])
    }

    /// Every host's report, sorted by host name (for `/debug/hosts` and `check`).
    pub fn hosts(&self) -> BTreeMap<String, &HostReport> {
        self.hosts
            .iter()
            .flat_map(|s| s.iter().map(|(k, r)| (key::to_host(k), r)))
            .collect()
    }
}

/// RFC 8482: one synthesised HINFO instead of every RRset.
fn hinfo(owner: Name, ttl: u32) -> Record {
    Record::from_rdata(
        owner,
        ttl,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    )
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
