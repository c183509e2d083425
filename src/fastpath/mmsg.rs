//! One worker's loop: a batch of queries in with `recvmmsg`, their answers out with `sendmmsg`.
//! The message headers and their buffers are set up once per worker; a batch only resets what
//! the kernel wrote back (address and control lengths) and points each send at its answer.
//! Each query's arrival stamp (`SO_TIMESTAMPNS`, set by `socket.rs`) says how long it waited
//! in the socket: the time a worker short of CPU makes clients wait.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
/// Large enough for any query we answer; longer datagrams are cut and then fail to parse (FORMERR).
const RECV_BUF: usize = 4096;
const ADDR_LEN: u32 = std::mem::size_of::<libc::sockaddr_storage>() as u32;
/// Room for one timestamp control message (u64s for cmsghdr's alignment).
const CTL_WORDS: usize = 8;

/// The buffers and C headers of one worker. The headers point into the boxed slices, which
/// never move or grow once built.
struct Batch {
    bufs: Box<[[u8; RECV_BUF]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    ctls: Box<[[u64; CTL_WORDS]]>,
    /// How long each query of the batch waited in the socket.
    waits: Box<[Duration]>,
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
                ctls: vec![[0u64; CTL_WORDS]; BATCH].into_boxed_slice(),
                waits: vec![Duration::ZERO; BATCH].into_boxed_slice(),
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
            h.msg_control = b.ctls[i].as_mut_ptr().cast();
            h.msg_controllen = CTL_WORDS * 8;
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
    /// Called once per batch after its answers were sent: how long the batch took from its
    /// read, how many answers were sent, and how long each query waited in the socket before
    /// the read (empty when the kernel gave no arrival stamps).
    fn end_batch(&mut self, _latency: Duration, _answered: usize, _waits: &[Duration]) {}
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
        let now = realtime_ns();
        let mut stamped = 0;
        responder.begin_batch();
        let mut count = 0;
        for i in 0..n as usize {
            let len = b.hdrs[i].msg_len as usize;
            let namelen = b.hdrs[i].msg_hdr.msg_namelen;
            if let Some(at) = arrival_ns(&b.hdrs[i].msg_hdr) {
                b.waits[stamped] = Duration::from_nanos(now.saturating_sub(at));
                stamped += 1;
            }
            // The kernel wrote the address's and the control data's lengths: the next batch
            // gets the whole room again.
            b.hdrs[i].msg_hdr.msg_namelen = ADDR_LEN;
            b.hdrs[i].msg_hdr.msg_controllen = CTL_WORDS * 8;
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
        responder.end_batch(received.elapsed(), count, &b.waits[..stamped]);
    }
}

/// The arrival time (CLOCK_REALTIME, ns) in a received message's control data, if there
/// (`SO_TIMESTAMPNS` on the socket; the benchmarks' load generator reads its answers' too).
pub fn arrival_ns(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: hdr's control pointer and length are what recvmmsg wrote for this message; the
    // macros only walk within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// The clock the kernel's arrival stamps are on.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
