//! The Istio ServiceEntry model (networking.istio.io v1, v1beta1, v1alpha3 alike), its parsing from
//! YAML, and its validation into the normalised [`Entry`] that every source hands to the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Label with which a ServiceEntry opts out of VIP auto-allocation (Istio's own label).
pub const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// globaldns's own opt-out of spec write-back for one entry (`"false"`), Istio's label aside.
pub const WRITE_BACK_ANNOTATION: &str = "globaldns.io/write-back";

/// Accepted `apiVersion`s. The three versions share one schema for everything we read.
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceEntrySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceEntryStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "unique_labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A label map that refuses a repeated key, as YAML does (serde's map would keep the last value).
fn unique_labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Labels;
    impl<'de> Visitor<'de> for Labels {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of labels")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut labels = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if labels.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate label {key:?}")));
                }
                labels.insert(key, value);
            }
            Ok(labels)
        }
    }
    d.deserialize_map(Labels)
}

/// The part of `spec` globaldns reads; unknown fields are tolerated (ignored, never built:
/// `endpoints` are most of a ServiceEntry's bytes, and globaldns answers with VIPs).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default, deserialize_with = "port_number")]
    pub number: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "optional_port_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_port: Option<u32>,
}

/// A port number, quoted (`"8080"`, `"017"`) or not, as serde_saphyr has always read it.
fn port_number<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Number;
    impl<'de> Visitor<'de> for Number {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a port number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Number)
}

fn optional_port_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    struct Number(#[serde(deserialize_with = "port_number")] u32);
    Ok(Option::<Number>::deserialize(d)?.map(|n| n.0))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ServiceEntryStatus {
    #[serde(default)]
    pub addresses: Vec<StatusAddress>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct StatusAddress {
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Where an entry came from: enough for an operator to find the object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.namespace, self.name)
    }
}

/// The transport of an SRV name's second label (RFC 2782). Ordered as the zone keeps SRV data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The label of an SRV name: `_tcp`, `_udp`.
    pub fn label(self) -> &'static [u8] {
        match self {
            Transport::Tcp => b"_tcp",
            Transport::Udp => b"_udp",
        }
    }

    /// The transport whose label `label` is, in any case.
    pub fn from_label(label: &[u8]) -> Option<Transport> {
        [Transport::Tcp, Transport::Udp]
            .into_iter()
            .find(|t| t.label().eq_ignore_ascii_case(label))
    }
}

/// A port as served in SRV records: `_<name>._<transport>.<host>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SrvPort {
    pub name: String,
    pub transport: Transport,
    pub number: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// A validated ServiceEntry, normalised: lower-case hosts without trailing dot, parsed addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub object: ObjectRef,
    pub hosts: Vec<String>,
    /// `spec.addresses` that are host addresses (bare, /32 or /128).
    pub addresses: Vec<IpAddr>,
    /// Istio-written `status.addresses` as (address, host it belongs to; None = every host).
    pub status_addresses: Vec<(IpAddr, Option<String>)>,
    pub ports: Vec<SrvPort>,
    pub resolution: Resolution,
    /// False when the opt-out label says `"false"`.
    pub autoallocate: bool,
    /// What decides whether a sidecar can route the entry's hosts by address.
    pub routing: Routing,
}

/// The facts about an entry that decide whether a default sidecar can route its hosts by
/// destination address, and whether globaldns may write its VIP into `spec.addresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routing {
    /// `spec.hosts` lists exactly one host: every host of an entry shares its addresses, so
    /// only then can the addresses be one host's own.
    pub sole_host: bool,
    /// A port carries TCP that Envoy matches by destination address (protocol TCP, MONGO,
    /// MYSQL, REDIS, or unset: sniffed, TCP when not HTTP); HTTP routes by Host and TLS by SNI
    /// on `0.0.0.0:<port>`.
    pub tcp_by_address: bool,
    /// Not opted out of spec write-back by the annotation `globaldns.io/write-back: "false"`.
    pub write_back: bool,
    /// Another field manager owns `spec.addresses`, even empty (`addresses: []` in its
    /// manifest): globaldns cannot apply the field without forcing (Kubernetes sources only).
    pub foreign_addresses: bool,
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            sole_host: true,
            tcp_by_address: false,
            write_back: true,
            foreign_addresses: false,
        }
    }
}

/// Whether Envoy routes this port protocol by destination address (Istio's
/// `pkg/config/protocol/instance.go`: `IsHTTP` and `IsTLS` protocols are routed by Host header or
/// SNI on the wildcard listener; the rest, and an unset protocol, by address).
pub fn routed_by_address(protocol: Option<&str>) -> bool {
    !matches!(
        protocol.map(str::to_ascii_uppercase).as_deref(),
        Some("HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB" | "HTTPS" | "TLS" | "UDP")
    )
}

/// Something wrong with an object; it or a part of it is skipped. Always names the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where (file path or cluster) and which object.
    pub object: String,
    pub message: String,
    /// True when the whole object was skipped, false when only a part of it (a host, an address).
    pub skipped_object: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

mod yaml;
pub use yaml::parse_yaml;

impl ServiceEntry {
    /// Validates and normalises this object. `zones` are the served zones (lower case, no trailing
    /// dot): hosts outside all of them are silently ignored, as the design says.
    pub fn validate(
        &self,
        cluster: &str,
        origin: &str,
        zones: &[String],
    ) -> (Option<Entry>, Vec<Problem>) {
        let namespace = self
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let label = format!(
            "{origin}: ServiceEntry {namespace}/{}",
            if self.metadata.name.is_empty() {
                "<unnamed>"
            } else {
                &self.metadata.name
            }
        );
        let problem = |message: String, skipped_object: bool| Problem {
            object: label.clone(),
            message,
            skipped_object,
        };
        let mut problems = Vec::new();

        if !self.api_version.is_empty() && !API_VERSIONS.contains(&self.api_version.as_str()) {
            problems.push(problem(
                format!("unsupported apiVersion {:?}", self.api_version),
                true,
            ));
            return (None, problems);
        }
        if self.metadata.name.is_empty() {
            problems.push(problem("metadata.name is missing".into(), true));
            return (None, problems);
        }
        let resolution = match parse_resolution(self.spec.resolution.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(problem(e, true));
                return (None, problems);
            }
        };

        let mut hosts = Vec::new();
        for raw in &self.spec.hosts {
            let host = normalise_name(raw);
            if let Err(e) = validate_host(&host) {
                problems.push(problem(format!("host {raw:?} skipped: {e}"), false));
                continue;
            }
            if in_zones(&host, zones) && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        if self.spec.hosts.is_empty() {
            problems.push(problem("spec.hosts is empty".into(), true));
            return (None, problems);
        }

        let mut addresses = Vec::new();
        for raw in &self.spec.addresses {
            match parse_host_address(raw) {
                Ok(Some(ip)) => {
                    if !addresses.contains(&ip) {
                        addresses.push(ip)
                    }
                }
                // A wider CIDR is valid Istio but names no single address: not served, not an error.
                Ok(None) => {}
                Err(e) => problems.push(problem(format!("address {raw:?} skipped: {e}"), false)),
            }
        }

        let mut status_addresses = Vec::new();
        if let Some(status) = &self.status {
            for a in &status.addresses {
                match parse_host_address(&a.value) {
                    Ok(Some(ip)) => {
                        status_addresses.push((ip, a.host.as_deref().map(normalise_name)))
                    }
                    Ok(None) => {}
                    Err(e) => problems.push(problem(
                        format!("status address {:?} skipped: {e}", a.value),
                        false,
                    )),
                }
            }
        }

        let mut ports = Vec::new();
        for p in &self.spec.ports {
            match srv_port(p) {
                Ok(Some(sp)) => {
                    if !ports.contains(&sp) {
                        ports.push(sp)
                    }
                }
                Ok(None) => {}
                Err(e) => problems.push(problem(format!("port skipped: {e}"), false)),
            }
        }

        let autoallocate = self
            .metadata
            .labels
            .get(AUTOALLOCATE_LABEL)
            .is_none_or(|v| !v.eq_ignore_ascii_case("false"));

        let mut listed: Vec<String> = self.spec.hosts.iter().map(|h| normalise_name(h)).collect();
        listed.sort_unstable();
        listed.dedup();
        let routing = Routing {
            sole_host: listed.len() == 1,
            tcp_by_address: self
                .spec
                .ports
                .iter()
                .any(|p| routed_by_address(p.protocol.as_deref())),
            write_back: self
                .metadata
                .annotations
                .get(WRITE_BACK_ANNOTATION)
                .is_none_or(|v| !v.eq_ignore_ascii_case("false")),
            foreign_addresses: false,
        };

        let entry = Entry {
            object: ObjectRef {
                cluster: cluster.to_string(),
                namespace,
                name: self.metadata.name.clone(),
            },
            hosts,
            addresses,
            status_addresses,
            ports,
            resolution,
            autoallocate,
            routing,
        };
        (Some(entry), problems)
    }
}

/// Lower case, without the trailing dot: the one spelling used for comparisons and hashing.
pub fn normalise_name(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `host` (normalised) lies inside one of `zones` (normalised). The apex itself is not a host.
pub fn in_zones(host: &str, zones: &[String]) -> bool {
    zones.iter().any(|z| {
        host.len() > z.len() + 1
            && host.ends_with(z.as_str())
            && host.as_bytes()[host.len() - z.len() - 1] == b'.'
    })
}

/// Istio's host rule: DNS-1123 labels, where only the first label may be `*`, and not `*` alone.
pub fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host == "*" {
        return Err("\"*\" alone is not a host".into());
    }
    if host.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for (i, label) in host.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must be 1 to 63 characters"));
        }
        let bytes = label.as_bytes();
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !ok_chars || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err(format!("label {label:?} is not a DNS-1123 label"));
        }
    }
    Ok(())
}

/// `a.b.c.d`, `a.b.c.d/32`, `x::y`, `x::y/128` → that address; a wider CIDR → None (not served).
pub fn parse_host_address(raw: &str) -> Result<Option<IpAddr>, String> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    match raw.parse::<IpNet>() {
        Ok(net) if net.prefix_len() == net.max_prefix_len() => Ok(Some(net.addr())),
        Ok(_) => Ok(None),
        Err(_) => Err("not an IP address or CIDR".into()),
    }
}

fn parse_resolution(raw: Option<&str>) -> Result<Resolution, String> {
    Ok(match raw.unwrap_or("NONE") {
        "" | "NONE" => Resolution::None,
        "STATIC" => Resolution::Static,
        "DNS" => Resolution::Dns,
        "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
        "DYNAMIC_DNS" => Resolution::DynamicDns,
        other => return Err(format!("unknown resolution {other:?}")),
    })
}

/// The SRV view of a port: named ports only; UDP for `UDP`, TCP for every other protocol.
fn srv_port(p: &Port) -> Result<Option<SrvPort>, String> {
    let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let number = u16::try_from(p.number)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("{name}: number {} is not a port", p.number))?;
    let name = name.to_ascii_lowercase();
    // The SRV owner `_<name>` is one label; keep to what a DNS label can carry.
    if name.len() > 62
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("name {name:?} cannot be an SRV label"));
    }
    let transport = match p
        .protocol
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("UDP") => Transport::Udp,
        _ => Transport::Tcp,
    };
    Ok(Some(SrvPort {
        name,
        transport,
        number,
    }))
}

#[cfg(test)]
mod tests;
