//! A cluster's ServiceEntry state as a pure function of its watch: objects are converted as they
//! arrive ([`Converter`]), then [`ClusterState`] is fed the watch's [`Step`]s and says which
//! [`SourceEvent`]s bring the engine in line, one object (unit) at a time.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use tracing::{debug, warn};

use super::crd;
use super::watch::Step;
use super::writeback;
use crate::registry::SourceKey;
use crate::serviceentry::{parse_host_address, Entry};
use crate::source::SourceEvent;

/// One ServiceEntry as the cluster's watch keeps it (the object itself is not kept).
#[derive(Debug)]
pub struct Seen {
    pub namespace: String,
    pub name: String,
    /// The validated entry; None when skipped (and for a deleted object).
    pub entry: Option<Entry>,
    /// Whether validation found a problem (the object was skipped, or part of it).
    pub invalid: bool,
    /// What write-back needs of it, when write-back is on (taken by its view).
    pub writeback: Option<writeback::Obj>,
}

impl writeback::Watched for Seen {
    fn key(&self) -> writeback::ObjectName {
        (self.namespace.clone(), self.name.clone())
    }
    fn take(&mut self) -> Option<writeback::Obj> {
        self.writeback.take()
    }
}

/// Converts the objects of one cluster, read at one ServiceEntry version.
#[derive(Clone)]
pub struct Converter {
    pub cluster: String,
    /// Served zones, normalised.
    pub zones: Vec<String>,
    /// globaldns's VIP ranges.
    pub ranges: Vec<IpNet>,
    /// The apiVersion the objects are read at (`networking.istio.io/v1`), for write-back.
    pub api_version: String,
    pub writeback: bool,
}

fn key_of(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

impl Converter {
    /// Converts the objects of a watcher event (a deleted object only needs its name).
    pub fn event(&self, ev: watcher::Event<DynamicObject>) -> watcher::Event<Seen> {
        use watcher::Event as E;
        match ev {
            E::Init => E::Init,
            E::InitDone => E::InitDone,
            E::InitApply(o) => E::InitApply(self.seen(&o)),
            E::Apply(o) => E::Apply(self.seen(&o)),
            E::Delete(o) => {
                let (namespace, name) = key_of(&o);
                E::Delete(Seen {
                    namespace,
                    name,
                    entry: None,
                    invalid: false,
                    writeback: None,
                })
            }
        }
    }

    /// Validates one object into an entry (problems are logged).
    pub fn seen(&self, obj: &DynamicObject) -> Seen {
        let (namespace, name) = key_of(obj);
        let (entry, invalid) = self.validate(obj, &namespace, &name);
        let writeback = self
            .writeback
            .then(|| writeback::Obj::from_object(obj, &self.api_version, entry.as_ref()));
        Seen {
            namespace,
            name,
            entry,
            invalid,
            writeback,
        }
    }

    fn validate(&self, obj: &DynamicObject, ns: &str, name: &str) -> (Option<Entry>, bool) {
        let mut se = match crd::to_model(obj) {
            Ok(se) => se,
            Err(e) => {
                warn!(cluster = %self.cluster, object = %format!("{ns}/{name}"), error = %e, "ServiceEntry does not fit the model; skipped");
                return (None, true);
            }
        };
        // spec.addresses owned by globaldns alone are its own write-back, a copy of the VIP kept
        // in the store: not a user's address (nothing is reserved, nothing moves). Istio ignores
        // status.addresses once spec.addresses is set, and so does the answer.
        let managed = obj.metadata.managed_fields.as_deref().unwrap_or_default();
        let owners = writeback::SpecAddresses::of(!se.spec.addresses.is_empty(), managed);
        if owners == writeback::SpecAddresses::Ours {
            se.spec.addresses.clear();
            se.status = None;
        }
        // status.addresses inside globaldns's own VIP ranges are its own write-back, not Istio's
        // allocation: the VIP comes from the store, so they are not read back as addresses.
        if let Some(status) = se.status.as_mut() {
            status.addresses.retain(|a| {
                parse_host_address(&a.value)
                    .ok()
                    .flatten()
                    .is_none_or(|ip| !self.ranges.iter().any(|r| r.contains(&ip)))
            });
        }
        let origin = format!("cluster {}", self.cluster);
        let (mut entry, problems) = se.validate(&self.cluster, &origin, &self.zones);
        if let Some(e) = entry.as_mut() {
            e.routing.foreign_addresses = matches!(owners, writeback::SpecAddresses::Theirs(_));
        }
        for p in &problems {
            if p.skipped_object {
                warn!("{p}");
            } else {
                debug!("{p}");
            }
        }
        (entry, !problems.is_empty())
    }
}

/// The unit of one object: `namespace/name` (neither may contain a slash). One object per
/// unit, so that a change to one ServiceEntry costs what that entry lists, however many
/// entries share its namespace (a mesh often keeps them all in one).
fn unit_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The cluster's entries by unit, and what changed since the last flush.
#[derive(Debug)]
pub struct ClusterState {
    cluster: String,
    /// By [`unit_of`]; None for an object that was skipped.
    objects: BTreeMap<String, Option<Entry>>,
    dirty: BTreeSet<String>,
    /// A full list came since the last flush: units sent before and not listed now go.
    replaced: bool,
    invalid: u64,
}

impl ClusterState {
    pub fn new(cluster: &str) -> ClusterState {
        ClusterState {
            cluster: cluster.to_string(),
            objects: BTreeMap::new(),
            dirty: BTreeSet::new(),
            replaced: false,
            invalid: 0,
        }
    }

    pub fn apply(&mut self, step: Step<Seen>) {
        match step {
            Step::Replaced(list) => {
                let mut new = BTreeMap::new();
                for s in list {
                    self.invalid += u64::from(s.invalid);
                    new.insert(unit_of(&s.namespace, &s.name), s.entry);
                }
                // Every unit is looked at again; the engine drops those that did not change.
                self.dirty.extend(self.objects.keys().cloned());
                self.dirty.extend(new.keys().cloned());
                self.objects = new;
                self.replaced = true;
            }
            Step::Applied(s) => {
                self.invalid += u64::from(s.invalid);
                let unit = unit_of(&s.namespace, &s.name);
                self.dirty.insert(unit.clone());
                self.objects.insert(unit, s.entry);
            }
            Step::Deleted(s) => {
                let unit = unit_of(&s.namespace, &s.name);
                self.objects.remove(&unit);
                self.dirty.insert(unit);
            }
            Step::Settled => {}
        }
    }

    /// The events for what changed since the last flush. `sent`: the units the engine holds for
    /// this cluster (kept across successive watches of it), brought up to date.
    pub fn flush(&mut self, sent: &mut BTreeSet<String>) -> Vec<SourceEvent> {
        if std::mem::take(&mut self.replaced) {
            self.dirty.extend(sent.iter().cloned());
        }
        let mut out = Vec::new();
        for unit in std::mem::take(&mut self.dirty) {
            let entry = self.objects.get(&unit).cloned().flatten();
            let key = SourceKey {
                cluster: self.cluster.clone(),
                unit: unit.clone(),
            };
            match entry {
                Some(e) => {
                    sent.insert(unit);
                    out.push(SourceEvent::Unit {
                        key,
                        entries: vec![e],
                    });
                }
                None => {
                    if sent.remove(&unit) {
                        out.push(SourceEvent::RemoveUnit(key));
                    }
                }
            }
        }
        out
    }

    /// Objects held (invalid ones included).
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Objects found invalid since the last call.
    pub fn take_invalid(&mut self) -> u64 {
        std::mem::take(&mut self.invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::watch::Buffer;
    use futures_util::future;
    use futures_util::stream::{self, StreamExt};
    use watcher::Event;

    fn obj(ns: &str, name: &str, hosts: &[&str]) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
            "spec": {"hosts": hosts, "resolution": "STATIC",
                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]},
        }))
        .unwrap()
    }

    fn converter() -> Converter {
        Converter {
            cluster: "c1".into(),
            zones: vec!["global".into()],
            ranges: vec!["240.10.0.0/16".parse().unwrap()],
            api_version: "networking.istio.io/v1".into(),
            writeback: false,
        }
    }

    /// Feeds watcher events through the watch's buffer into the state, flushing after each step;
    /// returns the engine events (as text) of every flush that sent something.
    async fn run(
        events: Vec<Event<DynamicObject>>,
    ) -> (Vec<String>, ClusterState, BTreeSet<String>) {
        let conv = converter();
        let steps: Vec<Step<Seen>> = stream::iter(events)
            .map(|e| conv.event(e))
            .scan(Buffer::default(), |b, ev| future::ready(Some(b.push(ev))))
            .filter_map(future::ready)
            .collect()
            .await;
        let mut state = ClusterState::new("c1");
        let mut sent = BTreeSet::new();
        let mut out = Vec::new();
        for step in steps {
            state.apply(step);
            for ev in state.flush(&mut sent) {
                out.push(match ev {
                    SourceEvent::Unit { key, entries } => {
                        let mut hosts: Vec<String> =
                            entries.iter().flat_map(|e| e.hosts.clone()).collect();
                        hosts.sort();
                        format!("unit {}/{} {}", key.cluster, key.unit, hosts.join(","))
                    }
                    SourceEvent::RemoveUnit(key) => format!("remove {}/{}", key.cluster, key.unit),
                    other => format!("{other:?}"),
                });
            }
        }
        (out, state, sent)
    }

    #[tokio::test]
    async fn list_apply_delete_and_relist() {
        let (out, state, sent) = run(vec![
            Event::Init,
            Event::InitApply(obj("a", "x", &["x.a.global"])),
            Event::InitApply(obj("b", "y", &["y.b.global"])),
            Event::InitDone,
            Event::Apply(obj("a", "z", &["z.a.global"])),
            Event::Delete(obj("b", "y", &["y.b.global"])),
            // A re-list that no longer has a/z, and has a new namespace.
            Event::Init,
            Event::InitApply(obj("a", "x", &["x.a.global"])),
            Event::InitApply(obj("c", "w", &["w.c.global"])),
            Event::InitDone,
        ])
        .await;
        assert_eq!(
            out,
            [
                "unit c1/a/x x.a.global",
                "unit c1/b/y y.b.global",
                // One object per unit: a new entry beside a/x sends only itself.
                "unit c1/a/z z.a.global",
                "remove c1/b/y",
                "unit c1/a/x x.a.global",
                "remove c1/a/z",
                "unit c1/c/w w.c.global",
            ]
        );
        assert_eq!(state.objects(), 2);
        assert_eq!(sent, BTreeSet::from(["a/x".to_string(), "c/w".to_string()]));
    }

    #[tokio::test]
    async fn relist_withdraws_units_sent_by_an_earlier_watch() {
        // Units the engine holds from an earlier watch of the cluster, absent from the new list.
        let conv = converter();
        let mut state = ClusterState::new("c1");
        let mut sent = BTreeSet::from(["old".to_string()]);
        state.apply(Step::Replaced(vec![conv.seen(&obj(
            "a",
            "x",
            &["x.a.global"],
        ))]));
        let evs: Vec<String> = state
            .flush(&mut sent)
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert!(
            evs[1].starts_with("RemoveUnit") && evs[1].contains("\"old\""),
            "{evs:?}"
        );
        assert_eq!(sent, BTreeSet::from(["a/x".to_string()]));
    }

    #[tokio::test]
    async fn invalid_objects_are_skipped_and_counted() {
        let mut bad = obj("a", "bad", &["bad.a.global"]);
        bad.data["spec"]["hosts"] = serde_json::json!("not a list");
        let mut bogus = obj("b", "y", &["y.b.global"]);
        bogus.data["spec"]["resolution"] = serde_json::json!("BOGUS");
        let (out, mut state, _) = run(vec![
            Event::InitApply(obj("a", "x", &["x.a.global"])),
            Event::InitApply(bad),
            Event::InitDone,
            Event::Apply(bogus),
        ])
        .await;
        assert_eq!(out, ["unit c1/a/x x.a.global"]);
        assert_eq!(state.take_invalid(), 2);
        assert_eq!(state.take_invalid(), 0);
        // Counted as objects all the same (they exist in the cluster).
        assert_eq!(state.objects(), 3);
    }
}
