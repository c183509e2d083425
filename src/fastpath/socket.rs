//! Fast-path sockets: SO_REUSEPORT UDP sockets sharing one port, with TCP beside them.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context as _, Result};
use socket2::{Domain, Socket, Type};
use tracing::warn;

/// Linux's ephemeral port range (`net.ipv4.ip_local_port_range`), if it can be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse().ok());
    Some((it.next()??, it.next()??))
}

/// Warns when the DNS port is one that outgoing sockets may be given: a client socket of the
/// same user with SO_REUSEPORT (dig sets it) bound there joins our group and takes some of our
/// queries (dig then reads its own query back, flags `ad` without `qr`).
pub fn warn_if_ephemeral(port: u16) {
    if let Some((low, high)) = ephemeral_range() {
        if (low..=high).contains(&port) {
            warn!(
                port,
                range = %format!("{low}-{high}"),
                "the DNS port is in the ephemeral port range: a client socket of the same user \
                 with SO_REUSEPORT can be bound to it and take queries; use a port outside it"
            );
        }
    }
}

/// Binds `workers` SO_REUSEPORT UDP sockets on `addr` (port 0: the first one picks it).
pub fn bind_reuseport(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::UdpSocket>> {
    let mut out = Vec::new();
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        // Bursts queue here rather than being dropped while a batch is answered.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&addr.into())
            .with_context(|| format!("cannot bind UDP {addr}"))?;
        let bound = s.local_addr()?.as_socket().context("bound address")?;
        addr = bound;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        // Arrival stamps: how long each query waited in the socket (mmsg.rs). Without them the
        // wait is not measured; answering is unaffected.
        let _ = stamp_arrivals(s.as_raw_fd());
        out.push(s.into());
    }
    Ok(out)
}

/// Asks the kernel to stamp each datagram received on `fd` with its arrival time
/// (`SO_TIMESTAMPNS`, read back by [`super::arrival_ns`]).
pub fn stamp_arrivals(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid int option on a socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The fast path's UDP sockets and the TCP listener on one port.
pub async fn bind(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener)> {
    let (udp, tcp) = crate::dns::bind_pair(addr, |addr| {
        let udp = bind_reuseport(addr, workers)?;
        let bound = udp[0].local_addr()?;
        Ok((udp, bound))
    })
    .await?;
    warn_if_ephemeral(tcp.local_addr()?.port());
    Ok((udp, tcp))
}
