//! Kubernetes: ServiceEntry sources (one watch per cluster; clusters from the in-cluster config,
//! kubeconfig files and Istio remote secrets), the shared allocation store (`--store kube`, one
//! VipClaim object per VIP) and the opt-in write-back of `status.addresses`.
//!
//! Everything here runs on a small tokio runtime of its own, apart from the DNS workers, and talks
//! to the engine only through source events and the [`Health`] it shares.

mod claims;
pub mod clusters;
mod context;
pub mod crd;
pub mod lease;
pub mod listing;
pub mod object;
pub mod source;
pub mod state;
pub mod store;
pub mod watch;
pub mod writeback;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use tracing::info;

use crate::alloc::store::Store;

pub use context::{source_name, KubeContext};

/// Flags of the Kubernetes part (flattened into `serve`'s). With none of them set, globaldns runs
/// exactly as the file-based server.
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Watch the ServiceEntries of the cluster globaldns runs in (in-cluster service account).
    #[arg(long, env = "GLOBALDNS_IN_CLUSTER")]
    pub in_cluster: bool,
    /// A cluster to watch, from a kubeconfig file: NAME=PATH[#CONTEXT] (repeatable).
    #[arg(
        long = "cluster",
        env = "GLOBALDNS_CLUSTERS",
        value_delimiter = ',',
        value_parser = parse_cluster_flag
    )]
    pub clusters: Vec<ClusterFlag>,
    /// Also watch the clusters of Istio remote secrets (Secrets labelled istio/multiCluster=true;
    /// every data key a cluster name, its value a kubeconfig), added and removed while running.
    #[arg(long, env = "GLOBALDNS_REMOTE_SECRETS")]
    pub remote_secrets: bool,
    /// Namespace of the remote secrets.
    #[arg(
        long,
        env = "GLOBALDNS_REMOTE_SECRETS_NAMESPACE",
        default_value = "istio-system"
    )]
    pub remote_secrets_namespace: String,
    /// Cluster whose remote secrets are read (default: the in-cluster one, else the first --cluster).
    #[arg(long, env = "GLOBALDNS_REMOTE_SECRETS_CLUSTER")]
    pub remote_secrets_cluster: Option<String>,
    /// Where the VIP allocation table lives: `file` (--state-dir) or `kube` (VipClaim objects in
    /// the store cluster, shared by every instance pointing at it).
    #[arg(long = "store", env = "GLOBALDNS_STORE", default_value = "file")]
    pub store: StoreKind,
    /// Cluster holding the kube store (default: the in-cluster one, else the first --cluster).
    #[arg(long, env = "GLOBALDNS_STORE_CLUSTER")]
    pub store_cluster: Option<String>,
    /// Namespace of the VipClaim objects.
    #[arg(long, env = "GLOBALDNS_STORE_NAMESPACE", default_value = "globaldns")]
    pub store_namespace: String,
    /// How long an instance that does not hold the claimer lease lets a host that needs a new
    /// VIP wait for the holder's claim (adopted through the watch, no request) before claiming
    /// it itself. One claimer per store instead of every instance racing the same create; 0
    /// turns this off (every instance claims at once, no Lease is used).
    #[arg(long, env = "GLOBALDNS_CLAIM_DEFER", default_value = "2s", value_parser = humantime::parse_duration)]
    pub claim_defer: std::time::Duration,
    /// Duration of the claimer lease (a `coordination.k8s.io/v1` Lease named globaldns-claimer in
    /// --store-namespace): renewed every third of it; another instance takes over after it
    /// went unrenewed that long (the holder gives it up when it stops).
    #[arg(long, env = "GLOBALDNS_CLAIM_LEASE", default_value = "15s", value_parser = parse_lease)]
    pub claim_lease: std::time::Duration,
    /// Write-back, a list: `spec` writes each eligible single-host entry's VIP into
    /// spec.addresses by server-side apply (field manager `globaldns`; every proxy reads it);
    /// `status` replaces Istio's own allocation in status.addresses (addresses inside
    /// --istio-vip-range) with the mesh-wide VIP (read only by DNS-capturing proxies, with
    /// Istio's allocator on); `off` writes nothing.
    #[arg(
        long,
        env = "GLOBALDNS_WRITE_BACK",
        default_value = "off",
        value_delimiter = ',',
        value_parser = parse_write_back
    )]
    pub write_back: Vec<WriteBack>,
    /// Istio's allocator's prefixes (`PILOT_IP_AUTOALLOCATE_IPV4_PREFIX` / `_IPV6_PREFIX`):
    /// the status addresses `--write-back status` may take over; repeatable.
    #[arg(
        long = "istio-vip-range",
        env = "GLOBALDNS_ISTIO_VIP_RANGE",
        value_delimiter = ',',
        default_values = ["240.240.0.0/16", "2001:2::/48"]
    )]
    pub istio_vip_ranges: Vec<ipnet::IpNet>,
    /// Where each cluster's ServiceEntry list (the first, and every re-list after a watch
    /// expired or failed) comes from: `cache`, the whole list from the apiserver's watch cache
    /// (`resourceVersion=0`; after a failure the lists are paged until one succeeds), or `paged`,
    /// pages of 500 read from etcd (consistent, slower, heavier on etcd).
    #[arg(long, env = "GLOBALDNS_KUBE_LIST", default_value = "cache")]
    pub kube_list: listing::ListFrom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    File,
    Kube,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WriteBack {
    Off,
    Spec,
    Status,
}

fn parse_write_back(raw: &str) -> Result<WriteBack, String> {
    WriteBack::from_str(raw, true)
        .map_err(|_| format!("{raw:?}: expected off, spec or status (a list: spec,status)"))
}

/// What `--write-back` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteBackModes {
    pub spec: bool,
    pub status: bool,
}

impl WriteBackModes {
    pub fn of(list: &[WriteBack]) -> Result<WriteBackModes> {
        if list.contains(&WriteBack::Off) && list.len() > 1 {
            bail!("--write-back off cannot be combined with spec or status");
        }
        Ok(WriteBackModes {
            spec: list.contains(&WriteBack::Spec),
            status: list.contains(&WriteBack::Status),
        })
    }

    pub fn any(self) -> bool {
        self.spec || self.status
    }
}

/// `--cluster NAME=PATH[#CONTEXT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFlag {
    pub name: String,
    pub path: PathBuf,
    pub context: Option<String>,
}

fn parse_lease(raw: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(3) || d > std::time::Duration::from_secs(3600) {
        return Err("between 3s and 1h (it is renewed every third of it)".into());
    }
    Ok(d)
}

pub fn parse_cluster_flag(raw: &str) -> Result<ClusterFlag, String> {
    let (name, rest) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?}: expected NAME=PATH[#CONTEXT]"))?;
    let (path, context) = match rest.split_once('#') {
        Some((p, c)) if !c.is_empty() => (p, Some(c.to_string())),
        Some((p, _)) => (p, None),
        None => (rest, None),
    };
    if name.is_empty() || path.is_empty() {
        return Err(format!("{raw:?}: expected NAME=PATH[#CONTEXT]"));
    }
    Ok(ClusterFlag {
        name: name.to_string(),
        path: PathBuf::from(path),
        context,
    })
}

impl KubeArgs {
    /// Whether any Kubernetes feature is asked for.
    pub fn enabled(&self) -> bool {
        self.in_cluster
            || !self.clusters.is_empty()
            || self.store == StoreKind::Kube
            || self.remote_secrets
    }

    /// The cluster "local" defaults refer to: the in-cluster one, else the first --cluster.
    fn default_cluster(&self, home: &str) -> Option<String> {
        if self.in_cluster {
            Some(home.to_string())
        } else {
            self.clusters.first().map(|c| c.name.clone())
        }
    }
}

/// The running Kubernetes part. Keep it alive for as long as the server runs.
pub struct Kube {
    runtime: tokio::runtime::Runtime,
    store: Option<Box<dyn Store>>,
    release: Option<lease::Release>,
}

impl Kube {
    /// Gives the claimer lease up, if this instance holds it (at exit; bounded).
    pub fn release_claimer(&self) {
        if let Some(r) = &self.release {
            // The timer is made inside the runtime: it needs its clock.
            self.runtime.block_on(async {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(3), r.release()).await;
            });
        }
    }

    /// The kube store, when `--store kube`; taken once.
    pub fn take_store(&mut self) -> Option<Box<dyn Store>> {
        self.store.take()
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        // Do not wait for watches to wind down at exit.
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("empty runtime"),
        );
        rt.shutdown_background();
    }
}

/// Starts everything the flags ask for. None when no Kubernetes flag is set.
pub fn start(args: &KubeArgs, ctx: KubeContext) -> Result<Option<Kube>> {
    if !args.enabled() {
        return Ok(None);
    }
    crate::alloc::store::check_ranges(&ctx.ranges)?;
    // The watches decode whole lists on these threads (100,000 hosts on a re-list): like the
    // engine, they give way to the DNS workers on a shared core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube")
        .on_thread_start(crate::background::lower_this_thread)
        .enable_all()
        .build()?;
    let ctx = Arc::new(ctx);

    // Configured clusters: names must be unique; their clients are built now (bad kubeconfigs
    // stop start-up here, with the file named).
    let mut configured = Vec::new();
    if args.in_cluster {
        configured.push((ctx.home.clone(), clusters::ConfigSource::InCluster));
    }
    for c in &args.clusters {
        configured.push((
            c.name.clone(),
            clusters::ConfigSource::Kubeconfig {
                path: c.path.clone(),
                context: c.context.clone(),
            },
        ));
    }
    let mut names = BTreeSet::new();
    for (name, _) in &configured {
        if !names.insert(name.clone()) {
            bail!("cluster {name:?} is configured twice");
        }
    }
    let mut clients = std::collections::BTreeMap::new();
    for (name, src) in &configured {
        let client = runtime
            .block_on(clusters::client_for(src))
            .with_context(|| format!("cluster {name}"))?;
        clients.insert(name.clone(), client);
    }
    let pick = |flag: &Option<String>, what: &str| -> Result<Option<(String, kube::Client)>> {
        let Some(name) = flag.clone().or_else(|| args.default_cluster(&ctx.home)) else {
            return Ok(None);
        };
        match clients.get(&name) {
            Some(c) => Ok(Some((name, c.clone()))),
            None => bail!("{what} cluster {name:?} is neither --in-cluster nor a --cluster"),
        }
    };

    let modes = WriteBackModes::of(&args.write_back)?;
    let writeback = modes.any().then(writeback::Views::default);
    let manager = Arc::new(clusters::Manager::new(
        ctx.clone(),
        runtime.handle().clone(),
        writeback.clone(),
    ));
    for (name, client) in &clients {
        manager.add(name, client.clone(), true, None);
    }
    if args.remote_secrets {
        let Some((from, client)) = pick(&args.remote_secrets_cluster, "remote secrets")? else {
            bail!("--remote-secrets needs --in-cluster or a --cluster to read them from");
        };
        info!(cluster = %from, namespace = %args.remote_secrets_namespace, "watching Istio remote secrets");
        ctx.health.expect(clusters::SECRETS_SOURCE);
        runtime.spawn(clusters::run_remote_secrets(
            client,
            args.remote_secrets_namespace.clone(),
            manager.clone(),
            names.clone(),
        ));
    }

    let mut release = None;
    let mut claimer = None;
    let store = match args.store {
        StoreKind::File => None,
        StoreKind::Kube => {
            let Some((name, client)) = pick(&args.store_cluster, "store")? else {
                bail!("--store kube needs --in-cluster or a --cluster (see --store-cluster)");
            };
            let mut store = store::KubeStore::new(
                runtime.handle().clone(),
                client,
                &name,
                &args.store_namespace,
                ctx.clone(),
            );
            if !args.claim_defer.is_zero() {
                store = store.with_claimer(args.claim_lease, args.claim_defer);
                release = store.release_handle();
                claimer = store.claimer();
            }
            Some(Box::new(store) as Box<dyn Store>)
        }
    };

    if let Some(views) = writeback {
        let writer = writeback::Writer {
            modes,
            istio_ranges: args.istio_vip_ranges.clone(),
            claimer,
        };
        runtime.spawn(writeback::run(views, ctx.clone(), writer));
    }
    Ok(Some(Kube {
        runtime,
        store,
        release,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_flag_forms() {
        assert_eq!(
            parse_cluster_flag("west=/k/west.yaml#ctx").unwrap(),
            ClusterFlag {
                name: "west".into(),
                path: "/k/west.yaml".into(),
                context: Some("ctx".into())
            }
        );
        assert_eq!(parse_cluster_flag("e=/k").unwrap().context, None);
        assert!(parse_cluster_flag("nope").is_err());
        assert!(parse_cluster_flag("=x").is_err());
    }
}
