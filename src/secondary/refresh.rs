//! The loop of one zone: every `--refresh` (or at once on a NOTIFY), ask every primary for its
//! SOA, follow the one with the newest serial, IXFR from ours (AXFR when IXFR fails or we have
//! nothing), and publish. A primary behind us is ignored; with every primary silent the last
//! zone stays served and the zone is reported stale.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use hickory_proto::rr::Name;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::content::{Content, Refused, ZoneDigest};
use super::metrics::ZoneLabels;
use super::wire::{self, Ask, WireError};
use super::zone_data::{self, newer, FullZone, Received, ZoneData};
use super::{Change, Shared, ZoneWake};
use crate::metrics::TransferLabels;

pub(super) struct ZoneLoop {
    pub shared: Arc<Shared>,
    pub zone: Name,
    pub wake: Arc<ZoneWake>,
    /// The health source name of the zone.
    pub source: String,
    /// The zone as served (None until the first transfer).
    current: Option<ZoneData>,
    /// What we know of its content: the digest sent with IXFR requests (see `content`).
    content: Content,
    /// The newest serial seen at a primary and not loaded yet, and since when.
    pending: Option<(u32, Instant)>,
    /// The serial last warned about per primary that is behind us (one line per serial).
    behind: HashMap<SocketAddr, u32>,
    /// Whether the last round found no primary answering (to log changes only).
    was_stale: bool,
    /// Since when another primary has had a newer serial while ours answered with none.
    ahead_since: Option<Instant>,
}

/// How long a secondary stays with the primary its zone came from while another has a newer
/// serial: the replicas of a primary count serials on their own, so "newer" across them says
/// little, and a switch costs a whole zone unless the other replica's journal had our content
/// (an IXFR by content, see `content`; counted by the primary's `ixfr_content`). Both
/// replicas see the same changes; the one we follow normally has its own newer serial within
/// moments. At most [`STICK_MAX`], in refresh periods.
const STICK_REFRESHES: u32 = 3;
const STICK_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// What a round asks of the next.
enum After {
    /// A transfer a NOTIFY asked for failed: ask every primary now.
    AtOnce,
    /// Up to date, or updated: the next in --refresh.
    Refresh,
    /// A transfer failed or no primary answered: the next later each time (see [`Backoff`]).
    Backoff,
}

/// What a transfer brought that is newer than ours.
type Got = Change;

enum Failure {
    /// Not worth an AXFR from the same primary (it is down).
    Unreachable(String),
    /// The IXFR failed otherwise: an AXFR may still work.
    Other(String),
}

impl ZoneLoop {
    pub fn new(shared: Arc<Shared>, zone: Name, wake: Arc<ZoneWake>) -> ZoneLoop {
        let source = format!("primary {zone}");
        ZoneLoop {
            shared,
            zone,
            wake,
            source,
            current: None,
            content: Content::default(),
            pending: None,
            behind: HashMap::new(),
            was_stale: false,
            ahead_since: None,
        }
    }

    fn labels(&self) -> ZoneLabels {
        ZoneLabels {
            zone: self.zone.to_ascii(),
        }
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.shared
            .metrics
            .secondary
            .transfers
            .get_or_create(&TransferLabels { kind, result })
            .inc();
    }

    pub async fn run(mut self) {
        let mut backoff = Backoff::new(self.shared.refresh);
        loop {
            let wait = match self.round().await {
                After::AtOnce => continue,
                After::Refresh => backoff.succeeded(),
                After::Backoff => backoff.failed(),
            };
            self.shared
                .metrics
                .secondary
                .retry
                .get_or_create(&self.labels())
                .set(wait.as_secs_f64());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notify.notified() => debug!(zone = %self.zone, "refresh on NOTIFY"),
            }
        }
    }

    /// The primary our zone came from, when the last NOTIFY came from it with a newer serial.
    fn hinted(&self) -> Option<(Option<u32>, SocketAddr)> {
        let (ip, serial) = self.wake.hint.lock().unwrap().take()?;
        let cur = self.current.as_ref()?;
        let from = cur.from.filter(|f| f.ip() == ip)?;
        newer(serial, cur.serial()).then_some((Some(serial), from))
    }

    /// One refresh: SOA queries (skipped when a NOTIFY named the serial of the primary our zone
    /// came from), then a transfer from the newest primary that gives one.
    async fn round(&mut self) -> After {
        let hinted = self.hinted();
        let (candidates, reachable, mut errors) = match hinted {
            Some(c) => (vec![c], true, Vec::new()),
            None => self.serials().await,
        };
        let loaded = self.current.is_some();
        let notified = self.wake.at.lock().unwrap().take();
        // Propagation of a change: not counted for the first load.
        if let (Some(&(Some(s), _)), true) = (candidates.first(), loaded) {
            if self.pending.is_none_or(|(p, _)| newer(s, p)) {
                let since = self
                    .pending
                    .map(|(_, t)| t)
                    .into_iter()
                    .chain(notified)
                    .min();
                self.pending = Some((s, since.unwrap_or_else(Instant::now)));
            }
        }
        let mut got = None;
        for (_, primary) in candidates {
            match self.transfer(primary, self.current.as_ref()).await {
                Ok(Some(g)) => {
                    got = Some((primary, g));
                    break;
                }
                Ok(None) => break,
                Err(e) => errors.push(format!("{primary}: {e}")),
            }
        }
        let failed = got.is_none() && !errors.is_empty();
        if let Some((primary, g)) = got {
            self.publish(primary, g);
        }
        if hinted.is_some() && failed {
            debug!(zone = %self.zone, "the transfer a NOTIFY asked for failed: {}", errors.join("; "));
            return After::AtOnce;
        }
        self.report(reachable, self.current.is_some(), &errors);
        if failed || !reachable {
            After::Backoff
        } else {
            After::Refresh
        }
    }

    /// Every primary's serial: those newer than ours, newest first (RFC 1982 order among those
    /// seen); whether any answered; what failed.
    async fn serials(&mut self) -> (Vec<(Option<u32>, SocketAddr)>, bool, Vec<String>) {
        let ours_serial = self.current.as_ref().map(|z| z.serial());
        let loaded = self.current.is_some();
        let key = self.shared.key.as_ref();
        let zone = &self.zone;
        let primaries = self.shared.primaries().await;
        let answers = join_all(
            primaries
                .iter()
                .map(|p| async move { (*p, wire::soa(*p, zone, key).await) }),
        )
        .await;
        let mut candidates: Vec<(Option<u32>, SocketAddr)> = Vec::new();
        let mut errors = Vec::new();
        let from = self.current.as_ref().and_then(|z| z.from);
        let from_answered = answers.iter().any(|(p, a)| Some(*p) == from && a.is_ok());
        for (p, answer) in answers {
            match answer.map(|r| zone_data::serial_of(&r).unwrap_or(0)) {
                Ok(s) if ours_serial.is_none_or(|o| newer(s, o)) => candidates.push((Some(s), p)),
                Ok(s) => {
                    if ours_serial.is_some_and(|o| newer(o, s))
                        && self.behind.insert(p, s) != Some(s)
                    {
                        warn!(zone = %self.zone, primary = %p, serial = s, ours = ?ours_serial,
                            "primary is behind us: ignored");
                    }
                }
                Err(e) => errors.push(format!("{p}: {e}")),
            }
        }
        let reachable = errors.len() < primaries.len();
        if !reachable && !loaded {
            // Nothing loaded yet and no SOA: try the transfers anyway, which says why they fail.
            candidates = primaries.iter().map(|p| (None, *p)).collect();
        }
        // Newest serial first (RFC 1982 order among those seen).
        candidates.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) if newer(x, y) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) if newer(y, x) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        });
        self.stick(&mut candidates, from, from_answered);
        (candidates, reachable, errors)
    }

    /// Puts the primary our zone came from first when it has something newer; when it answers
    /// with nothing newer, waits a little before switching to another (see [`STICK_REFRESHES`]).
    fn stick(
        &mut self,
        candidates: &mut Vec<(Option<u32>, SocketAddr)>,
        from: Option<SocketAddr>,
        from_answered: bool,
    ) {
        let Some(from) = from else { return };
        if let Some(i) = candidates.iter().position(|(_, p)| *p == from) {
            let ours = candidates.remove(i);
            candidates.insert(0, ours);
            self.ahead_since = None;
        } else if from_answered && !candidates.is_empty() {
            let since = *self.ahead_since.get_or_insert_with(Instant::now);
            let stick = (self.shared.refresh * STICK_REFRESHES).min(STICK_MAX);
            if since.elapsed() < stick {
                debug!(zone = %self.zone, primary = %from, "another primary is ahead: staying a while");
                candidates.clear();
            }
        } else {
            self.ahead_since = None;
        }
    }

    /// Staleness, lag and the log line of what failed.
    fn report(&mut self, reachable: bool, loaded: bool, errors: &[String]) {
        let labels = self.labels();
        let stale = !reachable && loaded;
        if stale {
            let why = format!("no primary answers: {}", errors.join("; "));
            if !self.was_stale {
                warn!(zone = %self.zone, "{why}; serving the last zone loaded");
            }
            self.shared.health.set_stale(&self.source, Some(why));
        } else {
            if self.was_stale {
                info!(zone = %self.zone, "a primary answers again");
            }
            self.shared.health.set_stale(&self.source, None);
            if !errors.is_empty() {
                warn!(zone = %self.zone, loaded, "{}", errors.join("; "));
            }
        }
        if !reachable && !loaded {
            warn!(zone = %self.zone, "not loaded yet: {}", errors.join("; "));
        }
        self.was_stale = stale;
        self.shared
            .metrics
            .secondary
            .stale
            .get_or_create(&labels)
            .set(i64::from(stale));
        let lag = self.pending.map_or(0.0, |(_, t)| t.elapsed().as_secs_f64());
        self.shared
            .metrics
            .secondary
            .lag
            .get_or_create(&labels)
            .set(lag);
    }

    /// IXFR from ours (AXFR from the same primary when that fails but the primary answers),
    /// AXFR when we have nothing. From another primary, the IXFR counts only when it matched
    /// our content (see `content`). Ok(None): nothing newer after all.
    async fn transfer(
        &self,
        primary: SocketAddr,
        ours: Option<&ZoneData>,
    ) -> Result<Option<Got>, String> {
        if let Some(cur) = ours {
            match self.ixfr(primary, cur).await {
                Ok(z) => return Ok(z),
                Err(Failure::Unreachable(e)) => return Err(e),
                Err(Failure::Other(e)) => {
                    info!(zone = %self.zone, %primary, "IXFR failed ({e}); trying AXFR");
                }
            }
        }
        let key = self.shared.key.as_ref();
        let got = wire::exchange(primary, &self.zone, Ask::Axfr, key)
            .await
            .map_err(|e| {
                self.count("axfr", e.label());
                format!("AXFR: {e}")
            })?
            .records;
        let z = match zone_data::receive(&self.zone, got, None) {
            Ok(Received::Full(z)) => z,
            Ok(other) => {
                self.count("axfr", "invalid");
                return Err(format!("AXFR: not a full zone ({other:?})"));
            }
            Err(e) => {
                self.count("axfr", "invalid");
                return Err(format!("AXFR: {e}"));
            }
        };
        if let Some(cur) = ours {
            if !newer(z.serial(), cur.serial()) {
                self.count("axfr", "older");
                return Err(format!(
                    "AXFR: serial {} is not newer than ours {}",
                    z.serial(),
                    cur.serial()
                ));
            }
        }
        self.count("axfr", "ok");
        Ok(Some(Got::Full(z)))
    }

    async fn ixfr(&self, primary: SocketAddr, cur: &ZoneData) -> Result<Option<Got>, Failure> {
        let key = self.shared.key.as_ref();
        let ours = self.content.digest().map(ZoneDigest::value);
        let ask = Ask::Ixfr(&cur.soa, ours);
        let got = match wire::exchange(primary, &self.zone, ask, key).await {
            Ok(r) => r,
            Err(e) => {
                self.count("ixfr", e.label());
                return Err(match e {
                    WireError::Io(_) => Failure::Unreachable(format!("IXFR: {e}")),
                    _ => Failure::Other(e.to_string()),
                });
            }
        };
        let same = cur.from == Some(primary);
        let received = self
            .shared
            .receive_ixfr(&self.zone, cur, &self.content, same, got);
        let (g, serial, result) = match received {
            Err(Refused::Mismatch(e)) => {
                self.count("ixfr", "mismatch");
                return Err(Failure::Other(e));
            }
            Err(Refused::Invalid(e)) => {
                self.count("ixfr", "invalid");
                return Err(Failure::Other(e));
            }
            Ok(Received::Incremental { soa, delta }) => {
                let serial = zone_data::serial_of(&soa).unwrap_or(0);
                (Got::TransferDelta { soa, delta }, serial, "ok")
            }
            Ok(Received::Full(z)) => {
                let serial = z.serial();
                (Got::Full(z), serial, "full")
            }
            Ok(Received::UpToDate) => {
                self.count("ixfr", "uptodate");
                return Ok(None);
            }
        };
        if !newer(serial, cur.serial()) {
            self.count("ixfr", "older");
            return Err(Failure::Other(format!(
                "serial {serial} is not newer than ours"
            )));
        }
        self.count("ixfr", result);
        Ok(Some(g))
    }

    /// Serves what a transfer brought: only the records it changed are looked at (all of them
    /// for a whole zone, which is compared with ours).
    fn publish(&mut self, primary: SocketAddr, got: Got) {
        let soa = match &got {
            Got::Full(FullZone { soa, .. }) | Got::TransferDelta { soa, .. } => soa.clone(),
        };
        let dropped = self.shared.apply(&self.zone, got, &mut self.content);
        self.current = Some(ZoneData {
            from: Some(primary),
            soa,
        });
        if !dropped.is_empty() {
            warn!(zone = %self.zone, %primary, ?dropped, "records of types globaldns does not serve: dropped");
        }
        let serial = self.current.as_ref().map_or(0, |z| z.serial());
        info!(zone = %self.zone, %primary, serial, "loaded");
        let labels = self.labels();
        self.shared
            .metrics
            .secondary
            .serial
            .get_or_create(&labels)
            .set(i64::from(serial));
        if let Some((_, since)) = self.pending.take() {
            self.shared
                .metrics
                .zone
                .propagation
                .observe(since.elapsed().as_secs_f64());
        }
        self.shared
            .metrics
            .secondary
            .lag
            .get_or_create(&labels)
            .set(0.0);
    }
}
