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
///
/// Two parsers with the rules above: libyaml (`yaml_serde`, about 1.5 times as fast) for the usual
/// file, and the budgeted `serde_saphyr` for what libyaml cannot be trusted with (see
/// `fits_libyaml`). Both read YAML 1.2 booleans only: `namespace: n`, `no` or `off` stay strings.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Vec<Result<ServiceEntry, Problem>>, String> {
    // A leading byte-order mark throws libyaml's columns off (every key after the first fails).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !fits_libyaml(text) {
        return parse_yaml_bounded(text, origin);
    }
    // The usual file holds ServiceEntries only: deserialised straight into the model. Anything else
    // (lists, other kinds, an object that does not fit) takes the general path below, which reports
    // problems object by object.
    if let Ok(Some(entries)) = parse_service_entries(text) {
        return Ok(entries.into_iter().map(Ok).collect());
    }
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        // Through yaml_serde's own tree, which refuses a repeated key as the bounded parser does.
        let value = yaml_serde::Value::deserialize(doc)
            .and_then(|v| serde_json::to_value(v).map_err(de::Error::custom))
            .map_err(|e| format!("{origin}: YAML error: {e}"))?;
        collect_objects(value, origin, &mut out);
    }
    Ok(out)
}

/// Flow nesting (`[`, `{`) handed to libyaml at most: its scanner's work per token grows with the
/// nesting (100,000 nested `{a: ` take minutes); at these bounds the worst stays above 5 MB/s.
const LIBYAML_MAX_FLOW_DEPTH: u32 = 16;
/// Opening brackets in one document below which its nesting needs no closer look.
const LIBYAML_MAX_DOC_BRACKETS: u32 = 32;

/// Whether `text` can go to libyaml. It cannot bound alias expansion (billion laughs), does not
/// apply merge keys and is slow on deep flow nesting: a file with an anchor (`&`) or `<<` goes to
/// the bounded parser, and so does one with a document whose nesting could be deep. That bound is
/// read on bytes, per document (between `---` or `...` lines), and holds when either the document
/// has few opening brackets, or their running count (which over-counts inside scalars and could
/// under-count only on a closing bracket inside a quoted scalar, comment or tag) stays shallow with
/// no quote, `#` or `!` inside brackets. A file sent to the bounded path is parsed slower, and under
/// serde_saphyr's budgets (1,024 documents, 250,000 nodes), which the libyaml path does without.
fn fits_libyaml(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (mut brackets, mut depth, mut shallow) = (0u32, 0u32, true);
    let mut prev = b'\n';
    for (i, &b) in bytes.iter().enumerate() {
        if prev == b'\n' && is_document_marker(&bytes[i..]) {
            // Nesting cannot carry over: a marker inside brackets is a syntax error for libyaml.
            (brackets, depth, shallow) = (0, 0, true);
        }
        match b {
            b'&' => return false,
            b'<' if prev == b'<' => return false,
            b'[' | b'{' => {
                brackets += 1;
                depth += 1;
                shallow &= depth <= LIBYAML_MAX_FLOW_DEPTH;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' | b'#' | b'!' if depth > 0 => shallow = false,
            _ => {}
        }
        if !shallow && brackets > LIBYAML_MAX_DOC_BRACKETS {
            return false;
        }
        prev = b;
    }
    true
}

/// `---` or `...` followed by a blank or the end: a document marker at the start of a line.
fn is_document_marker(rest: &[u8]) -> bool {
    (rest.starts_with(b"---") || rest.starts_with(b"..."))
        && rest
            .get(3)
            .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Every document straight into the model; None when one is of another kind.
fn parse_service_entries(text: &str) -> Result<Option<Vec<ServiceEntry>>, yaml_serde::Error> {
    let mut out = Vec::new();
    // The iterator yields one deserialiser per document; the first error (syntax included) ends it.
    for doc in yaml_serde::Deserializer::from_str(text) {
        match Option::<ServiceEntry>::deserialize(doc)? {
            Some(se) if se.kind == "ServiceEntry" => out.push(se),
            Some(_) => return Ok(None),
            None => {}
        }
    }
    Ok(Some(out))
}

/// [`parse_yaml`] with serde_saphyr, whose budgets bound alias expansion, nesting and size.
fn parse_yaml_bounded(
    text: &str,
    origin: &str,
) -> Result<Vec<Result<ServiceEntry, Problem>>, String> {
    // YAML 1.2 booleans only: under 1.1 rules `namespace: n` or `no` would turn into `false`.
    let options = serde_saphyr::Options {
        strict_booleans: true,
        ..Default::default()
    };
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
    mut doc: serde_json::Value,
    origin: &str,
    out: &mut Vec<Result<ServiceEntry, Problem>>,
) {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    match kind {
        _ if doc.is_null() => {}
        "List" | "ServiceEntryList" => {
            if let Some(serde_json::Value::Array(items)) =
                doc.get_mut("items").map(serde_json::Value::take)
            {
                for item in items {
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

    const SE_A: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n";

    fn names(objs: &[Result<ServiceEntry, Problem>]) -> Vec<String> {
        objs.iter()
            .map(|o| match o {
                Ok(se) => se.metadata.name.clone(),
                Err(p) => format!("problem: {p}"),
            })
            .collect()
    }

    #[test]
    fn yaml_1_2_booleans_on_both_parsers() {
        let block = format!(
            "{SE_A}metadata:\n  name: no\n  namespace: n\n  labels:\n    a: off\n    b: yes\nspec:\n  hosts: [x.n.global]\n  location: on\n"
        );
        // The same document through the bounded parser (an anchor sends it there).
        let anchored = block.replace("metadata:", "metadata: &m");
        assert!(fits_libyaml(&block) && !fits_libyaml(&anchored));
        for text in [&block, &anchored] {
            let objs = parse_yaml(text, "f.yaml").unwrap();
            let se = objs[0].as_ref().unwrap();
            assert_eq!(se.metadata.name, "no");
            assert_eq!(se.metadata.namespace.as_deref(), Some("n"));
            assert_eq!(se.metadata.labels["a"], "off");
            assert_eq!(se.metadata.labels["b"], "yes");
            assert_eq!(se.spec.location.as_deref(), Some("on"));
        }
    }

    #[test]
    fn empty_documents_and_files() {
        assert!(parse_yaml("", "f.yaml").unwrap().is_empty());
        assert!(parse_yaml("# only a comment\n", "f.yaml")
            .unwrap()
            .is_empty());
        let text = format!("---\n---\n{SE_A}metadata: {{name: a}}\n---\n...\n---\n# c\n");
        assert_eq!(names(&parse_yaml(&text, "f.yaml").unwrap()), ["a"]);
    }

    #[test]
    fn quoted_port_numbers_are_numbers() {
        let text = format!(
            "{SE_A}metadata: {{name: a}}\nspec:\n  hosts: [a.global]\n  ports:\n  - number: \"8080\"\n    name: http\n    targetPort: '017'\n  - number: 0x50\n    name: x\n"
        );
        for text in [text.clone(), text.replace("name: a", "name: &a a")] {
            let objs = parse_yaml(&text, "f.yaml").unwrap();
            let ports = &objs[0].as_ref().unwrap().spec.ports;
            assert_eq!((ports[0].number, ports[0].target_port), (8080, Some(17)));
            assert_eq!(ports[1].number, 80);
        }
        let bad = format!("{SE_A}metadata: {{name: a}}\nspec:\n  ports:\n  - number: http\n");
        assert!(parse_yaml(&bad, "f.yaml").unwrap()[0].is_err());
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let text = format!("\u{feff}{SE_A}metadata: {{name: a}}\nspec: {{hosts: [a.global]}}\n");
        assert_eq!(names(&parse_yaml(&text, "f.yaml").unwrap()), ["a"]);
    }

    #[test]
    fn late_syntax_error_fails_the_whole_file() {
        let text = format!("{SE_A}metadata: {{name: a}}\n---\n{SE_A}metadata: {{name: b\n");
        let err = parse_yaml(&text, "dir/f.yaml").unwrap_err();
        assert!(err.starts_with("dir/f.yaml: YAML error"), "{err}");
    }

    #[test]
    fn repeated_keys_fail_the_file() {
        for text in [
            format!("{SE_A}metadata: {{name: a}}\nmetadata: {{name: b}}\n"),
            format!("{SE_A}metadata:\n  name: a\n  labels:\n    x: '1'\n    x: '2'\n"),
            "kind: List\nitems:\n- kind: ServiceEntry\n  kind: ServiceEntry\n".to_string(),
        ] {
            assert!(fits_libyaml(&text));
            assert!(parse_yaml(&text, "f.yaml").is_err(), "{text}");
        }
    }

    #[test]
    fn anchors_and_merge_keys_take_the_bounded_parser() {
        let text = "kind: List\nitems:\n\
            - {kind: ServiceEntry, metadata: &m {name: a}, spec: {hosts: [a.global]}}\n\
            - kind: ServiceEntry\n  metadata:\n    <<: *m\n    namespace: x\n";
        let objs = parse_yaml(text, "f.yaml").unwrap();
        assert_eq!(names(&objs), ["a", "a"]);
        assert_eq!(
            objs[1].as_ref().unwrap().metadata.namespace.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn which_files_libyaml_gets() {
        let se = |i: usize| {
            format!("{SE_A}metadata: {{name: a{i}, labels: {{\"x\": \"y\"}}}}\nspec: {{hosts: [a.global]}}\n")
        };
        // Many documents, each with a few brackets (quoted scalars inside them or not).
        let docs: Vec<String> = (0..1000).map(se).collect();
        assert!(fits_libyaml(&docs.join("---\n")));
        // One large document: its brackets counted, which quotes inside them make unreliable.
        let list = |q: &str| {
            let items: String = (0..300)
                .map(|i| format!("- {{kind: ServiceEntry, metadata: {{name: {q}a{i}{q}}}}}\n"))
                .collect();
            format!("kind: List\nitems:\n{items}")
        };
        assert!(fits_libyaml(&list("")));
        assert!(!fits_libyaml(&list("'")));
        // Anchors and merge keys; deep nesting, spread over documents or hidden behind quotes.
        assert!(!fits_libyaml("a: &x 1\n"));
        assert!(!fits_libyaml("a: {<<: {b: 1}}\n"));
        assert!(!fits_libyaml(&"[".repeat(300)));
        assert!(!fits_libyaml(&"[\"]\", ".repeat(300)));
        assert!(!fits_libyaml(&"{a: # }\n".repeat(300)));
        assert!(fits_libyaml(&"[[[]]]\n---\n".repeat(300)));
        // A `---` that is no marker does not reset the count.
        assert!(!fits_libyaml(&format!(
            "{}\n---x\n{}",
            "[".repeat(200),
            "[".repeat(200)
        )));
    }

    #[test]
    fn hostile_input_is_refused_quickly() {
        let laughs =
            "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
            c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
            e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
            g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
        let n = 200_000;
        let texts = [
            laughs.to_string(),
            format!("{}{}", "[".repeat(n), "]".repeat(n)),
            format!("{}1{}", "{a: ".repeat(n), "}".repeat(n)),
            "[".repeat(n),
            // Block nesting past the deserialiser's limit (128), without a bracket.
            (0..200)
                .map(|i| format!("{}- \n", "  ".repeat(i)))
                .collect(),
            format!("{SE_A}metadata: *nothing\n"),
        ];
        let start = std::time::Instant::now();
        for text in &texts {
            assert!(
                parse_yaml(text, "h.yaml").is_err(),
                "{}",
                &text[..60.min(text.len())]
            );
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
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
