//! `--write-back spec`: the VIP into `spec.addresses` of eligible single-host entries, by
//! server-side apply under the field manager `globaldns`, never forced.
//!
//! Server-side apply is what makes this safe among other writers: globaldns owns only the field
//! it applies; an apply that would take a field someone else owns fails with 409 (nothing is
//! forced); a GitOps tool applying its manifest without addresses leaves globaldns's alone; and
//! applying without the field withdraws only what globaldns owns.

use std::net::IpAddr;

use serde_json::json;

use super::{Obj, SpecAddresses};
use crate::reports::Reports;

/// What to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecWrite {
    /// `spec.addresses` = these VIPs.
    Apply(Vec<IpAddr>),
    /// Nothing: globaldns gives up every field it owns in the object.
    Withdraw,
}

/// The apply `obj` needs against the hosts' `reports`, if any.
pub fn desired(obj: &Obj, reports: &Reports) -> Option<SpecWrite> {
    // A skipped object: not ours to judge.
    let writable = obj.writable.as_ref()?;
    let want = match (writable, &obj.spec, &obj.host) {
        (Ok(()), SpecAddresses::Absent | SpecAddresses::Ours, Some(host)) => {
            reports.get(host).map(|r| r.vips()).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    if want.is_empty() {
        return obj.ours_anywhere.then_some(SpecWrite::Withdraw);
    }
    let same = obj.spec == SpecAddresses::Ours
        && obj.spec_values.len() == want.len()
        && want.iter().all(|ip| obj.spec_values.contains(ip));
    (!same).then_some(SpecWrite::Apply(want))
}

/// The applied configuration: only what globaldns owns, with the resourceVersion it was decided
/// on (a precondition: an entry that changed meanwhile, e.g. gained a second host, fails with 409
/// and is judged again from the watch).
pub fn apply_body(
    api_version: &str,
    namespace: &str,
    name: &str,
    resource_version: &str,
    write: &SpecWrite,
) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": api_version,
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
    });
    if let SpecWrite::Apply(ips) = write {
        let values: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        body["spec"] = json!({ "addresses": values });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_configuration_holds_only_the_addresses() {
        let ips = vec!["240.10.0.7".parse().unwrap(), "fd00:10::7".parse().unwrap()];
        let b = apply_body(
            "networking.istio.io/v1",
            "ns",
            "a",
            "42",
            &SpecWrite::Apply(ips),
        );
        assert_eq!(
            b["spec"],
            json!({"addresses": ["240.10.0.7", "fd00:10::7"]})
        );
        assert_eq!(b["metadata"]["resourceVersion"], "42");
        assert_eq!(b["kind"], "ServiceEntry");
        let w = apply_body(
            "networking.istio.io/v1",
            "ns",
            "a",
            "43",
            &SpecWrite::Withdraw,
        );
        assert!(w.get("spec").is_none());
    }
}
