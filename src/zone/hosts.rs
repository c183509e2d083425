//! The hosts' reports beside the names. A report the names say in full — a secondary's host:
//! addresses and ports from the primary, nothing else — is not kept: it is rebuilt from the
//! host's node when asked (`/debug/hosts`, a secondary's next change to the host), which at
//! 100,000 hosts spares a secondary a report, its address list and its ports per host. A
//! primary's reports (sources, objects, rules) are kept.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use fnv::FnvBuildHasher;

use super::key::{self, Key};
use super::records::Data;
use super::{AddressReport, AddressSource, HostReport, Shard, SHARDS};
use crate::serviceentry::SrvPort;

/// How many shards the host reports are spread over (one per host; a change copies its shard).
pub(super) const HOST_SHARDS: usize = 4_096;

/// Keyed by the host's name key (shared with its node). `None`: the names say the report (see
/// [`said`]). Kept reports behind an `Arc`: a change copies its shard (the snapshots being
/// answered hold the old one), and copying pointers to a few hundred reports is much cheaper
/// than copying the reports, their addresses and objects.
pub(super) type HostShard = HashMap<Key, Option<Arc<HostReport>>, FnvBuildHasher>;

/// The report that a host's data at its node says, in the order a secondary keeps: addresses
/// (A, then AAAA, each ascending) and ports (sorted), served when it has an address.
pub(super) fn said<'a>(wildcard: bool, data: impl Iterator<Item = &'a Data>) -> HostReport {
    let mut addresses = Vec::new();
    let mut ports = Vec::new();
    for d in data {
        let address = match d {
            Data::A(ip) => (*ip).into(),
            Data::Aaaa(ip) => (*ip).into(),
            Data::Srv {
                transport,
                label,
                port,
            } => {
                ports.push(SrvPort {
                    name: String::from_utf8_lossy(label.strip_prefix(b"_").unwrap_or(label))
                        .into_owned(),
                    transport: *transport,
                    number: *port,
                });
                continue;
            }
            // Another host's (the PTRs at a reverse name).
            Data::Ptr(_) => continue,
        };
        addresses.push(AddressReport {
            address,
            source: AddressSource::Primary,
            objects: vec![],
        });
    }
    ports.sort();
    HostReport {
        served: !addresses.is_empty(),
        wildcard,
        reason: None,
        addresses,
        ports,
        objects: vec![],
        rule: None,
        conflict: None,
        tcp_unroutable: None,
        unserved_vips: None,
    }
}

/// Whether the host key `k` is a wildcard's (`*.bar.global`), whose data lives at its parent.
pub(super) fn is_wildcard(k: &[u8]) -> bool {
    k.starts_with(b"\x01*")
}

/// The report of host `k` whose slot is `slot`: kept, or rebuilt from its node in `shards`.
pub(super) fn report<'a>(
    shards: &'a [Arc<Shard>],
    k: &[u8],
    slot: &'a Option<Arc<HostReport>>,
) -> Cow<'a, HostReport> {
    if let Some(r) = slot {
        return Cow::Borrowed(r);
    }
    let wildcard = is_wildcard(k);
    let node = match wildcard {
        true => key::parent(k).and_then(|p| shard(shards, p).wildcards.get(p)),
        false => shard(shards, k).nodes.get(k),
    };
    Cow::Owned(said(wildcard, node.into_iter().flat_map(|n| &n.data)))
}

fn shard<'a>(shards: &'a [Arc<Shard>], k: &[u8]) -> &'a Shard {
    &shards[super::shard_index(k, SHARDS)]
}

#[cfg(test)]
mod tests {
    use super::super::{NameServer, ZoneBuilder, ZoneConfig};
    use super::*;
    use crate::serviceentry::Transport;

    fn report(addresses: &[&str], ports: &[(&str, u16)], source: AddressSource) -> HostReport {
        HostReport {
            served: !addresses.is_empty(),
            wildcard: false,
            reason: None,
            addresses: addresses
                .iter()
                .map(|a| AddressReport {
                    address: a.parse().unwrap(),
                    source,
                    objects: vec![],
                })
                .collect(),
            ports: ports
                .iter()
                .map(|(name, number)| SrvPort {
                    name: name.to_string(),
                    transport: Transport::Tcp,
                    number: *number,
                })
                .collect(),
            objects: vec![],
            rule: None,
            conflict: None,
            tcp_unroutable: None,
            unserved_vips: None,
        }
    }

    /// Reports the names say in full are rebuilt, not kept, and read back equal; any report
    /// they do not say (a primary's, one at a name server's name, one with ports only or in
    /// another order) is kept as it came.
    #[test]
    fn reports_the_names_say_are_rebuilt_the_others_kept() {
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
        let primary = AddressSource::Primary;
        let plain = report(
            &["240.10.0.1", "fd00::1"],
            &[("grpc", 9000), ("http", 80)],
            primary,
        );
        let mut wildcard = report(&["240.10.0.2"], &[], primary);
        wildcard.wildcard = true;
        let mut wildcard_ports = report(&["240.10.0.3"], &[("http", 80)], primary);
        wildcard_ports.wildcard = true;
        let mut ports_only = report(&[], &[("http", 80)], primary);
        ports_only.reason = Some("SRV records without an address");
        let cases = [
            ("a.global", plain.clone(), false),
            ("*.w.global", wildcard, false),
            // A wildcard's SRV data is not served: its ports are the report's alone.
            ("*.x.global", wildcard_ports, true),
            (
                "b.global",
                report(&["240.10.0.4"], &[], AddressSource::Vip),
                true,
            ),
            ("ns1.global", report(&["240.10.0.5"], &[], primary), true),
            ("c.global", ports_only, true),
            (
                "d.global",
                report(&["240.10.0.6"], &[("http", 80), ("grpc", 9000)], primary),
                true,
            ),
        ];
        for (host, r, kept) in &cases {
            assert!(b.set_host(host, Some(r.clone())), "{host}");
            assert!(!b.set_host(host, Some(r.clone())), "{host}: unchanged");
            let back = b.report(host).unwrap();
            assert_eq!(*back, *r, "{host}");
            assert_eq!(matches!(back, Cow::Borrowed(_)), *kept, "{host}");
        }
        let snap = b.snapshot();
        for (host, r, _) in &cases {
            assert_eq!(*snap.host(host).unwrap(), *r, "{host}");
        }
        assert_eq!(snap.hosts().len(), cases.len());
        // A rebuilt report goes with its names.
        assert!(b.set_host("a.global", None));
        let snap = b.snapshot();
        assert!(snap.host("a.global").is_none());
        let q = hickory_proto::rr::Name::from_ascii("a.global.").unwrap();
        let answer = snap.lookup(&q, hickory_proto::rr::RecordType::A);
        assert_eq!(answer.rcode, hickory_proto::op::ResponseCode::NXDomain);
    }
}
