//! Which clusters are watched: built from the in-cluster config, kubeconfig files, and Istio remote
//! secrets (added, replaced and removed while running). One watch task per cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::context::{source_name, Context};
use super::source::{self, Sent};
use super::watch::{self, Plain, Reporter, Step, Watch};
use super::writeback;
use crate::metrics::ClusterLabels;
use crate::source::SourceEvent;

/// Health name of the remote-secrets watch.
pub const SECRETS_SOURCE: &str = "remote-secrets";
/// Istio's label on remote secrets.
pub const REMOTE_SECRET_LABEL: &str = "istio/multiCluster=true";

pub enum ConfigSource {
    InCluster,
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    /// The kubeconfig text of a remote secret's data key.
    Inline(String),
}

/// A client for one cluster. Requests other than watches are bounded by the callers.
pub async fn client_for(src: &ConfigSource) -> Result<Client> {
    let config = match src {
        ConfigSource::InCluster => Config::incluster().context("in-cluster config")?,
        ConfigSource::Kubeconfig { path, context } => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let opts = KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        ConfigSource::Inline(text) => {
            let kc = Kubeconfig::from_yaml(text).context("kubeconfig in remote secret")?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .context("kubeconfig in remote secret")?
        }
    };
    Ok(Client::try_from(config)?)
}

struct Running {
    handle: JoinHandle<()>,
    sent: Arc<Mutex<Sent>>,
    /// Hash of the remote secret's kubeconfig, for clusters that come from one.
    fingerprint: Option<u64>,
}

/// The set of watched clusters.
pub struct Manager {
    ctx: Arc<Context>,
    rt: tokio::runtime::Handle,
    views: Option<writeback::Views>,
    running: Mutex<BTreeMap<String, Running>>,
}

impl Manager {
    pub fn new(
        ctx: Arc<Context>,
        rt: tokio::runtime::Handle,
        views: Option<writeback::Views>,
    ) -> Manager {
        Manager {
            ctx,
            rt,
            views,
            running: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts watching `name`, or replaces its watch (keeping what was sent until the new watch
    /// lists). `gated`: readiness waits for its first full list (clusters known at start).
    pub fn add(&self, name: &str, client: Client, gated: bool, fingerprint: Option<u64>) {
        let mut running = self.running.lock().unwrap();
        let sent = match running.remove(name) {
            Some(old) => {
                old.handle.abort();
                info!(cluster = %name, "cluster configuration changed; restarting its watch");
                old.sent
            }
            None => {
                let source = source_name(name);
                if gated {
                    self.ctx.health.expect(&source);
                } else {
                    self.ctx
                        .health
                        .set_stale(&source, Some("connecting: first list not done".into()));
                }
                info!(cluster = %name, "watching cluster");
                Arc::new(Mutex::new(Sent::default()))
            }
        };
        let view = self
            .views
            .as_ref()
            .map(|v| v.for_cluster(name, client.clone()));
        let handle = self.rt.spawn(source::run(source::ClusterTask {
            name: name.to_string(),
            client,
            ctx: self.ctx.clone(),
            sent: sent.clone(),
            view,
        }));
        running.insert(
            name.to_string(),
            Running {
                handle,
                sent,
                fingerprint,
            },
        );
    }

    /// Stops watching `name` and withdraws everything it contributed.
    pub fn remove(&self, name: &str) {
        let Some(old) = self.running.lock().unwrap().remove(name) else {
            return;
        };
        old.handle.abort();
        {
            let mut sent = old.sent.lock().unwrap();
            sent.closed = true;
            sent.units.clear();
            let _ = self
                .ctx
                .tx
                .send(SourceEvent::RemoveCluster(name.to_string()));
        }
        let source = source_name(name);
        self.ctx.health.forget(&source);
        let labels = ClusterLabels {
            cluster: name.to_string(),
        };
        let m = &self.ctx.metrics;
        m.source_up.remove(&labels);
        m.source_objects.remove(&labels);
        m.source_last_sync.remove(&labels);
        if let Some(v) = &self.views {
            v.remove(name);
        }
        info!(cluster = %name, "cluster taken out; its entries are withdrawn");
    }

    fn fingerprint(&self, name: &str) -> Option<Option<u64>> {
        self.running
            .lock()
            .unwrap()
            .get(name)
            .map(|r| r.fingerprint)
    }
}

fn hash(text: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(text.as_bytes());
    h.finish()
}

/// Clusters named by the remote secrets: cluster → kubeconfig. A name configured by flag, or
/// named by two secrets, is taken once (flags first, then secrets in name order).
fn desired(
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    fixed: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (secret, clusters) in secrets {
        for (cluster, kubeconfig) in clusters {
            if fixed.contains(cluster) {
                warn!(%secret, %cluster, "remote secret names a cluster configured by flag; ignored");
                continue;
            }
            if out.contains_key(cluster) {
                warn!(%secret, %cluster, "cluster named by two remote secrets; the first one wins");
                continue;
            }
            out.insert(cluster.clone(), kubeconfig.clone());
        }
    }
    out
}

fn secret_clusters(s: &Secret) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in s.data.iter().flatten() {
        match String::from_utf8(value.0.clone()) {
            Ok(text) => {
                out.insert(key.clone(), text);
            }
            Err(_) => warn!(
                secret = s.metadata.name.as_deref().unwrap_or_default(),
                key, "remote secret value is not UTF-8 text; skipped"
            ),
        }
    }
    out
}

/// Brings the running secret clusters in line with the secrets.
async fn reconcile(
    manager: &Manager,
    want: &BTreeMap<String, String>,
    have: &mut BTreeSet<String>,
    gated: bool,
) {
    for gone in have
        .difference(&want.keys().cloned().collect())
        .cloned()
        .collect::<Vec<_>>()
    {
        info!(cluster = %gone, "remote secret removed");
        manager.remove(&gone);
        have.remove(&gone);
    }
    for (name, kubeconfig) in want {
        let fp = hash(kubeconfig);
        if manager.fingerprint(name) == Some(Some(fp)) {
            continue;
        }
        match client_for(&ConfigSource::Inline(kubeconfig.clone())).await {
            Ok(client) => {
                manager.add(name, client, gated, Some(fp));
                have.insert(name.clone());
            }
            Err(e) => {
                error!(cluster = %name, error = %format!("{e:#}"), "remote secret has an unusable kubeconfig; cluster not watched");
                manager.ctx.health.set_stale(
                    &source_name(name),
                    Some(format!("unusable kubeconfig: {e:#}")),
                );
            }
        }
    }
}

/// Watches the remote secrets of one namespace and keeps the cluster set in line with them.
pub async fn run_remote_secrets(
    client: Client,
    namespace: String,
    manager: Arc<Manager>,
    fixed: BTreeSet<String>,
) {
    let plain = Plain {
        api: Api::<Secret>::namespaced(client, &namespace),
        config: watcher::Config::default()
            .labels(REMOTE_SECRET_LABEL)
            .timeout(watch::WATCH_TIMEOUT_SECS),
    };
    let report = Reporter::new(SECRETS_SOURCE, manager.ctx.health.clone());
    let mut watch = Watch::new(plain, report);
    let mut secrets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut have: BTreeSet<String> = BTreeSet::new();
    let mut synced = false;
    let name = |s: &Secret| s.metadata.name.clone().unwrap_or_default();
    while let Some(step) = watch.next().await {
        let gated = match step {
            Step::Replaced(list) => {
                secrets = list.iter().map(|s| (name(s), secret_clusters(s))).collect();
                !synced
            }
            Step::Applied(s) => {
                secrets.insert(name(&s), secret_clusters(&s));
                false
            }
            Step::Deleted(s) => {
                secrets.remove(&name(&s));
                false
            }
            Step::Settled => continue,
        };
        reconcile(&manager, &desired(&secrets, &fixed), &mut have, gated).await;
        if gated {
            synced = true;
            let _ = manager
                .ctx
                .tx
                .send(SourceEvent::Synced(SECRETS_SOURCE.into()));
        }
    }
}
