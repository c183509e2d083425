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

use super::context::{source_name, KubeContext};
use super::source::{self, Sent};
use super::watch::{self, Plain, Reporter, Step, Watch};
use super::writeback;
use crate::source::metrics::ClusterLabels;
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
            let kc = remote_kubeconfig(text).context("kubeconfig in remote secret")?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .context("kubeconfig in remote secret")?
        }
    };
    Ok(Client::try_from(config)?)
}

/// A remote secret's kubeconfig, refused when it would make this server run a command or read
/// its own files (`exec`, `auth-provider`, token, certificate and key paths): whoever can write
/// a labelled Secret could otherwise run code here, or have our service-account token sent to
/// a server of their choosing. Istio refuses the same by default. Inline credentials only.
pub fn remote_kubeconfig(text: &str) -> Result<Kubeconfig> {
    let kc = Kubeconfig::from_yaml(text)?;
    for user in &kc.auth_infos {
        let Some(a) = &user.auth_info else { continue };
        let refused = [
            ("exec", a.exec.is_some()),
            ("auth-provider", a.auth_provider.is_some()),
            ("tokenFile", a.token_file.is_some()),
            ("client-certificate", a.client_certificate.is_some()),
            ("client-key", a.client_key.is_some()),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "user {:?}: {field} is not allowed in a remote secret",
                user.name
            );
        }
    }
    for c in &kc.clusters {
        if c.cluster
            .as_ref()
            .is_some_and(|c| c.certificate_authority.is_some())
        {
            anyhow::bail!(
                "cluster {:?}: certificate-authority (a path) is not allowed in a remote secret",
                c.name
            );
        }
    }
    Ok(kc)
}

struct Running {
    handle: JoinHandle<()>,
    sent: Arc<Mutex<Sent>>,
    /// Hash of the remote secret's kubeconfig, for clusters that come from one.
    fingerprint: Option<u64>,
}

/// The set of watched clusters.
pub struct Manager {
    ctx: Arc<KubeContext>,
    rt: tokio::runtime::Handle,
    views: Option<writeback::Views>,
    running: Mutex<BTreeMap<String, Running>>,
}

impl Manager {
    pub fn new(
        ctx: Arc<KubeContext>,
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
        let m = &self.ctx.metrics.source;
        m.up.remove(&labels);
        m.objects.remove(&labels);
        m.last_sync.remove(&labels);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str, cluster: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n\
             clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\
             users:\n- name: u\n  user:\n{user}"
        )
    }

    #[tokio::test]
    async fn remote_secrets_may_not_run_commands_or_read_our_files() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let exec = format!(
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: touch\n      args: [{:?}]\n",
            marker.display().to_string()
        );
        let refused = [
            (exec.as_str(), ""),
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "",
            ),
            (
                "    client-certificate: /etc/tls/cert.pem\n    client-key: /etc/tls/key.pem\n",
                "",
            ),
            ("    auth-provider: {name: oidc, config: {}}\n", ""),
            (
                "    token: abc\n",
                "    certificate-authority: /etc/ssl/ca.pem\n",
            ),
        ];
        for (user, cluster) in refused {
            let text = kubeconfig(user, cluster);
            let err = client_for(&ConfigSource::Inline(text.clone()))
                .await
                .err()
                .unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(
                format!("{err:#}").contains("not allowed in a remote secret"),
                "{err:#}"
            );
        }
        assert!(!marker.exists(), "the exec plugin ran");
        // Inline credentials are what Istio's remote secrets carry.
        let inline = kubeconfig("    token: abc\n", "    insecure-skip-tls-verify: true\n");
        client_for(&ConfigSource::Inline(inline)).await.unwrap();
    }
}
