//! Listeners: UDP and TCP on one address, and the hickory-server instances serving them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::warn;

use super::Handler;

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

/// Responses queued per TCP connection. hickory-server answers a connection's request before it
/// writes anything (it does not poll the stream meanwhile) and drops what does not fit in the
/// queue: a zone transfer must fit whole. Messages are allocated as queued, so the bound costs
/// nothing until used; a primary's is 16,384 messages of up to 64 KiB (millions of hosts).
fn response_queue(handler: &Handler) -> usize {
    if handler.allow_transfer.is_empty() {
        64
    } else {
        16_384
    }
}

/// TCP only: UDP is answered by the fast path.
pub fn tcp_server(handler: Handler, tcp: TcpListener) -> Server<Handler> {
    let queue = response_queue(&handler);
    let mut server = Server::new(handler);
    server.register_listener(tcp, Duration::from_secs(10), queue);
    server
}

pub fn server(handler: Handler, udp: UdpSocket, tcp: TcpListener) -> Server<Handler> {
    let queue = response_queue(&handler);
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), queue);
    server
}
