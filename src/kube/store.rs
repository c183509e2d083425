//! The Kubernetes allocation store (`--store kube`): one small `VipClaim` object per VIP, in the
//! store cluster's `--store-namespace`, named after the address. Creating the object *is* the
//! claim: the API server lets exactly one create of a name succeed, so two instances can never
//! both hold an address, without a leader or a lock. See docs/kube-store.md.
//!
//! - Claim: create `v4-a-b-c-d` {host, address}. AlreadyExists → read it: the same host means
//!   someone (maybe us before a restart) already claimed it for us, adopt; another host → Conflict:
//!   the engine adopts the store's table and allocates again.
//! - Hold / reclaim: patch `spec.releasedAt` guarded by the object's resourceVersion.
//! - Free (hold expired, address displaced): delete with uid + resourceVersion preconditions, so
//!   an object re-created or re-claimed meanwhile is never deleted.
//! - Everyone's claims are watched; when the table changes under us, the subscriber (the engine)
//!   is handed the new table.
//! - Two instances that allocate the same new host at the same instant may each claim a different
//!   address for it; every instance resolves that the same way (the lower address wins) and the
//!   other claim is deleted.
//! - Who claims first (`kube/lease.rs`): with `--claim-defer`, one instance holds the claimer
//!   lease and claims new hosts at once; the others let a new host wait that long for its claim
//!   to arrive through the watch (adopting it costs no request) before claiming themselves.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use futures_util::StreamExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde_json::json;
use tracing::{debug, info, warn};

use super::claims::{claims_of, to_rfc3339, Cache, Claim};
use super::context::KubeContext;
use super::crd::{ClaimObject, VipClaim, VipClaimSpec};
use super::lease::{Claimer, Election, Elector, Release};
use super::watch::{Plain, Reporter, Step, Watch, WATCH_TIMEOUT_SECS};
use crate::alloc::store::{Commit, Listener, Store, StoreEvent};
use crate::alloc::{Allocation, Change, Table};
use crate::metrics::ResultLabels;

/// Concurrent API requests of one commit.
const PARALLEL: usize = 16;
/// Bound on one API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A claim as this instance wants it to be: `name` held for `host`, released at a time or not.
#[derive(Debug)]
struct Wanted {
    name: String,
    host: String,
    ip: IpAddr,
    released_at: Option<u64>,
}

#[derive(Debug)]
enum Op {
    Create(Wanted),
    SetReleased(Wanted),
    Delete { name: String, host: String },
}

#[derive(Debug, PartialEq)]
enum OpResult {
    Done,
    /// The address belongs to another host.
    Conflict,
}

pub struct KubeStore {
    rt: tokio::runtime::Handle,
    /// Writes (create, patch, delete).
    api: Api<VipClaim>,
    /// Reads: lists, the watch, gets (only the fields the store uses).
    claims: Api<ClaimObject>,
    cache: Arc<Mutex<Cache>>,
    ctx: Arc<KubeContext>,
    cluster: String,
    namespace: String,
    client: Client,
    listener: Option<Listener>,
    /// Who claims first, when `--claim-defer` is on.
    claimer: Option<ClaimerConfig>,
}

struct ClaimerConfig {
    state: Arc<Claimer>,
    lease: Api<k8s_openapi::api::coordination::v1::Lease>,
    duration: Duration,
    me: String,
}

fn api_err(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service("request timed out".into())),
    }
}

impl KubeStore {
    /// The store in `namespace` of the store cluster; nothing is read before [`Store::load`].
    pub fn new(
        rt: tokio::runtime::Handle,
        client: Client,
        cluster: &str,
        namespace: &str,
        ctx: Arc<KubeContext>,
    ) -> KubeStore {
        KubeStore {
            rt,
            api: Api::namespaced(client.clone(), namespace),
            claims: Api::namespaced(client.clone(), namespace),
            cache: Arc::new(Mutex::new(Cache::default())),
            ctx,
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            listener: None,
            claimer: None,
            client,
        }
    }

    /// One instance claims new hosts first: it holds the claimer Lease (renewed every third of
    /// `lease`); the others let a host needing a new VIP wait up to `grace` for its claim.
    pub fn with_claimer(mut self, lease: Duration, grace: Duration) -> KubeStore {
        self.claimer = Some(ClaimerConfig {
            state: Arc::new(Claimer::new(grace)),
            lease: Api::namespaced(self.client.clone(), &self.namespace),
            duration: lease,
            me: super::lease::identity(),
        });
        self
    }

    /// The claimer role this instance holds, shared (None without a claimer): spec write-back
    /// writes only from the claimer, so a fleet sends one apply per entry, not one per pod.
    pub fn claimer(&self) -> Option<Arc<Claimer>> {
        self.claimer.as_ref().map(|c| c.state.clone())
    }

    /// What gives the claimer lease up at exit (None without a claimer).
    pub fn release_handle(&self) -> Option<Release> {
        self.claimer.as_ref().map(|c| Release {
            api: c.lease.clone(),
            me: c.me.clone(),
            claimer: c.state.clone(),
        })
    }

    fn count_create(&self, result: &'static str) {
        self.ctx
            .metrics
            .store
            .claim_creates
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn run(&self, op: Op) -> Result<OpResult> {
        match op {
            Op::Create(w) => self.create(w).await,
            Op::SetReleased(w) => self.set_released(w).await,
            Op::Delete { name, host } => self.delete(name, host).await,
        }
    }

    async fn fetch(&self, name: &str) -> Result<Option<Claim>> {
        let obj = bounded(self.claims.get_opt(name)).await?;
        let mut c = self.cache.lock().unwrap();
        match &obj {
            Some(o) => c.apply(o),
            None => c.remove(name, None),
        }
        Ok(obj.as_ref().and_then(Claim::from_object).map(|(_, c)| c))
    }

    async fn create(&self, w: Wanted) -> Result<OpResult> {
        let mut obj = VipClaim::new(
            &w.name,
            VipClaimSpec {
                host: w.host.clone(),
                address: w.ip.to_string(),
                released_at: w.released_at.map(to_rfc3339),
            },
        );
        obj.meta_mut().labels = Some(
            [(
                "app.kubernetes.io/managed-by".to_string(),
                "globaldns".to_string(),
            )]
            .into(),
        );
        for _ in 0..3 {
            let res = bounded(self.api.create(&PostParams::default(), &obj)).await;
            self.count_create(match &res {
                Ok(_) => "created",
                Err(e) if api_err(e).is_some_and(|s| s.is_already_exists()) => "exists",
                Err(_) => "failed",
            });
            match res {
                Ok(created) => {
                    self.cache.lock().unwrap().apply(&created.into());
                    return Ok(OpResult::Done);
                }
                Err(e) if api_err(&e).is_some_and(|s| s.is_already_exists()) => {
                    match self.fetch(&w.name).await? {
                        // Deleted in between: try again.
                        None => continue,
                        Some(cur) if cur.host == w.host => {
                            if cur.released_at.is_some() != w.released_at.is_some() {
                                return self.set_released(w).await;
                            }
                            return Ok(OpResult::Done);
                        }
                        Some(cur) => {
                            debug!(ip = %w.ip, ours = %w.host, theirs = %cur.host, "address already claimed by another host");
                            return Ok(OpResult::Conflict);
                        }
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("creating VipClaim {}", w.name)),
            }
        }
        Ok(OpResult::Conflict)
    }

    async fn set_released(&self, w: Wanted) -> Result<OpResult> {
        let name = w.name.clone();
        for _ in 0..3 {
            let cached = self.cache.lock().unwrap().claims.get(&name).cloned();
            let cur = match cached {
                Some(c) => Some(c),
                None => self.fetch(&name).await?,
            };
            let Some(cur) = cur else {
                // Freed by another instance meanwhile (its hold expired there): claim it again.
                return Box::pin(self.create(w)).await;
            };
            if cur.host != w.host {
                return Ok(OpResult::Conflict);
            }
            if cur.released_at.is_some() == w.released_at.is_some() {
                return Ok(OpResult::Done);
            }
            let patch = json!({
                "metadata": {"resourceVersion": cur.resource_version},
                "spec": {"releasedAt": w.released_at.map(to_rfc3339)},
            });
            match bounded(
                self.api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(obj) => {
                    self.cache.lock().unwrap().apply(&obj.into());
                    return Ok(OpResult::Done);
                }
                Err(e) if api_err(&e).is_some_and(|s| s.is_conflict() || s.is_not_found()) => {
                    // Changed or gone meanwhile: look again.
                    self.fetch(&name).await?;
                }
                Err(e) => return Err(e).with_context(|| format!("patching VipClaim {name}")),
            }
        }
        Ok(OpResult::Conflict)
    }

    async fn delete(&self, name: String, host: String) -> Result<OpResult> {
        let cached = self.cache.lock().unwrap().claims.get(&name).cloned();
        let cur = match cached {
            Some(c) => Some(c),
            None => self.fetch(&name).await?,
        };
        let Some(cur) = cur else {
            return Ok(OpResult::Done);
        };
        if cur.host != host {
            // Not ours (any more): nothing to free.
            return Ok(OpResult::Done);
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(cur.uid.clone()),
                resource_version: Some(cur.resource_version.clone()),
            }),
            ..Default::default()
        };
        match bounded(self.api.delete(&name, &dp)).await {
            Ok(_) => {
                self.cache.lock().unwrap().remove(&name, Some(&cur.uid));
                Ok(OpResult::Done)
            }
            Err(e) if api_err(&e).is_some_and(|s| s.is_not_found()) => {
                self.cache.lock().unwrap().remove(&name, Some(&cur.uid));
                Ok(OpResult::Done)
            }
            // Changed meanwhile (re-claimed by another instance): not ours to delete now.
            Err(e) if api_err(&e).is_some_and(|s| s.is_conflict()) => {
                self.fetch(&name).await?;
                Ok(OpResult::Done)
            }
            Err(e) => Err(e).with_context(|| format!("deleting VipClaim {name}")),
        }
    }

    /// `before`/`after`: the changed hosts only; `full`: the whole table after the changes.
    async fn commit_async(&self, before: &Table, after: &Table, full: &Table) -> Result<Commit> {
        let _committing = Committing::start(&self.cache);
        let had = claims_of(before);
        let want = claims_of(after);
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        for (name, (host, _, _)) in &had {
            if want.get(name).is_none_or(|(h, _, _)| h != host) {
                deletes.push(Op::Delete {
                    name: name.clone(),
                    host: host.clone(),
                });
            }
        }
        for (name, (host, ip, released_at)) in &want {
            let wanted = || Wanted {
                name: name.clone(),
                host: host.clone(),
                ip: *ip,
                released_at: *released_at,
            };
            match had.get(name) {
                Some((h, _, r)) if h == host => {
                    if r.is_some() != released_at.is_some() {
                        writes.push(Op::SetReleased(wanted()));
                    }
                }
                _ => writes.push(Op::Create(wanted())),
            }
        }
        let (n_del, n_write) = (deletes.len(), writes.len());
        // Frees first: an address freed here may be claimed again in the same commit.
        let mut results: Vec<Result<OpResult>> = futures_util::stream::iter(deletes)
            .map(|op| self.run(op))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        results.extend(
            futures_util::stream::iter(writes)
                .map(|op| self.run(op))
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>()
                .await,
        );
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Ok(OpResult::Conflict)))
            .count();
        let first_error = results.into_iter().find_map(Result::err);

        let (_, losers) = self.cache.lock().unwrap().table();
        if !losers.is_empty() {
            delete_losers(&self.api, losers).await;
        }
        debug!(
            deletes = n_del,
            writes = n_write,
            conflicts,
            "kube store commit"
        );
        // One critical section from here: the watch reports again once it ends, against the
        // table this commit leaves as sent; what it saw until now is in `table`.
        let mut cache = self.cache.lock().unwrap();
        cache.committing = false;
        let (table, _) = cache.table();
        if let Some(e) = first_error {
            // What the watch saw meanwhile (the claims that did succeed, others' claims) is
            // reported as it would have been without the commit.
            if table != cache.last_sent {
                cache.last_sent = table;
                if let Some(listener) = &self.listener {
                    listener(StoreEvent::Changed);
                }
            }
            return Err(e);
        }
        if conflicts > 0 {
            cache.last_sent = table.clone();
            return Ok(Commit::Conflict(table));
        }
        if table != *full {
            // Others' claims arrived meanwhile: the engine takes them after this commit.
            cache.last_sent = table.clone();
            if let Some(listener) = &self.listener {
                listener(StoreEvent::Changed);
            }
        } else {
            cache.last_sent = full.clone();
        }
        Ok(Commit::Done)
    }
}

/// Marks a commit as running for as long as it lives (see [`Cache::committing`]).
struct Committing<'a>(&'a Mutex<Cache>);

impl<'a> Committing<'a> {
    fn start(cache: &'a Mutex<Cache>) -> Committing<'a> {
        cache.lock().unwrap().committing = true;
        Committing(cache)
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().committing = false;
    }
}

impl Store for KubeStore {
    fn describe(&self) -> String {
        format!(
            "VipClaims in namespace {} of cluster {}",
            self.namespace, self.cluster
        )
    }

    /// Lists the claims (the table the server starts from), retrying a few times.
    fn load(&mut self) -> Result<Table> {
        let mut last_err = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            match self.rt.block_on(list_all(&self.claims)) {
                Ok(objs) => {
                    let mut c = self.cache.lock().unwrap();
                    for o in &objs {
                        c.apply(o);
                    }
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(anyhow!(e)).with_context(|| {
                format!(
                    "cannot list VipClaims in namespace {} of store cluster {} (is deploy/base/vipclaim-crd.yaml applied?)",
                    self.namespace, self.cluster
                )
            });
        }
        let mut cache = self.cache.lock().unwrap();
        let (table, losers) = cache.table();
        cache.last_sent = table.clone();
        info!(cluster = %self.cluster, namespace = %self.namespace, hosts = table.len(), claims = cache.claims.len(), "kube allocation store loaded");
        if !losers.is_empty() {
            let api = self.api.clone();
            self.rt
                .spawn(async move { delete_losers(&api, losers).await });
        }
        Ok(table)
    }

    fn subscribe(&mut self, listener: Listener) {
        self.listener = Some(listener.clone());
        self.rt.spawn(watch(
            self.api.clone(),
            self.claims.clone(),
            self.cache.clone(),
            self.ctx.clone(),
            format!("store/{}", self.cluster),
            listener.clone(),
        ));
        if let Some(c) = &self.claimer {
            let mut election = Election {
                api: c.lease.clone(),
                elector: Elector::new(c.me.clone(), c.duration),
                claimer: c.state.clone(),
                metrics: self.ctx.metrics.clone(),
                namespace: self.namespace.clone(),
                last_ok: None,
                failing: false,
            };
            // The first round now: the first pass already knows whether to wait for another
            // instance's claims.
            self.rt.block_on(election.step());
            self.rt
                .spawn(election.run(move || listener(StoreEvent::DeferChanged)));
        }
    }

    fn shared_table(&mut self) -> Option<Table> {
        let mut cache = self.cache.lock().unwrap();
        let (table, _) = cache.table();
        cache.last_sent = table.clone();
        Some(table)
    }

    fn claim_defer(&self) -> Option<Duration> {
        self.claimer.as_ref().and_then(|c| c.state.defer())
    }

    fn commit(&mut self, changes: &[Change], table: &Table) -> Result<Commit> {
        // Claims are diffed per host: only the changed hosts need comparing.
        let side = |pick: fn(&Change) -> &Option<Allocation>| -> Table {
            changes
                .iter()
                .filter_map(|c| Some((c.host.clone(), (*pick(c))?)))
                .collect()
        };
        let before = side(|c| &c.before);
        let after = side(|c| &c.after);
        self.rt.block_on(self.commit_async(&before, &after, table))
    }
}

async fn list_all(api: &Api<ClaimObject>) -> Result<Vec<ClaimObject>, kube::Error> {
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = bounded(api.list(&lp)).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

/// Deletes claims that lost to another claim of the same host (uid-guarded).
async fn delete_losers(api: &Api<VipClaim>, losers: Vec<(String, Claim)>) {
    futures_util::stream::iter(losers)
        .for_each_concurrent(PARALLEL, |(name, c)| async move {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(c.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match bounded(api.delete(&name, &dp)).await {
                Ok(_) => info!(host = %c.host, address = %c.ip, "duplicate claim of a host removed (the lower address wins)"),
                Err(e) if api_err(&e).is_some_and(|s| s.is_not_found() || s.is_conflict()) => {}
                Err(e) => warn!(host = %c.host, address = %c.ip, error = %e, "cannot remove duplicate claim"),
            }
        })
        .await;
}

/// Watches every claim; tells the engine when the table changed under it.
async fn watch(
    api: Api<VipClaim>,
    claims: Api<ClaimObject>,
    cache: Arc<Mutex<Cache>>,
    ctx: Arc<KubeContext>,
    name: String,
    listener: Listener,
) {
    let plain = Plain {
        api: claims,
        config: watcher::Config::default().timeout(WATCH_TIMEOUT_SECS),
    };
    let mut watch = Watch::new(plain, Reporter::new(&name, ctx.health.clone()));
    while let Some(step) = watch.next().await {
        match step {
            Step::Replaced(objs) => {
                {
                    let mut c = cache.lock().unwrap();
                    let mut fresh = Cache {
                        last_sent: std::mem::take(&mut c.last_sent),
                        committing: c.committing,
                        ..Default::default()
                    };
                    for o in &objs {
                        fresh.apply(o);
                    }
                    *c = fresh;
                }
                publish(&api, &cache, &listener).await;
            }
            Step::Applied(o) => cache.lock().unwrap().apply(&o),
            Step::Deleted(o) => {
                if let Some(n) = o.metadata.name.as_deref() {
                    cache.lock().unwrap().remove(n, o.metadata.uid.as_deref());
                }
            }
            Step::Settled => publish(&api, &cache, &listener).await,
        }
    }
}

/// Tells the engine when the store's table differs from what the engine last took.
async fn publish(api: &Api<VipClaim>, cache: &Arc<Mutex<Cache>>, listener: &Listener) {
    let (table, losers) = {
        let c = cache.lock().unwrap();
        // The running commit reports what changed under it when it ends (and deletes losers);
        // a table built here would be O(claims) per event for our own claims coming back.
        if c.committing {
            return;
        }
        c.table()
    };
    if !losers.is_empty() {
        delete_losers(api, losers).await;
    }
    let mut c = cache.lock().unwrap();
    if table != c.last_sent {
        debug!(
            hosts = table.len(),
            "allocation store changed by another instance"
        );
        c.last_sent = table.clone();
        drop(c);
        listener(StoreEvent::Changed);
    }
}
