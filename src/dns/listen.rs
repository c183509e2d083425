//! Listeners: UDP and TCP on one address, and the hickory-server instances serving them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::op::MessageType;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::tcp_io::{read_message, Responder, Writer};
use super::Handler;
use crate::metrics::{KindLabels, Metrics};

/// Binds UDP with `bind_udp` (which returns its socket(s) and the address they got), then TCP on
/// that address. With port 0 the TCP port is the one UDP got: when it is taken for TCP, both
/// are bound again on another.
pub async fn bind_pair<U>(
    addr: SocketAddr,
    mut bind_udp: impl FnMut(SocketAddr) -> Result<(U, SocketAddr)>,
) -> Result<(U, TcpListener)> {
    for _ in 0..20 {
        let (udp, bound) = bind_udp(addr)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => {
                warn!(error = %e, port = bound.port(), "TCP port taken, trying another");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind TCP {addr}")),
        }
    }
    anyhow::bail!(
        "could not find a free port for UDP and TCP on {}",
        addr.ip()
    )
}

/// One UDP socket (hickory-server's loop) and TCP on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    bind_pair(addr, |addr| {
        let udp =
            std::net::UdpSocket::bind(addr).with_context(|| format!("cannot bind UDP {addr}"))?;
        udp.set_nonblocking(true)?;
        let bound = udp.local_addr()?;
        Ok((UdpSocket::from_std(udp)?, bound))
    })
    .await
}

/// How many connections a listener keeps open, and how long an idle one lives (TCP and gRPC).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionCap {
    /// Open connections per listener. TCP: a new one beyond it closes the one idle longest;
    /// gRPC: a new one beyond it is closed at once.
    pub max: usize,
    /// A connection with nothing asked for this long is closed; zero (gRPC only): never.
    pub idle_timeout: Duration,
}

impl ConnectionCap {
    /// From the flags' values (`--*-max-connections` is at least 1).
    pub fn new(max: u32, idle_timeout: Duration) -> ConnectionCap {
        ConnectionCap {
            max: max as usize,
            idle_timeout,
        }
    }
}

/// Bounds on DNS TCP clients (`--tcp-max-connections`, `--tcp-idle-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub connections: ConnectionCap,
    /// SO_SNDBUF of each connection; 0: the kernel's own (autotuned).
    pub send_buffer: usize,
}

/// The DNS servers of one `--listen` address: TCP (our accept loop) and, without the fast path,
/// hickory-server's UDP loop.
pub struct Listeners {
    udp: Option<Server<Handler>>,
    tcp: JoinHandle<()>,
}

impl Listeners {
    pub async fn shutdown(self) {
        self.tcp.abort();
        if let Some(mut udp) = self.udp {
            let _ = udp.shutdown_gracefully().await;
        }
    }
}

/// TCP only: UDP is answered by the fast path.
pub fn tcp_server(handler: Handler, tcp: TcpListener, limits: TcpLimits) -> Listeners {
    Listeners {
        udp: None,
        tcp: tokio::spawn(accept_loop(handler, tcp, limits)),
    }
}

pub fn server(handler: Handler, udp: UdpSocket, tcp: TcpListener, limits: TcpLimits) -> Listeners {
    let mut server = Server::new(handler.clone());
    server.register_socket(udp);
    Listeners {
        udp: Some(server),
        tcp: tokio::spawn(accept_loop(handler, tcp, limits)),
    }
}

/// One open connection: whether a request is being answered, and when it last finished one.
struct Conn {
    busy: AtomicBool,
    last_active: AtomicU64,
    close: Notify,
}

/// The open connections. hickory-server's own TCP loop has an idle timeout but no cap: this is
/// that loop with one.
#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Orders accepts and finished requests: the smallest `last_active` is idle longest.
    clock: AtomicU64,
}

impl Conns {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a new connection, first closing the one idle longest when `max` are open.
    /// None when all `max` are answering a request: the new one is refused.
    fn admit(&self, id: u64, max: usize, metrics: &Metrics) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap();
        if open.len() >= max {
            let idlest = open
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::Relaxed))
                .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let Some(evict) = idlest else {
                closed(metrics, "refused");
                return None;
            };
            if let Some(c) = open.remove(&evict) {
                // Stored as a permit if its task is not waiting yet.
                c.close.notify_one();
                closed(metrics, "evicted");
            }
        }
        let conn = Arc::new(Conn {
            busy: AtomicBool::new(false),
            last_active: AtomicU64::new(self.tick()),
            close: Notify::new(),
        });
        open.insert(id, conn.clone());
        metrics.dns.tcp_connections.set(open.len() as i64);
        Some(conn)
    }

    fn remove(&self, id: u64, metrics: &Metrics) {
        let mut open = self.open.lock().unwrap();
        open.remove(&id);
        metrics.dns.tcp_connections.set(open.len() as i64);
    }
}

fn closed(metrics: &Metrics, kind: &'static str) {
    metrics
        .dns
        .tcp_closed
        .get_or_create(&KindLabels { kind })
        .inc();
}

async fn accept_loop(handler: Handler, listener: TcpListener, limits: TcpLimits) {
    let conns = Arc::new(Conns::default());
    let max = limits.connections.max.max(1);
    for id in 0u64.. {
        let (stream, src) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or a connection reset before accept: keep accepting.
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(conn) = conns.admit(id, max, &handler.metrics) else {
            continue;
        };
        let (handler, conns) = (handler.clone(), conns.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = conn.close.notified() => {}
                _ = serve_connection(&handler, &conns, &conn, stream, src, limits) => {}
            }
            conns.remove(id, &handler.metrics);
        });
    }
}

/// Reads length-prefixed messages and answers each in turn, as hickory-server does, until the
/// client closes, sends garbage framing, or is idle for `idle` (also while a response waits for
/// the client to read: a transfer to a client that stopped reading ends).
async fn serve_connection(
    handler: &Handler,
    conns: &Conns,
    conn: &Conn,
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    limits: TcpLimits,
) {
    let idle = limits.connections.idle_timeout;
    if limits.send_buffer > 0 {
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer) {
            debug!(%src, error = %e, "cannot set the TCP send buffer");
        }
    }
    let (mut read, write) = stream.into_split();
    let writer = Writer::new(write, idle);
    loop {
        let packet = match read_message(&mut read, idle).await {
            Ok(Some(packet)) => packet,
            Ok(None) => return,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    closed(&handler.metrics, "idle");
                }
                debug!(%src, error = %e, "TCP connection closed");
                return;
            }
        };
        conn.busy.store(true, Ordering::Relaxed);
        answer(handler, packet, src, &writer).await;
        conn.last_active.store(conns.tick(), Ordering::Relaxed);
        conn.busy.store(false, Ordering::Relaxed);
    }
}

/// One message of a TCP connection, through the same rules as hickory-server's loop.
async fn answer(handler: &Handler, packet: Vec<u8>, src: SocketAddr, writer: &Writer) {
    let request = match Request::from_bytes(packet.clone(), src, Protocol::Tcp) {
        Ok(r) => r,
        Err(_) => {
            if let Some(bytes) = handler.unparsable(&packet, super::Transport::Tcp) {
                let _ = writer.write(&bytes).await;
            }
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        handler.dropped("response");
        return;
    }
    let response = Responder {
        writer: writer.clone(),
        peer: src,
    };
    handler
        .handle_request::<_, TokioTime>(&request, response)
        .await;
}
