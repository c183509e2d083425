//! Opt-in write-back (`--write-back status`): ServiceEntries that have no address of their own get
//! their hosts' VIPs in `status.addresses` (as Istio's own allocator writes them: `{value, host}`),
//! so that sidecars listen on the VIP that DNS answers.
//!
//! Never over someone else's value: an entry whose status holds any address outside globaldns's
//! VIP ranges (Istio's allocator, a user) is left alone, and every patch carries the
//! `resourceVersion` it was computed from, so a concurrent writer makes it fail (409) instead of
//! being overwritten; the watch then brings the new state and the decision is taken again.
//!
//! Write-back keeps its own view of each cluster's objects, fed the steps of the cluster's watch,
//! and is woken by every published snapshot and by every change the watches act on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::context::Context;
use super::crd;
use super::object::ServiceEntryObject;
use super::watch::Step;
use crate::metrics::WriteLabels;
use crate::serviceentry::{normalise_name, parse_host_address};
use crate::zone::Snapshot;

const PARALLEL: usize = 8;
/// A failed write (not a conflict) is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);

/// What write-back needs to know of one ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct Obj {
    /// The ServiceEntry version it was read at (the one the cluster serves).
    version: String,
    resource_version: String,
    hosts: Vec<String>,
    has_spec_addresses: bool,
    /// `status.addresses` as (value, host).
    status: Vec<(String, Option<String>)>,
}

impl Obj {
    /// From the object as read at `api_version` (`networking.istio.io/v1`). One whose spec does
    /// not fit the model (skipped by the source) has no hosts: nothing is written to it.
    pub fn from_object(obj: &ServiceEntryObject, api_version: &str) -> Obj {
        let body = obj.body.as_ref().ok();
        let spec = body.map(|b| &b.spec);
        let status = body
            .and_then(|b| b.status.as_ref())
            .map(|s| &s.addresses[..])
            .unwrap_or_default()
            .iter()
            .filter(|a| !a.value.is_empty())
            .map(|a| (a.value.clone(), a.host.as_deref().map(normalise_name)))
            .collect();
        Obj {
            version: api_version
                .rsplit_once('/')
                .map_or(api_version, |(_, v)| v)
                .to_string(),
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            hosts: spec
                .map(|s| &s.hosts[..])
                .unwrap_or_default()
                .iter()
                .map(|h| normalise_name(h))
                .collect(),
            has_spec_addresses: spec.is_some_and(|s| !s.addresses.is_empty()),
            status,
        }
    }
}

pub type Key = (String, String);

#[derive(Default)]
struct ViewInner {
    client: Option<kube::Client>,
    objects: BTreeMap<Key, Obj>,
    /// Objects changed since write-back last looked; `all`: every one (a new list).
    dirty: BTreeSet<Key>,
    all: bool,
}

/// An object of a cluster's watch, as far as write-back is concerned.
pub trait Watched {
    /// (namespace, name).
    fn key(&self) -> Key;
    /// What write-back needs of it (None: nothing, as for a deleted object).
    fn take(&mut self) -> Option<Obj>;
}

/// One cluster's ServiceEntries as write-back sees them, fed the steps of the cluster's watch.
#[derive(Clone)]
pub struct View {
    inner: Arc<Mutex<ViewInner>>,
    changed: Arc<Notify>,
}

impl View {
    /// Takes what write-back needs from a step of the cluster's watch; wakes write-back when the
    /// step is one the source acts on (a full list, a settled batch).
    pub fn apply(&self, step: &mut Step<impl Watched>) {
        let mut v = self.inner.lock().unwrap();
        match step {
            Step::Replaced(list) => {
                v.objects = list
                    .iter_mut()
                    .filter_map(|s| Some((s.key(), s.take()?)))
                    .collect();
                v.all = true;
                v.dirty.clear();
            }
            Step::Applied(s) => {
                let key = s.key();
                match s.take() {
                    Some(o) => v.objects.insert(key.clone(), o),
                    None => v.objects.remove(&key),
                };
                v.dirty.insert(key);
            }
            Step::Deleted(s) => {
                let key = s.key();
                v.objects.remove(&key);
                v.dirty.insert(key);
            }
            Step::Settled => {}
        }
        if matches!(step, Step::Replaced(_) | Step::Settled) {
            self.changed.notify_one();
        }
    }
}

/// Every cluster's view.
#[derive(Clone, Default)]
pub struct Views {
    clusters: Arc<Mutex<BTreeMap<String, View>>>,
    changed: Arc<Notify>,
}

impl Views {
    /// The view of `name`, patched through `client` (a cluster re-added gets its new client).
    pub fn for_cluster(&self, name: &str, client: kube::Client) -> View {
        let mut c = self.clusters.lock().unwrap();
        let view = c.entry(name.to_string()).or_insert_with(|| View {
            inner: Arc::default(),
            changed: self.changed.clone(),
        });
        view.inner.lock().unwrap().client = Some(client);
        view.clone()
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

/// (cluster, namespace, name, resourceVersion) of an object write-back tried to patch.
type Tried = (String, String, String, String);

/// One patch to send.
struct Job {
    cluster: String,
    namespace: String,
    name: String,
    api: Api<DynamicObject>,
    resource_version: String,
    want: Vec<(String, String)>,
}

/// Writes what is missing: every object against each newly published snapshot, the objects a
/// cluster's watch changed against the current one, and failed writes again when they are due.
pub async fn run(views: Views, ctx: Arc<Context>) {
    let mut published = ctx.snapshot.subscribe();
    // When each object may be tried again: a success or a conflict changes the resourceVersion;
    // a failure (e.g. RBAC) is retried after RETRY.
    let mut tried: BTreeMap<Tried, Instant> = BTreeMap::new();
    // The snapshot every object was last looked at against.
    let mut checked: Option<u64> = None;
    let mut retry_due = false;
    info!("write-back of status.addresses enabled");
    loop {
        published.borrow_and_update();
        let snap = ctx.snapshot.load_full();
        if snap.loaded {
            let full = retry_due || checked != Some(snap.generation);
            let jobs = collect(&views, &snap, &ctx.ranges, full, &mut tried);
            write(jobs, &ctx).await;
            if full {
                checked = Some(snap.generation);
            }
            // Every object was looked at against this snapshot and every write has finished.
            ctx.metrics.writeback_serial.set(i64::from(snap.serial));
        }
        let next_retry = tried.values().min().copied();
        retry_due = false;
        tokio::select! {
            r = published.changed() => {
                if r.is_err() {
                    return;
                }
            }
            () = views.changed.notified() => {}
            () = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {
                retry_due = true;
            }
        }
    }
}

/// The patches to send: for every object (`full`, or a view that was listed again), else for the
/// objects changed since the last pass.
fn collect(
    views: &Views,
    snap: &Snapshot,
    ranges: &[ipnet::IpNet],
    full: bool,
    tried: &mut BTreeMap<Tried, Instant>,
) -> Vec<Job> {
    let clusters: Vec<(String, View)> = views
        .clusters
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let now = Instant::now();
    let mut jobs = Vec::new();
    let mut live = BTreeSet::new();
    for (cluster, view) in clusters {
        let mut v = view.inner.lock().unwrap();
        let all = std::mem::take(&mut v.all) | full;
        let dirty = std::mem::take(&mut v.dirty);
        let Some(client) = v.client.clone() else {
            continue;
        };
        let objects: Box<dyn Iterator<Item = (&Key, &Obj)>> = if all {
            Box::new(v.objects.iter())
        } else {
            Box::new(dirty.iter().filter_map(|k| v.objects.get_key_value(k)))
        };
        for ((ns, name), obj) in objects {
            let key = (
                cluster.clone(),
                ns.clone(),
                name.clone(),
                obj.resource_version.clone(),
            );
            if full {
                live.insert(key.clone());
            }
            if tried.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            if let Some(want) = desired(obj, snap, ranges) {
                tried.insert(key, now + RETRY);
                let resource = crd::serviceentry_resource(&obj.version);
                jobs.push(Job {
                    cluster: cluster.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                    api: Api::namespaced_with(client.clone(), ns, &resource),
                    resource_version: obj.resource_version.clone(),
                    want,
                });
            }
        }
    }
    if full {
        tried.retain(|k, _| live.contains(k));
    }
    // Absent means "may be tried": only future retries are kept (and waited for).
    tried.retain(|_, t| *t > now);
    jobs
}

async fn write(jobs: Vec<Job>, ctx: &Context) {
    let metrics = &ctx.metrics;
    futures_util::stream::iter(jobs)
        .for_each_concurrent(PARALLEL, |job| async move {
            let Job { cluster, namespace: ns, name, api, resource_version, want } = job;
            let patch = status_patch(&resource_version, &want);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(Key, Option<Obj>);

    impl Watched for W {
        fn key(&self) -> Key {
            self.0.clone()
        }
        fn take(&mut self) -> Option<Obj> {
            self.1.take()
        }
    }

    fn w(name: &str, rv: &str) -> W {
        let obj = ServiceEntryObject::decode(
            &json!({
                "apiVersion": "networking.istio.io/v1beta1", "kind": "ServiceEntry",
                "metadata": {"name": name, "namespace": "n", "resourceVersion": rv},
                "spec": {"hosts": ["A.n.global."]},
                "status": {"addresses": [{"value": "240.10.0.1", "host": "a.n.global"}]},
            })
            .to_string(),
        );
        let o = Obj::from_object(&obj, "networking.istio.io/v1beta1");
        W(("n".into(), name.into()), Some(o))
    }

    #[tokio::test]
    async fn views_follow_the_watch_and_say_what_changed() {
        let views = Views::default();
        // Never used: nothing is patched here.
        let cfg = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let view = views.for_cluster("c", kube::Client::try_from(cfg).unwrap());
        view.apply(&mut Step::Replaced(vec![w("a", "1"), w("b", "1")]));
        {
            let v = view.inner.lock().unwrap();
            assert!(v.all && v.dirty.is_empty());
            let a = &v.objects[&("n".to_string(), "a".to_string())];
            assert_eq!(a.version, "v1beta1");
            assert_eq!(a.hosts, ["a.n.global"]);
            assert_eq!(a.status, [("240.10.0.1".into(), Some("a.n.global".into()))]);
        }
        view.inner.lock().unwrap().all = false;
        view.apply(&mut Step::Applied(w("a", "2")));
        view.apply(&mut Step::Deleted(W(("n".into(), "b".into()), None)));
        view.apply(&mut Step::<W>::Settled);
        let v = view.inner.lock().unwrap();
        assert!(!v.all);
        assert_eq!(v.dirty.len(), 2);
        assert_eq!(v.objects.len(), 1);
        assert_eq!(
            v.objects[&("n".to_string(), "a".to_string())].resource_version,
            "2"
        );
    }

    #[test]
    fn patch_is_guarded_by_resource_version() {
        let p = status_patch("42", &[("240.10.0.7".into(), "a.b.global".into())]);
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["status"]["addresses"][0]["value"], "240.10.0.7");
        assert_eq!(p["status"]["addresses"][0]["host"], "a.b.global");
    }
}
