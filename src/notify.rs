//! A primary's side of zone transfer besides the transfer itself: which secondaries transferred
//! recently, and NOTIFY (RFC 1996) to them and to `--notify` targets on every new serial, retried
//! until answered. Pods come and go, so secondaries need not be listed: one that transferred in
//! the last day is notified on the primary's own DNS port (a secondary transfers only when the
//! zone changed, so a quiet day must not make it forgotten; one that is gone costs a few
//! unanswered datagrams per change until then).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, TransferLabels};
use crate::published::Published;
use crate::tsig::TsigKey;
use crate::zone::unix_now;

/// How long a secondary that transferred keeps being notified.
const RECENT: Duration = Duration::from_secs(24 * 3600);
/// NOTIFY attempts per (target, zone, serial), and the first wait for an answer (doubled each
/// time): 1 + 2 + 4 + 8 + 16 s.
const ATTEMPTS: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Transfers served, and who asked for them.
#[derive(Default)]
pub struct Transfers {
    recent: Mutex<HashMap<IpAddr, Instant>>,
    metrics: Option<Arc<Metrics>>,
}

impl Transfers {
    pub fn new(metrics: Arc<Metrics>) -> Transfers {
        Transfers {
            recent: Mutex::default(),
            metrics: Some(metrics),
        }
    }

    /// Counts a transfer of `kind` asked of us by its `result`.
    pub fn count(&self, kind: &'static str, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.transfer
                .served
                .get_or_create(&TransferLabels { kind, result })
                .inc();
        }
    }

    /// A transfer of `kind` (`axfr` or `ixfr`) sent to `client`.
    pub fn served(&self, kind: &'static str, client: IpAddr) {
        self.count(kind, "served");
        self.recent.lock().unwrap().insert(client, Instant::now());
    }

    pub fn refused(&self, kind: &'static str) {
        self.count(kind, "refused");
    }

    /// Clients that transferred within [`RECENT`] (older ones are forgotten).
    pub fn recent(&self) -> Vec<IpAddr> {
        let mut recent = self.recent.lock().unwrap();
        recent.retain(|_, at| at.elapsed() < RECENT);
        recent.keys().copied().collect()
    }
}

/// What the notifier needs.
pub struct Notifier {
    pub published: Arc<Published>,
    pub transfers: Arc<Transfers>,
    /// `--notify` targets.
    pub targets: Vec<SocketAddr>,
    /// The port recent transfer clients are notified on (the primary's own DNS port).
    pub port: u16,
    /// Our own DNS listeners: a client on our own address (a secondary beside us on loopback)
    /// must not make us NOTIFY ourselves.
    pub own: Vec<SocketAddr>,
    pub key: Option<TsigKey>,
    pub metrics: Arc<Metrics>,
}

impl Notifier {
    /// Runs until the process ends: on every new serial, every zone is notified to every target.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut changed = this.published.subscribe();
        // Not the placeholder's serial: the first load's may be the same number (a restart
        // continuing its journal), and secondaries must hear of it.
        let mut last = None;
        while changed.changed().await.is_ok() {
            let snap = this.published.load_full();
            if !snap.loaded || Some(snap.serial) == last {
                continue;
            }
            let serial = snap.serial;
            last = Some(serial);
            let mut targets: BTreeSet<SocketAddr> = this.targets.iter().copied().collect();
            targets.extend(
                this.transfers
                    .recent()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, this.port)),
            );
            targets.retain(|t| !is_own(t, &this.own));
            debug!(serial, targets = targets.len(), "sending NOTIFY");
            for zone in snap.apex_names() {
                for target in &targets {
                    tokio::spawn(this.clone().notify(
                        target.to_owned(),
                        zone.clone().into(),
                        serial,
                    ));
                }
            }
        }
    }

    /// Sends one NOTIFY until it is answered, a newer serial supersedes it, or attempts run out.
    async fn notify(
        self: Arc<Self>,
        target: SocketAddr,
        zone: hickory_proto::rr::Name,
        serial: u32,
    ) {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            warn!(%target, "cannot open a socket for NOTIFY");
            return;
        };
        let mut wait = FIRST_WAIT;
        for attempt in 1..=ATTEMPTS {
            if self.published.load().serial != serial {
                return; // a newer serial has its own NOTIFYs
            }
            let id: u16 = rand_id();
            let Some(bytes) = self.message(id, &zone, serial) else {
                return;
            };
            if socket.send_to(&bytes, target).await.is_ok() {
                self.count("sent");
                if answered(&socket, id, wait).await {
                    debug!(%target, %zone, serial, attempt, "NOTIFY answered");
                    return;
                }
            }
            wait *= 2;
        }
        self.count("unanswered");
        info!(%target, %zone, serial, "NOTIFY not answered; the secondary will find the serial on its refresh");
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .transfer
            .notifies
            .get_or_create(&TransferLabels {
                kind: "notify-out",
                result,
            })
            .inc();
    }

    /// The NOTIFY message: opcode NOTIFY, AA, the zone's SOA question (RFC 1996 §3) and, as a
    /// hint, the SOA of `serial` in the answer section (§3.7: a secondary whose zone came from
    /// us can transfer at once instead of asking every primary), signed when a TSIG key is set.
    fn message(&self, id: u16, zone: &hickory_proto::rr::Name, serial: u32) -> Option<Vec<u8>> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
        m.metadata.authoritative = true;
        let mut q = Query::query(zone.clone(), RecordType::SOA);
        q.set_query_class(DNSClass::IN);
        m.add_query(q);
        let snap = self.published.load();
        if let Some(soa) = snap.soa(&zone.into()).filter(|_| snap.serial == serial) {
            m.add_answer(soa.clone());
        }
        if let Some(key) = &self.key {
            if let Err(e) = m.finalize(&key.signer(), unix_now()) {
                warn!(error = %e, "cannot sign NOTIFY");
                return None;
            }
        }
        m.to_vec().ok()
    }
}

/// Whether `target` is one of our listeners (a wildcard listener is reached on loopback).
fn is_own(target: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|o| {
        o.port() == target.port()
            && (o.ip() == target.ip() || (o.ip().is_unspecified() && target.ip().is_loopback()))
    })
}

/// Waits up to `wait` for the answer to NOTIFY `id`.
async fn answered(socket: &UdpSocket, id: u16, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        else {
            return false;
        };
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id
                && m.metadata.message_type == MessageType::Response
                && m.metadata.op_code == OpCode::Notify
            {
                return true;
            }
        }
    }
}

/// A message ID nobody can predict from the last one (answers are matched on it).
fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listeners_are_not_notified() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let own = [a("127.0.0.1:5353"), a("0.0.0.0:53")];
        assert!(is_own(&a("127.0.0.1:5353"), &own));
        assert!(
            is_own(&a("127.0.0.2:53"), &own),
            "the wildcard, on loopback"
        );
        assert!(!is_own(&a("127.0.0.1:5354"), &own));
        assert!(!is_own(&a("10.0.0.7:53"), &own), "another node's secondary");
        assert!(!is_own(&a("10.0.0.7:5353"), &own));
    }
}
