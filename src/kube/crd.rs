//! The two resource types globaldns talks to: Istio's ServiceEntry (read, and its status written
//! back when asked) and globaldns's own VipClaim (the shared allocation store).
//!
//! No Istio crate supports kube 5: ServiceEntry is read as [`super::object::ServiceEntryObject`]
//! (the very model the file source uses, [`crate::serviceentry`], so both sources share one
//! validation) at the version the cluster serves.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use kube::core::NamespaceResourceScope;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Versions of `networking.istio.io` ServiceEntry globaldns reads, newest first. The first one the
/// cluster serves is used (found by discovery when the cluster is first reached).
pub const SERVICEENTRY_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// The ServiceEntry resource at a given version.
pub fn serviceentry_resource(version: &str) -> ApiResource {
    let group = "networking.istio.io";
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: "ServiceEntry".into(),
        plural: "serviceentries".into(),
    }
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

/// A VipClaim as the store reads it (lists, watch events, reads): name, namespace, uid,
/// resourceVersion and spec. Everything else is skipped unread, `managedFields` above all: kube's
/// `ObjectMeta` decodes each entry's field set into a `serde_json::Value`, several times the
/// claim's own size, for every one of 100,000 claims listed at start (twice: the load and the
/// watch's first list).
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimObject {
    /// Only name, namespace, uid and resourceVersion are set.
    pub metadata: ObjectMeta,
    pub spec: VipClaimSpec,
}

/// `metadata` as read.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

#[derive(Deserialize)]
struct ClaimWire {
    #[serde(default)]
    metadata: ClaimMeta,
    spec: VipClaimSpec,
}

impl<'de> Deserialize<'de> for ClaimObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClaimObject, D::Error> {
        let w = ClaimWire::deserialize(d)?;
        Ok(ClaimObject {
            metadata: ObjectMeta {
                name: w.metadata.name,
                namespace: w.metadata.namespace,
                uid: w.metadata.uid,
                resource_version: w.metadata.resource_version,
                ..ObjectMeta::default()
            },
            spec: w.spec,
        })
    }
}

/// What the store keeps of a VipClaim it wrote (the API server's answer to a create or patch).
impl From<VipClaim> for ClaimObject {
    fn from(o: VipClaim) -> ClaimObject {
        ClaimObject {
            metadata: ObjectMeta {
                name: o.metadata.name,
                namespace: o.metadata.namespace,
                uid: o.metadata.uid,
                resource_version: o.metadata.resource_version,
                ..ObjectMeta::default()
            },
            spec: o.spec,
        }
    }
}

impl kube::Resource for ClaimObject {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        VipClaim::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        VipClaim::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        VipClaim::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        VipClaim::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
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
    fn a_claim_is_read_without_what_the_store_does_not_use() {
        let json = r#"{"apiVersion":"globaldns.io/v1alpha1","kind":"VipClaim",
            "metadata":{"name":"v4-240-10-1-2","namespace":"globaldns","uid":"u1",
              "resourceVersion":"42","labels":{"app.kubernetes.io/managed-by":"globaldns"},
              "managedFields":[{"manager":"globaldns","operation":"Update","apiVersion":"globaldns.io/v1alpha1",
                "fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:address":{},"f:host":{}}}}]},
            "spec":{"host":"a.b.global","address":"240.10.1.2","releasedAt":"2026-12-07T12:00:00Z"}}"#;
        let read: ClaimObject = serde_json::from_str(json).unwrap();
        let full: VipClaim = serde_json::from_str(json).unwrap();
        assert!(full.metadata.managed_fields.is_some() && full.metadata.labels.is_some());
        // The same as what the store keeps of a full object it wrote: nothing it uses is lost.
        assert_eq!(read, ClaimObject::from(full));
        assert_eq!(read.metadata.name.as_deref(), Some("v4-240-10-1-2"));
        assert_eq!(read.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(read.metadata.resource_version.as_deref(), Some("42"));
        assert!(read.metadata.managed_fields.is_none() && read.metadata.labels.is_none());
        assert_eq!(
            read.spec.released_at.as_deref(),
            Some("2026-12-07T12:00:00Z")
        );
        assert_eq!(
            <ClaimObject as kube::Resource>::url_path(&(), Some("globaldns")),
            "/apis/globaldns.io/v1alpha1/namespaces/globaldns/vipclaims"
        );
        // A claim without a spec does not fit (the CRD's schema requires one).
        assert!(serde_json::from_str::<ClaimObject>(r#"{"metadata":{"name":"x"}}"#).is_err());
    }

    #[test]
    fn serviceentry_resource_at_a_version() {
        let ar = serviceentry_resource("v1alpha3");
        assert_eq!(ar.api_version, "networking.istio.io/v1alpha3");
        assert_eq!(ar.plural, "serviceentries");
        let url = <super::super::object::ServiceEntryObject as kube::Resource>::url_path(&ar, None);
        assert_eq!(url, "/apis/networking.istio.io/v1alpha3/serviceentries");
    }
}
