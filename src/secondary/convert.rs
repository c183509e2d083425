//! Transferred records → the same snapshot a primary builds: A/AAAA owners become host reports
//! (a `*.` owner a wildcard host), `_name._tcp|_udp.HOST SRV 0 100 PORT HOST.` the host's ports,
//! and the builder derives the PTRs of the reverse zones from them, as a primary does. The SOA
//! and apex NS set are the primary's. Anything else globaldns never serves is dropped (and
//! counted, for one warning per transfer).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::zone_data::{Delta, RecordKey, ZoneData};
use crate::report::{AddressReport, AddressSource, HostReport};
use crate::serviceentry::{SrvPort, Transport};
use crate::zone::{reverse_zone_for, Snapshot, ZoneBuilder, ZoneConfig};

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

/// Keeps the builder in step with the transferred zones, record by record: a delta touches only
/// the hosts whose records it changes, so an IXFR of one change costs one host, not the zone.
pub struct Assembler {
    builder: ZoneBuilder,
    reverse: Vec<Name>,
    /// The primary's NS records at each apex, by their text (a stable order).
    apex_ns: HashMap<Name, BTreeMap<String, Record>>,
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
            apex_ns: HashMap::new(),
        }
    }

    fn is_reverse(&self, apex: &Name) -> bool {
        self.reverse.iter().any(|r| r == apex)
    }

    /// Types of the records among `records` (of zone `apex`) that are not served, with how many
    /// of each.
    pub fn dropped<'a>(
        &self,
        apex: &Name,
        records: impl Iterator<Item = &'a RecordKey>,
    ) -> BTreeMap<RecordType, usize> {
        let reverse = self.is_reverse(apex);
        let mut out = BTreeMap::new();
        for (owner, data) in records {
            if let Kind::Dropped(t) = classify(apex, reverse, &owner.into(), data) {
                *out.entry(t).or_default() += 1;
            }
        }
        out
    }

    /// Applies `delta` of zone `apex`, whose SOA is now `soa`: the hosts it touches get their
    /// reports rebuilt from what they had, the others are not looked at.
    pub fn apply(&mut self, apex: &Name, soa: &Record, delta: &Delta) {
        let reverse = self.is_reverse(apex);
        let mut touched: HashMap<String, HostReport> = HashMap::new();
        let ns = self.apex_ns.entry(apex.clone()).or_default();
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
                        let text = data.to_string();
                        if add {
                            ns.insert(text, Record::from_rdata(owner, ttl, data.clone()));
                        } else {
                            ns.remove(&text);
                        }
                    }
                    continue;
                }
                Kind::Ptr | Kind::Dropped(_) => continue,
            };
            let report = touched.entry(host.clone()).or_insert_with(|| {
                self.builder
                    .report(host)
                    .cloned()
                    .unwrap_or_else(|| empty_report(host.starts_with("*.")))
            });
            match (kind, add) {
                (Kind::Address { ip, .. }, true) => report.addresses.push(AddressReport {
                    address: ip,
                    source: AddressSource::Primary,
                    objects: vec![],
                }),
                (Kind::Address { ip, .. }, false) => report.addresses.retain(|a| a.address != ip),
                (Kind::Port { port, .. }, true) => report.ports.push(port),
                (Kind::Port { port, .. }, false) => report.ports.retain(|p| *p != port),
                _ => {}
            }
        }
        let ns: Vec<Record> = ns.values().cloned().collect();
        self.builder.set_apex(apex, soa.clone(), ns);
        for (host, mut r) in touched {
            // A stable order: equal zones give equal reports, and unchanged hosts no work.
            r.addresses.sort_by_key(|a| a.address);
            r.addresses.dedup_by_key(|a| a.address);
            r.ports.sort();
            r.ports.dedup();
            if r.addresses.is_empty() && r.ports.is_empty() {
                self.builder.set_host(&host, None);
                continue;
            }
            // SRV records without an address are not served by a primary either.
            r.served = !r.addresses.is_empty();
            r.reason = (!r.served).then_some("SRV records without an address");
            self.builder.set_host(&host, Some(r));
        }
    }

    /// The snapshot of the zones as applied so far.
    pub fn snapshot(&mut self) -> Snapshot {
        self.builder.snapshot()
    }

    /// Gives back the growth slack of the tables (after a large first load).
    pub fn compact(&mut self) {
        self.builder.compact();
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
        tcp_unroutable: None,
        unserved_vips: None,
    }
}

#[cfg(test)]
mod tests {
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

    fn zone(serial: u32, present: &[bool]) -> ZoneData {
        ZoneData {
            apex: name("global."),
            from: None,
            soa: soa(serial),
            records: present
                .iter()
                .enumerate()
                .filter(|(_, p)| **p)
                .map(|(i, _)| (record(i as u8), 30))
                .collect(),
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

    /// Every kind of data a primary serves comes through a transfer into the same zone: a type
    /// this module does not handle would be dropped (`Kind::Dropped`) and fail here.
    #[test]
    fn every_kind_of_data_a_primary_serves_comes_through() {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let ranges: Vec<IpNet> = vec!["240.10.0.0/16".parse().unwrap()];
        let port = |name: &str, transport, number| SrvPort {
            name: name.into(),
            transport,
            number,
        };
        let mut primary = ZoneBuilder::new(&cfg, &ranges);
        let hosts = [
            (
                "h.ns1.global",
                HostReport {
                    ports: vec![
                        port("http", Transport::Tcp, 80),
                        port("dns", Transport::Udp, 53),
                    ],
                    ..HostReport::serving(&["240.10.0.1", "fd00:10::1"])
                },
            ),
            (
                "*.ns2.global",
                HostReport {
                    wildcard: true,
                    ..HostReport::serving(&["240.10.0.2"])
                },
            ),
        ];
        for (host, report) in hosts {
            primary.set_host(host, Some(report));
        }
        let served_by_primary = primary.snapshot();
        let apex = name("global.");
        let mut records = served_by_primary.zone_records(&LowerName::new(&apex));
        let soa = records.remove(0);
        let zone = ZoneData {
            apex: apex.clone(),
            from: None,
            soa: soa.clone(),
            records: records
                .into_iter()
                .map(|r| ((LowerName::new(&r.name), r.data), r.ttl))
                .collect(),
        };
        let mut secondary = Assembler::new(&cfg, &ranges);
        assert_eq!(
            secondary.dropped(&apex, zone.records.keys()),
            BTreeMap::new()
        );
        secondary.apply(&apex, &soa, &Delta::between(None, &zone));
        assert_eq!(served(&secondary.snapshot()), served(&served_by_primary));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Applying zone after zone as deltas serves exactly what building the last zone from
        /// nothing serves: no host keeps a stale address, port or NS.
        #[test]
        fn deltas_serve_what_a_fresh_build_serves(
            steps in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 32), 1..6)
        ) {
            let cfg = ZoneConfig { zones: vec!["global".into()], reverse_zones: vec![], ns: vec![], ttl: 30 };
            let ranges: Vec<IpNet> = vec!["240.10.0.0/16".parse().unwrap()];
            let mut incremental = Assembler::new(&cfg, &ranges);
            let mut old: Option<ZoneData> = None;
            let mut snap = None;
            for (i, present) in steps.iter().enumerate() {
                let z = zone(i as u32 + 1, present);
                incremental.apply(&z.apex, &z.soa, &Delta::between(old.as_ref(), &z));
                snap = Some(incremental.snapshot());
                old = Some(z);
            }
            let last = old.unwrap();
            let mut fresh = Assembler::new(&cfg, &ranges);
            fresh.apply(&last.apex, &last.soa, &Delta::between(None, &last));
            prop_assert_eq!(served(&snap.unwrap()), served(&fresh.snapshot()));
        }
    }
}
