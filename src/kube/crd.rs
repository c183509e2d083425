//! The two resource types globaldns talks to: Istio's ServiceEntry (read, and its status written
//! back when asked) and globaldns's own VipClaim (the shared allocation store).
//!
//! No Istio crate supports kube 5, so ServiceEntry is declared here with `CustomResource`, schema
//! disabled (Istio ships the CRD), on top of the very model the file source uses
//! ([`crate::serviceentry`]): both sources share one validation.

use kube::api::{ApiResource, DynamicObject};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::serviceentry::{self as model, ServiceEntrySpec, ServiceEntryStatus};

/// `spec` of Istio's ServiceEntry: the file source's model, unchanged.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    plural = "serviceentries",
    namespaced,
    schema = "disabled",
    status = "ServiceEntryStatus"
)]
pub struct IstioServiceEntrySpec {
    #[serde(flatten)]
    pub model: ServiceEntrySpec,
}

/// Versions of `networking.istio.io` ServiceEntry globaldns reads, newest first. The first one the
/// cluster serves is used (found by discovery when the cluster is first reached).
pub const SERVICEENTRY_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// The ServiceEntry resource at a given version.
pub fn serviceentry_resource(version: &str) -> ApiResource {
    let mut ar = ApiResource::erase::<ServiceEntry>(&());
    ar.version = version.to_string();
    ar.api_version = format!("{}/{}", ar.group, version);
    ar
}

/// Converts an object as the API server sent it into the shared model. Err names what does not
/// fit (one bad object never stops the watch of its cluster).
pub fn to_model(obj: &DynamicObject) -> Result<model::ServiceEntry, String> {
    let typed: ServiceEntry = obj.clone().try_parse().map_err(|e| e.to_string())?;
    let meta = &typed.metadata;
    Ok(model::ServiceEntry {
        api_version: obj
            .types
            .as_ref()
            .map(|t| t.api_version.clone())
            .unwrap_or_default(),
        kind: "ServiceEntry".into(),
        metadata: model::ObjectMeta {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            creation_timestamp: None,
        },
        spec: typed.spec.model,
        status: typed.status,
    })
}

/// `spec` of a VipClaim: one object per VIP, named after the address (see [`claim_name`]), so that
/// creating it is an atomic claim of that address.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[kube(
    group = "globaldns.io",
    version = "v1alpha1",
    kind = "VipClaim",
    plural = "vipclaims",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VipClaimSpec {
    /// The host holding the address (lower case, no trailing dot).
    pub host: String,
    /// The address itself (also encoded in the object name).
    pub address: String,
    /// RFC 3339 time at which the host's last ServiceEntry went away; the address stays held for
    /// `--vip-hold` after it. Absent while the host is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
}

/// The object name of the claim of `ip`: `v4-240-10-1-2`, `v6-fd00-0010-0000-…` (every IPv6 group
/// spelt out, so that one address has exactly one name).
pub fn claim_name(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("v4-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
        }
        std::net::IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|s| format!("{s:04x}")).collect();
            format!("v6-{}", groups.join("-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_valid_object_names() {
        assert_eq!(
            claim_name("240.10.1.2".parse().unwrap()),
            "v4-240-10-1-2".to_string()
        );
        assert_eq!(
            claim_name("fd00:10::5".parse().unwrap()),
            "v6-fd00-0010-0000-0000-0000-0000-0000-0005".to_string()
        );
    }

    #[test]
    fn dynamic_object_converts_to_the_shared_model() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "7",
                         "labels": {"x": "y"}},
            "spec": {"hosts": ["a.n.global"], "resolution": "DNS", "unknownField": 1},
            "status": {"addresses": [{"value": "240.240.0.1", "host": "a.n.global"}],
                       "conditions": []}
        }))
        .unwrap();
        let se = to_model(&obj).unwrap();
        assert_eq!(se.spec.hosts, vec!["a.n.global"]);
        assert_eq!(se.metadata.labels["x"], "y");
        assert_eq!(se.status.unwrap().addresses[0].value, "240.240.0.1");
        let ar = serviceentry_resource("v1alpha3");
        assert_eq!(ar.api_version, "networking.istio.io/v1alpha3");
        assert_eq!(ar.plural, "serviceentries");
    }
}
