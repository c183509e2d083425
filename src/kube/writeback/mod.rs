//! Opt-in write-back (`--write-back spec,status`): puts each host's VIP where Istio reads it.
//!
//! - `spec` (`spec.rs`): the VIP into `spec.addresses` of every eligible single-host entry, by
//!   server-side apply under the field manager `globaldns`, never forced: every proxy knows
//!   `spec.addresses`. What others own is theirs (`ownership.rs`).
//! - `status` (`status.rs`): Istio's own allocation in `status.addresses` (addresses inside its
//!   prefixes) replaced with the mesh-wide VIP, every patch guarded by the `resourceVersion` it was
//!   computed from; an address outside both globaldns's and Istio's ranges is never overwritten.
//!
//! Write-back keeps its own view of each cluster's objects, fed the steps of the cluster's watch,
//! and is woken by every published snapshot and by every change the watches act on. Only the
//! instance holding the claimer lease writes (a fleet sends one write per entry, not one per pod);
//! without a claimer (`--store file`, `--claim-defer 0`) every instance writes.

pub mod metrics;
mod ownership;
mod spec;
mod status;
mod view;
pub mod withdraw;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::IpNet;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::Api;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::context::KubeContext;
use super::crd;
use super::lease::{Claimer, Role};
use super::WriteBackModes;
use crate::reports::Reports;

pub use ownership::{SpecAddresses, FIELD_MANAGER};
pub use spec::SpecWrite;
pub use status::patch as status_patch;
pub use view::{Obj, ObjectName, View, Views, Watched};

const PARALLEL: usize = 8;
/// A failed write (not a conflict) is tried again after this long, doubled at each failure in a
/// row up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// A version of an object whose write conflicted is not written again for this long (the
/// watch brings any change sooner, as a new version).
const CONFLICT_WAIT: Duration = Duration::from_secs(3600);

/// How write-back runs (from flags).
pub struct Writer {
    pub modes: WriteBackModes,
    /// Istio's allocator's prefixes: status addresses there may be taken over.
    pub istio_ranges: Vec<IpNet>,
    /// The claimer role, when the store has one: only its holder writes.
    pub claimer: Option<Arc<Claimer>>,
}

impl Writer {
    /// Whether this instance writes now: the claimer (or no claimer known), never a follower.
    fn writes(&self) -> bool {
        self.claimer
            .as_ref()
            .is_none_or(|c| c.role() != Role::Follower)
    }

    /// The one write `obj` needs against the `hosts`' reports, if any: its spec, else its status.
    fn needs(&self, obj: &Obj, hosts: &Reports, ranges: &[IpNet]) -> Option<Write> {
        let spec = self.modes.spec.then(|| spec::desired(obj, hosts)).flatten();
        match spec {
            Some(w) => Some(Write::Spec(w)),
            // An entry that gets (or keeps) the VIP in spec needs nothing in status: Istio
            // ignores status.addresses once spec.addresses is set.
            None if self.modes.spec && obj.writable == Some(Ok(())) => None,
            None if self.modes.status => {
                status::desired(obj, hosts, ranges, &self.istio_ranges).map(Write::Status)
            }
            None => None,
        }
    }
}

/// One write.
#[derive(Debug, PartialEq)]
enum Write {
    Spec(SpecWrite),
    /// The whole `status.addresses`, as (value, host).
    Status(Vec<(String, String)>),
}

/// (cluster, namespace, name) of an object.
type ObjectKey = (String, String, String);

/// One write to send.
struct Job {
    object: ObjectKey,
    api: Api<DynamicObject>,
    version: String,
    resource_version: String,
    write: Write,
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteResult {
    Written,
    Withdrawn,
    /// Someone else owns the field, or the object changed meanwhile: not overwritten; the
    /// watch brings the new state and the decision is taken again.
    Conflict,
    Failed,
    Timeout,
}

impl WriteResult {
    fn label(self) -> &'static str {
        match self {
            WriteResult::Written => "written",
            WriteResult::Withdrawn => "withdrawn",
            WriteResult::Conflict => "conflict",
            WriteResult::Failed => "failed",
            WriteResult::Timeout => "timeout",
        }
    }
}

/// When each object may be written again, and how many writes in a row failed.
#[derive(Default)]
struct Retries {
    /// (object, resourceVersion) → not before. A success or a conflict changes the
    /// resourceVersion (or the watch brings a new one); a failure waits its backoff.
    due: BTreeMap<(ObjectKey, String), Instant>,
    failures: BTreeMap<ObjectKey, u32>,
}

impl Retries {
    fn backoff(&self, object: &ObjectKey) -> Duration {
        let n = self.failures.get(object).copied().unwrap_or(0).min(6);
        (RETRY * 2u32.pow(n)).min(RETRY_MAX)
    }

    fn record(&mut self, key: (ObjectKey, String), outcome: WriteResult) {
        match outcome {
            WriteResult::Failed | WriteResult::Timeout => {
                *self.failures.entry(key.0).or_default() += 1;
            }
            // Someone else owns the field, or the object changed: nothing to retry until the
            // watch brings a new version (a new key), which is judged afresh.
            WriteResult::Conflict => {
                self.failures.remove(&key.0);
                self.due.insert(key, Instant::now() + CONFLICT_WAIT);
            }
            WriteResult::Written | WriteResult::Withdrawn => {
                self.failures.remove(&key.0);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }
}

/// Writes what is missing: every object against each newly published snapshot, the objects a
/// cluster's watch changed against the current one, and failed writes again when they are due.
pub async fn run(views: Views, ctx: Arc<KubeContext>, writer: Writer) {
    let mut published = ctx.snapshot.subscribe();
    let mut retries = Retries::default();
    // The snapshot every object was last looked at against, by a writing instance.
    let mut checked: Option<u64> = None;
    let mut retry_due = false;
    let mut wrote_last = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    info!(
        spec = writer.modes.spec,
        status = writer.modes.status,
        claimer_only = writer.claimer.is_some(),
        "write-back enabled"
    );
    loop {
        published.borrow_and_update();
        let published_reports = ctx.snapshot.reports(); // none before the first publish
        let writes = writer.writes();
        if writes != wrote_last {
            info!(
                writes,
                "write-back {}",
                if writes {
                    "writes from this instance (claimer lease held, or no claimer)"
                } else {
                    "left to the claimer: this instance writes nothing"
                }
            );
        }
        if let Some(reports) = published_reports.as_deref().filter(|_| writes) {
            // A new writer looks at everything once.
            let full = retry_due || !wrote_last || checked != Some(reports.generation);
            let jobs = collect(&views, reports, &ctx.ranges, &writer, full, &mut retries);
            for (key, outcome) in write(jobs, &ctx).await {
                retries.record(key, outcome);
            }
            if full {
                checked = Some(reports.generation);
            }
        }
        // Set after a writing pass has finished: a test (or an operator) that sees 1 knows the
        // writes this instance owes were sent.
        let m = &ctx.metrics.writeback;
        m.writer
            .set(i64::from(published_reports.is_some() && writes));
        if let Some(reports) = &published_reports {
            // Every object was looked at against this snapshot (or left to the claimer) and
            // every write has finished.
            m.checked_serial.set(i64::from(reports.serial));
        }
        wrote_last = writes;
        let next_retry = retries.next_due();
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
            // The claimer role can change without anything else happening (a successor takes
            // over a dead claimer's lease after its hosts were claimed and published). The
            // guard of a select! branch is evaluated once, when the select starts, so the role
            // is looked at on every tick, not in the guard.
            _ = tick.tick(), if writer.claimer.is_some() => {}
        }
    }
}

/// The writes to send: for every object (`full`, or a view that was listed again), else for the
/// objects changed since the last pass.
fn collect(
    views: &Views,
    reports: &Reports,
    ranges: &[IpNet],
    writer: &Writer,
    full: bool,
    retries: &mut Retries,
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
        let objects: Box<dyn Iterator<Item = (&ObjectName, &Obj)>> = if all {
            Box::new(v.objects.iter())
        } else {
            Box::new(dirty.iter().filter_map(|k| v.objects.get_key_value(k)))
        };
        for ((ns, name), obj) in objects {
            let object = (cluster.clone(), ns.clone(), name.clone());
            let key = (object.clone(), obj.resource_version.clone());
            if full {
                live.insert(key.clone());
            }
            if retries.due.get(&key).is_some_and(|t| *t > now) {
                continue;
            }
            if let Some(write) = writer.needs(obj, reports, ranges) {
                retries.due.insert(key, now + retries.backoff(&object));
                let resource = crd::serviceentry_resource(&obj.version);
                jobs.push(Job {
                    object,
                    api: Api::namespaced_with(client.clone(), ns, &resource),
                    version: resource.api_version.clone(),
                    resource_version: obj.resource_version.clone(),
                    write,
                });
            }
        }
    }
    if full {
        retries.due.retain(|k, _| live.contains(k));
        let objects: BTreeSet<&ObjectKey> = live.iter().map(|(o, _)| o).collect();
        retries.failures.retain(|o, _| objects.contains(o));
    }
    // Absent means "may be tried": only future retries are kept (and waited for).
    retries.due.retain(|_, t| *t > now);
    jobs
}

/// Sends the writes, a few at a time; returns how each ended.
async fn write(jobs: Vec<Job>, ctx: &KubeContext) -> Vec<((ObjectKey, String), WriteResult)> {
    futures_util::stream::iter(jobs)
        .map(|job| async move {
            let outcome = send(&job, ctx).await;
            ((job.object, job.resource_version), outcome)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

async fn send(job: &Job, ctx: &KubeContext) -> WriteResult {
    let (cluster, ns, name) = &job.object;
    let object = format!("{ns}/{name}");
    let timeout = Duration::from_secs(10);
    let (result, family, field) = match &job.write {
        Write::Spec(w) => {
            let body = spec::apply_body(&job.version, ns, name, &job.resource_version, w);
            let params = PatchParams::apply(FIELD_MANAGER);
            let patch = Patch::Apply(&body);
            let sent = job.api.patch(name, &params, &patch);
            (
                tokio::time::timeout(timeout, sent).await,
                &ctx.metrics.writeback.spec_writes,
                "spec.addresses",
            )
        }
        Write::Status(want) => {
            let body = status::patch(&job.resource_version, want);
            let (params, patch) = (PatchParams::default(), Patch::Merge(&body));
            let sent = job.api.patch_status(name, &params, &patch);
            (
                tokio::time::timeout(timeout, sent).await,
                &ctx.metrics.writeback.status_writes,
                "status.addresses",
            )
        }
    };
    let outcome = match result {
        Ok(Ok(_)) => match &job.write {
            Write::Spec(SpecWrite::Withdraw) => {
                info!(%cluster, %object, "withdrew globaldns's spec.addresses (the entry can no longer carry the VIP)");
                WriteResult::Withdrawn
            }
            Write::Spec(SpecWrite::Apply(ips)) => {
                let values: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                info!(%cluster, %object, addresses = %values.join(","), "wrote VIPs to spec.addresses");
                WriteResult::Written
            }
            Write::Status(want) => {
                let values: Vec<&str> = want.iter().map(|(v, _)| v.as_str()).collect();
                info!(%cluster, %object, addresses = %values.join(","), "wrote VIPs to status.addresses");
                WriteResult::Written
            }
        },
        Ok(Err(kube::Error::Api(s))) if s.is_conflict() => {
            debug!(%cluster, %object, %field, message = %s.message, "not written: someone else owns the field, or the object changed meanwhile; will look again");
            WriteResult::Conflict
        }
        Ok(Err(e)) => {
            let hint = match &e {
                kube::Error::Api(s) if s.is_forbidden() => {
                    " (RBAC: patch on serviceentries, and serviceentries/status for status)"
                }
                _ => "",
            };
            warn!(%cluster, %object, %field, error = %e, "write-back failed{hint}; retried with backoff");
            WriteResult::Failed
        }
        Err(_) => {
            warn!(%cluster, %object, %field, "write-back timed out; retried with backoff");
            WriteResult::Timeout
        }
    };
    metrics::count(family, cluster, outcome.label());
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_back_off_and_conflicts_wait_for_a_new_version() {
        let mut r = Retries::default();
        let o: ObjectKey = ("c".into(), "n".into(), "a".into());
        assert_eq!(r.backoff(&o), RETRY);
        r.record((o.clone(), "1".into()), WriteResult::Failed);
        assert_eq!(r.backoff(&o), RETRY * 2);
        r.record((o.clone(), "1".into()), WriteResult::Timeout);
        assert_eq!(r.backoff(&o), RETRY * 4);
        for _ in 0..10 {
            r.record((o.clone(), "1".into()), WriteResult::Failed);
        }
        assert_eq!(r.backoff(&o), RETRY_MAX);
        r.record((o.clone(), "2".into()), WriteResult::Written);
        assert_eq!(r.backoff(&o), RETRY);
        r.record((o.clone(), "3".into()), WriteResult::Conflict);
        let due = r.due[&(o.clone(), "3".to_string())];
        assert!(due > Instant::now() + CONFLICT_WAIT - Duration::from_secs(60));
    }

    #[test]
    fn patch_is_guarded_by_resource_version() {
        let p = status::patch("42", &[("240.10.0.7".into(), "a.b.global".into())]);
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["status"]["addresses"][0]["value"], "240.10.0.7");
        assert_eq!(p["status"]["addresses"][0]["host"], "a.b.global");
    }
}
