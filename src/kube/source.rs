//! The ServiceEntry watch of one cluster: discovery of the served version, a kube-runtime watcher
//! over all namespaces, and the cluster's entries sent to the engine one namespace (unit) at a time.
//!
//! A cluster that stops answering keeps its last-known entries: nothing is withdrawn on errors. The
//! watch is then re-created with backoff; its first full list replaces the state (so events missed
//! while away converge) and clears the staleness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::clusters::Sent;
use super::crd::{self, SERVICEENTRY_VERSIONS};
use super::{source_name, writeback, Context};
use crate::metrics::{ClusterLabels, SourceLabels};
use crate::registry::SourceKey;
use crate::serviceentry::{parse_host_address, Entry};
use crate::source::SourceEvent;
use crate::zone::unix_now;

/// Server-side timeout of one watch call; the client gives up on a silent connection 5 s later.
pub const WATCH_TIMEOUT_SECS: u32 = 60;
/// Longest wait between two attempts to reach a cluster.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events this close together are sent as one change (a `kubectl apply` of many objects).
const SETTLE: Duration = Duration::from_millis(20);
/// How often a cluster without the ServiceEntry CRD is asked again.
const NO_CRD_RETRY: Duration = Duration::from_secs(10);
/// How long the ServiceEntry API of a cluster that served it must be missing before its entries
/// are withdrawn (the CRD was deleted, which deletes every ServiceEntry too).
const NO_CRD_GRACE: Duration = Duration::from_secs(60);
/// Bound on discovery requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ClusterTask {
    pub name: String,
    pub client: Client,
    pub ctx: Arc<Context>,
    pub sent: Arc<Mutex<Sent>>,
    pub view: Option<writeback::View>,
}

/// One object as the source keeps it.
struct Obj {
    entry: Option<Entry>,
}

/// The cluster's ServiceEntries by namespace, then name.
type State = BTreeMap<String, BTreeMap<String, Obj>>;

/// The newest ServiceEntry version the cluster serves; None when it serves none (no Istio CRD).
pub async fn discover(client: &Client) -> anyhow::Result<Option<String>> {
    let group = crd::serviceentry_resource("v1").group;
    let groups = tokio::time::timeout(REQUEST_TIMEOUT, client.list_api_groups()).await??;
    let Some(g) = groups.groups.iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    for v in SERVICEENTRY_VERSIONS {
        if !g.versions.iter().any(|gv| gv.version == v) {
            continue;
        }
        let resources = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.list_api_group_resources(&format!("{group}/{v}")),
        )
        .await??;
        if resources
            .resources
            .iter()
            .any(|r| r.name == "serviceentries")
        {
            return Ok(Some(v.to_string()));
        }
    }
    Ok(None)
}

impl ClusterTask {
    fn labels(&self) -> ClusterLabels {
        ClusterLabels {
            cluster: self.name.clone(),
        }
    }

    fn set_stale(&self, why: Option<String>) {
        let up = why.is_none();
        self.ctx.health.set_stale(&source_name(&self.name), why);
        self.ctx
            .metrics
            .source_up
            .get_or_create(&self.labels())
            .set(i64::from(up));
    }

    fn restarted(&self) {
        self.ctx
            .metrics
            .watch_restarts
            .get_or_create(&self.labels())
            .inc();
    }

    fn touched(&self) {
        self.ctx
            .metrics
            .source_last_sync
            .get_or_create(&self.labels())
            .set(unix_now() as i64);
    }

    /// Validates one object into an entry (None when it is skipped; problems are logged).
    fn convert(&self, obj: &DynamicObject) -> Obj {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let origin = format!("cluster {}", self.name);
        let mut se = match crd::to_model(obj) {
            Ok(se) => se,
            Err(e) => {
                warn!(cluster = %self.name, object = %format!("{ns}/{name}"), error = %e, "ServiceEntry does not fit the model; skipped");
                self.invalid();
                return Obj { entry: None };
            }
        };
        // status.addresses inside globaldns's own VIP ranges are its own write-back, not Istio's
        // allocation: the VIP comes from the store, so they are not read back as addresses.
        if let Some(status) = se.status.as_mut() {
            status.addresses.retain(|a| {
                parse_host_address(&a.value)
                    .ok()
                    .flatten()
                    .is_none_or(|ip| !self.ctx.ranges.iter().any(|r| r.contains(&ip)))
            });
        }
        let (entry, problems) = se.validate(&self.name, &origin, &self.ctx.zones);
        for p in &problems {
            if p.skipped_object {
                warn!("{p}");
            } else {
                debug!("{p}");
            }
        }
        if !problems.is_empty() {
            self.invalid();
        }
        Obj { entry }
    }

    fn invalid(&self) {
        self.ctx
            .metrics
            .invalid_objects
            .get_or_create(&SourceLabels {
                source: source_name(&self.name),
            })
            .inc();
    }

    /// Sends the content of the `dirty` namespaces. False when the cluster was taken out.
    fn flush(&self, state: &State, dirty: &mut BTreeSet<String>) -> bool {
        let mut sent = self.sent.lock().unwrap();
        if sent.closed {
            return false;
        }
        for ns in std::mem::take(dirty) {
            let key = SourceKey {
                cluster: self.name.clone(),
                unit: ns.clone(),
            };
            let entries: Vec<Entry> = state
                .get(&ns)
                .into_iter()
                .flat_map(|objs| objs.values())
                .filter_map(|o| o.entry.clone())
                .collect();
            if entries.is_empty() {
                if sent.units.remove(&ns) {
                    let _ = self.ctx.tx.send(SourceEvent::RemoveUnit(key));
                }
            } else {
                sent.units.insert(ns);
                let _ = self.ctx.tx.send(SourceEvent::Unit { key, entries });
            }
        }
        let count: usize = state.values().map(BTreeMap::len).sum();
        self.ctx
            .metrics
            .source_objects
            .get_or_create(&self.labels())
            .set(count as i64);
        true
    }

    /// Replaces the whole state (after a full list) and sends what changed.
    fn replace(&self, state: &mut State, new: State, dirty: &mut BTreeSet<String>) {
        dirty.extend(state.keys().cloned());
        dirty.extend(new.keys().cloned());
        dirty.extend(self.sent.lock().unwrap().units.iter().cloned());
        *state = new;
    }
}

fn key_of(obj: &DynamicObject) -> (String, String) {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// Runs one cluster's watch until aborted.
pub async fn run(task: ClusterTask) {
    let source = source_name(&task.name);
    let mut state: State = State::new();
    let mut synced = false;
    let mut backoff = Duration::from_millis(250);
    let mut first_attempt = true;
    // Whether the ServiceEntry API was served at the last discovery, and since when it is not.
    let mut served_before = false;
    let mut gone_since: Option<Instant> = None;
    loop {
        if !first_attempt {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        first_attempt = false;

        let version = match discover(&task.client).await {
            Ok(Some(v)) => v,
            Ok(None)
                if served_before
                    && gone_since.get_or_insert_with(Instant::now).elapsed() < NO_CRD_GRACE =>
            {
                // An apiserver that has just (re)started answers discovery before it has loaded
                // its CRDs: that is no reason to withdraw what the cluster served a moment ago.
                warn!(cluster = %task.name, "cluster no longer lists the ServiceEntry API; keeping its last-known entries");
                task.set_stale(Some("ServiceEntry API not served".into()));
                task.restarted();
                continue;
            }
            Ok(None) => {
                // No ServiceEntry CRD: the cluster has no ServiceEntries (yet).
                info!(cluster = %task.name, "cluster serves no networking.istio.io ServiceEntry; treating it as empty");
                served_before = false;
                gone_since = None;
                let mut dirty = BTreeSet::new();
                task.replace(&mut state, State::new(), &mut dirty);
                if !task.flush(&state, &mut dirty) {
                    return;
                }
                if !synced {
                    synced = true;
                    let _ = task.ctx.tx.send(SourceEvent::Synced(source.clone()));
                }
                task.set_stale(None);
                task.touched();
                tokio::time::sleep(NO_CRD_RETRY).await;
                first_attempt = true;
                continue;
            }
            Err(e) => {
                warn!(cluster = %task.name, error = %format!("{e:#}"), "cluster unreachable; keeping its last-known entries");
                task.set_stale(Some(format!("unreachable: {e:#}")));
                task.restarted();
                continue;
            }
        };
        served_before = true;
        gone_since = None;
        let ar = crd::serviceentry_resource(&version);
        if let Some(v) = &task.view {
            v.set_api(task.client.clone(), ar.clone());
        }
        debug!(cluster = %task.name, %version, "watching ServiceEntries");
        let api: Api<DynamicObject> = Api::all_with(task.client.clone(), &ar);
        let cfg = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        let mut stream = watcher(api, cfg).boxed();
        let mut listing: Option<State> = None;
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        deadline = None;
                        if !task.flush(&state, &mut dirty) {
                            return;
                        }
                        if let Some(v) = &task.view {
                            v.changed();
                        }
                        continue;
                    }
                },
                None => stream.next().await,
            };
            let Some(ev) = next else { break };
            match ev {
                Ok(watcher::Event::Init) => listing = Some(State::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    let (ns, name) = key_of(&obj);
                    let o = task.convert(&obj);
                    if let Some(v) = &task.view {
                        v.upsert(&obj);
                    }
                    if let Some(l) = listing.as_mut() {
                        l.entry(ns).or_default().insert(name, o);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let new = listing.take().unwrap_or_default();
                    if let Some(v) = &task.view {
                        v.retain(|ns, name| new.get(ns).is_some_and(|m| m.contains_key(name)));
                    }
                    task.replace(&mut state, new, &mut dirty);
                    if !task.flush(&state, &mut dirty) {
                        return;
                    }
                    deadline = None;
                    if !synced {
                        synced = true;
                        let _ = task.ctx.tx.send(SourceEvent::Synced(source.clone()));
                        info!(cluster = %task.name, %version, objects = state.values().map(BTreeMap::len).sum::<usize>(), "cluster synced");
                    } else {
                        info!(cluster = %task.name, "cluster listed again; converged");
                    }
                    if let Some(v) = &task.view {
                        v.changed();
                    }
                    task.set_stale(None);
                    task.touched();
                    backoff = Duration::from_millis(250);
                }
                Ok(watcher::Event::Apply(obj)) => {
                    let (ns, name) = key_of(&obj);
                    let o = task.convert(&obj);
                    if let Some(v) = &task.view {
                        v.upsert(&obj);
                    }
                    state.entry(ns.clone()).or_default().insert(name, o);
                    dirty.insert(ns);
                    deadline.get_or_insert_with(|| Instant::now() + SETTLE);
                    task.touched();
                }
                Ok(watcher::Event::Delete(obj)) => {
                    let (ns, name) = key_of(&obj);
                    if let Some(v) = &task.view {
                        v.delete(&ns, &name);
                    }
                    if let Some(m) = state.get_mut(&ns) {
                        m.remove(&name);
                        if m.is_empty() {
                            state.remove(&ns);
                        }
                    }
                    dirty.insert(ns);
                    deadline.get_or_insert_with(|| Instant::now() + SETTLE);
                    task.touched();
                }
                Err(e) => {
                    warn!(cluster = %task.name, error = %e, "watch failed; keeping last-known entries, reconnecting");
                    task.set_stale(Some(format!("watch failed: {e}")));
                    task.restarted();
                    break;
                }
            }
        }
        // Whatever was seen before the failure is sent (it is what the cluster said).
        if !dirty.is_empty() && !task.flush(&state, &mut dirty) {
            return;
        }
    }
}
