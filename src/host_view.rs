//! The address rules: from every entry that lists a host, what this instance answers for it.
//!
//! Each instance serves the pods of one **home** cluster, whose sidecars know only what that
//! cluster's istiod knows. So, per host:
//! 1. listed by any home entry → only home entries count: their `spec.addresses`, else their
//!    Istio `status.addresses`, else the shared VIP (if a home entry allows one);
//! 2. listed only by other clusters → their `spec.addresses`, else the shared VIP. Another
//!    cluster's `status.addresses` are that cluster's private allocation: never served.
//!
//! Whether a host gets a VIP does not depend on the home cluster: it does when the VIP would be
//! served by an instance of *some* cluster. Instances with different home clusters sharing a
//! store therefore keep one table, and differ only where their clusters' own addresses differ.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::routing::{spec_writable, NotWritable, Unroutable};
use crate::serviceentry::{Entry, Resolution, SrvPort};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressKind {
    /// Written by a user in `spec.addresses`.
    Spec,
    /// Written by Istio's allocator in `status.addresses`.
    IstioStatus,
}

/// Each address with every (kind, object) that wrote it (sorted, no duplicates); objects as
/// `cluster/namespace/name`, the form every report shows.
pub type Origins = BTreeMap<IpAddr, Vec<(AddressKind, String)>>;

/// Which rule chose the addresses served for a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The home cluster's `spec.addresses`.
    HomeSpec,
    /// The home cluster's Istio `status.addresses`.
    HomeIstioStatus,
    /// The host's shared VIP.
    Vip,
    /// Defined only in other clusters: their `spec.addresses`.
    MeshSpec,
}

/// How the merge is done (from flags).
#[derive(Clone, Debug)]
pub struct Rules {
    /// The cluster whose pods this instance answers (`--cluster-name`).
    pub home: String,
    /// Serve Istio's `status.addresses` for home hosts without `spec.addresses`.
    pub prefer_istio_status: bool,
    /// VIPs are written into `spec.addresses` of the entries that can carry them
    /// (`--write-back spec`), so default sidecars know them.
    pub spec_write_back: bool,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            home: "local".into(),
            prefer_istio_status: true,
            spec_write_back: false,
        }
    }
}

/// One cluster's addresses for a host, shown when clusters disagree.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterAddresses {
    pub spec: Vec<IpAddr>,
    pub istio_status: Vec<IpAddr>,
}

/// Clusters that list a host with different addresses of one kind (each with a non-empty set).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    /// Hand-written `spec.addresses` differ: a mistake to fix.
    pub spec: bool,
    /// Istio's per-cluster allocations differ: normal while Istio's allocator is on.
    pub istio_status: bool,
    /// Every listing cluster's addresses.
    pub clusters: BTreeMap<String, ClusterAddresses>,
}

/// Everything the sources say about one host, as this instance answers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostView {
    pub wildcard: bool,
    /// Addresses to serve with where each came from. Empty when the host relies on its VIP.
    pub addresses: Origins,
    /// Sorted, no duplicates (as every list here: sorted vectors, because a B-tree node per host
    /// and set would be most of the memory of a 100,000-host merge).
    pub ports: Vec<SrvPort>,
    /// `cluster/namespace/name` of every entry that lists the host.
    pub objects: Vec<String>,
    /// The mesh needs a VIP for this host (the same answer on every instance).
    pub wants_vip: bool,
    /// The rule that chose what is served; None when nothing is (no address, no VIP allowed).
    pub rule: Option<Rule>,
    /// Boxed: rare, and the view of 100,000 hosts should not carry the room for it.
    pub conflict: Option<Box<Conflict>>,
    /// Why the home cluster's default sidecars cannot route the host's TCP ports by address.
    pub tcp_unroutable: Option<Box<Unroutable>>,
}

impl HostView {
    /// This instance serves the host's VIP.
    pub fn serves_vip(&self) -> bool {
        self.rule == Some(Rule::Vip)
    }
}

/// What one cluster's entries say about a host.
#[derive(Default)]
struct ClusterSide {
    spec: Origins,
    status: Origins,
    /// One of its entries allows a VIP.
    allows_vip: bool,
    /// One of its entries has a port routed by destination address.
    tcp: bool,
    /// An entry with several hosts and such a port.
    shared_tcp: Option<String>,
    /// An entry with such a port that cannot carry the VIP in `spec.addresses`, and why.
    unwritable: Option<(String, NotWritable)>,
}

/// Whether an entry allows an automatic VIP for `host`: Istio allocates for wildcards only with
/// DYNAMIC_DNS; NONE is not served without addresses; the opt-out label wins for its own entry.
pub fn allows_vip(entry: &Entry, wildcard: bool) -> bool {
    entry.autoallocate
        && entry.addresses.is_empty()
        && match entry.resolution {
            Resolution::None => false,
            Resolution::DynamicDns => true,
            _ => !wildcard,
        }
}

/// The view of `host` from every entry that lists it (none: the host is not listed).
pub fn merge<'a>(
    host: &str,
    entries: impl Iterator<Item = &'a Entry>,
    rules: &Rules,
) -> Option<HostView> {
    let mut view = HostView {
        wildcard: host.starts_with("*."),
        ..Default::default()
    };
    // Few clusters list one host: a sorted vector, not a map.
    let mut sides: Vec<(&str, ClusterSide)> = Vec::new();
    for entry in entries {
        let cluster = entry.object.cluster.as_str();
        let at = match sides.binary_search_by(|(c, _)| (*c).cmp(cluster)) {
            Ok(i) => i,
            Err(i) => {
                sides.insert(i, (cluster, ClusterSide::default()));
                i
            }
        };
        let side = &mut sides[at].1;
        let object = entry.object.to_string();
        view.ports.extend(entry.ports.iter().cloned());
        for ip in &entry.addresses {
            side.spec
                .entry(*ip)
                .or_default()
                .push((AddressKind::Spec, object.clone()));
        }
        for (ip, owner) in &entry.status_addresses {
            if owner.as_deref().is_none_or(|o| o == host) {
                side.status
                    .entry(*ip)
                    .or_default()
                    .push((AddressKind::IstioStatus, object.clone()));
            }
        }
        side.allows_vip |= allows_vip(entry, view.wildcard);
        if entry.routing.tcp_by_address {
            side.tcp = true;
            if !entry.routing.sole_host && side.shared_tcp.is_none() {
                side.shared_tcp = Some(object.clone());
            }
            if let (Err(why), None) = (spec_writable(entry), &side.unwritable) {
                side.unwritable = Some((object.clone(), why));
            }
        }
        view.objects.push(object);
    }
    if sides.is_empty() {
        return None;
    }
    sort_dedup(&mut view.objects);
    sort_dedup(&mut view.ports);
    view.ports.shrink_to_fit();

    let prefer = rules.prefer_istio_status;
    let no_spec_anywhere = sides.iter().all(|(_, s)| s.spec.is_empty());
    let any_allows = sides.iter().any(|(_, s)| s.allows_vip);
    // The VIP an instance of cluster `c` (or of a cluster not listing the host) would serve.
    let vip_at_home =
        |s: &ClusterSide| s.spec.is_empty() && (s.status.is_empty() || !prefer) && s.allows_vip;
    view.wants_vip = (no_spec_anywhere && any_allows) || sides.iter().any(|(_, s)| vip_at_home(s));
    view.conflict = conflict(&sides, prefer);

    let home_at = sides.iter().position(|(c, _)| *c == rules.home);
    view.tcp_unroutable = home_at
        .map(|i| &sides[i].1)
        .and_then(|home| tcp_unroutable(home, rules))
        .or_else(|| {
            (home_at.is_none() && sides.iter().any(|(_, s)| s.tcp)).then_some(Unroutable::NotAtHome)
        })
        .map(Box::new);

    match sides.iter_mut().find(|(c, _)| *c == rules.home) {
        Some((_, home)) => {
            if !home.spec.is_empty() {
                view.addresses = std::mem::take(&mut home.spec);
                view.rule = Some(Rule::HomeSpec);
            } else if prefer && !home.status.is_empty() {
                view.addresses = std::mem::take(&mut home.status);
                view.rule = Some(Rule::HomeIstioStatus);
            } else if home.allows_vip {
                view.rule = Some(Rule::Vip);
            }
        }
        None if !no_spec_anywhere => {
            for (_, side) in &mut sides {
                for (ip, origins) in std::mem::take(&mut side.spec) {
                    view.addresses.entry(ip).or_default().extend(origins);
                }
            }
            view.rule = Some(Rule::MeshSpec);
        }
        None if any_allows => view.rule = Some(Rule::Vip),
        None => {}
    }
    view.addresses.values_mut().for_each(sort_dedup);
    Some(view)
}

/// Why the home cluster's default sidecars cannot route the host's TCP ports by address: they
/// know `spec.addresses` only, so the answer must be one of those, or the VIP written there.
fn tcp_unroutable(home: &ClusterSide, rules: &Rules) -> Option<Unroutable> {
    if !home.tcp {
        return None;
    }
    if let Some(object) = &home.shared_tcp {
        return Some(Unroutable::SharedEntry {
            object: object.clone(),
        });
    }
    if !home.spec.is_empty() {
        return None;
    }
    // What is answered without spec addresses: Istio's status address, else the VIP; either way
    // only spec write-back puts an address the default sidecar knows into every entry.
    let answers_status = rules.prefer_istio_status && !home.status.is_empty();
    if !home.allows_vip && !answers_status {
        // Not served at all: nothing to route.
        return None;
    }
    match (&home.unwritable, rules.spec_write_back) {
        (_, false) if answers_status => Some(Unroutable::IstioStatusOnly),
        (_, false) => Some(Unroutable::VipNotWritten),
        (Some((object, why)), true) => Some(Unroutable::NotWritable {
            object: object.clone(),
            why: *why,
        }),
        (None, true) => None,
    }
}

/// Clusters disagree when two of them have non-empty, different sets of one kind.
fn conflict(sides: &[(&str, ClusterSide)], prefer_istio_status: bool) -> Option<Box<Conflict>> {
    fn differ<'s>(mut sets: impl Iterator<Item = &'s Origins>) -> bool {
        let mut sets = sets.by_ref().filter(|s| !s.is_empty());
        let Some(first) = sets.next() else {
            return false;
        };
        sets.any(|s| !s.keys().eq(first.keys()))
    }
    let spec = differ(sides.iter().map(|(_, s)| &s.spec));
    let istio_status = prefer_istio_status && differ(sides.iter().map(|(_, s)| &s.status));
    if !spec && !istio_status {
        return None;
    }
    let clusters = sides
        .iter()
        .map(|(c, s)| {
            let addresses = ClusterAddresses {
                spec: s.spec.keys().copied().collect(),
                istio_status: s.status.keys().copied().collect(),
            };
            (c.to_string(), addresses)
        })
        .collect();
    Some(Box::new(Conflict {
        spec,
        istio_status,
        clusters,
    }))
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
    use crate::serviceentry::ObjectRef;

    const HOST: &str = "h.ns.global";

    fn entry(cluster: &str, spec: &[&str], status: &[&str]) -> Entry {
        Entry {
            object: ObjectRef {
                cluster: cluster.into(),
                namespace: "ns".into(),
                name: "h".into(),
            },
            hosts: vec![HOST.into()],
            addresses: spec.iter().map(|a| a.parse().unwrap()).collect(),
            status_addresses: status
                .iter()
                .map(|a| (a.parse().unwrap(), Some(HOST.to_string())))
                .collect(),
            ports: vec![],
            resolution: Resolution::Dns,
            autoallocate: true,
            routing: Default::default(),
        }
    }

    fn at(home: &str, entries: &[Entry]) -> HostView {
        let rules = Rules {
            home: home.into(),
            spec_write_back: false,
            prefer_istio_status: true,
        };
        merge(HOST, entries.iter(), &rules).unwrap()
    }

    fn served(v: &HostView) -> Vec<String> {
        v.addresses.keys().map(|a| a.to_string()).collect()
    }

    #[test]
    fn each_home_serves_its_own_istio_allocation() {
        let e = [
            entry("local", &[], &["240.240.0.5"]),
            entry("west", &[], &["240.240.0.9"]),
        ];
        let local = at("local", &e);
        assert_eq!(served(&local), ["240.240.0.5"]);
        assert_eq!(local.rule, Some(Rule::HomeIstioStatus));
        let west = at("west", &e);
        assert_eq!(served(&west), ["240.240.0.9"]);
        // A cluster listing neither: never another cluster's status, the shared VIP.
        let east = at("east", &e);
        assert!(east.addresses.is_empty());
        assert_eq!(east.rule, Some(Rule::Vip));
        // One table for all three: the VIP exists because east serves it.
        assert!(local.wants_vip && west.wants_vip && east.wants_vip);
        let c = local.conflict.as_ref().expect("status conflict");
        assert!(c.istio_status && !c.spec);
        assert_eq!(c.clusters.len(), 2);
    }

    #[test]
    fn home_spec_beats_everything_and_mesh_spec_is_the_union() {
        let e = [
            entry("local", &["10.0.0.1"], &["240.240.0.5"]),
            entry("west", &["10.0.0.2"], &[]),
        ];
        assert_eq!(served(&at("local", &e)), ["10.0.0.1"]);
        assert_eq!(at("local", &e).rule, Some(Rule::HomeSpec));
        let east = at("east", &e);
        assert_eq!(served(&east), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(east.rule, Some(Rule::MeshSpec));
        assert!(!east.wants_vip, "every cluster has spec addresses");
        assert!(east.conflict.as_ref().unwrap().spec);
    }

    #[test]
    fn a_home_without_addresses_gets_the_vip_even_when_others_have_spec() {
        let e = [entry("local", &[], &[]), entry("west", &["10.0.0.2"], &[])];
        let local = at("local", &e);
        assert!(local.serves_vip() && local.wants_vip);
        assert!(local.addresses.is_empty());
        assert_eq!(served(&at("west", &e)), ["10.0.0.2"]);
        assert_eq!(at("west", &e).rule, Some(Rule::HomeSpec));
        // One side only has addresses: no disagreement.
        assert!(local.conflict.is_none());
    }

    #[test]
    fn home_rules_judge_home_entries_only() {
        let mut none = entry("local", &[], &[]);
        none.resolution = Resolution::None;
        let e = [none, entry("west", &[], &[])];
        let local = at("local", &e);
        assert_eq!(local.rule, None, "NONE at home: not served");
        assert!(local.wants_vip, "west serves the VIP");
        assert!(at("west", &e).serves_vip());
        // Opt-out label everywhere: nobody gets a VIP.
        let mut a = entry("local", &[], &[]);
        a.autoallocate = false;
        let mut b = entry("west", &[], &[]);
        b.autoallocate = false;
        let v = at("local", &[a, b]);
        assert!(!v.wants_vip && v.rule.is_none());
    }

    #[test]
    fn without_prefer_istio_status_status_is_ignored() {
        let e = [entry("local", &[], &["240.240.0.5"])];
        let rules = Rules {
            home: "local".into(),
            spec_write_back: false,
            prefer_istio_status: false,
        };
        let v = merge(HOST, e.iter(), &rules).unwrap();
        assert!(v.serves_vip() && v.wants_vip && v.addresses.is_empty());
        let v = at("local", &e);
        assert_eq!(served(&v), ["240.240.0.5"]);
        // Serves status at home, but an instance elsewhere would serve the VIP.
        assert!(v.wants_vip && !v.serves_vip());
    }
}
