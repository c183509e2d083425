//! Record data and its rendering, per type: what a node holds ([`Data`]), how each type becomes
//! a record when answered or transferred, and the names derived from it (SRV owners and their
//! `_tcp`/`_udp` empty non-terminals). A new record type is a variant here plus its tests.

use hickory_proto::rr::rdata::{HINFO, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smallvec::SmallVec;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::key::{self, Key};

/// One piece of answerable data, without its owner (the node's name) or TTL (the zone's): a
/// hickory `Record` is 272 bytes, this is 24, which at 100,000 hosts is the difference between
/// a snapshot of hundreds of megabytes and one of tens. Records are made when answered.
/// Ordered, and kept sorted within a node: the answer's record order is the same whatever order
/// the hosts came in (on every replica, after any history of changes).
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
        udp: bool,
        /// The first label, lower-cased: `_http`.
        label: Box<[u8]>,
        port: u16,
    },
}

/// Master-file order of the types at a node's own name.
const NODE_TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::PTR];

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
            Data::Srv { udp, label, .. } => {
                let proto: &[u8] = if *udp { b"_udp" } else { b"_tcp" };
                Some([&label[..], proto])
            }
            _ => None,
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

/// Splits `_<name>._<tcp|udp>.<host>` into (name label, udp?, host key).
pub(super) fn service_name(qkey: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let rest = key::parent(qkey)?;
    let label = &qkey[1..qkey.len() - rest.len()];
    let (udp, host) = proto_name(rest)?;
    label.starts_with(b"_").then_some((label, udp, host))
}

/// Splits `_<tcp|udp>.<host>` into (udp?, host key).
pub(super) fn proto_name(qkey: &[u8]) -> Option<(bool, &[u8])> {
    let host = key::parent(qkey)?;
    match &qkey[..qkey.len() - host.len()] {
        b"\x04_tcp" => Some((false, host)),
        b"\x04_udp" => Some((true, host)),
        _ => None,
    }
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
    fn services<'a>(&'a self, label: &'a [u8], udp: bool) -> impl Iterator<Item = &'a Data> + 'a {
        self.data.iter().filter(
            move |d| matches!(d, Data::Srv { udp: u, label: l, .. } if *u == udp && **l == *label),
        )
    }

    pub fn has_service(&self, label: &[u8], udp: bool) -> bool {
        self.services(label, udp).next().is_some()
    }

    /// The answer at `_<label>._<proto>.<host>` (this node is the host, `host` its key): SRV
    /// records with the host's addresses in additional.
    pub fn answer_service(
        &self,
        (label, udp, host): (&[u8], bool, &[u8]),
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
                    self.services(label, udp)
                        .map(|d| d.record(owner, ttl, host)),
                );
                let target = key::to_name(host);
                for rtype in [RecordType::A, RecordType::AAAA] {
                    out.additional.extend(self.records(&target, ttl, rtype));
                }
            }
            _ => {}
        }
        out
    }

    pub fn has_proto(&self, udp: bool) -> bool {
        self.data
            .iter()
            .any(|d| matches!(d, Data::Srv { udp: u, .. } if *u == udp))
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
        let own = NODE_TYPES
            .iter()
            .flat_map(|t| self.records(name, ttl, *t))
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
            udp: false,
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
        let srv = node.answer_service((b"_http", false, &host), &srv_owner, 30, RecordType::SRV);
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
        let (label, udp, host) = service_name(&k).unwrap();
        assert_eq!(
            (label, udp, host),
            (&b"_http"[..], false, &b"\x01h\x06global"[..])
        );
        assert!(service_name(&key::of(&name("http._tcp.h.global.")).unwrap()).is_none());
        assert_eq!(
            proto_name(&key::of(&name("_udp.h.global.")).unwrap()),
            Some((true, &b"\x01h\x06global"[..]))
        );
    }
}
