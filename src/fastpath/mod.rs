//! The fast UDP path: one SO_REUSEPORT socket and thread per worker ([`socket`]), batched
//! `recvmmsg`/`sendmmsg` ([`mmsg`]), and answers cached as wire bytes per (lower-case name,
//! type, EDNS payload, DO bit) ([`cache`]), so that a hit only patches the ID, the RD/CD bits, the
//! question and the answer owners (the query's case). A publish forgets only what it changed.
//!
//! Every answer is first produced by the general path ([`Handler::wire`], the same rules
//! hickory-server runs for TCP), so the fast path cannot disagree with it: it only replays bytes.
//! Anything unusual (EDNS options or version > 0, other opcodes or classes, several questions,
//! trailing bytes, transfers) goes to the general path every time and is never cached.

mod cache;
mod mmsg;
mod socket;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use tracing::info;

use crate::dns::{Handler, Transport};
pub use cache::{shape, QueryShape, Responder};
pub use mmsg::{arrival_ns, realtime_ns, worker, Answerer};
pub use socket::{bind, bind_reuseport, stamp_arrivals, warn_if_ephemeral};

impl Answerer for Responder {
    fn begin_batch(&mut self) {
        Responder::begin_batch(self);
    }
    fn answer(&mut self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        Responder::answer(self, packet, src, out)
    }
    fn end_batch(
        &mut self,
        latency: std::time::Duration,
        answered: usize,
        waits: &[std::time::Duration],
    ) {
        self.flush_metrics(latency, answered, waits);
    }
}

/// The general path on raw bytes: what hickory-server would send for this packet, or None when
/// it would send nothing (shorter than a header, or a response).
pub fn general(
    handler: &Handler,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    handler.wire_on(packet, src, transport).map(|w| w.bytes)
}

/// Starts one thread per socket. They run until `stop` is set.
pub fn spawn(
    sockets: Vec<std::net::UdpSocket>,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let n = sockets.len();
    for (i, socket) in sockets.into_iter().enumerate() {
        let handler = handler.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("udp-{i}"))
            .spawn(move || mmsg::worker(socket, Responder::new(handler), stop))?;
    }
    info!(workers = n, "UDP fast path running");
    Ok(())
}
