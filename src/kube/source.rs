//! The ServiceEntry watch of one cluster: discovery of the served version, a kube-runtime watcher
//! over all namespaces (through [`super::watch`]), and the cluster's entries sent to the engine one
//! object (unit) at a time ([`ClusterState`]).
//!
//! A cluster that stops answering keeps its last-known entries: nothing is withdrawn on errors. The
//! watch is then started again with backoff; its first full list replaces the state (so events
//! missed while away converge) and clears the staleness.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::context::{source_name, KubeContext};
use super::crd::{self, SERVICEENTRY_VERSIONS};
use super::listing::Lists;
use super::object::ServiceEntryObject;
use super::state::{ClusterState, Converter, Seen};
use super::watch::{self, Events, Failure, Probe, Reporter, Retry, Start, Step, Watch};
use super::writeback;
use crate::source::metrics::SourceLabels;
use crate::source::SourceEvent;

/// How often a cluster without the ServiceEntry CRD is asked again.
const NO_CRD_RETRY: Duration = Duration::from_secs(10);
/// How long the ServiceEntry API of a cluster that served it must be missing before its entries
/// are withdrawn (the CRD was deleted, which deletes every ServiceEntry too).
const NO_CRD_GRACE: Duration = Duration::from_secs(60);
/// Bound on discovery requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one cluster's watch has sent to the engine, shared across the tasks that successively
/// watch it (a remote secret replaced while running), so that a new task can withdraw what the
/// old one sent and the new one no longer sees.
#[derive(Default)]
pub struct Sent {
    /// Units (objects, `namespace/name`) the engine holds for this cluster.
    pub units: BTreeSet<String>,
    /// Set when the cluster is taken out: nothing may be sent after its RemoveCluster.
    pub closed: bool,
}

pub struct ClusterTask {
    pub name: String,
    pub client: Client,
    pub ctx: Arc<KubeContext>,
    pub sent: Arc<Mutex<Sent>>,
    pub view: Option<writeback::View>,
}

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

/// How often a cluster's apiserver is asked for `/version`, and how long it has to answer.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_WITHIN: Duration = Duration::from_secs(3);

/// An apiserver that stops answering without closing its connections (a stopped process, a
/// network that drops packets) leaves a watch silent, not failed: asked for `/version` every
/// `every`, one that does not answer within `within` fails the watch. Errors are not failures
/// here: the watch itself fails on a refused or reset connection.
fn version_probe(client: Client, every: Duration, within: Duration) -> Probe {
    stream::unfold(client, move |client| async move {
        loop {
            tokio::time::sleep(every).await;
            if tokio::time::timeout(within, client.apiserver_version())
                .await
                .is_err()
            {
                let why = format!("not answering: no reply to GET /version within {within:?}");
                return Some((Failure(why), client));
            }
        }
    })
    .boxed()
}

/// One attempt at a cluster: discovery, then the watcher at the version found, its objects
/// converted as they arrive.
struct Discovery {
    client: Client,
    convert: Converter,
    /// The version of the current attempt (None: the cluster serves no ServiceEntry).
    version: Arc<Mutex<Option<String>>>,
    /// Whether the ServiceEntry API was served at the last discovery, and since when it is not.
    served_before: bool,
    gone_since: Option<Instant>,
    /// The cache list or pages, attempt after attempt (`--kube-list`).
    lists: Lists,
}

impl Start<Seen> for Discovery {
    fn start(&mut self) -> BoxFuture<'_, Result<Events<Seen>, Failure>> {
        Box::pin(self.attempt())
    }
}

impl Discovery {
    async fn attempt(&mut self) -> Result<Events<Seen>, Failure> {
        let cluster = self.convert.cluster.clone();
        let version = match discover(&self.client).await {
            Ok(Some(v)) => v,
            Ok(None)
                if self.served_before
                    && self.gone_since.get_or_insert_with(Instant::now).elapsed()
                        < NO_CRD_GRACE =>
            {
                // An apiserver that has just (re)started answers discovery before it has loaded
                // its CRDs: that is no reason to withdraw what the cluster served a moment ago.
                warn!(%cluster, "cluster no longer lists the ServiceEntry API; keeping its last-known entries");
                return Err(Failure("ServiceEntry API not served".into()));
            }
            Ok(None) => {
                // No ServiceEntry CRD: the cluster has no ServiceEntries (yet). An empty list,
                // then a new attempt after a while.
                info!(%cluster, "cluster serves no networking.istio.io ServiceEntry; treating it as empty");
                self.served_before = false;
                self.gone_since = None;
                *self.version.lock().unwrap() = None;
                let wait =
                    stream::once(tokio::time::sleep(NO_CRD_RETRY)).filter_map(|()| async { None });
                return Ok(stream::iter([Ok(watcher::Event::InitDone)])
                    .chain(wait)
                    .boxed());
            }
            Err(e) => return Err(Failure(format!("unreachable: {e:#}"))),
        };
        self.served_before = true;
        self.gone_since = None;
        let ar = crd::serviceentry_resource(&version);
        debug!(%cluster, %version, "watching ServiceEntries");
        *self.version.lock().unwrap() = Some(version);
        let convert = Converter {
            api_version: ar.api_version.clone(),
            ..self.convert.clone()
        };
        let api: Api<ServiceEntryObject> = Api::all_with(self.client.clone(), &ar);
        let (cfg, mut listing) = self.lists.next(&cluster, watch::WATCH_TIMEOUT_SECS);
        Ok(watcher(api, cfg)
            .map(move |r| {
                listing.see(&r);
                r.map(|ev| convert.event(ev)).map_err(Failure::from)
            })
            .boxed())
    }
}

impl ClusterTask {
    /// Sends what changed. False when the cluster was taken out.
    fn flush(&self, state: &mut ClusterState, report: &Reporter) -> bool {
        let mut sent = self.sent.lock().unwrap();
        if sent.closed {
            return false;
        }
        for ev in state.flush(&mut sent.units) {
            // The engine is gone: the process is stopping.
            if !self.ctx.tx.send(ev) {
                return false;
            }
        }
        report.objects(state.objects());
        true
    }
}

/// Runs one cluster's watch until aborted.
pub async fn run(task: ClusterTask) {
    let source = source_name(&task.name);
    let version = Arc::new(Mutex::new(None));
    let discovery = Discovery {
        client: task.client.clone(),
        convert: Converter {
            cluster: task.name.clone(),
            zones: task.ctx.zones.clone(),
            ranges: task.ctx.ranges.clone(),
            api_version: String::new(),
            writeback: task.view.is_some(),
        },
        version: version.clone(),
        served_before: false,
        gone_since: None,
        lists: Lists::new(task.ctx.list, task.ctx.metrics.clone()),
    };
    let ctx = &task.ctx;
    let report = Reporter::cluster(&source, ctx.health.clone(), ctx.metrics.clone(), &task.name);
    // A frozen apiserver leaves the watch open and silent: the probe notices it.
    let probe = version_probe(task.client.clone(), PROBE_EVERY, PROBE_WITHIN);
    let mut watch = Watch::build(discovery, report, Retry::default(), Some(probe));
    let invalid = ctx
        .metrics
        .source
        .invalid_objects
        .get_or_create(&SourceLabels {
            source: source.clone(),
        })
        .clone();
    let mut state = ClusterState::new(&task.name);
    let mut synced = false;
    while let Some(mut step) = watch.next().await {
        // The one hook of write-back: its view takes what it needs of the step.
        if let Some(v) = &task.view {
            v.apply(&mut step);
        }
        let listed = matches!(step, Step::Replaced(_));
        let act = listed || matches!(step, Step::Settled);
        state.apply(step);
        invalid.inc_by(state.take_invalid());
        if !act {
            continue;
        }
        if !task.flush(&mut state, &watch.report) {
            return;
        }
        if listed && !synced {
            synced = true;
            if !ctx.tx.send(SourceEvent::Synced(source.clone())) {
                return;
            }
            if let Some(version) = version.lock().unwrap().as_deref() {
                info!(cluster = %task.name, %version, objects = state.objects(), "cluster synced");
            }
        }
    }
}
