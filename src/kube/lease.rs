//! Who claims new hosts first: leader election on one `coordination.k8s.io/v1` Lease
//! (`globaldns-claimer`) in the store namespace, as Kubernetes controllers do it. The holder
//! renews it every third of `--claim-lease` (at most every 2 s); the others read it as often and
//! take it over once they have seen it unchanged for a whole lease duration (measured on their
//! own clock, so clocks need not agree), or at once when it is vacant (a holder that stops gives
//! it up). Writes carry the resourceVersion read, so two instances never both take it over.
//!
//! Holding the lease grants nothing: claims stay atomic creates, so two instances that both
//! believe they hold it only cost duplicate POSTs, never a wrong answer. It only decides who
//! claims at once (the holder) and who waits `--claim-defer` for that claim (the others).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The Lease's name in the store namespace.
pub const LEASE_NAME: &str = "globaldns-claimer";

/// What this instance is, as of its last round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Not known (not read yet, or not readable for a lease duration): claims at once, as
    /// every instance did before there was a claimer.
    Unknown = 0,
    /// Holds the lease: claims at once.
    Holder = 1,
    /// Another instance holds a live lease: new claims wait for its.
    Follower = 2,
}

/// The role shared between the lease task and the store.
pub struct Claimer {
    role: AtomicU8,
    grace: Duration,
    /// The server is stopping: no more rounds.
    stopped: AtomicBool,
}

impl Claimer {
    pub fn new(grace: Duration) -> Claimer {
        Claimer {
            role: AtomicU8::new(Role::Unknown as u8),
            grace,
            stopped: AtomicBool::new(false),
        }
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Holder,
            2 => Role::Follower,
            _ => Role::Unknown,
        }
    }

    /// Sets the role; returns the previous one.
    fn set(&self, role: Role) -> Role {
        match self.role.swap(role as u8, Ordering::Relaxed) {
            1 => Role::Holder,
            2 => Role::Follower,
            _ => Role::Unknown,
        }
    }

    /// How long a new claim waits: only a follower waits.
    pub fn defer(&self) -> Option<Duration> {
        (self.role() == Role::Follower).then_some(self.grace)
    }
}

/// The lease as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub holder: Option<String>,
    pub version: String,
    pub duration: Option<Duration>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|d| u64::try_from(d).ok())
                .filter(|d| *d > 0)
                .map(Duration::from_secs),
        }
    }
}

/// What to do about the lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// There is none: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Vacant, or not renewed for a lease duration: take it over.
    Take,
    /// Held by this other instance, alive as far as we can tell.
    Follow(String),
}

/// The decision rules, apart from any I/O.
pub struct Elector {
    me: String,
    duration: Duration,
    /// The version of the lease last seen, and when it was first seen (our clock).
    seen: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(me: String, duration: Duration) -> Elector {
        Elector {
            me,
            duration,
            seen: None,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// What to do about `lease` (None: there is none) read at `now`.
    pub fn decide(&mut self, lease: Option<&Record>, now: Instant) -> Action {
        let Some(r) = lease else {
            self.seen = None;
            return Action::Create;
        };
        let since = match &self.seen {
            Some((v, t)) if *v == r.version => *t,
            _ => {
                self.seen = Some((r.version.clone(), now));
                now
            }
        };
        match r.holder.as_deref() {
            Some(h) if h == self.me => Action::Renew,
            None => Action::Take,
            // Its own duration counts: instances may run with different flags for a while.
            Some(h) if now.duration_since(since) < r.duration.unwrap_or(self.duration) => {
                Action::Follow(h.to_string())
            }
            Some(_) => Action::Take,
        }
    }

    /// The lease as we write it: held by us, renewed now; `taken` also resets the acquire time
    /// and counts a transition.
    fn ours(&self, from: Option<Lease>, taken: bool) -> Lease {
        let mut lease = from.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_string()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "globaldns".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            spec: None,
        });
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if taken || spec.acquire_time.is_none() {
            spec.acquire_time = Some(now.clone());
            if spec.holder_identity.is_some() {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.holder_identity = Some(self.me.clone());
        spec.lease_duration_seconds = Some(self.duration.as_secs().clamp(1, 3600) as i32);
        spec.renew_time = Some(now);
        lease
    }
}

/// A name for this instance that no other instance shares: the host (the pod) name, the
/// process and a per-start nonce.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "globaldns".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}_{}_{nanos:08x}", std::process::id())
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// One round: read the lease, decide, write. Returns the role it leaves us in.
pub async fn round(
    api: &Api<Lease>,
    elector: &mut Elector,
) -> Result<(Role, Option<String>), kube::Error> {
    let current = bounded(api.get_opt(LEASE_NAME)).await?;
    let action = elector.decide(current.as_ref().map(Record::of).as_ref(), Instant::now());
    let write = match &action {
        Action::Follow(holder) => return Ok((Role::Follower, Some(holder.clone()))),
        Action::Create => {
            bounded(api.create(&PostParams::default(), &elector.ours(None, true))).await
        }
        Action::Renew | Action::Take => {
            let lease = elector.ours(current, action == Action::Take);
            // Carries the resourceVersion read: a concurrent writer makes this fail with 409.
            bounded(api.replace(LEASE_NAME, &PostParams::default(), &lease)).await
        }
    };
    match write {
        Ok(_) => Ok((Role::Holder, Some(elector.me().to_string()))),
        // Someone else wrote it first: they hold it (the next round reads whom).
        Err(e) if api_status(&e).is_some_and(|s| s.is_conflict() || s.is_already_exists()) => {
            Ok((Role::Follower, None))
        }
        Err(e) => Err(e),
    }
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service("request timed out".into())),
    }
}

/// The role after a round that failed: what we were, while the last good round is less than a
/// lease duration old; then unknown (claim at once).
pub fn after_failure(
    was: Role,
    last_ok: Option<Instant>,
    duration: Duration,
    now: Instant,
) -> Role {
    match last_ok {
        Some(t) if now.duration_since(t) < duration => was,
        _ => Role::Unknown,
    }
}

/// The election loop, one round every third of the lease duration, for as long as the server
/// runs. `changed` is called when the role changes.
pub struct Election {
    pub api: Api<Lease>,
    pub elector: Elector,
    pub claimer: Arc<Claimer>,
    pub metrics: Arc<Metrics>,
    pub namespace: String,
    /// When the last round succeeded.
    pub last_ok: Option<Instant>,
    /// A failure was logged and no round succeeded since.
    pub failing: bool,
}

impl Election {
    /// One round, its outcome applied; returns whether the role changed.
    pub async fn step(&mut self) -> bool {
        let role = match round(&self.api, &mut self.elector).await {
            Ok((role, holder)) => {
                self.last_ok = Some(Instant::now());
                if std::mem::take(&mut self.failing) {
                    info!(namespace = %self.namespace, "claimer lease readable again");
                }
                if role != self.claimer.role() {
                    match role {
                        Role::Holder => {
                            info!(lease = LEASE_NAME, me = %self.elector.me(), "this instance now claims new hosts first (claimer lease held)")
                        }
                        _ => {
                            info!(lease = LEASE_NAME, holder = ?holder, "another instance claims new hosts first; new claims here wait --claim-defer for its")
                        }
                    }
                }
                role
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    let hint = if api_status(&e).is_some_and(|s| s.is_forbidden()) {
                        " (RBAC: get, create and update on leases in the store namespace)"
                    } else {
                        ""
                    };
                    warn!(error = %e, namespace = %self.namespace, "cannot read or write the claimer lease{hint}; while this lasts a lease duration, this instance claims new hosts at once");
                }
                let was = self.claimer.role();
                let role = after_failure(was, self.last_ok, self.elector.duration, Instant::now());
                if role != was && role == Role::Unknown {
                    info!(
                        lease = LEASE_NAME,
                        "claimer unknown; this instance claims new hosts at once"
                    );
                }
                role
            }
        };
        self.metrics
            .store
            .claimer
            .set(i64::from(role == Role::Holder));
        self.claimer.set(role) != role
    }

    /// Rounds until the server stops; `changed` after each that changed the role.
    pub async fn run(mut self, changed: impl Fn()) {
        let tick = round_every(self.elector.duration);
        loop {
            tokio::time::sleep(tick).await;
            if self.claimer.stopped.load(Ordering::Relaxed) {
                return;
            }
            if self.step().await {
                changed();
            }
        }
    }
}

/// How often the holder renews and the others read: a third of the lease, at most 2 s (as
/// Kubernetes' own controllers retry), so that a released lease is taken over within 2 s.
pub fn round_every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_secs(2))
}

/// Gives the lease up when the server stops (SIGTERM), so that another instance takes it over
/// at its next round instead of after a whole lease duration.
pub struct Release {
    pub api: Api<Lease>,
    pub me: String,
    pub claimer: Arc<Claimer>,
}

impl Release {
    pub async fn release(&self) {
        self.claimer.stopped.store(true, Ordering::Relaxed);
        if self.claimer.role() != Role::Holder {
            return;
        }
        let Ok(Some(mut lease)) = bounded(self.api.get_opt(LEASE_NAME)).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match bounded(self.api.replace(LEASE_NAME, &PostParams::default(), &lease)).await {
            Ok(_) => info!(lease = LEASE_NAME, "claimer lease released"),
            Err(e) => {
                warn!(error = %e, "cannot release the claimer lease; another instance takes it over once it runs out")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn rec(holder: Option<&str>, version: &str) -> Record {
        Record {
            holder: holder.map(String::from),
            version: version.into(),
            duration: None,
        }
    }

    #[test]
    fn no_lease_is_created_ours_is_renewed_a_vacant_one_taken() {
        let mut e = Elector::new("me".into(), LEASE);
        let t = Instant::now();
        assert_eq!(e.decide(None, t), Action::Create);
        assert_eq!(e.decide(Some(&rec(Some("me"), "1")), t), Action::Renew);
        assert_eq!(e.decide(Some(&rec(None, "2")), t), Action::Take);
    }

    #[test]
    fn another_holder_is_followed_until_its_lease_went_unrenewed_for_a_duration() {
        let mut e = Elector::new("me".into(), LEASE);
        let t0 = Instant::now();
        let follow = Action::Follow("other".into());
        assert_eq!(e.decide(Some(&rec(Some("other"), "5")), t0), follow);
        // Renewed (a new version) just before it would have expired: the wait starts again.
        let t1 = t0 + LEASE - Duration::from_secs(1);
        assert_eq!(e.decide(Some(&rec(Some("other"), "6")), t1), follow);
        assert_eq!(e.decide(Some(&rec(Some("other"), "6")), t0 + LEASE), follow);
        // Unchanged for a whole lease duration, on our clock: taken over.
        assert_eq!(
            e.decide(Some(&rec(Some("other"), "6")), t1 + LEASE),
            Action::Take
        );
    }

    #[test]
    fn the_leases_own_duration_counts() {
        let mut e = Elector::new("me".into(), LEASE);
        let t0 = Instant::now();
        let short = Record {
            duration: Some(Duration::from_secs(3)),
            ..rec(Some("other"), "9")
        };
        assert!(matches!(e.decide(Some(&short), t0), Action::Follow(_)));
        assert_eq!(
            e.decide(Some(&short), t0 + Duration::from_secs(3)),
            Action::Take
        );
    }

    #[test]
    fn a_lease_we_write_is_ours_and_counts_transitions() {
        let e = Elector::new("me".into(), LEASE);
        let created = e.ours(None, true);
        let spec = created.spec.clone().unwrap();
        assert_eq!(created.metadata.name.as_deref(), Some(LEASE_NAME));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, None);
        let mut theirs = created.clone();
        theirs.spec.as_mut().unwrap().holder_identity = Some("other".into());
        theirs.metadata.resource_version = Some("42".into());
        let taken = e.ours(Some(theirs), true);
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(taken.spec.as_ref().unwrap().lease_transitions, Some(1));
        let renewed = e.ours(Some(taken.clone()), false);
        assert_eq!(renewed.spec.unwrap().lease_transitions, Some(1));
    }

    #[test]
    fn a_failed_round_keeps_the_role_for_a_lease_duration() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            after_failure(Role::Holder, Some(t0), LEASE, later),
            Role::Holder
        );
        assert_eq!(
            after_failure(Role::Follower, Some(t0), LEASE, later),
            Role::Follower
        );
        assert_eq!(
            after_failure(Role::Follower, Some(t0), LEASE, t0 + LEASE),
            Role::Unknown
        );
        assert_eq!(after_failure(Role::Holder, None, LEASE, t0), Role::Unknown);
        let c = Claimer::new(Duration::from_secs(2));
        assert_eq!(c.defer(), None);
        c.set(Role::Follower);
        assert_eq!(c.defer(), Some(Duration::from_secs(2)));
        c.set(Role::Holder);
        assert_eq!(c.defer(), None);
    }
}
