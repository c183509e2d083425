//! The wire-answer cache: which queries may be replayed ([`shape`]), and one worker's cache of
//! the general path's answers for the current snapshot ([`Responder`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::dns::{clamp_payload, count_queries, qtype_label, Handler};

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
    /// The DNSSEC OK bit, which the response's OPT echoes.
    pub dnssec_ok: bool,
}

/// Parses the cacheable shape of a query, writing the lower-cased question name + type + EDNS
/// payload + DO bit into `key`. None for anything the general path must see.
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
    let mut dnssec_ok = false;
    let payload = if count(10) == 1 {
        // OPT: root name, type 41, class = payload, TTL = ext-rcode/version/flags, RDLEN 0.
        let opt = packet.get(question_end..)?;
        if opt.len() != 11 || opt[0] != 0 || opt[1..3] != [0, 41] {
            return None;
        }
        if opt[5] != 0 || opt[6] != 0 || opt[9..11] != [0, 0] {
            return None; // extended rcode bits, version > 0, or options
        }
        dnssec_ok = opt[7] & 0x80 != 0;
        clamp_payload(u16::from_be_bytes([opt[3], opt[4]]))
    } else {
        if packet.len() != question_end {
            return None;
        }
        0
    };
    key.extend_from_slice(&tail[..2]);
    key.extend_from_slice(&payload.to_be_bytes());
    key.push(u8::from(dnssec_ok));
    Some(QueryShape {
        question_end,
        qtype,
        payload,
        dnssec_ok,
    })
}

/// A cached answer and the rcode it counts under.
struct Cached {
    bytes: Vec<u8>,
    rcode: &'static str,
}

/// One worker's answering state: the cache and the snapshot it belongs to.
pub struct Responder {
    handler: Arc<Handler>,
    cache: HashMap<Vec<u8>, Cached>,
    /// Generation of the snapshot the cache belongs to (0: none yet).
    cached_for: u64,
    key: Vec<u8>,
    /// Counts by (qtype, rcode) of this batch's answers, flushed to the metrics per batch.
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
        let shape = shape(packet, &mut self.key);
        if let Some(shape) = &shape {
            if let Some(cached) = self.cache.get(self.key.as_slice()) {
                patch(&cached.bytes, packet, shape.question_end, out);
                let qtype = qtype_label(RecordType::from(shape.qtype));
                *self.counts.entry((qtype, cached.rcode)).or_default() += 1;
                return true;
            }
        }
        let Some(wire) = self.handler.wire(packet, src, true) else {
            return false;
        };
        if let Some(labels) = wire.counted {
            *self.counts.entry(labels).or_default() += 1;
        }
        // SERVFAIL (not loaded yet) must not outlive the moment; everything else depends only on
        // the key and the snapshot.
        let bytes = wire.bytes;
        if let (Some(_), Some((_, rcode))) = (&shape, wire.counted) {
            if bytes.len() > HEADER_LEN && bytes[3] & 0xF != 2 {
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
                let cached = Cached {
                    bytes: bytes.clone(),
                    rcode,
                };
                self.cache.insert(self.key.clone(), cached);
            }
        }
        out.extend_from_slice(&bytes);
        true
    }

    /// Adds this batch's answers to the metrics.
    pub fn flush_metrics(&mut self, latency: Duration, answered: usize) {
        let m = &self.handler.metrics;
        for (labels, n) in self.counts.drain() {
            count_queries(m, labels, "udp", n);
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
