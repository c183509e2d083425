//! Write-back's own view of each cluster's ServiceEntries: what it needs of each object
//! ([`Obj`]), fed the steps of the cluster's watch, and which objects changed since it last looked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use tokio::sync::Notify;

use super::ownership::{self, SpecAddresses};
use crate::kube::object::ServiceEntryObject;
use crate::kube::watch::Step;
use crate::routing::{spec_writable, NotWritable};
use crate::serviceentry::{normalise_name, parse_host_address, Entry, Resolution};

/// What write-back needs to know of one ServiceEntry.
#[derive(Clone, Debug, PartialEq)]
pub struct Obj {
    /// The ServiceEntry version it was read at (the one the cluster serves).
    pub(super) version: String,
    pub(super) resource_version: String,
    /// Every listed host, normalised.
    pub(super) hosts: Vec<String>,
    /// The entry's one host inside a served zone, when it lists exactly one.
    pub(super) host: Option<String>,
    /// Who set `spec.addresses`, and what it holds.
    pub(super) spec: SpecAddresses,
    pub(super) spec_values: Vec<IpAddr>,
    /// `spec.addresses` holds something (an empty list someone declared does not count).
    pub(super) spec_set: bool,
    /// globaldns's field manager owns some field of it (there is something to withdraw).
    pub(super) ours_anywhere: bool,
    /// Whether the VIP may go into `spec.addresses`; None for an object that failed validation
    /// (nothing is written to it, nothing withdrawn).
    pub(super) writable: Option<Result<(), NotWritable>>,
    /// Istio's allocator serves the entry (status take-over applies): no one else's
    /// `spec.addresses`, not resolution NONE, not opted out by Istio's label.
    pub(super) istio_allocates: bool,
    /// `status.addresses` as (value, host).
    pub(super) status: Vec<(String, Option<String>)>,
}

impl Obj {
    /// What write-back reads of an object as read at `api_version` (`networking.istio.io/v1`),
    /// with its `managedFields` decoded; [`Obj::judged`] adds what its validated entry says.
    pub fn from_object(
        obj: &ServiceEntryObject,
        api_version: &str,
        managed: &[ManagedFieldsEntry],
    ) -> Obj {
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
        let raw_spec = spec.map(|s| &s.addresses[..]).unwrap_or_default();
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
            host: None,
            spec_values: raw_spec
                .iter()
                .filter_map(|a| parse_host_address(a).ok().flatten())
                .collect(),
            spec_set: !raw_spec.is_empty(),
            spec: SpecAddresses::of(!raw_spec.is_empty(), managed),
            ours_anywhere: ownership::ours_anywhere(managed),
            writable: None,
            istio_allocates: false,
            status,
        }
    }

    /// With what the object's validated entry says (None: the object was skipped; nothing is
    /// written to it, nothing withdrawn).
    pub fn judged(mut self, entry: Option<&Entry>) -> Obj {
        self.host = entry.and_then(|e| (e.hosts.len() == 1).then(|| e.hosts[0].clone()));
        self.writable = entry.map(spec_writable);
        // Istio's allocator serves only entries with no spec.addresses at all (ours included:
        // once the VIP is in spec, status is not read).
        self.istio_allocates = entry
            .is_some_and(|e| !self.spec_set && e.autoallocate && e.resolution != Resolution::None);
        self
    }
}

pub type ObjectName = (String, String);

#[derive(Default)]
pub(super) struct ViewInner {
    pub(super) client: Option<kube::Client>,
    pub(super) objects: BTreeMap<ObjectName, Obj>,
    /// Objects changed since write-back last looked; `all`: every one (a new list).
    pub(super) dirty: BTreeSet<ObjectName>,
    pub(super) all: bool,
}

/// An object of a cluster's watch, as far as write-back is concerned.
pub trait Watched {
    /// (namespace, name).
    fn key(&self) -> ObjectName;
    /// What write-back needs of it (None: nothing, as for a deleted object).
    fn take(&mut self) -> Option<Obj>;
}

/// One cluster's ServiceEntries as write-back sees them, fed the steps of the cluster's watch.
#[derive(Clone)]
pub struct View {
    pub(super) inner: Arc<Mutex<ViewInner>>,
    pub(super) changed: Arc<Notify>,
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
    pub(super) clusters: Arc<Mutex<BTreeMap<String, View>>>,
    pub(super) changed: Arc<Notify>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct W(ObjectName, Option<Obj>);

    impl Watched for W {
        fn key(&self) -> ObjectName {
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
        let o = Obj::from_object(&obj, "networking.istio.io/v1beta1", &[]).judged(None);
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
}
