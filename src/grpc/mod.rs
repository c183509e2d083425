//! CoreDNS's gRPC `DnsService` (`--grpc-listen`): what CoreDNS's `grpc` plugin (and the old
//! `proxy ... protocol grpc`) sends to a plugin-style `.global` server such as
//! istio-coredns-plugin. Each `Query` is answered by the DNS answer engine as TCP would answer
//! it (same rules, sized up to 65,535 bytes), counted with `transport="grpc"`; no rate limiting.
//!
//! tonic's server does HTTP/2, gRPC framing and TLS; [`conn`] caps connections and closes idle
//! ones, [`service`] routes the one method, [`query`] answers it, [`tls`] reads the PEM files.

mod conn;
pub mod metrics;
mod query;
mod service;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tracing::error;

pub use query::{answer, DnsPacket, MAX_DNS_MESSAGE};
pub use service::{DnsService, QUERY};
pub use tls::TlsFiles;

use crate::dns::{ConnectionCap, Handler};

/// Bounds on gRPC clients (`--grpc-max-connections`, `--grpc-max-streams`,
/// `--grpc-idle-timeout`, `--grpc-keepalive`, `--grpc-keepalive-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections: ConnectionCap,
    /// Concurrent calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
    /// queues the others.
    pub max_streams: u32,
    /// HTTP/2 PING this often to find dead peers; zero: never.
    pub keepalive: Duration,
    /// A PING not answered within this closes the connection.
    pub keepalive_timeout: Duration,
}

/// One `--grpc-listen` listener, serving until [`GrpcServer::shutdown`].
pub struct GrpcServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl GrpcServer {
    /// Stops accepting, sends every connection GOAWAY and waits (a few seconds at most) for
    /// their calls to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Binds `addr` and serves the `DnsService` on it with `handler`'s answers.
pub async fn start(
    addr: SocketAddr,
    handler: Arc<Handler>,
    limits: Limits,
    tls: Option<&TlsFiles>,
) -> Result<GrpcServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind gRPC {addr}"))?;
    let bound = listener.local_addr()?;
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    let mut server = Server::builder()
        .max_concurrent_streams(limits.max_streams)
        .http2_keepalive_interval(nonzero(limits.keepalive))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout));
    if let Some(files) = tls {
        server = server
            .tls_config(tls::config(files)?)
            .with_context(|| format!("gRPC TLS of {addr}"))?;
    }
    let incoming = conn::incoming(
        listener,
        limits.connections.max,
        limits.connections.idle_timeout,
        handler.metrics.clone(),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let service = DnsService::new(handler);
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = server
            .serve_with_incoming_shutdown(service, incoming, stopped)
            .await
        {
            error!(error = %e, addr = %bound, "gRPC server stopped");
        }
    });
    Ok(GrpcServer {
        addr: bound,
        stop,
        task,
    })
}
