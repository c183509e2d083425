//! gRPC connections: the cap on open ones (`--grpc-max-connections`) and the close of idle ones
//! (`--grpc-idle-timeout`), which tonic's server has neither of. Each accepted socket is wrapped
//! in a [`Conn`]; the calls on it hold a [`Busy`] while they run, so that a connection is idle
//! only when no call is in flight, whatever HTTP/2 PINGs keep passing on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TlsConnectInfo};
use tracing::warn;

use crate::metrics::{KindLabels, Metrics};

/// A connection that read bytes this recently is not closed as idle: they may be a call whose
/// task has not started yet (hyper runs each stream as a task of its own).
const READ_GRACE: Duration = Duration::from_secs(1);

/// What a connection's calls share with it.
pub struct Activity {
    pub peer: SocketAddr,
    in_flight: AtomicUsize,
    /// When the last call ended (or the connection opened), in ms since `epoch`.
    last_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new(peer: SocketAddr) -> Activity {
        Activity {
            peer,
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection will have been idle for `idle`; None while a call runs.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last + idle)
    }
}

/// The connection info tonic puts in each request's extensions.
#[derive(Clone)]
pub struct ConnInfo(Arc<Activity>);

/// Held by a call while it runs: its connection is not idle.
pub struct Busy(Arc<Activity>);

impl Busy {
    /// The call's connection, from the request's extensions (plaintext or TLS).
    pub fn of(extensions: &http::Extensions) -> Option<Busy> {
        let info = extensions.get::<ConnInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<ConnInfo>>()
                .map(|t| t.get_ref())
        })?;
        info.0.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Busy(info.0.clone()))
    }

    pub fn peer(&self) -> SocketAddr {
        self.0.peer
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted socket, holding one of `--grpc-max-connections` slots until it is dropped. Its
/// reads end (EOF) once no call has run on it for the idle timeout: hyper then closes it.
pub struct Conn {
    io: TcpStream,
    activity: Arc<Activity>,
    idle: Duration,
    /// None: no idle timeout.
    timer: Option<Pin<Box<Sleep>>>,
    idled: bool,
    last_read: Instant,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn new(
        io: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Conn {
        metrics.grpc.connections.inc();
        Conn {
            io,
            activity: Arc::new(Activity::new(peer)),
            idle,
            timer: (!idle.is_zero()).then(|| Box::pin(tokio::time::sleep(idle))),
            idled: false,
            last_read: Instant::now(),
            metrics,
            _slot: slot,
        }
    }

    /// Whether the idle timeout has passed with no call running; re-arms the timer otherwise
    /// (its waker is the reader's, so the connection's task wakes to look again).
    fn idle_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = self
                .activity
                .idle_deadline(self.idle)
                .map(|d| d.max(self.last_read + READ_GRACE));
            match deadline {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => timer.as_mut().reset(deadline),
                None => timer.as_mut().reset(now + self.idle),
            }
        }
        false
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.metrics.grpc.connections.dec();
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(self.activity.clone())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.last_read = Instant::now();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.idle_out(cx) => {
                if !this.idled {
                    this.idled = true;
                    closed(&this.metrics, "idle");
                }
                // End of stream: hyper ends the connection, which drops this.
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn closed(metrics: &Metrics, kind: &'static str) {
    metrics
        .grpc
        .closed
        .get_or_create(&KindLabels { kind })
        .inc();
}

/// The accepted connections of `listener`, at most `max` open at once: one more is closed at
/// once (counted as refused). CoreDNS keeps one connection per upstream, so the cap only meets
/// misbehaving clients.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    idle: Duration,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures_util::stream::unfold(listener, move |listener| {
        let (slots, metrics) = (slots.clone(), metrics.clone());
        async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, or reset before accept: keep accepting.
                        warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    closed(&metrics, "refused");
                    continue;
                };
                // Small replies on a long-lived connection: no Nagle delay.
                let _ = stream.set_nodelay(true);
                let conn = Conn::new(stream, peer, slot, idle, metrics);
                return Some((Ok(conn), listener));
            }
        }
    })
}
