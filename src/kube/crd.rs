//! The two resource types globaldns talks to: Istio's ServiceEntry (read, and its status written
//! back when asked) and globaldns's own VipClaim (the shared allocation store).
//!
//! No Istio crate supports kube 5: ServiceEntry is read as [`super::object::ServiceEntryObject`]
//! (the very model the file source uses, [`crate::serviceentry`], so both sources share one
//! validation) at the version the cluster serves.

use kube::api::ApiResource;
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
    fn serviceentry_resource_at_a_version() {
        let ar = serviceentry_resource("v1alpha3");
        assert_eq!(ar.api_version, "networking.istio.io/v1alpha3");
        assert_eq!(ar.plural, "serviceentries");
        let url = <super::super::object::ServiceEntryObject as kube::Resource>::url_path(&ar, None);
        assert_eq!(url, "/apis/networking.istio.io/v1alpha3/serviceentries");
    }
}
