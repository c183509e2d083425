//! A model of Istio's address rules, the oracle of the proxy tests: given the ServiceEntries of one
//! cluster as its istiod reads them, istiod's allocator flag and a proxy profile, which addresses
//! the proxy has an outbound listener on for each host and port, whether it answers the name
//! itself or sends it to DNS (CoreDNS → globaldns), and what istiod's allocator writes into
//! `status.addresses`.
//!
//! Written from istio/istio's source, master of 2026-08-22 (commit 86c9f01f). Every rule names the
//! file and function it comes from; paths are inside istio/istio. Not modelled (the tests do not
//! need them): Sidecar resources (a default catch-all egress listener is assumed), endpoints of
//! `resolution: NONE` entries (they have none: validation forbids them), exportTo, the
//! allocator's conflict resolution between two entries holding one address, listener conflicts
//! between services sharing an address, and IPv6 or dual-stack proxies (the proxy is IPv4-only).
//! Include with `#[path = "…/support/istio_model.rs"] mod istio_model;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Istio's opt-out label (`istio.io/api` label.NetworkingEnableAutoallocateIp).
pub const OPT_OUT_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// `PILOT_IP_AUTOALLOCATE_IPV4_PREFIX` / `…_IPV6_PREFIX` defaults (pilot/pkg/features/pilot.go).
pub const ISTIO_V4_PREFIX: &str = "240.240.0.0/16";
pub const ISTIO_V6_PREFIX: &str = "2001:2::/48";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

impl Resolution {
    /// The proto enum's zero value is NONE (istio.io/api networking/v1alpha3/service_entry.proto
    /// `Resolution`): an absent field reads as NONE.
    pub fn parse(s: Option<&str>) -> Resolution {
        match s.unwrap_or("NONE") {
            "STATIC" => Resolution::Static,
            "DNS" => Resolution::Dns,
            "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
            "DYNAMIC_DNS" => Resolution::DynamicDns,
            _ => Resolution::None,
        }
    }
}

/// How a sidecar tells the services on one port apart, by the port's protocol
/// (pkg/config/protocol/instance.go `Parse`, case-insensitive, anything else "Unsupported";
/// pilot/pkg/networking/networking.go `ModelProtocolToListenerProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortKind {
    /// HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-Web: an HTTP listener on 0.0.0.0:port, routes by Host.
    Http,
    /// TLS, HTTPS: a TCP listener, told apart by SNI when bound to the wildcard
    /// (pilot/pkg/networking/core/tls.go `buildSidecarOutboundTLSFilterChainOpts`).
    Sni,
    /// TCP, Mongo, Redis, MySQL: nothing in the bytes names the service; only the address does.
    Tcp,
    /// No or an unknown protocol: sniffed (HTTP by Host), else plain TCP — by address.
    Auto,
    /// No outbound listener at all.
    Udp,
}

impl PortKind {
    pub fn parse(protocol: &str) -> PortKind {
        match protocol.to_ascii_lowercase().as_str() {
            "http" | "http2" | "http_proxy" | "grpc" | "grpc-web" => PortKind::Http,
            "tls" | "https" => PortKind::Sni,
            "tcp" | "mongo" | "redis" | "mysql" => PortKind::Tcp,
            "udp" => PortKind::Udp,
            _ => PortKind::Auto,
        }
    }

    /// A port whose TCP traffic a sidecar can route only by destination address: the ports
    /// the proxy tests check (the others route on the wildcard listener by Host or SNI).
    pub fn by_address_only(self) -> bool {
        matches!(self, PortKind::Tcp | PortKind::Auto)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub protocol: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAddress {
    pub value: String,
    pub host: String,
}

/// A ServiceEntry as istiod reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    /// `spec.addresses` as written: IPs, CIDRs, or anything (validation is a webhook's).
    pub addresses: Vec<String>,
    pub ports: Vec<Port>,
    pub resolution: Resolution,
    pub labels: BTreeMap<String, String>,
    pub status: Vec<StatusAddress>,
}

impl Entry {
    /// A `resolution: DNS` entry with these hosts and ports (`(number, protocol)`), nothing else.
    pub fn new(namespace: &str, name: &str, hosts: &[&str], ports: &[(u16, &str)]) -> Entry {
        Entry {
            namespace: namespace.into(),
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            addresses: vec![],
            ports: ports
                .iter()
                .map(|(n, p)| Port {
                    number: *n,
                    protocol: p.to_string(),
                })
                .collect(),
            resolution: Resolution::Dns,
            labels: BTreeMap::new(),
            status: vec![],
        }
    }

    /// From the JSON of a ServiceEntry (`kubectl get -o json`, any API version).
    pub fn from_json(v: &serde_json::Value) -> Entry {
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let spec = &v["spec"];
        Entry {
            namespace: v["metadata"]["namespace"].as_str().unwrap_or("").into(),
            name: v["metadata"]["name"].as_str().unwrap_or("").into(),
            hosts: strings(&spec["hosts"]),
            addresses: strings(&spec["addresses"]),
            ports: spec["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| Port {
                            number: p["number"].as_u64().unwrap_or(0) as u16,
                            protocol: p["protocol"].as_str().unwrap_or("").into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            resolution: Resolution::parse(spec["resolution"].as_str()),
            labels: v["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").into()))
                        .collect()
                })
                .unwrap_or_default(),
            status: v["status"]["addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| StatusAddress {
                            value: s["value"].as_str().unwrap_or("").into(),
                            host: s["host"].as_str().unwrap_or("").into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// status.addresses by host, values that do not parse as an IP skipped
    /// (pilot/pkg/networking/serviceentry/ip_autoallocation.go
    /// `getHostAddressesFromServiceEntryStatus`).
    pub fn status_by_host(&self) -> BTreeMap<String, Vec<IpAddr>> {
        let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for a in &self.status {
            if let Ok(ip) = a.value.parse() {
                out.entry(a.host.clone()).or_default().push(ip);
            }
        }
        out
    }
}

/// `host.Name.IsWildCarded` (pkg/config/host/name.go): a leading `*`.
fn wildcarded(host: &str) -> bool {
    host.starts_with('*')
}

/// istiod's settings that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Istiod {
    /// `PILOT_ENABLE_IP_AUTOALLOCATE` (default true since 1.25).
    pub allocator: bool,
}

/// Whether istiod's allocator serves this entry — assigns addresses and has proxies use them
/// (pilot/pkg/networking/serviceentry/ip_autoallocation.go `shouldV2AutoAllocateIPFromPieces`):
/// the feature on, resolution not NONE, not opted out (label value "false", any case), no
/// `spec.addresses`.
pub fn v2_auto_allocates(istiod: Istiod, e: &Entry) -> bool {
    // "if the feature is off we should not assign/use addresses"
    istiod.allocator
        && e.resolution != Resolution::None
        && !e
            .labels
            .get(OPT_OUT_LABEL)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
        && e.addresses.is_empty()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProxyKind {
    Sidecar,
    /// A waypoint (its addresses are also ztunnel's, which answers DNS in ambient).
    Waypoint,
}

/// A proxy profile: its type and the metadata that decides what it knows (pkg/model/proxy.go
/// `NodeMetadata`: `DNSCapture` from `ISTIO_META_DNS_CAPTURE`, `DNSAutoAllocate` from
/// `ISTIO_META_DNS_AUTO_ALLOCATE`; a sidecar captures DNS only when set, ztunnel by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proxy {
    pub kind: ProxyKind,
    /// `ISTIO_META_DNS_CAPTURE=true` (for the waypoint profile: ztunnel's DNS proxy).
    pub dns_capture: bool,
    /// `ISTIO_META_DNS_AUTO_ALLOCATE=true` (the pre-1.23 in-memory allocation).
    pub dns_auto_allocate: bool,
}

pub const DEFAULT_SIDECAR: Proxy = Proxy {
    kind: ProxyKind::Sidecar,
    dns_capture: false,
    dns_auto_allocate: false,
};
pub const CAPTURE_SIDECAR: Proxy = Proxy {
    kind: ProxyKind::Sidecar,
    dns_capture: true,
    dns_auto_allocate: false,
};
pub const WAYPOINT: Proxy = Proxy {
    kind: ProxyKind::Waypoint,
    dns_capture: true,
    dns_auto_allocate: false,
};

impl Proxy {
    pub fn name(&self) -> String {
        match (self.kind, self.dns_capture, self.dns_auto_allocate) {
            (ProxyKind::Waypoint, _, _) => "waypoint/ztunnel".into(),
            (ProxyKind::Sidecar, false, _) => "default sidecar".into(),
            (ProxyKind::Sidecar, true, false) => "sidecar with DNS capture".into(),
            (ProxyKind::Sidecar, true, true) => "sidecar with DNS capture + auto-allocate".into(),
        }
    }

    /// pilot/pkg/model/service.go `nodeUsesAutoallocatedIPs`: (DNS_AUTO_ALLOCATE or the
    /// allocator feature) and (DNS capture or a waypoint).
    fn uses_auto_addresses(&self, istiod: Istiod) -> bool {
        (self.dns_auto_allocate || istiod.allocator)
            && (self.dns_capture || self.kind == ProxyKind::Waypoint)
    }
}

/// A service's address as istiod holds it (`model.Service.DefaultAddress`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `0.0.0.0` (constants.UnspecifiedIP): no address of its own.
    Unspecified,
    Ip(IpAddr),
    Cidr(IpNet),
}

/// One `model.Service`: one per host, or per (host, address) when `spec.addresses` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub host: String,
    pub entry: String,
    pub namespace: String,
    pub address: Address,
    pub auto_v4: Option<Ipv4Addr>,
    pub auto_v6: Option<Ipv6Addr>,
    pub ports: Vec<(u16, PortKind)>,
    pub resolution: Resolution,
}

/// The services istiod builds from a cluster's entries.
/// pilot/pkg/serviceregistry/serviceentry/conversion.go `convertServices`: with `spec.addresses`,
/// one service per host and address (an IP; a CIDR, a /32 or /128 turned into its IP; anything
/// else skipped — a host whose addresses are all invalid gets no service); without, one service
/// per host at 0.0.0.0 carrying the host's status addresses (the last IPv4 and the last IPv6) when
/// the allocator serves the entry. Then, with the allocator off,
/// pilot/pkg/serviceregistry/serviceentry/controller.go `Services` applies the in-memory
/// allocation of auto_allocation.go `autoAllocateIPs`.
pub fn services(entries: &[Entry], istiod: Istiod) -> Vec<Service> {
    let mut out = Vec::new();
    for e in entries {
        let lookup = if v2_auto_allocates(istiod, e) {
            e.status_by_host()
        } else {
            BTreeMap::new()
        };
        let ports: Vec<(u16, PortKind)> = e
            .ports
            .iter()
            .map(|p| (p.number, PortKind::parse(&p.protocol)))
            .collect();
        for host in &e.hosts {
            let service = |address: Address| Service {
                host: host.clone(),
                entry: e.key(),
                namespace: e.namespace.clone(),
                address,
                auto_v4: None,
                auto_v6: None,
                ports: ports.clone(),
                resolution: e.resolution,
            };
            if !e.addresses.is_empty() {
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        out.push(service(Address::Ip(ip)));
                    } else if let Ok(net) = a.parse::<IpNet>() {
                        out.push(service(if net.prefix_len() == net.max_prefix_len() {
                            Address::Ip(net.addr())
                        } else {
                            Address::Cidr(net)
                        }));
                    }
                }
                continue;
            }
            let mut s = service(Address::Unspecified);
            for ip in lookup.get(host).into_iter().flatten() {
                match ip {
                    IpAddr::V4(v4) => s.auto_v4 = Some(*v4),
                    IpAddr::V6(v6) => s.auto_v6 = Some(*v6),
                }
            }
            out.push(s);
        }
    }
    if !istiod.allocator {
        legacy_auto_allocate(&mut out);
    }
    out
}

/// FNV-1a, 32 bits (Go's hash/fnv New32a).
fn fnv32a(s: &str) -> u32 {
    s.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ b as u32).wrapping_mul(16_777_619)
    })
}

/// pilot/pkg/serviceregistry/serviceentry/auto_allocation.go `autoAllocateIPs` (only when
/// `PILOT_ENABLE_IP_AUTOALLOCATE` is off): services at 0.0.0.0, not wildcards, not NONE get
/// 240.240.x.y by a double hash of "namespace/host" over 256×254 slots, numbered by slot order.
/// The result depends on the order of the service list on collisions; the model takes the order
/// given.
fn legacy_auto_allocate(services: &mut [Service]) {
    const MAX: u32 = 256 * 254;
    const PRIME: u32 = 65011;
    let mut slots: Vec<Option<usize>> = vec![None; MAX as usize];
    for (idx, s) in services.iter().enumerate() {
        if s.address != Address::Unspecified
            || wildcarded(&s.host)
            || s.resolution == Resolution::None
        {
            continue;
        }
        let h = fnv32a(&format!("{}/{}", s.namespace, s.host));
        let first = h % MAX;
        if slots[first as usize].is_none() {
            slots[first as usize] = Some(idx);
            continue;
        }
        let second = PRIME - (h % PRIME);
        let mut i = 1u32;
        loop {
            let nh = h.wrapping_add(i.wrapping_mul(second)) % (MAX - 1);
            if slots[nh as usize].is_none() {
                slots[nh as usize] = Some(idx);
                break;
            }
            i += 1;
        }
    }
    let mut x = 0u32;
    let mut by_key: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for slot in slots {
        x += 1;
        let Some(idx) = slot else { continue };
        // "To avoid allocating 240.240.(i).255, if X % 255 is 0, increment X."
        if x.is_multiple_of(255) {
            x += 1;
        }
        let s = &mut services[idx];
        let key = format!("{}/{}", s.namespace, s.host);
        let (a, b) = *by_key.entry(key).or_insert((x / 255, x % 255));
        s.auto_v4 = Some(Ipv4Addr::new(240, 240, a as u8, b as u8));
        // `setAutoAllocatedIPs`: the octets' hex digits concatenated.
        let tail = if a == 0 {
            format!("{b:x}")
        } else {
            format!("{a:x}{b:x}")
        };
        s.auto_v6 = format!("2001:2::f0f0:{tail}").parse().ok();
    }
}

impl Service {
    /// The addresses a proxy sees for this service (IPv4-only proxy):
    /// pilot/pkg/model/service.go `GetAddressForProxy` / `getAllAddressesForProxy` — the
    /// automatic IPv4 address only for a proxy that uses automatic addresses and a service at
    /// 0.0.0.0 (an IPv6 one is filtered out for an IPv4 proxy); else the service's own address.
    pub fn address_for(&self, proxy: Proxy, istiod: Istiod) -> Address {
        if proxy.uses_auto_addresses(istiod) && self.address == Address::Unspecified {
            if let Some(v4) = self.auto_v4 {
                return Address::Ip(IpAddr::V4(v4));
            }
        }
        self.address.clone()
    }
}

/// What a connection to the wildcard listener `0.0.0.0:<port>` is routed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wildcard {
    /// HTTP: the Host header.
    Host,
    /// TLS: SNI.
    Sni,
    /// Plain TCP: one service per port can live there (TCPOverTCP conflict otherwise).
    SharedTcp,
    /// `resolution: NONE` at 0.0.0.0: forwarded to the original destination address.
    Passthrough,
}

/// The outbound listener(s) a proxy has for one host on one port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listen {
    pub addresses: BTreeSet<IpAddr>,
    pub cidrs: BTreeSet<IpNet>,
    pub wildcard: Option<Wildcard>,
}

impl Listen {
    /// Whether a connection to `ip` reaches this host by its address alone.
    pub fn by_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip) || self.cidrs.iter().any(|c| c.contains(&ip))
    }
}

/// Whether the proxy answers a name itself or sends it upstream (CoreDNS → globaldns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dns {
    Proxy(BTreeSet<IpAddr>),
    Upstream,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    pub ports: BTreeMap<u16, (PortKind, Listen)>,
    pub dns: Dns,
}

impl HostView {
    /// The ports routed by address only (for a waypoint: every port but UDP) whose listener does
    /// not take a connection to `ip`.
    pub fn unroutable_ports(&self, ip: IpAddr, kind: ProxyKind) -> Vec<u16> {
        self.ports
            .iter()
            .filter(|(_, (k, _))| match kind {
                ProxyKind::Sidecar => k.by_address_only(),
                ProxyKind::Waypoint => *k != PortKind::Udp,
            })
            .filter(|(_, (_, l))| !l.by_address(ip))
            .map(|(p, _)| *p)
            .collect()
    }
}

impl HostView {
    /// The TCP and auto-detected ports (those a sidecar routes by address only) whose listener
    /// does not take a connection to `ip`: what the proxy tests check, for every profile.
    pub fn unroutable_tcp_ports(&self, ip: IpAddr) -> Vec<u16> {
        self.unroutable_ports(ip, ProxyKind::Sidecar)
    }
}

/// What one proxy of a cluster knows about every host of the cluster's entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub proxy: Proxy,
    pub istiod: Istiod,
    pub hosts: BTreeMap<String, HostView>,
}

impl View {
    pub fn of(entries: &[Entry], istiod: Istiod, proxy: Proxy) -> View {
        let mut hosts: BTreeMap<String, HostView> = BTreeMap::new();
        for s in services(entries, istiod) {
            let address = s.address_for(proxy, istiod);
            let view = hosts
                .entry(s.host.to_ascii_lowercase())
                .or_insert(HostView {
                    ports: BTreeMap::new(),
                    dns: Dns::Upstream,
                });
            for (number, kind) in &s.ports {
                let (_, listen) = view
                    .ports
                    .entry(*number)
                    .or_insert((*kind, Listen::default()));
                add_listener(listen, proxy.kind, *kind, &address, s.resolution);
            }
            // pkg/dns/server/name_table.go `BuildNameTable`: a service whose address is 0.0.0.0
            // ("headless"; a NONE entry's endpoints — it has none) adds nothing; CIDRs are
            // filtered out; the IPs of several services of one host are merged. The table is
            // used only with DNS capture (pkg/dns/client/dns.go `lookupHost`).
            if let (true, Address::Ip(ip)) = (proxy.dns_capture, &address) {
                match &mut view.dns {
                    Dns::Proxy(ips) => {
                        ips.insert(*ip);
                    }
                    dns => *dns = Dns::Proxy(BTreeSet::from([*ip])),
                }
            }
        }
        View {
            proxy,
            istiod,
            hosts,
        }
    }

    /// The host a query name falls under, as the DNS proxy looks it up
    /// (pkg/dns/client/dns.go `lookupHost`): the exact name, else the most specific `*.` suffix.
    pub fn lookup(&self, name: &str) -> Option<(&str, &HostView)> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some((h, v)) = self.hosts.get_key_value(&name) {
            return Some((h, v));
        }
        let labels: Vec<&str> = name.split('.').collect();
        (1..labels.len()).find_map(|i| {
            let wild = format!("*.{}", labels[i..].join("."));
            self.hosts
                .get_key_value(&wild)
                .map(|(h, v)| (h.as_str(), v))
        })
    }
}

/// One service's outbound listener on one port.
/// Sidecars: pilot/pkg/networking/core/listener.go `buildSidecarOutboundListener` — HTTP on
/// 0.0.0.0:port; TCP and auto-detected ports on the service's address, a CIDR as a filter-chain
/// match on 0.0.0.0, and at 0.0.0.0 itself when it has none (`buildSidecarOutboundListeners`:
/// NONE without endpoints falls back to the wildcard too); UDP none.
/// Waypoints: listener_waypoint.go `buildWaypointInternal` — filter chains matched by the
/// service's addresses only (`GetAllAddressesForProxy`), no wildcard.
fn add_listener(
    listen: &mut Listen,
    proxy: ProxyKind,
    kind: PortKind,
    address: &Address,
    resolution: Resolution,
) {
    if kind == PortKind::Udp {
        return;
    }
    if proxy == ProxyKind::Sidecar && kind == PortKind::Http {
        listen.wildcard = Some(Wildcard::Host);
        return;
    }
    match address {
        Address::Ip(ip) => {
            listen.addresses.insert(*ip);
        }
        Address::Cidr(net) => {
            listen.cidrs.insert(*net);
        }
        Address::Unspecified if proxy == ProxyKind::Sidecar => {
            let w = match (resolution, kind) {
                (Resolution::None, _) => Wildcard::Passthrough,
                (_, PortKind::Sni) => Wildcard::Sni,
                _ => Wildcard::SharedTcp,
            };
            listen.wildcard = Some(listen.wildcard.map_or(w, |old| old.min(w)));
        }
        Address::Unspecified => {}
    }
}

/// The addresses of one prefix in use (ipallocate.go `prefixUse`).
#[derive(Clone, Debug)]
struct PrefixUse {
    prefix: IpNet,
    used: BTreeMap<IpAddr, String>,
    next: IpAddr,
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v)
            .checked_add(1)
            .map(|n| Ipv4Addr::from(n).into()),
        IpAddr::V6(v) => u128::from(v)
            .checked_add(1)
            .map(|n| Ipv6Addr::from(n).into()),
    }
}

impl PrefixUse {
    fn new(prefix: &str) -> PrefixUse {
        let prefix: IpNet = prefix.parse().unwrap();
        PrefixUse {
            prefix,
            used: BTreeMap::new(),
            next: next_ip(prefix.network()).unwrap(),
        }
    }

    /// `markUsed`: addresses outside the prefix are not tracked.
    fn mark_used(&mut self, ip: IpAddr, owner: &str) {
        if self.prefix.contains(&ip) {
            self.used.entry(ip).or_insert_with(|| owner.to_string());
        }
    }

    /// `free`: only the owner's address is released, and handed out next.
    fn free(&mut self, ip: IpAddr, owner: &str) {
        if self.used.get(&ip).is_some_and(|o| o == owner) {
            self.used.remove(&ip);
            if !self.prefix.contains(&self.next) || ip < self.next {
                self.next = ip;
            }
        }
    }

    /// `allocateNext`: the next unused address after the last one handed out, wrapping once.
    fn allocate_next(&mut self, owner: &str) -> Option<IpAddr> {
        let first = next_ip(self.prefix.network()).unwrap();
        let mut n = self.next;
        let mut looped = false;
        if !self.prefix.contains(&n) {
            looped = true;
            n = first;
        }
        while self.used.contains_key(&n) {
            n = match next_ip(n).filter(|n| self.prefix.contains(n)) {
                Some(n) => n,
                None if looped => return None,
                None => {
                    looped = true;
                    first
                }
            };
        }
        self.used.insert(n, owner.to_string());
        self.next = next_ip(n).unwrap_or(first);
        Some(n)
    }
}

/// istiod's allocator (pilot/pkg/controllers/ipallocate/ipallocate.go `IPAllocator`), run only
/// when `PILOT_ENABLE_IP_AUTOALLOCATE` is on (pilot/pkg/bootstrap/server.go).
#[derive(Clone, Debug)]
pub struct Allocator {
    v4: PrefixUse,
    v6: PrefixUse,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator {
            v4: PrefixUse::new(ISTIO_V4_PREFIX),
            v6: PrefixUse::new(ISTIO_V6_PREFIX),
        }
    }
}

impl Allocator {
    /// `populateControllerDatastructures`: every spec and status address inside the prefixes is
    /// in use (by its entry).
    pub fn warm(&mut self, entries: &[Entry]) {
        for e in entries {
            self.check_in(e);
        }
    }

    fn check_in(&mut self, e: &Entry) {
        let spec = e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok());
        self.mark(
            spec.chain(e.status_by_host().into_values().flatten()),
            &e.key(),
        );
    }

    /// `markUsedOrQueueConflict` (the conflict queue is not modelled).
    fn mark(&mut self, ips: impl Iterator<Item = IpAddr>, owner: &str) {
        for ip in ips {
            match ip {
                IpAddr::V4(_) => self.v4.mark_used(ip, owner),
                IpAddr::V6(_) => self.v6.mark_used(ip, owner),
            }
        }
    }

    /// `reconcileServiceEntry`: the `status.addresses` the allocator patches into the entry, or
    /// None when it leaves the entry alone.
    /// - Not served (`ShouldV2AutoAllocateIP` false): status addresses, if any, are cleared
    ///   (`clearStaleAddresses`) — whoever wrote them.
    /// - Served: left alone once the set of hosts with a status address (any value, any host
    ///   string, values that do not parse ignored) equals the set of hosts it allocates for —
    ///   every host but wildcards, which only DYNAMIC_DNS keeps (`keepHost`); otherwise every
    ///   kept host keeps its addresses and a host without gets the next IPv4 and IPv6, and
    ///   addresses of hosts no longer listed are dropped (`statusPatchForAddresses`).
    pub fn reconcile(&mut self, istiod: Istiod, e: &Entry) -> Option<Vec<StatusAddress>> {
        if !istiod.allocator {
            return None;
        }
        let key = e.key();
        if !v2_auto_allocates(istiod, e) {
            // `checkInSpecAddresses`, then `clearStaleAddresses` frees what the status held.
            self.mark(e.addresses.iter().filter_map(|a| a.parse().ok()), &key);
            if e.status.is_empty() {
                return None;
            }
            for ip in e.status_by_host().into_values().flatten() {
                self.v4.free(ip, &key);
                self.v6.free(ip, &key);
            }
            return Some(Vec::new());
        }
        self.mark(e.status_by_host().into_values().flatten(), &key);
        let existing = e.status_by_host();
        let mut kept: Vec<&String> = Vec::new();
        for h in &e.hosts {
            if (!wildcarded(h) || e.resolution == Resolution::DynamicDns) && !kept.contains(&h) {
                kept.push(h);
            }
        }
        let with: BTreeSet<&String> = existing.keys().collect();
        if kept.iter().copied().collect::<BTreeSet<_>>() == with {
            return None;
        }
        let mut out = Vec::new();
        for h in kept {
            let ips = match existing.get(h) {
                Some(ips) => ips.clone(),
                None => [self.v4.allocate_next(&key), self.v6.allocate_next(&key)]
                    .into_iter()
                    .flatten()
                    .collect(),
            };
            out.extend(ips.into_iter().map(|ip| StatusAddress {
                value: ip.to_string(),
                host: h.clone(),
            }));
        }
        Some(out)
    }
}
