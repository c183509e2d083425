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
mod ixfr;
mod journal;
pub mod key;
mod lookup;
#[cfg(test)]
mod lookup_tests;
mod records;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fnv::FnvBuildHasher;
use hickory_proto::rr::{LowerName, Name, Record};
use ipnet::IpNet;

pub use builder::ZoneBuilder;
use key::Key;
pub use lookup::{Answer, Outcome, Resolution};
use records::Node;
pub use transfer::AXFR_CHUNK;

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
