//! Merges the entries of every source (files, clusters) into one view per host: which addresses it
//! has and where each came from, its ports, and whether it needs a VIP from the allocator.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::serviceentry::{Entry, ObjectRef, Resolution, SrvPort};

/// Identifies one unit of source content: a file of the file source, or a cluster of the kube source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceKey {
    pub cluster: String,
    /// File path relative to the zones directory, or the cluster's watch name.
    pub unit: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    /// Written by a user in `spec.addresses`.
    Spec,
    /// Written by Istio's allocator in `status.addresses`.
    IstioStatus,
}

/// Each address with every (kind, object) that wrote it (sorted, no duplicates).
pub type Origins = BTreeMap<IpAddr, Vec<(AddressKind, ObjectRef)>>;

/// Everything the sources say about one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostView {
    pub wildcard: bool,
    /// Addresses to serve with where each came from. Empty when the host relies on its VIP.
    pub addresses: Origins,
    /// Sorted, no duplicates (as every list here: sorted vectors, because a B-tree node per host
    /// and set would be most of the memory of a 100,000-host merge).
    pub ports: Vec<SrvPort>,
    pub objects: Vec<ObjectRef>,
    /// No address of its own, and at least one listing entry allows auto-allocation.
    pub wants_vip: bool,
}

#[derive(Debug, Default)]
pub struct Registry {
    units: BTreeMap<SourceKey, Vec<Entry>>,
}

/// The merged view: hosts, plus every address written in any entry (these are reserved in the VIP
/// range even when the host that wrote them is not served).
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    pub hosts: BTreeMap<String, HostView>,
    pub reserved: BTreeSet<IpAddr>,
}

impl Registry {
    /// Replaces a unit's entries; returns whether anything changed.
    pub fn set(&mut self, key: SourceKey, entries: Vec<Entry>) -> bool {
        match self.units.get(&key) {
            Some(old) if *old == entries => false,
            _ => {
                self.units.insert(key, entries);
                true
            }
        }
    }

    pub fn remove(&mut self, key: &SourceKey) -> bool {
        self.units.remove(key).is_some()
    }

    /// Removes every unit of a cluster (a cluster taken out of the configuration).
    pub fn remove_cluster(&mut self, cluster: &str) -> bool {
        let before = self.units.len();
        self.units.retain(|k, _| k.cluster != cluster);
        before != self.units.len()
    }

    pub fn entry_count(&self) -> usize {
        self.units.values().map(Vec::len).sum()
    }

    /// `prefer_istio_status`: serve Istio's `status.addresses` for hosts without `spec.addresses`.
    pub fn merge(&self, prefer_istio_status: bool) -> Merged {
        let mut merged = Merged::default();
        let mut status: BTreeMap<&str, Origins> = BTreeMap::new();
        let mut allows_vip: BTreeSet<&str> = BTreeSet::new();

        for entry in self.units.values().flatten() {
            merged.reserved.extend(entry.addresses.iter().copied());
            merged
                .reserved
                .extend(entry.status_addresses.iter().map(|(ip, _)| *ip));
            for host in &entry.hosts {
                let view = merged.hosts.entry(host.clone()).or_default();
                view.wildcard = host.starts_with("*.");
                // Exact capacities: almost every host is listed once (a first push would reserve 4).
                view.objects.reserve_exact(1);
                view.objects.push(entry.object.clone());
                view.ports.reserve_exact(entry.ports.len());
                view.ports.extend(entry.ports.iter().cloned());
                for ip in &entry.addresses {
                    view.addresses
                        .entry(*ip)
                        .or_default()
                        .push((AddressKind::Spec, entry.object.clone()));
                }
                for (ip, owner) in &entry.status_addresses {
                    if owner.as_deref().is_none_or(|o| o == host) {
                        status
                            .entry(host)
                            .or_default()
                            .entry(*ip)
                            .or_default()
                            .push((AddressKind::IstioStatus, entry.object.clone()));
                    }
                }
                // Istio allocates for wildcards only with DYNAMIC_DNS; NONE without address is not
                // served at all; the opt-out label wins for its own entry.
                let vip_ok = entry.autoallocate
                    && entry.addresses.is_empty()
                    && match entry.resolution {
                        Resolution::None => false,
                        Resolution::DynamicDns => true,
                        _ => !view.wildcard,
                    };
                if vip_ok {
                    allows_vip.insert(host);
                }
            }
        }

        for (host, view) in merged.hosts.iter_mut() {
            sort_dedup(&mut view.objects);
            sort_dedup(&mut view.ports);
            if view.addresses.is_empty() && prefer_istio_status {
                if let Some(s) = status.remove(host.as_str()) {
                    view.addresses = s;
                }
            }
            view.addresses.values_mut().for_each(sort_dedup);
            view.wants_vip = view.addresses.is_empty() && allows_vip.contains(host.as_str());
        }
        merged
    }
}

fn sort_dedup<T: Ord>(v: &mut Vec<T>) {
    if v.len() > 1 {
        v.sort_unstable();
        v.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serviceentry::Entry;

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
        let m = r.merge(true);
        let h = &m.hosts["h.ns.global"];
        assert_eq!(h.addresses.len(), 2);
        assert_eq!(h.addresses[&"10.0.0.1".parse::<IpAddr>().unwrap()].len(), 2);
        assert!(!h.wants_vip);
        assert!(m.hosts["v.ns.global"].wants_vip);
        assert!(r.remove_cluster("c2"));
        assert_eq!(r.merge(true).hosts["h.ns.global"].addresses.len(), 1);
    }

    #[test]
    fn wildcard_needs_dynamic_dns_and_none_is_not_allocated() {
        let mut r = Registry::default();
        let mut w = entry("c", "w", &["*.ns.global"], &[]);
        r.set(key("c", "w"), vec![w.clone()]);
        assert!(!r.merge(true).hosts["*.ns.global"].wants_vip);
        w.resolution = Resolution::DynamicDns;
        r.set(key("c", "w"), vec![w]);
        assert!(r.merge(true).hosts["*.ns.global"].wants_vip);
        let mut n = entry("c", "n", &["n.ns.global"], &[]);
        n.resolution = Resolution::None;
        r.set(key("c", "n"), vec![n]);
        assert!(!r.merge(true).hosts["n.ns.global"].wants_vip);
    }

    #[test]
    fn istio_status_is_preferred_only_when_enabled() {
        let mut r = Registry::default();
        let mut e = entry("c", "s", &["s.ns.global", "t.ns.global"], &[]);
        e.status_addresses = vec![("240.240.0.5".parse().unwrap(), Some("s.ns.global".into()))];
        r.set(key("c", "s"), vec![e]);
        let m = r.merge(true);
        assert!(!m.hosts["s.ns.global"].wants_vip);
        assert!(m.hosts["t.ns.global"].wants_vip);
        assert!(m.reserved.contains(&"240.240.0.5".parse().unwrap()));
        assert!(r.merge(false).hosts["s.ns.global"].wants_vip);
    }
}
