//! Every source's entries (files, clusters), indexed by host, and the addresses written anywhere
//! (reserved in the VIP ranges). One host's view is merged from its listings by the rules of
//! [`crate::host_view`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use fnv::FnvBuildHasher;
use serde::Serialize;
use smallvec::SmallVec;

use crate::host_view::{self, HostView, Rules};
use crate::serviceentry::Entry;

/// Identifies one unit of source content: a file of the file source, or one ServiceEntry object
/// of a cluster of the kube source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceKey {
    pub cluster: String,
    /// File path relative to the zones directory, or the object's `namespace/name`.
    pub unit: String,
}

/// Where a host is listed: (unit slot, index of the entry in the unit).
type Listing = (u32, u32);

/// Every source's entries, indexed by host so that one host's view can be merged without
/// looking at any other: a change to one file or object costs what that change touches.
#[derive(Debug, Default)]
pub struct Registry {
    slots: HashMap<SourceKey, u32>,
    units: Vec<Vec<Entry>>,
    free: Vec<u32>,
    index: HashMap<Box<str>, SmallVec<[Listing; 1]>, FnvBuildHasher>,
    /// Every address written in any entry (spec or status), with how many entries write it.
    reserved: HashMap<IpAddr, u32, FnvBuildHasher>,
}

/// What one change did: the hosts whose view may differ, and the addresses that became (or
/// stopped being) written anywhere.
#[derive(Debug, Default, PartialEq)]
pub struct UnitChange {
    pub hosts: Vec<String>,
    pub reserved: Vec<IpAddr>,
    pub unreserved: Vec<IpAddr>,
}

/// The merged view: hosts, plus every address written in any entry (these are reserved in the VIP
/// range even when the host that wrote them is not served).
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    pub hosts: BTreeMap<String, HostView>,
    pub reserved: BTreeSet<IpAddr>,
}

fn written(e: &Entry) -> impl Iterator<Item = IpAddr> + '_ {
    e.addresses
        .iter()
        .copied()
        .chain(e.status_addresses.iter().map(|(ip, _)| *ip))
}

impl Registry {
    /// Replaces a unit's entries; None when nothing changed.
    pub fn set(&mut self, key: SourceKey, mut entries: Vec<Entry>) -> Option<UnitChange> {
        let mut d = UnitChange::default();
        let slot = match self.slots.get(&key) {
            Some(&s) if self.units[s as usize] == entries => return None,
            Some(&s) => {
                self.unlist(s, &mut d);
                s
            }
            None => {
                let s = self.free.pop().unwrap_or_else(|| {
                    self.units.push(Vec::new());
                    (self.units.len() - 1) as u32
                });
                self.slots.insert(key, s);
                s
            }
        };
        for (i, e) in entries.iter().enumerate() {
            for h in &e.hosts {
                match self.index.get_mut(h.as_str()) {
                    Some(l) => l.push((slot, i as u32)),
                    None => {
                        let mut l = SmallVec::new();
                        l.push((slot, i as u32));
                        self.index.insert(h.as_str().into(), l);
                    }
                }
                d.hosts.push(h.clone());
            }
            for ip in written(e) {
                let n = self.reserved.entry(ip).or_insert(0);
                *n += 1;
                if *n == 1 {
                    d.reserved.push(ip);
                }
            }
        }
        // Kept until the unit changes: no growth slack (a quarter of the entries' memory at
        // 100,000 hosts).
        entries.shrink_to_fit();
        for e in &mut entries {
            e.hosts.shrink_to_fit();
            e.ports.shrink_to_fit();
            e.addresses.shrink_to_fit();
            e.status_addresses.shrink_to_fit();
        }
        self.units[slot as usize] = entries;
        // An address written before and after the change was never free.
        let both: Vec<IpAddr> = d
            .unreserved
            .iter()
            .filter(|ip| d.reserved.contains(ip))
            .copied()
            .collect();
        d.reserved.retain(|ip| !both.contains(ip));
        d.unreserved.retain(|ip| !both.contains(ip));
        Some(d)
    }

    fn unlist(&mut self, slot: u32, d: &mut UnitChange) {
        let entries = std::mem::take(&mut self.units[slot as usize]);
        for e in &entries {
            for h in &e.hosts {
                if let Some(l) = self.index.get_mut(h.as_str()) {
                    l.retain(|(s, _)| *s != slot);
                    if l.is_empty() {
                        self.index.remove(h.as_str());
                    }
                }
                d.hosts.push(h.clone());
            }
            for ip in written(e) {
                if let Some(n) = self.reserved.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.reserved.remove(&ip);
                        d.unreserved.push(ip);
                    }
                }
            }
        }
    }

    pub fn remove(&mut self, key: &SourceKey) -> Option<UnitChange> {
        let slot = self.slots.remove(key)?;
        let mut d = UnitChange::default();
        self.unlist(slot, &mut d);
        self.free.push(slot);
        Some(d)
    }

    /// Removes every unit of a cluster (a cluster taken out of the configuration).
    pub fn remove_cluster(&mut self, cluster: &str) -> Option<UnitChange> {
        let keys: Vec<SourceKey> = self
            .slots
            .keys()
            .filter(|k| k.cluster == cluster)
            .cloned()
            .collect();
        let mut total: Option<UnitChange> = None;
        for k in keys {
            if let Some(d) = self.remove(&k) {
                let t = total.get_or_insert_with(UnitChange::default);
                t.hosts.extend(d.hosts);
                t.unreserved.extend(d.unreserved);
            }
        }
        total
    }

    pub fn entry_count(&self) -> usize {
        self.units.iter().map(Vec::len).sum()
    }

    pub fn host_count(&self) -> usize {
        self.index.len()
    }

    /// Every host some entry lists (in no particular order).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|h| &**h)
    }

    pub fn is_reserved(&self, ip: &IpAddr) -> bool {
        self.reserved.contains_key(ip)
    }

    pub fn reserved(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.reserved.keys().copied()
    }

    /// What this instance answers for one host (see [`crate::host_view`]); None when no entry
    /// lists it.
    pub fn merge_host(&self, host: &str, rules: &Rules) -> Option<HostView> {
        let listings = self.index.get(host)?;
        let entries = listings
            .iter()
            .map(|&(slot, i)| &self.units[slot as usize][i as usize]);
        host_view::merge(host, entries, rules)
    }

    /// The view of every host at once (for tests and benchmarks; the server merges per host).
    pub fn merge(&self, rules: &Rules) -> Merged {
        Merged {
            hosts: self
                .hosts()
                .filter_map(|h| Some((h.to_string(), self.merge_host(h, rules)?)))
                .collect(),
            reserved: self.reserved().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serviceentry::{Entry, ObjectRef, Resolution};

    fn entry(cluster: &str, name: &str, hosts: &[&str], addrs: &[&str]) -> Entry {
        Entry {
            object: ObjectRef {
                cluster: cluster.into(),
                namespace: "ns".into(),
                name: name.into(),
            },
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            status_addresses: vec![],
            ports: vec![],
            resolution: Resolution::Dns,
            autoallocate: true,
            routing: Default::default(),
        }
    }

    fn key(c: &str, u: &str) -> SourceKey {
        SourceKey {
            cluster: c.into(),
            unit: u.into(),
        }
    }

    #[test]
    fn union_across_clusters_and_vip_only_without_addresses() {
        let mut r = Registry::default();
        r.set(
            key("c1", "a"),
            vec![entry("c1", "x", &["h.ns.global"], &["10.0.0.1"])],
        );
        r.set(
            key("c2", "b"),
            vec![entry(
                "c2",
                "y",
                &["h.ns.global"],
                &["10.0.0.2", "10.0.0.1"],
            )],
        );
        r.set(
            key("c2", "c"),
            vec![entry("c2", "z", &["v.ns.global"], &[])],
        );
        let m = r.merge(&Rules::default());
        let h = &m.hosts["h.ns.global"];
        assert_eq!(h.addresses.len(), 2);
        assert_eq!(h.addresses[&"10.0.0.1".parse::<IpAddr>().unwrap()].len(), 2);
        assert!(!h.wants_vip);
        assert!(m.hosts["v.ns.global"].wants_vip);
        assert!(r.remove_cluster("c2").is_some());
        assert_eq!(
            r.merge(&Rules::default()).hosts["h.ns.global"]
                .addresses
                .len(),
            1
        );
    }

    #[test]
    fn wildcard_needs_dynamic_dns_and_none_is_not_allocated() {
        let mut r = Registry::default();
        let mut w = entry("c", "w", &["*.ns.global"], &[]);
        r.set(key("c", "w"), vec![w.clone()]);
        assert!(!r.merge(&Rules::default()).hosts["*.ns.global"].wants_vip);
        w.resolution = Resolution::DynamicDns;
        r.set(key("c", "w"), vec![w]);
        assert!(r.merge(&Rules::default()).hosts["*.ns.global"].wants_vip);
        let mut n = entry("c", "n", &["n.ns.global"], &[]);
        n.resolution = Resolution::None;
        r.set(key("c", "n"), vec![n]);
        assert!(!r.merge(&Rules::default()).hosts["n.ns.global"].wants_vip);
    }

    #[test]
    fn istio_status_is_preferred_only_when_enabled() {
        let mut r = Registry::default();
        let mut e = entry("c", "s", &["s.ns.global", "t.ns.global"], &[]);
        e.status_addresses = vec![("240.240.0.5".parse().unwrap(), Some("s.ns.global".into()))];
        r.set(key("c", "s"), vec![e]);
        let home = |prefer_istio_status| Rules {
            home: "c".into(),
            spec_write_back: false,
            prefer_istio_status,
        };
        let m = r.merge(&home(true));
        // The status address is served for the one host it names (the owner field).
        assert_eq!(m.hosts["s.ns.global"].addresses.len(), 1);
        assert!(!m.hosts["s.ns.global"].serves_vip());
        assert!(m.hosts["t.ns.global"].serves_vip());
        assert!(m.reserved.contains(&"240.240.0.5".parse().unwrap()));
        let m = r.merge(&home(false));
        assert!(m.hosts["s.ns.global"].serves_vip());
        assert!(m.hosts["s.ns.global"].addresses.is_empty());
    }

    #[test]
    fn deltas_name_touched_hosts_and_address_changes() {
        let mut r = Registry::default();
        let d = r
            .set(
                key("c", "a"),
                vec![entry("c", "x", &["h.ns.global"], &["10.0.0.1"])],
            )
            .unwrap();
        assert_eq!(d.hosts, vec!["h.ns.global".to_string()]);
        assert_eq!(d.reserved, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        // The same content again is no change at all.
        assert!(r
            .set(
                key("c", "a"),
                vec![entry("c", "x", &["h.ns.global"], &["10.0.0.1"])]
            )
            .is_none());
        // Moving the address to another host: both hosts touched, the address stays reserved.
        let d = r
            .set(
                key("c", "a"),
                vec![entry("c", "x", &["g.ns.global"], &["10.0.0.1"])],
            )
            .unwrap();
        assert_eq!(
            d.hosts,
            vec!["h.ns.global".to_string(), "g.ns.global".to_string()]
        );
        assert!(d.reserved.is_empty() && d.unreserved.is_empty(), "{d:?}");
        assert!(r.merge_host("h.ns.global", &Rules::default()).is_none());
        let d = r.remove(&key("c", "a")).unwrap();
        assert_eq!(d.unreserved, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.hosts().count(), 0);
        assert!(!r.is_reserved(&"10.0.0.1".parse().unwrap()));
    }
}
