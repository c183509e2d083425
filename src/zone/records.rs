//! Record data and its rendering, per type: what a node holds ([`Data`]), how each type becomes
//! a record when answered or transferred, and the names derived from it (SRV owners and their
//! `_tcp`/`_udp` empty non-terminals). A new record type is a variant of [`Data`]: the matches on
//! it here are exhaustive, and the unit test `every_data_type_is_named_where_types_are_keyed`
//! does not compile until it says how the types the fast path and the metrics key on treat it.

use hickory_proto::rr::rdata::{HINFO, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smallvec::SmallVec;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::key::{self, Key};
use crate::serviceentry::Transport;

/// One piece of answerable data, without its owner (the node's name) or TTL (the zone's): a
/// hickory `Record` is 272 bytes, this is 24, which at 100,000 hosts is the difference between
/// a snapshot of hundreds of megabytes and one of tens. Records are made when answered.
/// Ordered, and kept sorted within a node: the answer's record order is the same whatever order
/// the hosts came in (on every replica, after any history of changes). The variants' order is
/// the master-file order of the types at a node's own name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Key),
    /// A port of the host this node is: `_<name>._<tcp|udp>.<host> SRV 0 100 <port> <host>`.
    /// Kept on the host's own node rather than as two more names per host (the SRV owner and
    /// its `_tcp` empty non-terminal), which at 100,000 hosts is a fifth of the memory; the
    /// lookup derives those names (see [`service_name`]).
    Srv {
        transport: Transport,
        /// The first label, lower-cased: `_http`.
        label: Box<[u8]>,
        port: u16,
    },
}

/// The types whose record data holds a name, among those the zone answers: the apex's SOA and
/// NS, PTR and SRV targets. Answers of these types depend on the case of the query (see the fast
/// path's cache). `every_data_type_is_named_where_types_are_keyed` checks it against [`Data`].
pub const NAMES_IN_DATA: [RecordType; 4] = [
    RecordType::SOA,
    RecordType::NS,
    RecordType::PTR,
    RecordType::SRV,
];

impl Data {
    /// An address, as the record of its family.
    pub(super) fn address(ip: IpAddr) -> Data {
        match ip {
            IpAddr::V4(v4) => Data::A(v4),
            IpAddr::V6(v6) => Data::Aaaa(v6),
        }
    }

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

    /// The record, owned by `owner`; `node` is the key of the node holding it (the SRV target).
    pub(super) fn record(&self, owner: &Name, ttl: u32, node: &[u8]) -> Record {
        let rdata = match self {
            Data::A(ip) => RData::A((*ip).into()),
            Data::Aaaa(ip) => RData::AAAA((*ip).into()),
            Data::Ptr(target) => RData::PTR(PTR(key::to_name(target))),
            Data::Srv { port, .. } => RData::SRV(SRV::new(0, 100, *port, key::to_name(node))),
        };
        Record::from_rdata(owner.clone(), ttl, rdata)
    }

    /// The labels of the owner of data kept on a node but answered below it, leftmost first
    /// (`_http`, `_tcp` for SRV).
    pub(super) fn labels_below(&self) -> Option<[&[u8]; 2]> {
        match self {
            Data::Srv {
                transport, label, ..
            } => Some([&label[..], transport.label()]),
            Data::A(_) | Data::Aaaa(_) | Data::Ptr(_) => None,
        }
    }

    /// The owner of data kept on a node but answered below it (`_http._tcp.<node>` for SRV).
    pub(super) fn owner_below(&self, node: &Name) -> Option<Name> {
        let labels = self.labels_below()?;
        Name::from_labels(labels)
            .and_then(|n| n.append_domain(node))
            .ok()
    }
}

/// The first label of a key and the key of its parent.
fn split_first(qkey: &[u8]) -> Option<(&[u8], &[u8])> {
    let parent = key::parent(qkey)?;
    Some((&qkey[1..qkey.len() - parent.len()], parent))
}

/// Splits `_<name>._<tcp|udp>.<host>` into (name label, transport, host key).
pub(super) fn service_name(qkey: &[u8]) -> Option<(&[u8], Transport, &[u8])> {
    let (label, rest) = split_first(qkey)?;
    let (transport, host) = proto_name(rest)?;
    label.starts_with(b"_").then_some((label, transport, host))
}

/// Splits `_<tcp|udp>.<host>` into (transport, host key).
pub(super) fn proto_name(qkey: &[u8]) -> Option<(Transport, &[u8])> {
    let (label, host) = split_first(qkey)?;
    Some((Transport::from_label(label)?, host))
}

/// RFC 8482: one synthesised HINFO instead of every RRset.
pub(super) fn hinfo(owner: Name, ttl: u32) -> Record {
    Record::from_rdata(
        owner,
        ttl,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    )
}

/// What a name holds for one question: records (empty: NODATA) and additional data.
pub(super) struct Rendered {
    pub records: Vec<Record>,
    pub additional: Vec<Record>,
}

/// The data of one name. Most names hold one record: kept inline, without an allocation.
#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    pub data: SmallVec<[Data; 1]>,
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

    /// The answer at the node's own name (or a name its wildcard covers) to `qtype`.
    pub fn answer(&self, owner: &Name, ttl: u32, qtype: RecordType) -> Rendered {
        let records = if qtype == RecordType::ANY {
            vec![hinfo(owner.clone(), ttl)]
        } else {
            self.records(owner, ttl, qtype).collect()
        };
        Rendered {
            records,
            additional: vec![],
        }
    }

    /// The SRV data of `_<label>._<proto>` below this node.
    fn services<'a>(
        &'a self,
        label: &'a [u8],
        transport: Transport,
    ) -> impl Iterator<Item = &'a Data> + 'a {
        self.data.iter().filter(move |d| {
            matches!(d, Data::Srv { transport: t, label: l, .. } if *t == transport && **l == *label)
        })
    }

    pub fn has_service(&self, label: &[u8], transport: Transport) -> bool {
        self.services(label, transport).next().is_some()
    }

    /// The answer at `_<label>._<proto>.<host>` (this node is the host, `host` its key): SRV
    /// records with the host's addresses in additional.
    pub fn answer_service(
        &self,
        (label, transport, host): (&[u8], Transport, &[u8]),
        owner: &Name,
        ttl: u32,
        qtype: RecordType,
    ) -> Rendered {
        let mut out = Rendered {
            records: vec![],
            additional: vec![],
        };
        match qtype {
            RecordType::ANY => out.records.push(hinfo(owner.clone(), ttl)),
            RecordType::SRV => {
                out.records.extend(
                    self.services(label, transport)
                        .map(|d| d.record(owner, ttl, host)),
                );
                let target = key::to_name(host);
                out.additional.extend(self.addresses(&target, ttl));
            }
            _ => {}
        }
        out
    }

    /// The node's addresses, A then AAAA, owned by `owner`: the additional data of an answer
    /// that names this node (an SRV target, an in-zone name server).
    pub fn addresses<'a>(&'a self, owner: &'a Name, ttl: u32) -> impl Iterator<Item = Record> + 'a {
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .flat_map(move |rtype| self.records(owner, ttl, rtype))
    }

    pub fn has_proto(&self, transport: Transport) -> bool {
        self.data
            .iter()
            .any(|d| matches!(d, Data::Srv { transport: t, .. } if *t == transport))
    }

    /// Every record this node stands for, as (owner, records) in master-file order within an
    /// owner: its own name's and those of the names derived from it. `k` is the node's key.
    pub fn master_records(&self, name: &Name, k: &[u8], ttl: u32) -> Vec<(Name, Vec<Record>)> {
        let mut out: Vec<(Name, Vec<Record>)> = self
            .data
            .iter()
            .filter_map(|d| {
                let owner = d.owner_below(name)?;
                let record = d.record(&owner, ttl, k);
                Some((owner, vec![record]))
            })
            .collect();
        // The data is sorted, and its variants are in master-file order.
        let own = self
            .data
            .iter()
            .filter(|d| d.record_type().is_some())
            .map(|d| d.record(name, ttl, k))
            .collect();
        out.push((name.clone(), own));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn each_type_renders_at_its_owner() {
        let host = key::of(&name("h.bar.global.")).unwrap();
        let mut node = Node::default();
        node.data.push(Data::A("240.10.0.1".parse().unwrap()));
        node.data.push(Data::Aaaa("fd00:10::1".parse().unwrap()));
        node.data.push(Data::Srv {
            transport: Transport::Tcp,
            label: b"_http"[..].into(),
            port: 80,
        });
        let owner = name("h.bar.global.");
        let strings = |rs: &[Record]| rs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(
            strings(&node.answer(&owner, 30, RecordType::A).records),
            ["h.bar.global. 30 IN A 240.10.0.1"]
        );
        assert_eq!(
            strings(&node.answer(&owner, 30, RecordType::ANY).records),
            ["h.bar.global. 30 IN HINFO RFC8482 "]
        );
        assert!(node.answer(&owner, 30, RecordType::TXT).records.is_empty());
        let srv_owner = name("_http._tcp.h.bar.global.");
        let srv = node.answer_service(
            (b"_http", Transport::Tcp, &host),
            &srv_owner,
            30,
            RecordType::SRV,
        );
        assert_eq!(
            strings(&srv.records),
            ["_http._tcp.h.bar.global. 30 IN SRV 0 100 80 h.bar.global."]
        );
        assert_eq!(srv.additional.len(), 2);
        let master = node.master_records(&owner, &host, 30);
        assert_eq!(master[0].0, srv_owner);
        assert_eq!(master[1].1.len(), 2, "A then AAAA at the node's own name");
        let ptr = Data::Ptr(host.clone());
        assert_eq!(
            ptr.record(&name("1.0.10.240.in-addr.arpa."), 30, &[])
                .to_string(),
            "1.0.10.240.in-addr.arpa. 30 IN PTR h.bar.global."
        );
    }

    #[test]
    fn service_names_split_into_label_proto_and_host() {
        let k = key::of(&name("_http._tcp.h.global.")).unwrap();
        let (label, transport, host) = service_name(&k).unwrap();
        assert_eq!(
            (label, transport, host),
            (&b"_http"[..], Transport::Tcp, &b"\x01h\x06global"[..])
        );
        assert!(service_name(&key::of(&name("http._tcp.h.global.")).unwrap()).is_none());
        assert_eq!(
            proto_name(&key::of(&name("_udp.h.global.")).unwrap()),
            Some((Transport::Udp, &b"\x01h\x06global"[..]))
        );
    }

    #[test]
    fn every_data_type_is_named_where_types_are_keyed() {
        let host = key::of(&name("h.global.")).unwrap();
        let one_of_each = [
            Data::A("240.10.0.1".parse().unwrap()),
            Data::Aaaa("fd00:10::1".parse().unwrap()),
            Data::Ptr(host.clone()),
            Data::Srv {
                transport: Transport::Udp,
                label: b"_dns"[..].into(),
                port: 53,
            },
        ];
        for data in one_of_each {
            // A new variant fails to compile here until it is sampled above and classified.
            let names_in_data = match data {
                Data::A(_) | Data::Aaaa(_) => false,
                Data::Ptr(_) | Data::Srv { .. } => true,
            };
            let rtype = data.record(&name("h.global."), 30, &host).record_type();
            // The fast path caches answers holding names per spelling of the question.
            assert_eq!(NAMES_IN_DATA.contains(&rtype), names_in_data, "{rtype}");
            // Queries for it are counted under its own label.
            assert_ne!(crate::dns::qtype_label(rtype), "OTHER", "{rtype}");
        }
    }
}
