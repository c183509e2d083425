//! Opt-in write-back (`--write-back status`): ServiceEntries that have no address of their own get
//! their hosts' VIPs in `status.addresses` (as Istio's own allocator writes them: `{value, host}`),
//! so that sidecars listen on the VIP that DNS answers.
//!
//! Never over someone else's value: an entry whose status holds any address outside globaldns's
//! VIP ranges (Istio's allocator, a user) is left alone, and every patch carries the
//! `resourceVersion` it was computed from, so a concurrent writer makes it fail (409) instead of
//! being overwritten; the watch then brings the new state and the decision is taken again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tracing::{debug, info, warn};

use super::Context;
use crate::metrics::WriteLabels;
use crate::serviceentry::{normalise_name, parse_host_address};
use crate::zone::Snapshot;

/// How often the published snapshot and the watched objects are looked at.
const POLL: Duration = Duration::from_millis(100);
const PARALLEL: usize = 8;
/// A failed write (not a conflict) is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);

/// What write-back needs to know of one ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
struct Obj {
    resource_version: String,
    hosts: Vec<String>,
    has_spec_addresses: bool,
    /// `status.addresses` as (value, host).
    status: Vec<(String, Option<String>)>,
}

#[derive(Default)]
struct ViewInner {
    /// The cluster's client and the ServiceEntry version it serves.
    api: Option<(kube::Client, ApiResource)>,
    objects: BTreeMap<(String, String), Obj>,
}

/// One cluster's ServiceEntries, kept by its source for write-back.
#[derive(Clone)]
pub struct View {
    inner: Arc<Mutex<ViewInner>>,
    generation: Arc<AtomicU64>,
}

impl View {
    pub fn set_api(&self, client: kube::Client, resource: ApiResource) {
        self.inner.lock().unwrap().api = Some((client, resource));
    }

    pub fn upsert(&self, obj: &DynamicObject) {
        let get = |p: &str| obj.data.pointer(p).and_then(|v| v.as_array());
        let strings = |p: &str| -> Vec<String> {
            get(p)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let status = get("/status/addresses")
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a.get("value")?.as_str()?.to_string(),
                    a.get("host").and_then(|h| h.as_str()).map(normalise_name),
                ))
            })
            .collect();
        let o = Obj {
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            hosts: strings("/spec/hosts")
                .iter()
                .map(|h| normalise_name(h))
                .collect(),
            has_spec_addresses: !strings("/spec/addresses").is_empty(),
            status,
        };
        let key = (
            obj.metadata.namespace.clone().unwrap_or_default(),
            obj.metadata.name.clone().unwrap_or_default(),
        );
        self.inner.lock().unwrap().objects.insert(key, o);
    }

    pub fn delete(&self, ns: &str, name: &str) {
        self.inner
            .lock()
            .unwrap()
            .objects
            .remove(&(ns.to_string(), name.to_string()));
    }

    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.inner
            .lock()
            .unwrap()
            .objects
            .retain(|(ns, name), _| keep(ns, name));
    }

    /// Tells the write-back loop to look again.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every cluster's view.
#[derive(Clone, Default)]
pub struct Views {
    clusters: Arc<Mutex<BTreeMap<String, View>>>,
    generation: Arc<AtomicU64>,
}

impl Views {
    pub fn for_cluster(&self, name: &str) -> View {
        let mut c = self.clusters.lock().unwrap();
        c.entry(name.to_string())
            .or_insert_with(|| View {
                inner: Arc::default(),
                generation: self.generation.clone(),
            })
            .clone()
    }

    pub fn remove(&self, name: &str) {
        self.clusters.lock().unwrap().remove(name);
    }
}

/// The `status.addresses` to write for `obj`, or None when it must be left alone.
fn desired(obj: &Obj, snap: &Snapshot, ranges: &[ipnet::IpNet]) -> Option<Vec<(String, String)>> {
    if obj.has_spec_addresses {
        return None;
    }
    let ours = |v: &str| {
        parse_host_address(v)
            .ok()
            .flatten()
            .is_some_and(|ip| ranges.iter().any(|r| r.contains(&ip)))
    };
    // Someone else's address (Istio's allocator, a user): theirs wins, never overwritten.
    if obj.status.iter().any(|(v, _)| !ours(v)) {
        return None;
    }
    let mut want = Vec::new();
    for host in &obj.hosts {
        let Some(report) = snap.host(host) else {
            continue;
        };
        for a in report
            .addresses
            .iter()
            .filter(|a| a.source == crate::zone::AddressSource::Vip)
        {
            want.push((a.address.to_string(), host.clone()));
        }
    }
    if want.is_empty() {
        return None;
    }
    let have: BTreeSet<(String, String)> = obj
        .status
        .iter()
        .map(|(v, h)| (v.clone(), h.clone().unwrap_or_default()))
        .collect();
    if have == want.iter().cloned().collect() {
        return None;
    }
    Some(want)
}

/// The merge patch: the new addresses, guarded by the resourceVersion they were computed from.
pub fn status_patch(resource_version: &str, addresses: &[(String, String)]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(v, h)| json!({"value": v, "host": h}))
        .collect();
    json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"addresses": list},
    })
}

/// Watches the snapshot and the clusters' objects, and writes what is missing.
pub async fn run(views: Views, ctx: Arc<Context>) {
    let mut last_snap: Option<Arc<Snapshot>> = None;
    let mut last_gen = u64::MAX;
    // (cluster, namespace, name, resourceVersion) tried, and when it may be tried again: a
    // success or a conflict changes the resourceVersion; a failure (e.g. RBAC) is retried.
    let mut tried: BTreeMap<(String, String, String, String), Instant> = BTreeMap::new();
    let mut last_pass = Instant::now();
    info!("write-back of status.addresses enabled");
    loop {
        tokio::time::sleep(POLL).await;
        let snap = ctx.snapshot.load_full();
        let gen = views.generation.load(Ordering::Relaxed);
        let unchanged =
            gen == last_gen && last_snap.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snap));
        if !snap.loaded || (unchanged && last_pass.elapsed() < RETRY) {
            continue;
        }
        last_pass = Instant::now();
        last_gen = gen;
        last_snap = Some(snap.clone());

        let clusters: Vec<(String, View)> = views
            .clusters
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut jobs = Vec::new();
        let mut live = BTreeSet::new();
        for (cluster, view) in clusters {
            let inner = view.inner.lock().unwrap();
            let Some((client, resource)) = inner.api.clone() else {
                continue;
            };
            for ((ns, name), obj) in &inner.objects {
                let key = (
                    cluster.clone(),
                    ns.clone(),
                    name.clone(),
                    obj.resource_version.clone(),
                );
                live.insert(key.clone());
                if tried.get(&key).is_some_and(|t| *t > Instant::now()) {
                    continue;
                }
                if let Some(want) = desired(obj, &snap, &ctx.ranges) {
                    tried.insert(key, Instant::now() + RETRY);
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), ns, &resource);
                    jobs.push((
                        cluster.clone(),
                        ns.clone(),
                        name.clone(),
                        api,
                        obj.clone(),
                        want,
                    ));
                }
            }
        }
        tried.retain(|k, _| live.contains(k));
        let metrics = &ctx.metrics;
        futures_util::stream::iter(jobs)
            .for_each_concurrent(PARALLEL, |(cluster, ns, name, api, obj, want)| async move {
                let patch = status_patch(&obj.resource_version, &want);
                let res = tokio::time::timeout(
                    Duration::from_secs(10),
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await;
                let result = match res {
                    Ok(Ok(_)) => {
                        let values: Vec<&str> = want.iter().map(|(v, _)| v.as_str()).collect();
                        info!(%cluster, object = %format!("{ns}/{name}"), addresses = %values.join(","), "wrote VIPs to status.addresses");
                        "written"
                    }
                    Ok(Err(kube::Error::Api(s))) if s.is_conflict() => {
                        debug!(%cluster, object = %format!("{ns}/{name}"), "status changed meanwhile; not overwritten, will look again");
                        "conflict"
                    }
                    Ok(Err(e)) => {
                        warn!(%cluster, object = %format!("{ns}/{name}"), error = %e, "status write-back failed");
                        "failed"
                    }
                    Err(_) => {
                        warn!(%cluster, object = %format!("{ns}/{name}"), "status write-back timed out");
                        "timeout"
                    }
                };
                metrics
                    .status_writes
                    .get_or_create(&WriteLabels { cluster, result })
                    .inc();
            })
            .await;
        // Every object was looked at against this snapshot and every write has finished.
        metrics.writeback_serial.set(i64::from(snap.serial));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_is_guarded_by_resource_version() {
        let p = status_patch("42", &[("240.10.0.7".into(), "a.b.global".into())]);
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["status"]["addresses"][0]["value"], "240.10.0.7");
        assert_eq!(p["status"]["addresses"][0]["host"], "a.b.global");
    }
}
