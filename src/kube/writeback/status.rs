//! `--write-back status`: a take-over of Istio's own allocation. Istio's allocator (istiod with
//! `PILOT_ENABLE_IP_AUTOALLOCATE`) writes a per-cluster address from its prefixes into
//! `status.addresses` and leaves an entry alone once every host has one, whatever its value
//! (istio/istio `pilot/pkg/controllers/ipallocate/ipallocate.go`). Replacing those addresses
//! with the mesh-wide VIP gives every DNS-capturing proxy, ztunnel and waypoint one address in
//! every cluster. Only proxies that capture DNS read status addresses, and only while Istio's
//! allocator is on.

use ipnet::IpNet;
use serde_json::json;

use super::Obj;
use crate::reports::Reports;
use crate::serviceentry::parse_host_address;

/// The `status.addresses` to write for `obj`, or None when it must be left alone. `ours`:
/// globaldns's VIP ranges; `istio`: Istio's allocator's prefixes.
pub fn desired(
    obj: &Obj,
    reports: &Reports,
    ours: &[IpNet],
    istio: &[IpNet],
) -> Option<Vec<(String, String)>> {
    if !obj.istio_allocates {
        return None;
    }
    let within = |v: &str, ranges: &[IpNet]| {
        parse_host_address(v)
            .ok()
            .flatten()
            .is_some_and(|ip| ranges.iter().any(|r| r.contains(&ip)))
    };
    // Someone else's address (a user, another tool): theirs wins, never overwritten.
    if obj
        .status
        .iter()
        .any(|(v, _)| !within(v, ours) && !within(v, istio))
    {
        return None;
    }
    let mut want = Vec::new();
    for host in &obj.hosts {
        let vips = reports.get(host).map(|r| r.vips()).unwrap_or_default();
        if vips.is_empty() {
            // Not one of ours (outside the zones, say): Istio's allocation stays.
            want.extend(
                obj.status
                    .iter()
                    .filter(|(_, h)| h.as_deref() == Some(host.as_str()))
                    .map(|(v, h)| (v.clone(), h.clone().unwrap_or_default())),
            );
        } else {
            want.extend(vips.iter().map(|ip| (ip.to_string(), host.clone())));
        }
    }
    if want.is_empty() {
        return None;
    }
    let have: std::collections::BTreeSet<(String, String)> = obj
        .status
        .iter()
        .map(|(v, h)| (v.clone(), h.clone().unwrap_or_default()))
        .collect();
    (have != want.iter().cloned().collect()).then_some(want)
}

/// The merge patch: the new addresses, guarded by the resourceVersion they were computed from.
pub fn patch(resource_version: &str, addresses: &[(String, String)]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(v, h)| json!({"value": v, "host": h}))
        .collect();
    json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"addresses": list},
    })
}
