//! Secondary mode (`serve --primary HOST:PORT`): the zones come from primaries by zone transfer
//! (AXFR, IXFR; TSIG-signed with `--tsig-key`) instead of from ServiceEntries, and are answered
//! through the same snapshot, answer engine and UDP fast path as a primary's.
//!
//! `wire` talks to a primary, `zone_data` checks what it sent, `refresh` is the per-zone loop,
//! `convert` turns the records into a snapshot. Nothing is published until every zone has been
//! loaded once (before that, SERVFAIL and `/readyz` 503); after that a zone whose primaries all
//! stop answering keeps its last content and is reported stale.

mod convert;
mod refresh;
mod replay;
mod wire;
mod zone_data;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hickory_proto::rr::{Name, RecordType, TSigner};
use ipnet::IpNet;
use tracing::warn;

use crate::config::ServeArgs;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::published::Published;
use crate::zone::{reverse_zone_for, ZoneConfig};
use convert::Assembler;
use zone_data::ZoneData;

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
pub struct Context {
    pub zone: ZoneConfig,
    pub ranges: Vec<IpNet>,
    pub primaries: Vec<SocketAddr>,
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
}

impl Trigger {
    /// Starts a refresh of `zone` now; false when it is not one of ours. The time of the first
    /// call since the last refresh is where `globaldns_propagation_seconds` starts counting.
    pub fn notify(&self, zone: &Name) -> bool {
        let Some((_, wake)) = self.zones.iter().find(|(z, _)| z == zone) else {
            return false;
        };
        wake.at.lock().unwrap().get_or_insert_with(Instant::now);
        wake.notify.notify_one();
        true
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
}

/// What every zone loop shares: the primaries and the snapshot being built.
struct Shared {
    primaries: Vec<SocketAddr>,
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
    zones: BTreeMap<Name, Arc<ZoneData>>,
}

impl Shared {
    fn zone(&self, zone: &Name) -> Option<Arc<ZoneData>> {
        self.state.lock().unwrap().zones.get(zone).cloned()
    }

    fn dropped(&self, zone: &ZoneData) -> BTreeMap<RecordType, usize> {
        self.state.lock().unwrap().assembler.dropped(zone)
    }

    /// Makes `z` the zone served, and publishes once every zone is loaded.
    fn install(&self, z: ZoneData) {
        let mut st = self.state.lock().unwrap();
        st.zones.insert(z.apex.clone(), Arc::new(z));
        if st.zones.len() < self.zone_count {
            return;
        }
        let State { assembler, zones } = &mut *st;
        let snap = assembler.build(zones.values().map(|z| &**z));
        for z in zones.values() {
            let (missing, extra) = assembler.ptr_difference(z, &snap);
            if missing + extra > 0 {
                // Expected for a moment after a change (the zones are transferred one by one).
                warn!(zone = %z.apex, missing, extra,
                    "the primary's PTR records differ from those derived from the forward zones");
            }
        }
        self.metrics.hosts_served.set(snap.served_hosts() as i64);
        self.published.publish(snap);
        self.health.set_published();
        for apex in zones.keys() {
            self.health.synced(&format!("primary {apex}"));
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
pub fn start(ctx: Context) -> Trigger {
    let zones = zone_names(&ctx.zone, &ctx.ranges);
    let shared = Arc::new(Shared {
        primaries: ctx.primaries,
        key: ctx.key.map(|k| k.signer()),
        refresh: ctx.refresh,
        metrics: ctx.metrics,
        health: ctx.health,
        published: ctx.published,
        zone_count: zones.len(),
        state: Mutex::new(State {
            assembler: Assembler::new(&ctx.zone, &ctx.ranges),
            zones: BTreeMap::new(),
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
    }
}
