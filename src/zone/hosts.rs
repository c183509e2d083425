//! What the zone takes for one host, [`ZoneHost`]: the addresses and ports that become its
//! records, nothing of where they came from (that is the write path's `HostReport`, kept
//! outside the zone). A host the names say in full — its node holds its addresses and ports,
//! as almost every host's does — is not kept: it is read back from its node when asked (a
//! change to the host, a secondary's `/debug/hosts`), which at 100,000 hosts spares a host
//! index beside the names. The few the names do not say are kept (a wildcard's ports, which
//! are not served; ports without an address; a host at a name server's name, whose node also
//! holds the glue).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use fnv::FnvBuildHasher;

use super::key::{self, Key};
use super::records::Data;
use super::{Shard, SHARDS};
use crate::serviceentry::SrvPort;

/// What the zone renders for one host: an A or AAAA record per address at its name (at its
/// parent's wildcard for `*.` hosts) and a PTR in the reverse zones, and, when it has an
/// address, an SRV record per port at `_<name>._<transport>.<host>` (not for wildcards).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneHost {
    pub(super) addresses: Vec<IpAddr>,
    pub(super) ports: Vec<SrvPort>,
}

impl ZoneHost {
    /// In the one order the zone compares hosts in (and reads them back from their names):
    /// addresses ascending, IPv4 first; ports with their names lower-cased (as the SRV owner
    /// spells them), sorted; each once.
    pub fn new(mut addresses: Vec<IpAddr>, mut ports: Vec<SrvPort>) -> ZoneHost {
        addresses.sort_unstable();
        addresses.dedup();
        for p in &mut ports {
            p.name.make_ascii_lowercase();
        }
        ports.sort_unstable();
        ports.dedup();
        // Kept as long as the host, when kept: no growth slack.
        addresses.shrink_to_fit();
        ports.shrink_to_fit();
        ZoneHost { addresses, ports }
    }

    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    pub fn ports(&self) -> &[SrvPort] {
        &self.ports
    }

    /// Its addresses and ports, to change and make a new one of (a secondary's delta).
    pub fn into_parts(self) -> (Vec<IpAddr>, Vec<SrvPort>) {
        (self.addresses, self.ports)
    }

    /// A host with these addresses and no port (unit tests).
    #[cfg(test)]
    pub fn serving(addresses: &[&str]) -> ZoneHost {
        let ips = addresses.iter().map(|a| a.parse().expect("an IP address"));
        ZoneHost::new(ips.collect(), vec![])
    }
}

/// How many shards the kept hosts are spread over (a change copies its shard). Few hosts are
/// kept (on a primary, mostly wildcards with ports; on a secondary, hardly any): a snapshot
/// clones this many pointers.
pub(super) const KEPT_SHARDS: usize = 256;

/// The hosts the names do not say, keyed by the host's name key (shared with its node). Behind
/// an `Arc`: a change copies its shard (the snapshots being answered hold the old one).
pub(super) type HostShard = HashMap<Key, Arc<ZoneHost>, FnvBuildHasher>;

/// The host that a node's data says, in [`ZoneHost::new`]'s order (the node keeps its data
/// sorted, and ports are sorted here).
pub(super) fn said<'a>(data: impl Iterator<Item = &'a Data>) -> ZoneHost {
    let mut addresses = Vec::new();
    let mut ports = Vec::new();
    for d in data {
        match d {
            Data::A(ip) => addresses.push((*ip).into()),
            Data::Aaaa(ip) => addresses.push((*ip).into()),
            Data::Srv {
                transport,
                label,
                port,
            } => ports.push(SrvPort {
                name: String::from_utf8_lossy(label.strip_prefix(b"_").unwrap_or(label))
                    .into_owned(),
                transport: *transport,
                number: *port,
            }),
            // Another host's (the PTRs at a reverse name).
            Data::Ptr(_) => {}
        }
    }
    ports.sort();
    ZoneHost { addresses, ports }
}

/// Whether the host key `k` is a wildcard's (`*.bar.global`), whose data lives at its parent.
pub(super) fn is_wildcard(k: &[u8]) -> bool {
    k.starts_with(b"\x01*")
}

/// The hosts of a zone's names: the kept ones, and those their nodes say.
pub(super) struct Hosts<'a> {
    pub shards: &'a [Arc<Shard>],
    pub kept: &'a [Arc<HostShard>],
    /// Name servers' names inside our zones: their nodes hold glue, not a host, unless kept.
    pub pinned: &'a [Key],
}

impl<'a> Hosts<'a> {
    fn kept_at(&self, k: &[u8]) -> Option<&'a Arc<ZoneHost>> {
        self.kept[super::shard_index(k, KEPT_SHARDS)].get(k)
    }

    /// Host `k`: kept, or read back from its node; None when it has neither.
    pub fn get(&self, k: &[u8]) -> Option<Cow<'a, ZoneHost>> {
        if let Some(h) = self.kept_at(k) {
            return Some(Cow::Borrowed(h));
        }
        if self.pinned.iter().any(|p| **p == *k) {
            return None;
        }
        let shard = &self.shards[super::shard_index(wildcard_parent(k), SHARDS)];
        let node = match is_wildcard(k) {
            true => key::parent(k).and_then(|p| shard.wildcards.get(p)),
            false => shard.nodes.get(k),
        };
        let host = said(node.into_iter().flat_map(|n| &n.data));
        (host != ZoneHost::default()).then_some(Cow::Owned(host))
    }

    /// Every host, by name key (unsorted).
    pub fn all(&self) -> impl Iterator<Item = (Key, Cow<'a, ZoneHost>)> + '_ {
        let kept = self
            .kept
            .iter()
            .flat_map(|s| s.iter())
            .map(|(k, h)| (k.clone(), Cow::Borrowed(&**h)));
        let said = self.shards.iter().flat_map(move |s| {
            let nodes = s.nodes.iter().map(|(k, n)| (k.clone(), n));
            let wild = s
                .wildcards
                .iter()
                .filter_map(|(parent, n)| key::child(b"*", parent).map(|k| (k, n)));
            nodes.chain(wild).filter_map(move |(k, n)| {
                if self.kept_at(&k).is_some() || self.pinned.contains(&k) {
                    return None;
                }
                let host = said(n.data.iter());
                (host != ZoneHost::default()).then_some((k, Cow::Owned(host)))
            })
        });
        kept.chain(said)
    }
}

/// The key whose shard holds host `k`'s node: its parent's for a wildcard.
fn wildcard_parent(k: &[u8]) -> &[u8] {
    match is_wildcard(k) {
        true => key::parent(k).unwrap_or(k),
        false => k,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NameServer, ZoneBuilder, ZoneConfig};
    use super::*;
    use crate::serviceentry::Transport;

    fn host(addresses: &[&str], ports: &[(&str, u16)]) -> ZoneHost {
        let ports = ports.iter().map(|(name, number)| SrvPort {
            name: name.to_string(),
            transport: Transport::Tcp,
            number: *number,
        });
        ZoneHost {
            ports: ports.collect(),
            ..ZoneHost::serving(addresses)
        }
    }

    /// Hosts the names say in full are read back, not kept, and equal what was set; any other
    /// (a wildcard's ports, one at a name server's name, ports only) is kept as it came.
    #[test]
    fn hosts_the_names_say_are_read_back_the_others_kept() {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![NameServer {
                name: "ns1.global".into(),
                addresses: vec!["10.0.0.53".parse().unwrap()],
            }],
            ttl: 30,
        };
        let mut b = ZoneBuilder::new(&cfg, &["240.10.0.0/16".parse().unwrap()]);
        let cases = [
            (
                "a.global",
                host(&["240.10.0.1", "fd00::1"], &[("grpc", 9000), ("http", 80)]),
                false,
            ),
            ("*.w.global", host(&["240.10.0.2"], &[]), false),
            // A wildcard's SRV data is not served: its ports are the input's alone.
            ("*.x.global", host(&["240.10.0.3"], &[("http", 80)]), true),
            ("ns1.global", host(&["240.10.0.5"], &[]), true),
            ("c.global", host(&[], &[("http", 80)]), true),
            // A port name is the SRV owner's label: lower-case.
            (
                "d.global",
                ZoneHost::new(
                    vec!["240.10.0.6".parse().unwrap()],
                    host(&[], &[("HTTP", 80)]).ports,
                ),
                false,
            ),
        ];
        for (name, h, kept) in &cases {
            assert!(b.set_host(name, Some(h.clone())), "{name}");
            assert!(!b.set_host(name, Some(h.clone())), "{name}: unchanged");
            let back = b.host(name).unwrap();
            assert_eq!(*back, *h, "{name}");
            assert_eq!(matches!(back, Cow::Borrowed(_)), *kept, "{name}");
        }
        assert_eq!(cases[5].1.ports()[0].name, "http");
        let snap = b.snapshot();
        for (name, h, _) in &cases {
            assert_eq!(*snap.host(name).unwrap(), *h, "{name}");
        }
        let listed: Vec<String> = snap.hosts().into_keys().collect();
        let mut names: Vec<&str> = cases.iter().map(|(n, _, _)| *n).collect();
        names.sort();
        assert_eq!(listed, names, "the name server's glue is no host");
        assert_eq!(snap.served_hosts(), cases.len() - 1);
        // A host read back goes with its names.
        assert!(b.set_host("a.global", None));
        assert!(b.set_host("ns1.global", None));
        let snap = b.snapshot();
        assert!(snap.host("a.global").is_none());
        assert!(snap.host("ns1.global").is_none(), "the glue stays, no host");
        let q = hickory_proto::rr::Name::from_ascii("a.global.").unwrap();
        let answer = snap.lookup(&q, hickory_proto::rr::RecordType::A);
        assert_eq!(answer.rcode, hickory_proto::op::ResponseCode::NXDomain);
        assert_eq!(snap.served_hosts(), cases.len() - 3);
    }
}
