//! The one watch loop of the Kubernetes part, shared by the ServiceEntry watch of every cluster,
//! the allocation store's VipClaim watch and the remote-secrets watch.
//!
//! An attempt ([`Start`]) yields kube-runtime `watcher` events; a failed attempt is started again
//! (so that its first full list replaces what was known and converges on anything missed), paced
//! by [`WatchStreamExt::backoff`]. A reflector-style [`Buffer`] turns the events into [`Step`]s:
//! the full state replaced, one object applied, one deleted. Failures and recoveries are reported
//! for `/readyz` and the per-cluster metrics ([`Reporter`]); the last-known state is kept
//! meanwhile (nothing is withdrawn on errors).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::source::metrics::ClusterLabels;
use crate::zone::unix_now;

/// Server-side timeout of one watch call; the client gives up on a silent connection 5 s later.
pub const WATCH_TIMEOUT_SECS: u32 = 60;
/// First wait after a failure; it doubles on every further failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Applied and deleted objects this close together are one change (a `kubectl apply` of many).
pub const SETTLE: Duration = Duration::from_millis(20);

/// Why an attempt failed, as `/readyz` shows it (`stale: SOURCE (WHY)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl From<watcher::Error> for Failure {
    fn from(e: watcher::Error) -> Failure {
        Failure(format!("watch failed: {e}"))
    }
}

/// The events of one attempt.
pub type Events<K> = BoxStream<'static, Result<watcher::Event<K>, Failure>>;

/// Starts one attempt. Its events end with an `Err` (the next attempt starts after the backoff) or
/// end plainly (the next attempt starts at once: an attempt that only waits before looking again).
pub trait Start<K>: Send + 'static {
    fn start(&mut self) -> BoxFuture<'_, Result<Events<K>, Failure>>;
}

/// A plain `watcher` of `api` as an attempt.
pub struct Plain<K: kube::Resource> {
    pub api: kube::Api<K>,
    pub config: watcher::Config,
}

impl<K> Start<K> for Plain<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    fn start(&mut self) -> BoxFuture<'_, Result<Events<K>, Failure>> {
        let events = watcher(self.api.clone(), self.config.clone())
            .map(|r| r.map_err(Failure::from))
            .boxed();
        Box::pin(std::future::ready(Ok(events)))
    }
}

/// Doubles from [`MIN_BACKOFF`] to [`MAX_BACKOFF`]; any event resets it. (kube's `DefaultBackoff`,
/// 0.8 s → 30 s with jitter, would make a cluster that comes back take up to 30 s to be noticed.)
pub struct Retry {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Retry {
    pub fn new(min: Duration, max: Duration) -> Retry {
        Retry {
            next: min,
            min,
            max,
        }
    }
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Iterator for Retry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        Some(d)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What a watch says, once the initial list is buffered.
#[derive(Debug, PartialEq)]
pub enum Step<K> {
    /// A full list: everything there is now. What is not in it is gone.
    Replaced(Vec<K>),
    Applied(K),
    Deleted(K),
    /// [`SETTLE`] after the first Applied/Deleted not yet followed by Settled or Replaced (or at
    /// once on a failure): time to act on them as one change.
    Settled,
}

/// Buffers the objects of a list until it is complete, as kube-runtime's reflector does.
#[derive(Debug)]
pub struct Buffer<K> {
    listing: Option<Vec<K>>,
}

impl<K> Default for Buffer<K> {
    fn default() -> Self {
        Buffer { listing: None }
    }
}

impl<K> Buffer<K> {
    pub fn push(&mut self, ev: watcher::Event<K>) -> Option<Step<K>> {
        match ev {
            watcher::Event::Init => {
                self.listing = Some(Vec::new());
                None
            }
            // Init is not relied on (it is filtered out before the backoff, which any event
            // would reset): the first object of a list starts it.
            watcher::Event::InitApply(o) => {
                self.listing.get_or_insert_with(Vec::new).push(o);
                None
            }
            watcher::Event::InitDone => {
                Some(Step::Replaced(self.listing.take().unwrap_or_default()))
            }
            watcher::Event::Apply(o) => Some(Step::Applied(o)),
            watcher::Event::Delete(o) => Some(Step::Deleted(o)),
        }
    }

    /// Drops a list cut short by a failure: the next attempt lists again from the start.
    pub fn reset(&mut self) {
        self.listing = None;
    }
}

/// Reports a watch's state: `/readyz` staleness for every watch, and for a cluster's ServiceEntry
/// watch `globaldns_source_up`, `…_last_sync_timestamp_seconds`, `…_source_objects` and
/// `globaldns_watch_restarts_total`.
pub struct Reporter {
    source: String,
    health: Arc<Health>,
    cluster: Option<(Arc<Metrics>, ClusterLabels)>,
}

impl Reporter {
    /// A watch known to `/readyz` as `source`, without metrics.
    pub fn new(source: &str, health: Arc<Health>) -> Reporter {
        Reporter {
            source: source.to_string(),
            health,
            cluster: None,
        }
    }

    /// With the per-cluster metrics of `cluster`.
    pub fn cluster(
        source: &str,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        cluster: &str,
    ) -> Reporter {
        Reporter {
            cluster: Some((
                metrics,
                ClusterLabels {
                    cluster: cluster.to_string(),
                },
            )),
            ..Reporter::new(source, health)
        }
    }

    fn listed(&self) {
        self.health.set_stale(&self.source, None);
        if let Some((m, l)) = &self.cluster {
            m.source.up.get_or_create(l).set(1);
        }
        self.touched();
    }

    fn touched(&self) {
        if let Some((m, l)) = &self.cluster {
            m.source.last_sync.get_or_create(l).set(unix_now() as i64);
        }
    }

    fn failed(&self, why: &Failure) {
        warn!(source = %self.source, reason = %why.0, "watch failed; keeping the last-known state, retrying");
        self.health.set_stale(&self.source, Some(why.0.clone()));
        if let Some((m, l)) = &self.cluster {
            m.source.up.get_or_create(l).set(0);
            m.source.watch_restarts.get_or_create(l).inc();
        }
    }

    /// How many objects the watch holds now.
    pub fn objects(&self, n: usize) {
        if let Some((m, l)) = &self.cluster {
            m.source.objects.get_or_create(l).set(n as i64);
        }
    }
}

/// What is reported once the consumer has acted on the step it was given.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Nothing,
    Listed,
    Touched,
}

/// A running watch: its steps, one at a time, from [`Watch::next`].
pub struct Watch<K> {
    events: BoxStream<'static, Result<watcher::Event<K>, Failure>>,
    buffer: Buffer<K>,
    pub report: Reporter,
    settle_at: Option<Instant>,
    after: After,
    failed: bool,
}

impl<K: Send + 'static> Watch<K> {
    pub fn new(start: impl Start<K>, report: Reporter) -> Watch<K> {
        Watch::build(start, report, Retry::default(), None)
    }

    pub fn build(
        start: impl Start<K>,
        report: Reporter,
        backoff: Retry,
        probe: Option<Probe>,
    ) -> Watch<K> {
        let events = restarting(start, probe)
            .filter(|r| std::future::ready(!matches!(r, Ok(watcher::Event::Init))))
            .backoff(backoff)
            .boxed();
        Watch {
            events,
            buffer: Buffer::default(),
            report,
            settle_at: None,
            after: After::Nothing,
            failed: false,
        }
    }

    /// The next step; None only when every attempt has ended for good (never for a watcher).
    pub async fn next(&mut self) -> Option<Step<K>> {
        match std::mem::replace(&mut self.after, After::Nothing) {
            After::Listed => self.report.listed(),
            After::Touched => self.report.touched(),
            After::Nothing => {}
        }
        loop {
            let ev = match self.settle_at {
                Some(at) => match tokio::time::timeout_at(at, self.events.next()).await {
                    Ok(ev) => ev,
                    Err(_) => {
                        self.settle_at = None;
                        return Some(Step::Settled);
                    }
                },
                None => self.events.next().await,
            }?;
            let step = match ev {
                Ok(ev) => self.buffer.push(ev),
                Err(why) => {
                    self.report.failed(&why);
                    self.failed = true;
                    self.buffer.reset();
                    // What was seen before the failure is what the cluster said: acted on now.
                    self.settle_at.take().map(|_| Step::Settled)
                }
            };
            let Some(step) = step else { continue };
            match step {
                Step::Replaced(ref objs) => {
                    self.settle_at = None;
                    self.after = After::Listed;
                    if std::mem::take(&mut self.failed) {
                        info!(source = %self.report.source, objects = objs.len(), "listed again after a failure; converged");
                    }
                }
                Step::Applied(_) | Step::Deleted(_) => {
                    self.settle_at
                        .get_or_insert_with(|| Instant::now() + SETTLE);
                    self.after = After::Touched;
                }
                Step::Settled => {}
            }
            return Some(step);
        }
    }
}

/// Attempt after attempt: a new one after a failure or when one ends. A failure of the probe
/// ends the current attempt as a failure of its own would.
fn restarting<K: Send + 'static>(
    start: impl Start<K>,
    probe: Option<Probe>,
) -> impl futures_util::Stream<Item = Result<watcher::Event<K>, Failure>> + Send {
    let state = (start, None::<Events<K>>, probe);
    stream::unfold(state, |(mut start, mut current, mut probe)| async move {
        let item = {
            let advance = advance(&mut start, &mut current);
            match probe.as_mut() {
                None => advance.await,
                Some(p) => tokio::select! {
                    item = advance => item,
                    Some(why) = p.next() => Err(why),
                },
            }
        };
        if item.is_err() {
            current = None;
        }
        Some((item, (start, current, probe)))
    })
}

/// The next event of the current attempt, starting one when there is none.
async fn advance<K>(
    start: &mut impl Start<K>,
    current: &mut Option<Events<K>>,
) -> Result<watcher::Event<K>, Failure> {
    loop {
        let cur = match current {
            Some(cur) => cur,
            None => current.insert(start.start().await?),
        };
        match cur.next().await {
            Some(Ok(ev)) => return Ok(ev),
            Some(Err(why)) => return Err(why),
            None => *current = None,
        }
    }
}

/// A check run alongside a watch: each item it yields is a failure that ends the current attempt.
pub type Probe = BoxStream<'static, Failure>;

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::{self, FutureExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::VecDeque;
    use watcher::Event;

    fn cm(name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c
    }

    fn names(step: &Step<ConfigMap>) -> String {
        let n = |c: &ConfigMap| c.metadata.name.clone().unwrap_or_default();
        match step {
            Step::Replaced(v) => format!(
                "replaced[{}]",
                v.iter().map(n).collect::<Vec<_>>().join(",")
            ),
            Step::Applied(c) => format!("applied {}", n(c)),
            Step::Deleted(c) => format!("deleted {}", n(c)),
            Step::Settled => "settled".into(),
        }
    }

    #[tokio::test]
    async fn buffer_turns_events_into_steps() {
        let events = vec![
            Event::Init,
            Event::InitApply(cm("a")),
            Event::InitApply(cm("b")),
            Event::InitDone,
            Event::Apply(cm("c")),
            Event::Delete(cm("a")),
            // A re-list without Init (as the watch sees it) that drops b and c.
            Event::InitApply(cm("c")),
            Event::InitDone,
            // An empty list.
            Event::Init,
            Event::InitDone,
        ];
        let steps: Vec<String> = stream::iter(events)
            .scan(Buffer::default(), |b, ev| future::ready(Some(b.push(ev))))
            .filter_map(future::ready)
            .map(|s| names(&s))
            .collect()
            .await;
        assert_eq!(
            steps,
            [
                "replaced[a,b]",
                "applied c",
                "deleted a",
                "replaced[c]",
                "replaced[]"
            ]
        );
    }

    /// One scripted attempt: it fails to start, or yields events then fails (Some) or ends.
    type Attempt = Result<(Vec<Event<ConfigMap>>, Option<&'static str>), &'static str>;

    /// Attempts from a script; after the last one, a watch that stays open.
    struct Script(VecDeque<Attempt>);

    impl Start<ConfigMap> for Script {
        fn start(&mut self) -> BoxFuture<'_, Result<Events<ConfigMap>, Failure>> {
            let next = self.0.pop_front();
            async move {
                match next {
                    // The last attempt stays open, as a watcher does.
                    None => Ok(stream::pending().boxed()),
                    Some(Err(why)) => Err(Failure(why.into())),
                    Some(Ok((events, fail))) => {
                        let tail = fail.map(|w| Err(Failure(w.into())));
                        Ok(stream::iter(events.into_iter().map(Ok).chain(tail)).boxed())
                    }
                }
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn failures_restart_the_watch_and_are_reported() {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let script = Script(VecDeque::from([
            Err("unreachable: refused"),
            Ok((
                vec![
                    Event::Init,
                    Event::InitApply(cm("a")),
                    Event::InitDone,
                    Event::Apply(cm("b")),
                ],
                Some("watch failed: reset"),
            )),
            // A list cut short by a failure is dropped.
            Ok((
                vec![Event::Init, Event::InitApply(cm("x"))],
                Some("watch failed: again"),
            )),
            Ok((
                vec![
                    Event::Init,
                    Event::InitApply(cm("a")),
                    Event::InitApply(cm("c")),
                    Event::InitDone,
                ],
                None,
            )),
            Ok((vec![Event::Delete(cm("c"))], None)),
        ]));
        let report = Reporter::cluster("cluster/t", health.clone(), metrics.clone(), "t");
        let no_wait = Retry::new(Duration::ZERO, Duration::ZERO);
        let mut w = Watch::build(script, report, no_wait, None);
        let restarts = || {
            metrics
                .source
                .watch_restarts
                .get_or_create(&ClusterLabels {
                    cluster: "t".into(),
                })
                .get()
        };
        let up = || {
            metrics
                .source
                .up
                .get_or_create(&ClusterLabels {
                    cluster: "t".into(),
                })
                .get()
        };

        assert_eq!(names(&w.next().await.unwrap()), "replaced[a]");
        // Reported once the step was acted on (at the next call): still stale from the failure.
        assert_eq!(restarts(), 1);
        assert!(health
            .report()
            .1
            .contains("stale: cluster/t (unreachable: refused)"));
        assert_eq!(names(&w.next().await.unwrap()), "applied b");
        assert!(!health.report().1.contains("stale"));
        assert_eq!(up(), 1);
        // The failure settles what was applied before it.
        assert_eq!(names(&w.next().await.unwrap()), "settled");
        assert_eq!(up(), 0);
        assert!(health
            .report()
            .1
            .contains("stale: cluster/t (watch failed: reset)"));
        assert_eq!(names(&w.next().await.unwrap()), "replaced[a,c]");
        assert_eq!(restarts(), 3);
        // An attempt that ends plainly is followed by the next at once, without a failure.
        assert_eq!(names(&w.next().await.unwrap()), "deleted c");
        assert!(!health.report().1.contains("stale"));
        assert_eq!(names(&w.next().await.unwrap()), "settled");
        assert_eq!(restarts(), 3);
        assert!(
            w.next().now_or_never().is_none(),
            "the open watch has nothing more"
        );
    }

    /// Attempts that each list some objects, then stay open (a silent watch).
    struct Silent(VecDeque<Vec<ConfigMap>>);

    impl Start<ConfigMap> for Silent {
        fn start(&mut self) -> BoxFuture<'_, Result<Events<ConfigMap>, Failure>> {
            let objs = self.0.pop_front().unwrap_or_default();
            let list = objs
                .into_iter()
                .map(Event::InitApply)
                .chain([Event::InitDone]);
            let events = stream::iter(list.map(Ok)).chain(stream::pending());
            future::ready(Ok(events.boxed())).boxed()
        }
    }

    #[tokio::test]
    async fn a_probe_failure_ends_a_silent_attempt() {
        let health = Arc::new(Health::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Failure>();
        let probe = stream::unfold(rx, |mut rx| async { Some((rx.recv().await?, rx)) }).boxed();
        let start = Silent(VecDeque::from([vec![cm("a")], vec![cm("a"), cm("b")]]));
        let report = Reporter::new("cluster/t", health.clone());
        let no_wait = Retry::new(Duration::ZERO, Duration::ZERO);
        let mut w = Watch::build(start, report, no_wait, Some(probe));
        assert_eq!(names(&w.next().await.unwrap()), "replaced[a]");
        assert!(w.next().now_or_never().is_none(), "the attempt is silent");
        assert!(!health.report().1.contains("stale"));
        tx.send(Failure("not answering".into())).unwrap();
        // The silent attempt is dropped: the next one lists again.
        assert_eq!(names(&w.next().await.unwrap()), "replaced[a,b]");
        assert!(health
            .report()
            .1
            .contains("stale: cluster/t (not answering)"));
        assert!(w.next().now_or_never().is_none());
        assert!(!health.report().1.contains("stale"));
    }

    #[test]
    fn retry_doubles_up_to_its_bound_and_resets() {
        let mut r = Retry::default();
        let waits: Vec<u128> = r.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        r.reset();
        assert_eq!(r.next(), Some(MIN_BACKOFF));
    }
}
