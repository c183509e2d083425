//! The Istio ServiceEntry model (networking.istio.io v1, v1beta1, v1alpha3 alike), its parsing from
//! YAML, and its validation into the normalised [`Entry`] that every source hands to the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Label with which a ServiceEntry opts out of VIP auto-allocation (Istio's own label).
pub const AUTOALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";

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
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// The part of `spec` globaldns reads; unknown fields are tolerated (ignored).
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
    /// Kept opaque: globaldns answers with VIPs, never with endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
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

/// Parses one YAML file's text: multi-document, `kind: List` and non-ServiceEntry documents allowed.
/// A syntax error fails the whole file (the caller keeps the last good content); an object that does
/// not fit the model is reported as a problem and skipped, the rest is kept.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Vec<Result<ServiceEntry, Problem>>, String> {
    // YAML 1.2 booleans only: under 1.1 rules `namespace: n` or `no` would turn into `false`.
    let options = serde_saphyr::Options {
        strict_booleans: true,
        ..Default::default()
    };
    // The usual file holds ServiceEntries only: deserialised straight into the model it parses
    // about twice as fast as through a generic tree (most of a large tree's start-up). Anything
    // else (lists, other kinds, an object that does not fit) takes the general path below, which
    // reports problems object by object.
    if let Ok(docs) =
        serde_saphyr::from_multiple_with_options::<Option<ServiceEntry>>(text, options.clone())
    {
        if docs
            .iter()
            .all(|d| d.as_ref().is_none_or(|se| se.kind == "ServiceEntry"))
        {
            return Ok(docs.into_iter().flatten().map(Ok).collect());
        }
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| format!("{origin}: YAML error: {e}"))?;
    let mut out = Vec::new();
    for doc in docs {
        collect_objects(doc, origin, &mut out);
    }
    Ok(out)
}

fn collect_objects(
    doc: serde_json::Value,
    origin: &str,
    out: &mut Vec<Result<ServiceEntry, Problem>>,
) {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    match kind {
        _ if doc.is_null() => {}
        "List" | "ServiceEntryList" => {
            if let Some(serde_json::Value::Array(items)) = doc.get("items") {
                for item in items.clone() {
                    collect_objects(item, origin, out);
                }
            }
        }
        "ServiceEntry" => {
            let name = doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("<unnamed>")
                .to_string();
            out.push(
                serde_json::from_value::<ServiceEntry>(doc).map_err(|e| Problem {
                    object: format!("{origin}: ServiceEntry {name}"),
                    message: format!("does not fit the ServiceEntry schema: {e}"),
                    skipped_object: true,
                }),
            );
        }
        // Other kinds (Services, ConfigMaps…) may share the directory: not ours, not an error.
        _ => {}
    }
}

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
mod tests {
    use super::*;

    fn zones() -> Vec<String> {
        vec!["global".to_string()]
    }

    #[test]
    fn host_rules_follow_istio() {
        assert!(validate_host("httpbin.bar.global").is_ok());
        assert!(validate_host("*.bar.global").is_ok());
        assert!(validate_host("*").is_err());
        assert!(validate_host("a.*.global").is_err());
        assert!(validate_host("-a.global").is_err());
        assert!(validate_host("a_b.global").is_err());
        assert!(validate_host("a..global").is_err());
    }

    #[test]
    fn addresses_keep_only_host_routes() {
        assert_eq!(
            parse_host_address("10.1.2.3/32").unwrap(),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            parse_host_address("fd00::1/128").unwrap(),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(parse_host_address("10.1.0.0/16").unwrap(), None);
        assert!(parse_host_address("nope").is_err());
    }

    #[test]
    fn list_and_multi_document_and_bad_objects() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: a, namespace: n}
  spec: {hosts: [A.N.Global.]}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: b}
spec: {hosts: "not-a-list"}
---
kind: ConfigMap
metadata: {name: c}
"#;
        let objs = parse_yaml(text, "f.yaml").unwrap();
        assert_eq!(objs.len(), 2);
        let a = objs[0].as_ref().unwrap();
        let (entry, problems) = a.validate("local", "f.yaml", &zones());
        assert!(problems.is_empty());
        assert_eq!(entry.unwrap().hosts, vec!["a.n.global"]);
        let err = objs[1].as_ref().unwrap_err();
        assert!(err.object.contains("ServiceEntry b"), "{err}");
    }

    #[test]
    fn syntax_error_fails_the_file() {
        assert!(parse_yaml("kind: [unclosed", "x.yaml").is_err());
    }

    #[test]
    fn invalid_host_is_skipped_and_named() {
        let se: ServiceEntry = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "x", "namespace": "ns",
                         "labels": {AUTOALLOCATE_LABEL: "false"}},
            "spec": {"hosts": ["*", "ok.ns.global", "outside.example.com"],
                     "ports": [{"number": 80, "name": "HTTP", "protocol": "HTTP"},
                               {"number": 53, "name": "dns", "protocol": "UDP"}],
                     "resolution": "DNS"}
        }))
        .unwrap();
        let (entry, problems) = se.validate("c1", "f.yaml", &zones());
        let entry = entry.unwrap();
        assert_eq!(entry.hosts, vec!["ok.ns.global"]);
        assert!(!entry.autoallocate);
        assert_eq!(entry.ports[0].name, "http");
        assert_eq!(entry.ports[1].transport, Transport::Udp);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("ServiceEntry ns/x"));
    }
}
