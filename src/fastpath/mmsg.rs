//! One worker's loop: a batch of queries in with `recvmmsg`, their answers out with `sendmmsg`.
//! The message headers and their buffers are set up once per worker; a batch only resets what
//! the kernel wrote back (address lengths) and points each send at its answer.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
/// Large enough for any query we answer; longer datagrams are cut and then fail to parse (FORMERR).
const RECV_BUF: usize = 4096;
const ADDR_LEN: u32 = std::mem::size_of::<libc::sockaddr_storage>() as u32;

/// The buffers and C headers of one worker. The headers point into the boxed slices, which
/// never move or grow once built.
struct Batch {
    bufs: Box<[[u8; RECV_BUF]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    outs: Vec<Vec<u8>>,
    send_iovs: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::mmsghdr]>,
}

/// BATCH zeroed values.
///
/// # Safety
/// All zeroes must be a valid `T` (true of the plain C structs used here).
unsafe fn zeroed<T>() -> Box<[T]> {
    (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect()
}

impl Batch {
    fn new() -> Batch {
        // SAFETY: zeroed sockaddr_storage/iovec/mmsghdr are valid "empty" values of these C
        // structs.
        let mut b = unsafe {
            Batch {
                bufs: vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice(),
                addrs: zeroed(),
                iovs: zeroed(),
                hdrs: zeroed(),
                outs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
                send_iovs: zeroed(),
                send_hdrs: zeroed(),
            }
        };
        for i in 0..BATCH {
            b.iovs[i] = libc::iovec {
                iov_base: b.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = ADDR_LEN;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            let h = &mut b.send_hdrs[i].msg_hdr;
            h.msg_iov = &mut b.send_iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }
}

/// What the batch loop asks of whatever answers: the fast path's [`super::Responder`], or a
/// benchmark's null reflector, which measures this loop (the floor) with no DNS work.
pub trait Answerer {
    /// Called once per received batch, before its first answer.
    fn begin_batch(&mut self) {}
    /// The answer to one datagram (into `out`, cleared by the callee), or false to send none.
    fn answer(&mut self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool;
    /// Called once per batch after its answers were sent.
    fn end_batch(&mut self, _latency: Duration, _answered: usize) {}
}

/// Runs one worker's loop on `socket` until `stop` is set (checked at each read timeout).
pub fn worker<A: Answerer>(socket: std::net::UdpSocket, mut responder: A, stop: Arc<AtomicBool>) {
    let fd = socket.as_raw_fd();
    let mut b = Batch::new();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every header points at buffers of `b`, alive and unmoved for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue; // timeout (checks `stop`) or a transient error
        }
        let received = Instant::now();
        responder.begin_batch();
        let mut count = 0;
        for i in 0..n as usize {
            let len = b.hdrs[i].msg_len as usize;
            let namelen = b.hdrs[i].msg_hdr.msg_namelen;
            // The kernel wrote the address's length: the next batch gets the whole storage again.
            b.hdrs[i].msg_hdr.msg_namelen = ADDR_LEN;
            let Some(src_addr) = socket_addr(&b.addrs[i]) else {
                continue;
            };
            if src_addr.port() == 0 {
                continue; // cannot be answered
            }
            if !responder.answer(&b.bufs[i][..len], src_addr, &mut b.outs[count]) {
                continue;
            }
            // The answer's buffer may have grown (moved) since the last batch.
            b.send_iovs[count].iov_base = b.outs[count].as_mut_ptr().cast();
            b.send_iovs[count].iov_len = b.outs[count].len();
            let h = &mut b.send_hdrs[count].msg_hdr;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers [sent, count) point at live answer buffers and addresses of `b`.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    b.send_hdrs[sent..].as_mut_ptr(),
                    (count - sent) as u32,
                    0,
                )
            };
            if r <= 0 {
                // A peer that cannot be sent to (e.g. unreachable) costs its own answer only.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
        responder.end_batch(received.elapsed(), count);
    }
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(std::net::SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}
