//! The immutable snapshot of everything answerable; the lookup rules (README, "Answers") are in
//! `lookup`, record data and its rendering in `records`, zone transfers in `transfer`.
//!
//! The [`ZoneBuilder`] keeps the zone up to date host by host (a change touches only the names of
//! the hosts it changes) and hands out snapshots; queries only read a snapshot, swapped in
//! atomically. Names live in shards behind `Arc`s: a snapshot shares every shard a later change
//! did not touch, so publishing after one change copies a few hundred names, not the zone. Every
//! lookup is a hash probe per label of the query name, so negative answers cost the same as
//! positive ones whatever the zone size.

mod builder;
mod changes;
pub mod digest;
mod hosts;
mod ixfr;
mod journal;
mod journal_file;
pub mod key;
mod lookup;
#[cfg(test)]
pub(crate) mod lookup_tests;
pub mod metrics;
mod records;
mod transfer;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use fnv::FnvBuildHasher;
use hickory_proto::rr::{LowerName, Name, Record};
use ipnet::IpNet;

pub use builder::ZoneBuilder;
pub use changes::Changes;
pub use hosts::ZoneHost;
use hosts::{HostShard, Hosts};
pub use ixfr::Records as IxfrRecords;
pub use journal_file::{JournalFile, Lineage};
use key::Key;
pub use lookup::{Answer, Outcome, Resolution};
use records::Node;
pub use records::NAMES_IN_DATA;
pub use transfer::{messages, Messages, Order, ZoneRecords, AXFR_CHUNK};

/// What the snapshot is built with (from flags).
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// Forward zones, normalised (`global`).
    pub zones: Vec<String>,
    /// Extra reverse zones (`--reverse-zone`), besides those covering the VIP ranges.
    pub reverse_zones: Vec<String>,
    /// Name servers for SOA MNAME and the apex NS set (empty: `ns.<first zone>`, no address).
    pub ns: Vec<NameServer>,
    pub ttl: u32,
}

/// A name server of the apex NS set, with its addresses: served (A/AAAA, transferred as glue)
/// when the name is inside one of the zones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameServer {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

impl ZoneConfig {
    fn ns_names(&self) -> Vec<(Name, Vec<IpAddr>)> {
        let servers: Vec<NameServer> = if self.ns.is_empty() {
            vec![NameServer {
                name: format!("ns.{}", self.zones.first().map_or("global", |z| z.as_str())),
                addresses: vec![],
            }]
        } else {
            self.ns.clone()
        };
        servers
            .into_iter()
            .filter_map(|s| fqdn(&s.name).map(|n| (n, s.addresses)))
            .collect()
    }

    /// Refuses name servers that would make the zones unloadable elsewhere: one inside a zone
    /// without an address (no glue: BIND refuses the zone, Knot reports missing glue), or an
    /// address for one outside every zone (it could not be served).
    pub fn check_name_servers(&self, ranges: &[IpNet]) -> Result<(), String> {
        let zones = apexes(self, ranges);
        for (ns, addresses) in self.ns_names() {
            let zone = zones.iter().find(|z| z.zone_of(&ns));
            let bare = ns.to_ascii();
            let bare = bare.trim_end_matches('.');
            match (zone, addresses.is_empty()) {
                (Some(zone), true) => {
                    return Err(format!(
                        "name server {ns} is inside zone {zone} but has no address (glue): \
                         give it one with --ns {bare}=ADDRESS (repeat for IPv6); the default name \
                         server takes the --listen addresses, except 0.0.0.0 and ::"
                    ))
                }
                (None, false) => {
                    return Err(format!(
                        "name server {ns} is outside every zone served, so its address cannot \
                         be served: give --ns {bare} without =ADDRESS"
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every zone served: the forward zones, the reverse zones covering the VIP ranges and the
/// `--reverse-zone` ones; longest first, so the first match is the closest enclosing zone.
fn apexes(cfg: &ZoneConfig, ranges: &[IpNet]) -> Vec<Name> {
    let mut names: Vec<Name> = cfg.zones.iter().filter_map(|z| fqdn(z)).collect();
    let mut reverse: Vec<Name> = ranges.iter().map(reverse_zone_for).collect();
    reverse.extend(cfg.reverse_zones.iter().filter_map(|z| fqdn(z)));
    for r in reverse {
        if !names.contains(&r) {
            names.push(r);
        }
    }
    names.sort_by_key(|n| std::cmp::Reverse(n.num_labels()));
    names
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

/// How many shards the names are spread over: enough that a change copies only the few names
/// around each it touches at 100,000 hosts (a rewritten file of 500 hosts touches ~2,000 names:
/// with 1,024 shards that was every shard, the whole zone copied per publish), few enough that
/// an empty zone costs little (~100 bytes a shard).
const SHARDS: usize = 16_384;

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

/// Every (owner, data) pair of the shards: what the journal's digests and checkpoints are of.
fn items(shards: &[Arc<Shard>]) -> impl Iterator<Item = journal::Item> + '_ {
    shards.iter().flat_map(|s| {
        let nodes = s.nodes.iter().map(|(k, n)| (false, k, n));
        let wild = s.wildcards.iter().map(|(k, n)| (true, k, n));
        nodes
            .chain(wild)
            .flat_map(|(w, k, n)| n.data.iter().map(move |d| (w, k.clone(), d.clone())))
    })
}

fn shard_index(key: &[u8], shards: usize) -> usize {
    (key::hash(key) as usize) & (shards - 1)
}

#[derive(Debug)]
pub struct Snapshot {
    /// False only for the placeholder served before the first full load.
    pub loaded: bool,
    pub serial: u32,
    /// Unique per snapshot built by this process: caches keyed to a snapshot compare this, never
    /// its address (a freed snapshot's memory can hold the next one).
    pub generation: u64,
    /// The names changed since the builder's recent snapshots (for caches of answers).
    changes: Changes,
    /// Longest apex first, so the first zone_of match is the closest enclosing zone.
    apexes: Vec<Apex>,
    shards: Vec<Arc<Shard>>,
    /// The hosts the names do not say (see `hosts`).
    kept: Vec<Arc<HostShard>>,
    /// Name servers' names inside our zones (their nodes hold glue).
    pinned: Vec<Key>,
    ttl: u32,
    /// Hosts with an address.
    served: usize,
    /// Recent changes, for IXFR (empty unless the builder keeps a journal).
    journal: journal::Journal,
}

impl Snapshot {
    /// An empty snapshot (served as SERVFAIL before the first load completes).
    pub fn empty(cfg: &ZoneConfig, ranges: &[IpNet]) -> Snapshot {
        Snapshot {
            loaded: false,
            ..ZoneBuilder::new(cfg, ranges).snapshot()
        }
    }

    /// The closest enclosing zone (case-insensitive).
    fn zone_of(&self, name: &Name) -> Option<&Apex> {
        self.apexes.iter().find(|a| Name::zone_of(&a.name, name))
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[shard_index(key, SHARDS)]
    }

    fn node(&self, key: &[u8]) -> Option<&Node> {
        self.shard(key).nodes.get(key)
    }

    /// The keys of the nodes changed since the snapshot of generation `since`, or None when
    /// not known (see [`Changes`]).
    pub fn changed_since(&self, since: u64) -> Option<impl Iterator<Item = &[u8]>> {
        self.changes.since(since)
    }

    /// Whether the answers at `key` (a name's key) come from the node there alone: a node
    /// exists there and the name is no zone's apex. Such answers change only when that node
    /// does (and [`Snapshot::changed_since`] lists it); wildcards, empty non-terminals and
    /// names that do not exist depend on other names, and the apex on the serial.
    pub fn answered_by_node(&self, key: &[u8]) -> bool {
        self.node(key).is_some() && self.apexes.iter().all(|a| *a.key != *key)
    }

    pub fn apex_names(&self) -> Vec<LowerName> {
        let mut v: Vec<LowerName> = self.apexes.iter().map(|a| a.name.clone()).collect();
        v.sort();
        v
    }

    /// The SOA record of `zone`, one of ours.
    pub fn soa(&self, zone: &LowerName) -> Option<&Record> {
        self.apexes.iter().find(|a| a.name == *zone).map(|a| &a.soa)
    }

    /// Hosts with an address (with records).
    pub fn served_hosts(&self) -> usize {
        self.served
    }

    fn hosts_view(&self) -> Hosts<'_> {
        Hosts {
            shards: &self.shards,
            kept: &self.kept,
            pinned: &self.pinned,
        }
    }

    /// What the zone renders for `host`, if anything.
    pub fn host(&self, host: &str) -> Option<Cow<'_, ZoneHost>> {
        self.hosts_view().get(&key::of_host(host)?)
    }

    /// Every host with records (or kept), sorted by name (a secondary's `/debug/hosts`).
    pub fn hosts(&self) -> BTreeMap<String, Cow<'_, ZoneHost>> {
        self.hosts_view()
            .all()
            .map(|(k, h)| (key::to_host(&k), h))
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

    fn cfg(ns: &[(&str, &[&str])]) -> ZoneConfig {
        ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: ns
                .iter()
                .map(|(name, addrs)| NameServer {
                    name: name.to_string(),
                    addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                })
                .collect(),
            ttl: 30,
        }
    }

    fn records(snap: &Snapshot, zone: &str) -> Vec<String> {
        let zone = LowerName::new(&Name::from_ascii(zone).unwrap());
        snap.zone_records(&zone)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn in_zone_name_servers_carry_their_glue_whatever_hosts_do() {
        let ranges = ["240.10.0.0/16".parse().unwrap()];
        let c = cfg(&[
            ("ns1.global", &["10.0.0.53", "fd00::53"]),
            ("ns.example.net", &[]),
        ]);
        assert_eq!(c.check_name_servers(&ranges), Ok(()));
        let mut b = ZoneBuilder::new(&c, &ranges);
        // A host at the name server's name, with the glue's address and another, then gone.
        assert!(b.set_host(
            "ns1.global",
            Some(ZoneHost::serving(&["10.0.0.53", "240.10.0.9"]))
        ));
        assert!(b.set_host("ns1.global", None));
        let snap = b.snapshot();
        let glue: Vec<String> = records(&snap, "global.")
            .into_iter()
            .filter(|r| !r.contains("SOA"))
            .collect();
        assert_eq!(
            glue,
            [
                "global. 30 IN NS ns1.global.",
                "global. 30 IN NS ns.example.net.",
                "ns1.global. 30 IN A 10.0.0.53",
                "ns1.global. 30 IN AAAA fd00::53",
            ]
        );
        // Out-of-zone names get no records; the reverse zone names the same servers.
        assert_eq!(records(&snap, "10.240.in-addr.arpa.").len(), 3);
    }

    #[test]
    fn an_address_listed_twice_is_one_record_in_the_journal_too() {
        let ranges = ["240.10.0.0/16".parse().unwrap()];
        let mut b = ZoneBuilder::new(&cfg(&[]), &ranges);
        b.keep_journal();
        let twice = lookup_tests::host(&["240.10.0.1", "240.10.0.1"], &[]);
        let once = lookup_tests::host(&["240.10.0.1"], &[]);
        assert_eq!(twice, once);
        assert!(b.set_host("h.global", Some(twice)));
        let first = b.snapshot().serial;
        assert!(!b.set_host("h.global", Some(once)));
        // A primary's report changed, not its records: a new serial, an empty delta.
        b.touch();
        let snap = b.snapshot();
        assert!(snap.serial > first);
        // Taken out twice and put in once would have been a removal.
        assert_eq!(snap.journal.since(first), Some((vec![], vec![])));
        assert!(records(&snap, "global.").contains(&"h.global. 30 IN A 240.10.0.1".to_string()));
    }

    #[test]
    fn name_servers_a_secondary_could_not_load_are_refused() {
        let ranges = ["240.10.0.0/16".parse().unwrap()];
        let err = cfg(&[]).check_name_servers(&ranges).unwrap_err();
        assert!(err.contains("ns.global. is inside zone global."), "{err}");
        assert!(err.contains("--ns ns.global=ADDRESS"), "{err}");
        let err = cfg(&[("ns.10.240.in-addr.arpa", &[])])
            .check_name_servers(&ranges)
            .unwrap_err();
        assert!(err.contains("inside zone 10.240.in-addr.arpa."), "{err}");
        let err = cfg(&[("ns.example.net", &["10.0.0.1"])])
            .check_name_servers(&ranges)
            .unwrap_err();
        assert!(err.contains("outside every zone"), "{err}");
        assert_eq!(
            cfg(&[("ns.example.net", &[])]).check_name_servers(&ranges),
            Ok(())
        );
    }
}
