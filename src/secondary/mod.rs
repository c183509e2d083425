//! Secondary mode (`serve --primary HOST:PORT`): the zones come from primaries by zone transfer
//! (AXFR, IXFR; TSIG-signed with `--tsig-key`) instead of from ServiceEntries, and are answered
//! through the same snapshot, answer engine and UDP fast path as a primary's.
//!
//! `wire` talks to a primary, `zone_data` checks what it sent, `refresh` is the per-zone loop,
//! `convert` turns the records into a snapshot. Nothing is published until every zone has been
//! loaded once (before that, SERVFAIL and `/readyz` 503); after that a zone whose primaries all
//! stop answering keeps its last content and is reported stale.

mod backoff;
mod content;
mod convert;
pub mod metrics;
mod refresh;
mod replay;
mod wire;
mod zone_data;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hickory_proto::rr::{Name, Record, TSigner};
use ipnet::IpNet;
use tracing::warn;

use crate::config::ServeArgs;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::published::Published;
use crate::zone::{reverse_zone_for, ZoneConfig};
use content::{Content, Refused};
use convert::{Assembler, Dropped};
use wire::Exchanged;
use zone_data::{FullZone, Received, TransferDelta, ZoneData};

pub use replay::{replay_transfers, REPLAY_ID};
pub use zone_data::newer as serial_newer;

/// Refuses flags that make no sense for a secondary.
pub fn check_args(args: &ServeArgs) -> Result<()> {
    if args.kube.enabled() {
        bail!(
            "--primary (secondary mode) cannot be combined with Kubernetes flags (--in-cluster, \
             --cluster, --remote-secrets, --store kube): a secondary's zones come from its primaries"
        );
    }
    Ok(())
}

/// What the secondary needs from `serve`.
pub struct SecondaryContext {
    pub zone: ZoneConfig,
    pub ranges: Vec<IpNet>,
    /// `HOST:PORT`, resolved at every refresh.
    pub primaries: Vec<String>,
    pub key: Option<crate::tsig::TsigKey>,
    pub refresh: Duration,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub published: Arc<Published>,
}

/// Wakes the loop of a zone at once, e.g. on a NOTIFY from a primary (RFC 1996). Cheap to
/// clone.
#[derive(Clone)]
pub struct Trigger {
    zones: Arc<Vec<(Name, Arc<ZoneWake>)>>,
    /// The primaries' addresses as last resolved: a NOTIFY is accepted from these only.
    resolved: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Trigger {
    /// Starts a refresh of `zone` now; false when it is not one of ours. The time of the first
    /// call since the last refresh is where `globaldns_propagation_seconds` starts counting.
    pub fn notify(&self, zone: &Name) -> bool {
        self.notify_from(zone, None)
    }

    /// [`Trigger::notify`] for a NOTIFY from `from` that carried the primary's new `serial`
    /// (RFC 1996 §3.7): when our zone came from that primary and the serial is newer, the
    /// refresh skips asking every primary for its SOA and transfers from it at once.
    pub fn notify_from(&self, zone: &Name, from: Option<(std::net::IpAddr, u32)>) -> bool {
        let Some((_, wake)) = self.zones.iter().find(|(z, _)| z == zone) else {
            return false;
        };
        wake.at.lock().unwrap().get_or_insert_with(Instant::now);
        *wake.hint.lock().unwrap() = from;
        wake.notify.notify_one();
        true
    }

    /// Whether `ip` is one of the primaries (as last resolved).
    pub fn is_primary(&self, ip: std::net::IpAddr) -> bool {
        self.resolved.lock().unwrap().iter().any(|p| p.ip() == ip)
    }

    /// The zones this secondary serves.
    pub fn zones(&self) -> impl Iterator<Item = &Name> {
        self.zones.iter().map(|(z, _)| z)
    }
}

#[derive(Default)]
struct ZoneWake {
    notify: tokio::sync::Notify,
    at: Mutex<Option<Instant>>,
    /// The sender and serial of the last NOTIFY that carried one.
    hint: Mutex<Option<(std::net::IpAddr, u32)>>,
}

/// What every zone loop shares: the primaries and the snapshot being built.
struct Shared {
    primaries: Vec<String>,
    /// Their addresses as last resolved (kept when a lookup fails).
    resolved: Arc<Mutex<Vec<SocketAddr>>>,
    key: Option<TSigner>,
    refresh: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    published: Arc<Published>,
    zone_count: usize,
    state: Mutex<State>,
}

struct State {
    assembler: Assembler,
    /// The zones applied at least once.
    loaded: BTreeSet<Name>,
}

impl Shared {
    /// The primaries' addresses now: every address of every `HOST:PORT`, looked up again each
    /// time (pods of a headless Service come and go); the last good answer when a lookup fails.
    async fn primaries(&self) -> Vec<SocketAddr> {
        let mut now = Vec::new();
        let mut failed = false;
        for spec in &self.primaries {
            match tokio::net::lookup_host(spec.as_str()).await {
                Ok(addrs) => now.extend(addrs),
                Err(e) => {
                    tracing::warn!(primary = %spec, error = %e, "cannot resolve a primary");
                    failed = true;
                }
            }
        }
        now.sort();
        now.dedup();
        let mut resolved = self.resolved.lock().unwrap();
        if now.is_empty() && failed {
            return resolved.clone();
        }
        *resolved = now.clone();
        now
    }

    /// Checks the answer to an IXFR of `zone` (see `content::receive_ixfr`): its deletions
    /// against what the snapshot's builder holds.
    fn receive_ixfr(
        &self,
        zone: &Name,
        cur: &ZoneData,
        ours: &Content,
        same: bool,
        got: Exchanged,
    ) -> Result<Received, Refused> {
        let st = self.state.lock().unwrap();
        content::receive_ixfr(zone, cur, ours, same, got, &st.assembler)
    }

    /// Applies a zone's change and publishes once every zone is loaded; returns the types of
    /// the records it brought that are not served. After a large change the pages it freed (a
    /// whole zone's records, the hosts replaced) are handed back. `content` becomes the
    /// zone's after the change (worked out from the zone before it: see `content`).
    fn apply(&self, apex: &Name, change: Change, content: &mut Content) -> Dropped {
        let mut st = self.state.lock().unwrap();
        let first = st.loaded.insert(apex.clone());
        let full = matches!(change, Change::Full(_));
        let (dropped, records) = apply_change(&mut st.assembler, apex, change, content);
        let large = records > 10_000;
        if first && large {
            st.assembler.compact();
        }
        if st.loaded.len() == self.zone_count {
            let snap = st.assembler.snapshot();
            let (missing, extra) = match full {
                true => st.assembler.ptr_difference(apex, &snap),
                false => (0, 0),
            };
            if missing + extra > 0 {
                // Expected for a moment after a change (the zones are transferred one by one).
                warn!(zone = %apex, missing, extra,
                    "the primary's PTR records differ from those derived from the forward zones");
            }
            self.metrics
                .zone
                .hosts_served
                .set(snap.served_hosts() as i64);
            // Under the lock: the zone loops run concurrently, and a snapshot taken before
            // another loop's change must not be published after that loop's.
            self.published.publish(snap);
            self.health.set_published();
            for z in &st.loaded {
                self.health.synced(&format!("primary {z}"));
            }
        }
        drop(st);
        if large {
            crate::memory::release_now();
            crate::memory::release_when_idle();
        }
        dropped
    }
}

/// A zone's change as transferred.
enum Change {
    /// An IXFR's netted deltas and the new SOA.
    TransferDelta { soa: Record, delta: TransferDelta },
    /// A whole zone.
    Full(FullZone),
}

/// Applies a zone's change to what `assembler` serves; `content` becomes the zone's after it
/// (worked out from the zone before it: see `content`). Returns the types of the records not
/// served and how many records the change brought.
fn apply_change(
    assembler: &mut Assembler,
    apex: &Name,
    change: Change,
    content: &mut Content,
) -> (Dropped, usize) {
    match change {
        Change::TransferDelta { soa, delta } => {
            *content = content.after(apex, &delta, assembler);
            (assembler.apply(apex, &soa, &delta), delta.added.len())
        }
        Change::Full(z) => {
            *content = Content::of(apex, &z);
            let records = z.len();
            (assembler.replace(apex, z), records)
        }
    }
}

/// The zones served with these flags (as a primary with them serves): the `--zone`s, the
/// reverse zones of the VIP ranges, the `--reverse-zone`s.
fn zone_names(cfg: &ZoneConfig, ranges: &[IpNet]) -> Vec<Name> {
    let mut out: Vec<Name> = Vec::new();
    let parsed = cfg
        .zones
        .iter()
        .chain(&cfg.reverse_zones)
        .filter_map(|z| Name::from_ascii(z.trim_end_matches('.')).ok());
    for mut n in parsed.chain(ranges.iter().map(reverse_zone_for)) {
        n.set_fqdn(true);
        let n = n.to_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Starts one refresh loop per zone on the current tokio runtime.
pub fn start(ctx: SecondaryContext) -> Trigger {
    let zones = zone_names(&ctx.zone, &ctx.ranges);
    let resolved: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let shared = Arc::new(Shared {
        primaries: ctx.primaries,
        resolved: resolved.clone(),
        key: ctx.key.map(|k| k.signer()),
        refresh: ctx.refresh,
        metrics: ctx.metrics,
        health: ctx.health,
        published: ctx.published,
        zone_count: zones.len(),
        state: Mutex::new(State {
            assembler: Assembler::new(&ctx.zone, &ctx.ranges),
            loaded: BTreeSet::new(),
        }),
    });
    let wakes: Vec<(Name, Arc<ZoneWake>)> = zones
        .into_iter()
        .map(|z| (z, Arc::new(ZoneWake::default())))
        .collect();
    for (zone, wake) in &wakes {
        let l = refresh::ZoneLoop::new(shared.clone(), zone.clone(), wake.clone());
        shared.health.expect(&l.source);
        tokio::spawn(l.run());
    }
    Trigger {
        zones: Arc::new(wakes),
        resolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every SOA/AXFR with an empty zone at `serial`.
    async fn primary(serial: Arc<AtomicU32>) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut len = [0u8; 2];
                c.read_exact(&mut len).await.unwrap();
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                c.read_exact(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf).unwrap();
                let zone = q.queries[0].name().clone();
                let n = |s: &str| Name::from_ascii(s).unwrap();
                let s = serial.load(Ordering::SeqCst);
                let soa = Record::from_rdata(
                    zone,
                    30,
                    RData::SOA(SOA::new(n("ns.global."), n("h.global."), s, 1, 1, 1, 30)),
                );
                let mut m = Message::response(q.metadata.id, OpCode::Query);
                m.add_query(q.queries[0].clone());
                m.add_answer(soa.clone());
                if q.queries[0].query_type() != RecordType::SOA {
                    m.add_answer(soa);
                }
                let out = m.to_vec().unwrap();
                c.write_all(&(out.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                c.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    /// Two zone loops applying at once: whatever the interleaving, the snapshot published last
    /// holds every change of both (a snapshot taken before one loop's change must not be
    /// published after it).
    #[test]
    fn concurrent_zone_loops_publish_every_change() {
        let cfg = ZoneConfig {
            zones: vec!["global".into(), "mesh".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let published = Arc::new(Published::new(crate::zone::Snapshot::empty(&cfg, &[])));
        let shared = Arc::new(Shared {
            primaries: vec![],
            resolved: Arc::default(),
            key: None,
            refresh: Duration::from_secs(3600),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            published: published.clone(),
            zone_count: 2,
            state: Mutex::new(State {
                assembler: Assembler::new(&cfg, &[]),
                loaded: BTreeSet::new(),
            }),
        });
        let n = |s: &str| Name::from_ascii(s).unwrap();
        const CHANGES: u16 = 1000;
        let loops: Vec<_> = ["global.", "mesh."]
            .into_iter()
            .map(|zone| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let apex = n(zone);
                    for i in 0..CHANGES {
                        let soa = SOA::new(
                            n("ns.global."),
                            n("h.global."),
                            u32::from(i) + 1,
                            1,
                            1,
                            1,
                            30,
                        );
                        let soa = Record::from_rdata(apex.clone(), 30, RData::SOA(soa));
                        let host = n(&format!("h{i}.{zone}"));

                        let [hi, lo] = i.to_be_bytes();
                        let data = RData::A(hickory_proto::rr::rdata::A::new(240, 10, hi, lo));
                        let delta = TransferDelta {
                            removed: vec![],
                            added: vec![((host.into(), data), 30)],
                        };
                        shared.apply(
                            &apex,
                            Change::TransferDelta { soa, delta },
                            &mut Content::default(),
                        );
                        // Seen at once, and not taken back by the other loop's publish.
                        let snap = shared.published.load();
                        let name = format!("h{i}.{}", zone.trim_end_matches('.'));
                        assert!(snap.host(&name).is_some() || !snap.loaded, "{name}");
                    }
                })
            })
            .collect();
        for l in loops {
            l.join().unwrap();
        }
        assert_eq!(published.load().served_hosts(), 2 * usize::from(CHANGES));
    }

    #[tokio::test]
    async fn a_notify_refreshes_at_once() {
        let serial = Arc::new(AtomicU32::new(5));
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let published = Arc::new(Published::new(crate::zone::Snapshot::empty(&cfg, &[])));
        let mut changed = published.subscribe();
        let trigger = start(SecondaryContext {
            zone: cfg,
            ranges: vec![],
            primaries: vec![primary(serial.clone()).await.to_string()],
            key: None,
            // Never, within the test: only the NOTIFY can bring serial 6.
            refresh: Duration::from_secs(3600),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            published: published.clone(),
        });
        // A broken wake-up fails here rather than hanging the test run.
        let limit = Duration::from_secs(30);
        tokio::time::timeout(limit, changed.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(published.load().apex_names().len(), 1);
        let serial_of = |p: &Published| {
            let snap = p.load_full();
            let soa = snap.zone_records(&Name::from_ascii("global.").unwrap().into());
            zone_data::serial_of(&soa[0])
        };
        assert_eq!(serial_of(&published), Some(5));

        assert!(!trigger.notify(&Name::from_ascii("example.").unwrap()));
        serial.store(6, Ordering::SeqCst);
        assert!(trigger.notify(&Name::from_ascii("GLOBAL.").unwrap()));
        tokio::time::timeout(limit, changed.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(serial_of(&published), Some(6));
    }
}

#[cfg(test)]
mod rollout_tests;
