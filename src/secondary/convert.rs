//! Transferred records → the same snapshot a primary builds: A/AAAA owners become host reports
//! (a `*.` owner a wildcard host), `_name._tcp|_udp.HOST SRV 0 100 PORT HOST.` the host's ports,
//! and the builder derives the PTRs of the reverse zones from them, as a primary does. The SOA
//! and apex NS set are the primary's. Anything else globaldns never serves is dropped (and
//! counted, for one warning per transfer).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::zone_data::ZoneData;
use crate::report::{AddressReport, AddressSource, HostReport};
use crate::serviceentry::{SrvPort, Transport};
use crate::zone::{reverse_zone_for, Snapshot, ZoneBuilder, ZoneConfig};

/// What one record becomes.
enum Kind {
    /// At the apex: SOA, NS.
    Apex,
    Address {
        host: String,
        wildcard: bool,
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
            let transport = match labels.get(1).map(|l| l.to_ascii_lowercase()) {
                Some(l) if l == b"_tcp" => Some(Transport::Tcp),
                Some(l) if l == b"_udp" => Some(Transport::Udp),
                _ => None,
            };
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
        wildcard: owner.is_wildcard(),
        ip,
    }
}

/// Keeps the builder in step with the transferred zones, host by host.
pub struct Assembler {
    builder: ZoneBuilder,
    hosts: BTreeMap<String, HostReport>,
    reverse: Vec<Name>,
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
            hosts: BTreeMap::new(),
            reverse,
        }
    }

    fn is_reverse(&self, apex: &Name) -> bool {
        self.reverse.iter().any(|r| r == apex)
    }

    /// Types of the records of `zone` that are not served, with how many of each.
    pub fn dropped(&self, zone: &ZoneData) -> BTreeMap<RecordType, usize> {
        let reverse = self.is_reverse(&zone.apex);
        let mut out = BTreeMap::new();
        for (owner, data) in zone.records.keys() {
            if let Kind::Dropped(t) = classify(&zone.apex, reverse, &owner.into(), data) {
                *out.entry(t).or_default() += 1;
            }
        }
        out
    }

    /// The snapshot of every zone in `zones`.
    pub fn build<'a>(&mut self, zones: impl Iterator<Item = &'a ZoneData>) -> Snapshot {
        let mut hosts: BTreeMap<String, HostReport> = BTreeMap::new();
        for zone in zones {
            let reverse = self.is_reverse(&zone.apex);
            let mut ns: Vec<Record> = Vec::new();
            for ((owner, data), ttl) in &zone.records {
                let owner: Name = owner.into();
                match classify(&zone.apex, reverse, &owner, data) {
                    Kind::Apex => ns.push(Record::from_rdata(owner, *ttl, data.clone())),
                    Kind::Address { host, wildcard, ip } => {
                        let r = hosts.entry(host).or_insert_with(|| empty_report(wildcard));
                        r.addresses.push(AddressReport {
                            address: ip,
                            source: AddressSource::Primary,
                            objects: vec![],
                        });
                    }
                    Kind::Port { host, port } => {
                        hosts
                            .entry(host)
                            .or_insert_with(|| empty_report(false))
                            .ports
                            .push(port);
                    }
                    Kind::Ptr | Kind::Dropped(_) => {}
                }
            }
            ns.sort_by_key(|a| a.data.to_string());
            self.builder.set_apex(&zone.apex, zone.soa.clone(), ns);
        }
        // A stable order: equal zones give equal reports, and unchanged hosts no work.
        for r in hosts.values_mut() {
            r.addresses.sort_by_key(|a| a.address);
            r.addresses.dedup_by_key(|a| a.address);
            r.ports.sort();
            r.ports.dedup();
            // SRV records without an address are not served by a primary either.
            r.served = !r.addresses.is_empty();
            if !r.served {
                r.reason = Some("SRV records without an address");
            }
        }
        let gone: Vec<String> = self
            .hosts
            .keys()
            .filter(|h| !hosts.contains_key(*h))
            .cloned()
            .collect();
        for h in gone {
            self.builder.set_host(&h, None);
        }
        for (h, r) in &hosts {
            self.builder.set_host(h, Some(r.clone()));
        }
        self.hosts = hosts;
        self.builder.snapshot()
    }

    /// PTR records of `zone` (a reverse zone as transferred) that `snap` does not serve, and
    /// those it serves that the primary has not: (missing, extra).
    pub fn ptr_difference(&self, zone: &ZoneData, snap: &Snapshot) -> (usize, usize) {
        if !self.is_reverse(&zone.apex) {
            return (0, 0);
        }
        let key = |r: &Record| (LowerName::new(&r.name), r.data.clone());
        let ours: HashMap<(LowerName, RData), ()> = snap
            .zone_records(&LowerName::new(&zone.apex))
            .iter()
            .filter(|r| r.record_type() == RecordType::PTR)
            .map(|r| (key(r), ()))
            .collect();
        let theirs = zone
            .records
            .keys()
            .filter(|(_, d)| d.record_type() == RecordType::PTR);
        let missing = theirs.clone().filter(|k| !ours.contains_key(*k)).count();
        let common = theirs.count() - missing;
        (missing, ours.len() - common)
    }
}

fn empty_report(wildcard: bool) -> HostReport {
    HostReport {
        served: false,
        wildcard,
        reason: None,
        addresses: vec![],
        ports: vec![],
        objects: vec![],
        rule: None,
        conflict: None,
    }
}
