//! The fast UDP path: one SO_REUSEPORT socket and thread per worker, batched `recvmmsg`/`sendmmsg`,
//! and answers cached as wire bytes per (lower-case name, type, EDNS payload) for the current
//! snapshot, so that a hit only patches the ID, the RD/CD bits and the question (its case).
//!
//! Every answer is first produced by the general path (the same `Handler` hickory-server runs for
//! TCP), so the fast path cannot disagree with it: it only replays bytes. Anything unusual (EDNS
//! options or version > 0, other opcodes or classes, several questions, trailing bytes, transfers)
//! goes to the general path every time and is never cached.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use socket2::{Domain, Socket, Type};
use tracing::{info, warn};

use crate::dns::{qtype_label, rcode_label, Handler};
use crate::metrics::QueryLabels;

const BATCH: usize = 64;
/// Large enough for any query we answer; longer datagrams are cut and then fail to parse (FORMERR).
const RECV_BUF: usize = 4096;
/// Per-worker cache bound: cleared when full (random names must not grow it without limit).
const CACHE_MAX: usize = 1 << 17;
const HEADER_LEN: usize = 12;

/// What makes a cached answer reusable, parsed from a query without allocating.
#[derive(Debug, PartialEq)]
pub struct QueryShape {
    /// End offset of the question section (name + type + class) in the packet.
    pub question_end: usize,
    pub qtype: u16,
    /// 0 without EDNS; else the client's UDP size clamped as the general path clamps it.
    pub payload: u16,
}

/// Parses the cacheable shape of a query, writing the lower-cased question name + type + EDNS
/// payload into `key`. None for anything the general path must see.
pub fn shape(packet: &[u8], key: &mut Vec<u8>) -> Option<QueryShape> {
    key.clear();
    if packet.len() < HEADER_LEN + 5 {
        return None;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    // QR=0, opcode QUERY, one question, nothing but an optional OPT after it.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xF != 0 {
        return None;
    }
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut i = HEADER_LEN;
    loop {
        let len = *packet.get(i)? as usize;
        if len == 0 {
            key.push(0);
            i += 1;
            break;
        }
        // Compression pointers and extended labels are legal but unusual in questions.
        if len > 63 || key.len() + len + 1 > 255 {
            return None;
        }
        let label = packet.get(i + 1..i + 1 + len)?;
        key.push(len as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        i += 1 + len;
    }
    let tail = packet.get(i..i + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    let question_end = i + 4;
    // IN only; transfers and ANY-class are the general path's.
    if qclass != 1 || qtype == 251 || qtype == 252 {
        return None;
    }
    let payload = if count(10) == 1 {
        // OPT: root name, type 41, class = payload, TTL = ext-rcode/version/flags, RDLEN 0.
        let opt = packet.get(question_end..)?;
        if opt.len() != 11 || opt[0] != 0 || opt[1..3] != [0, 41] {
            return None;
        }
        if opt[5] != 0 || opt[6] != 0 || opt[9..11] != [0, 0] {
            return None; // extended rcode bits, version > 0, or options
        }
        u16::from_be_bytes([opt[3], opt[4]]).clamp(512, crate::dns::MAX_UDP_PAYLOAD)
    } else {
        if packet.len() != question_end {
            return None;
        }
        0
    };
    key.extend_from_slice(&tail[..2]);
    key.extend_from_slice(&payload.to_be_bytes());
    Some(QueryShape {
        question_end,
        qtype,
        payload,
    })
}

/// Captures what the general path sends, encoded exactly as hickory-server encodes it.
#[derive(Clone, Default)]
struct Capture {
    out: Arc<Mutex<Option<Vec<u8>>>>,
    protocol_udp: bool,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let id = response.metadata().id;
        let max = match (self.protocol_udp, response.edns()) {
            (false, _) => u16::MAX,
            (true, Some(e)) => e.max_payload(),
            (true, None) => 512,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut bytes);
        enc.set_max_size(max);
        let info = match response.destructive_emit(&mut enc) {
            Ok(info) => info,
            Err(e) => {
                // As hickory-server does: a bare SERVFAIL header.
                warn!(error = %e, "error encoding a response");
                bytes.clear();
                let mut meta = Metadata::new(id, MessageType::Response, OpCode::Query);
                meta.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata: meta,
                    counts: Default::default(),
                };
                let mut enc = BinEncoder::new(&mut bytes);
                hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut enc)
                    .map_err(NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        *self.out.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

/// Runs a future that never waits (the general path with a `Capture` completes in one poll).
fn run_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the general path with a capture never waits"),
    }
}

/// The general path on raw bytes: what hickory-server would send for this packet, or None when
/// it would send nothing (shorter than a header, or a response).
pub fn general(handler: &Handler, packet: &[u8], src: SocketAddr, udp: bool) -> Option<Vec<u8>> {
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
    let capture = Capture {
        out: Arc::default(),
        protocol_udp: udp,
    };
    match Request::from_bytes(packet.to_vec(), src, protocol) {
        Ok(req) => {
            if req.metadata.message_type == MessageType::Response {
                return None;
            }
            run_ready(handler.handle_request::<_, TokioTime>(&req, capture.clone()));
        }
        Err(_) => {
            // As hickory-server: drop without a header, FORMERR with one.
            let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let msg = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            run_ready(capture.clone().send_response(msg)).ok()?;
        }
    }
    let out = capture.out.lock().unwrap().take();
    out
}

/// One worker's answering state: the cache and the snapshot it belongs to.
pub struct Responder {
    handler: Arc<Handler>,
    cache: HashMap<Vec<u8>, Vec<u8>>,
    /// Generation of the snapshot the cache belongs to (0: none yet).
    cached_for: u64,
    key: Vec<u8>,
    /// Counts by (qtype, rcode) for fast answers, flushed to the metrics per batch.
    counts: HashMap<(&'static str, &'static str), u64>,
}

impl Responder {
    pub fn new(handler: Arc<Handler>) -> Responder {
        Responder {
            handler,
            cache: HashMap::new(),
            cached_for: 0,
            key: Vec::with_capacity(300),
            counts: HashMap::new(),
        }
    }

    /// Forgets cached answers when a new snapshot was published.
    pub fn begin_batch(&mut self) {
        let generation = self.handler.snapshot.load().generation;
        if generation != self.cached_for {
            self.cache.clear();
            self.cached_for = generation;
        }
    }

    /// The answer to one UDP packet (into `out`), or false when none is to be sent.
    pub fn answer(&mut self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Some(shape) = shape(packet, &mut self.key) else {
            return match general(&self.handler, packet, src, true) {
                Some(bytes) => {
                    out.extend_from_slice(&bytes);
                    true
                }
                None => false,
            };
        };
        if let Some(cached) = self.cache.get(self.key.as_slice()) {
            patch(cached, packet, shape.question_end, out);
            let rcode = rcode_label(ResponseCode::from_low(cached[3] & 0xF));
            let qtype = qtype_label(RecordType::from(shape.qtype));
            *self.counts.entry((qtype, rcode)).or_default() += 1;
            return true;
        }
        let Some(bytes) = general(&self.handler, packet, src, true) else {
            return false;
        };
        // SERVFAIL (not loaded yet) must not outlive the moment; everything else depends only on
        // the key and the snapshot.
        if bytes.len() > HEADER_LEN && bytes[3] & 0xF != 2 {
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
            self.cache.insert(self.key.clone(), bytes.clone());
        }
        out.extend_from_slice(&bytes);
        true
    }

    /// Adds this batch's fast answers to the metrics.
    pub fn flush_metrics(&mut self, latency: Duration, answered: usize) {
        let m = &self.handler.metrics;
        for ((qtype, rcode), n) in self.counts.drain() {
            m.queries
                .get_or_create(&QueryLabels {
                    qtype,
                    rcode,
                    transport: "udp",
                })
                .inc_by(n);
        }
        for _ in 0..answered {
            m.latency.observe(latency.as_secs_f64());
        }
    }
}

/// Cached answer → this query's answer: its ID, its RD and CD bits, its question bytes (case).
fn patch(cached: &[u8], query: &[u8], question_end: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(cached);
    out[0] = query[0];
    out[1] = query[1];
    // RD (0x01 of byte 2) and CD (0x10 of byte 3) are copied from the query.
    out[2] = (out[2] & !0x01) | (query[2] & 0x01);
    out[3] = (out[3] & !0x10) | (query[3] & 0x10);
    out[HEADER_LEN..question_end].copy_from_slice(&query[HEADER_LEN..question_end]);
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
        out.push(s.into());
    }
    Ok(out)
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
            .spawn(move || worker(socket, Responder::new(handler), stop))?;
    }
    info!(workers = n, "UDP fast path running");
    Ok(())
}

fn worker(socket: std::net::UdpSocket, mut responder: Responder, stop: Arc<AtomicBool>) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; RECV_BUF]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    // SAFETY: zeroed sockaddr_storage/iovec/mmsghdr are valid "empty" values for these C structs.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut send_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut send_hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers owned by this frame for the call's duration.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
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
            let len = hdrs[i].msg_len as usize;
            let namelen = hdrs[i].msg_hdr.msg_namelen;
            let Some(src_addr) = socket_addr(&addrs[i]) else {
                continue;
            };
            if src_addr.port() == 0 {
                continue; // cannot be answered
            }
            if !responder.answer(&bufs[i][..len], src_addr, &mut outs[count]) {
                continue;
            }
            send_iovs[count] = libc::iovec {
                iov_base: outs[count].as_mut_ptr().cast(),
                iov_len: outs[count].len(),
            };
            let h = &mut send_hdrs[count].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut send_iovs[count];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers [sent, count) point at live response buffers and addresses.
            let r = unsafe {
                libc::sendmmsg(fd, send_hdrs[sent..].as_mut_ptr(), (count - sent) as u32, 0)
            };
            if r <= 0 {
                // A peer that cannot be sent to (e.g. unreachable) costs its own answer only.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
        responder.flush_metrics(received.elapsed(), count);
    }
}
