//! Which hosts a default sidecar can route by address, and which entries globaldns may give its VIP
//! through `spec.addresses` (`--write-back spec`).
//!
//! Envoy matches an outbound TCP connection by destination `address:port`. A sidecar without DNS
//! capture (Istio's default) knows only an entry's `spec.addresses` (istio/istio
//! `pilot/pkg/serviceregistry/serviceentry/conversion.go`, `convertServices`); Istio's
//! `status.addresses` reach only proxies that capture DNS, and only with istiod's allocator on
//! (`pilot/pkg/model/service.go`, `getAllAddressesForProxy`). Without an address the proxy knows,
//! an entry's TCP ports share the wildcard listener `0.0.0.0:<port>`: one TCP service per port.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::serviceentry::{Entry, Resolution};

/// Why an entry's `spec.addresses` cannot carry its host's VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotWritable {
    /// Every host of an entry shares its addresses: one VIP cannot be every host's own.
    SeveralHosts,
    /// A user (or another tool) wrote `spec.addresses`: theirs, never overwritten.
    UserAddresses,
    /// `resolution: DYNAMIC_DNS`: Istio's validation forbids addresses there.
    DynamicDns,
    /// No VIP for this entry's host (resolution NONE, Istio's opt-out label, a wildcard without
    /// DYNAMIC_DNS).
    NoVip,
    /// Annotated `globaldns.io/write-back: "false"`.
    OptedOut,
    /// Its one host lies outside every served zone.
    OutsideZones,
}

impl NotWritable {
    pub fn as_str(self) -> &'static str {
        match self {
            NotWritable::SeveralHosts => "several hosts share its addresses",
            NotWritable::UserAddresses => {
                "spec.addresses owned by another field manager (even if empty)"
            }
            NotWritable::DynamicDns => "resolution DYNAMIC_DNS takes no addresses",
            NotWritable::NoVip => "no VIP (resolution NONE, opt-out label, or wildcard)",
            NotWritable::OptedOut => "annotated globaldns.io/write-back: \"false\"",
            NotWritable::OutsideZones => "its host is outside every served zone",
        }
    }
}

/// Whether globaldns may write its VIP into `entry`'s `spec.addresses`. `entry.addresses` holds
/// only addresses others wrote (globaldns's own are not read back as addresses).
pub fn spec_writable(entry: &Entry) -> Result<(), NotWritable> {
    let wildcard = entry.hosts.first().is_some_and(|h| h.starts_with("*."));
    if entry.routing.sole_host && entry.hosts.is_empty() {
        Err(NotWritable::OutsideZones)
    } else if !entry.routing.sole_host || entry.hosts.len() != 1 {
        Err(NotWritable::SeveralHosts)
    } else if !entry.addresses.is_empty() || entry.routing.foreign_addresses {
        Err(NotWritable::UserAddresses)
    } else if entry.resolution == Resolution::DynamicDns {
        Err(NotWritable::DynamicDns)
    } else if !entry.routing.write_back {
        Err(NotWritable::OptedOut)
    } else if !crate::host_view::allows_vip(entry, wildcard) {
        Err(NotWritable::NoVip)
    } else {
        Ok(())
    }
}

/// Why a default sidecar of the home cluster cannot route a host's TCP ports by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// No entry of the home cluster lists the host: its sidecars know nothing of it.
    NotAtHome,
    /// An entry with several hosts and TCP ports: they share its addresses, or have none.
    SharedEntry { object: String },
    /// The answer is Istio's `status.addresses`: only DNS-capturing proxies know it.
    IstioStatusOnly,
    /// The answer is the VIP and spec write-back is off: no proxy knows it.
    VipNotWritten,
    /// The answer is the VIP and this entry cannot carry it.
    NotWritable { object: String, why: NotWritable },
}

impl Unroutable {
    /// What an operator can do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            Unroutable::NotAtHome => "create the ServiceEntry in the home cluster too",
            Unroutable::SharedEntry { .. } => "split the entry into one entry per host",
            Unroutable::IstioStatusOnly => {
                "turn on --write-back spec, write spec.addresses, or capture DNS in the sidecars"
            }
            Unroutable::VipNotWritten => "turn on --write-back spec, or write spec.addresses",
            Unroutable::NotWritable { why, .. } => match why {
                NotWritable::SeveralHosts => "split the entry into one entry per host",
                NotWritable::OptedOut => "remove the annotation, or write spec.addresses",
                _ => "write spec.addresses",
            },
        }
    }
}

impl fmt::Display for Unroutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unroutable::NotAtHome => f.write_str("no ServiceEntry in the home cluster"),
            Unroutable::SharedEntry { object } => {
                write!(f, "{object} has several hosts and TCP ports")
            }
            Unroutable::IstioStatusOnly => {
                f.write_str("only Istio's status address, known to DNS-capturing proxies only")
            }
            Unroutable::VipNotWritten => f.write_str("VIP not in spec.addresses (write-back off)"),
            Unroutable::NotWritable { object, why } => {
                write!(f, "VIP cannot be written to {object}: {}", why.as_str())
            }
        }
    }
}

impl Serialize for Unroutable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_view::{merge, Rules};
    use crate::serviceentry::{ObjectRef, Routing};

    fn entry(cluster: &str, hosts: &[&str], tcp: bool) -> Entry {
        Entry {
            object: ObjectRef {
                cluster: cluster.into(),
                namespace: "ns".into(),
                name: "e".into(),
            },
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            addresses: vec![],
            status_addresses: vec![],
            ports: vec![],
            resolution: Resolution::Static,
            autoallocate: true,
            routing: Routing {
                sole_host: hosts.len() == 1,
                tcp_by_address: tcp,
                write_back: true,
                foreign_addresses: false,
            },
        }
    }

    fn unroutable(host: &str, entries: &[Entry], spec_write_back: bool) -> Option<Unroutable> {
        let rules = Rules {
            spec_write_back,
            ..Rules::default()
        };
        merge(host, entries.iter(), &rules)
            .unwrap()
            .tcp_unroutable
            .map(|u| *u)
    }

    const H: &str = "db.ns.global";

    #[test]
    fn a_tcp_host_on_its_vip_is_routable_only_with_spec_write_back() {
        let e = [entry("local", &[H], true)];
        assert_eq!(unroutable(H, &e, false), Some(Unroutable::VipNotWritten));
        assert_eq!(unroutable(H, &e, true), None);
        // HTTP routes by Host on 0.0.0.0:<port>: no address needed.
        assert_eq!(unroutable(H, &[entry("local", &[H], false)], false), None);
    }

    #[test]
    fn user_addresses_route_and_istio_status_reaches_only_capturing_proxies() {
        let mut spec = entry("local", &[H], true);
        spec.addresses = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(unroutable(H, &[spec], false), None);
        let mut status = entry("local", &[H], true);
        status.status_addresses = vec![("240.240.0.5".parse().unwrap(), Some(H.into()))];
        assert_eq!(
            unroutable(H, &[status.clone()], false),
            Some(Unroutable::IstioStatusOnly)
        );
        // With spec write-back the VIP goes into spec, which every proxy reads.
        assert_eq!(unroutable(H, &[status], true), None);
    }

    #[test]
    fn entries_that_cannot_carry_the_vip_are_named() {
        let shared = entry("local", &[H, "other.ns.global"], true);
        assert_eq!(
            unroutable(H, &[shared], true),
            Some(Unroutable::SharedEntry {
                object: "local/ns/e".into()
            })
        );
        let mut opted = entry("local", &[H], true);
        opted.routing.write_back = false;
        assert_eq!(
            unroutable(H, &[opted], true),
            Some(Unroutable::NotWritable {
                object: "local/ns/e".into(),
                why: NotWritable::OptedOut
            })
        );
        let mut dynamic = entry("local", &["*.ns.global"], true);
        dynamic.resolution = Resolution::DynamicDns;
        assert_eq!(
            unroutable("*.ns.global", &[dynamic], true),
            Some(Unroutable::NotWritable {
                object: "local/ns/e".into(),
                why: NotWritable::DynamicDns
            })
        );
        // Defined only in another cluster: the home cluster's sidecars know nothing of it.
        assert_eq!(
            unroutable(H, &[entry("west", &[H], true)], true),
            Some(Unroutable::NotAtHome)
        );
    }

    #[test]
    fn writability_of_one_entry() {
        assert_eq!(spec_writable(&entry("local", &[H], true)), Ok(()));
        let mut none = entry("local", &[H], true);
        none.resolution = Resolution::None;
        assert_eq!(spec_writable(&none), Err(NotWritable::NoVip));
        let mut label = entry("local", &[H], true);
        label.autoallocate = false;
        assert_eq!(spec_writable(&label), Err(NotWritable::NoVip));
        let mut user = entry("local", &[H], true);
        user.addresses = vec!["10.0.0.1".parse().unwrap()];
        assert_eq!(spec_writable(&user), Err(NotWritable::UserAddresses));
        let mut outside = entry("local", &[], true);
        outside.routing.sole_host = true;
        assert_eq!(spec_writable(&outside), Err(NotWritable::OutsideZones));
    }
}
