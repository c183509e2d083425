//! What is served for one host and why: its addresses with where each came from, its ports, the
//! objects that list it. Made by the pipeline from the merged view and the allocator's VIPs;
//! kept in `reports::Reports` (shown by `/debug/hosts` and `check`, read by write-back); the
//! zone takes only what becomes records, [`HostReport::zone_host`].

use std::net::IpAddr;

use serde::Serialize;

use crate::host_view::{AddressKind, Conflict, HostView, Rule};
use crate::routing::Unroutable;
use crate::serviceentry::SrvPort;
use crate::zone::ZoneHost;

/// Where a served address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressSource {
    /// Allocated by globaldns.
    Vip,
    /// Written by a user in `spec.addresses`.
    Spec,
    /// Allocated by Istio, in `status.addresses`.
    IstioStatus,
    /// Transferred from a primary (secondary mode), which knows where it came from.
    Primary,
}

impl std::fmt::Display for AddressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressSource::Vip => "vip",
            AddressSource::Spec => "spec",
            AddressSource::IstioStatus => "istio-status",
            AddressSource::Primary => "primary",
        })
    }
}

/// One address of a served host, with where it came from (for `/debug/hosts` and `check`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AddressReport {
    pub address: IpAddr,
    pub source: AddressSource,
    /// `cluster/namespace/name` of every object that wrote it (empty for VIPs).
    pub objects: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostReport {
    pub served: bool,
    pub wildcard: bool,
    /// Why a host is not served, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub addresses: Vec<AddressReport>,
    pub ports: Vec<SrvPort>,
    pub objects: Vec<String>,
    /// Which rule chose the addresses (`home-spec`, `home-istio-status`, `vip`, `mesh-spec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// Clusters that list the host with different addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<Box<Conflict>>,
    /// Why the home cluster's default sidecars cannot route the host's TCP ports by address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_unroutable: Option<Box<Unroutable>>,
    /// The host's VIPs when this instance serves other addresses for it: spec write-back
    /// still writes them into entries without addresses (in other clusters, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unserved_vips: Option<Box<[IpAddr]>>,
}

impl HostReport {
    /// What is served for a host: the addresses the sources give it, else its VIPs.
    pub fn new(view: HostView, vips: impl Iterator<Item = IpAddr>) -> HostReport {
        let serves_vip = view.serves_vip();
        let mut addresses: Vec<AddressReport> = view
            .addresses
            .into_iter()
            .map(|(ip, origins)| AddressReport {
                address: ip,
                source: match origins.first().map(|(k, _)| *k) {
                    Some(AddressKind::IstioStatus) => AddressSource::IstioStatus,
                    _ => AddressSource::Spec,
                },
                objects: origins.into_iter().map(|(_, o)| o).collect(),
            })
            .collect();
        let mut unserved_vips = None;
        if serves_vip {
            addresses.extend(vips.map(|ip| AddressReport {
                address: ip,
                source: AddressSource::Vip,
                objects: vec![],
            }));
            // Kept as long as the host: no growth slack (100,000 of them).
            addresses.shrink_to_fit();
        } else {
            let vips: Box<[IpAddr]> = vips.collect();
            unserved_vips = (!vips.is_empty()).then_some(vips);
        }
        let reason = match () {
            _ if !addresses.is_empty() => None,
            _ if serves_vip => Some("no VIP could be allocated (range exhausted?)"),
            _ => Some("no address and no VIP (resolution NONE, opt-out label, or wildcard without DYNAMIC_DNS)"),
        };
        HostReport {
            served: reason.is_none(),
            wildcard: view.wildcard,
            reason,
            addresses,
            ports: view.ports,
            objects: view.objects,
            rule: view.rule,
            conflict: view.conflict,
            tcp_unroutable: view.tcp_unroutable,
            unserved_vips,
        }
    }

    /// The host's VIPs, served or not (the mesh-wide address spec write-back writes).
    pub fn vips(&self) -> Vec<IpAddr> {
        let served = self
            .addresses
            .iter()
            .filter(|a| a.source == AddressSource::Vip)
            .map(|a| a.address);
        served
            .chain(self.unserved_vips.iter().flat_map(|v| v.iter().copied()))
            .collect()
    }
}

impl HostReport {
    /// What the zone renders for the host: its addresses and ports when it is served, else
    /// nothing.
    pub fn zone_host(&self) -> Option<ZoneHost> {
        self.served.then(|| {
            let addresses = self.addresses.iter().map(|a| a.address).collect();
            ZoneHost::new(addresses, self.ports.clone())
        })
    }

    /// What a secondary's zone holds of `host`, as its report: addresses from the primary and
    /// ports (served when it has an address: SRV records alone are not), nothing else.
    pub fn transferred(host: &str, zone: &ZoneHost) -> HostReport {
        let served = !zone.addresses().is_empty();
        let addresses = zone.addresses().iter().map(|&address| AddressReport {
            address,
            source: AddressSource::Primary,
            objects: vec![],
        });
        HostReport {
            served,
            wildcard: host.starts_with("*."),
            reason: (!served).then_some("SRV records without an address"),
            addresses: addresses.collect(),
            ports: zone.ports().to_vec(),
            objects: vec![],
            rule: None,
            conflict: None,
            tcp_unroutable: None,
            unserved_vips: None,
        }
    }
}
