//! The wire-answer cache: which queries may be replayed ([`shape`]), and one worker's cache of
//! the general path's answers ([`Responder`]). A publish forgets the names it changed (the
//! snapshot lists them) and every answer that depends on more than one node, so a mesh that
//! keeps changing keeps a warm cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use smallvec::SmallVec;

use crate::dns::{clamp_payload, count_queries, qtype_label, Handler, RateDecision, Transport};
use crate::zone::NAMES_IN_DATA;

/// Per-worker cache bound: cleared when full (random names must not grow it without limit).
const CACHE_MAX: usize = 1 << 17;
/// What follows a question's name: QTYPE and QCLASS.
const QUESTION_TAIL: usize = 4;
/// What follows a record's owner before its data: TYPE, CLASS, TTL, then RDLENGTH (at 8).
const RECORD_FIXED: usize = 10;
const RDLENGTH_AT: usize = 8;
/// The header's length (RFC 1035 §4.1.1): the question starts after it.
const HEADER_LEN: usize = 12;
/// The DO bit (RFC 3225), in the first byte of an OPT record's flags.
const DNSSEC_OK: u8 = 0x80;

/// A message's header (hickory's parser reads the 12 bytes; nothing is allocated).
fn header(message: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(message)).ok()
}

/// What makes a cached answer reusable, parsed from a query without allocating.
#[derive(Debug, PartialEq)]
pub struct QueryShape {
    /// End offset of the question section (name + type + class) in the packet.
    pub question_end: usize,
    pub qtype: RecordType,
    /// 0 without EDNS; else the client's UDP size clamped as the general path clamps it.
    pub payload: u16,
    /// The DNSSEC OK bit, which the response's OPT echoes.
    pub dnssec_ok: bool,
    /// The query's header: a hit copies its ID, RD and CD.
    pub header: Header,
}

/// Whether answers to `qtype` carry names in their data (SRV target, SOA and NS names at the
/// apex, PTR target, the SOA of ANY at the apex), which hickory compresses against the owner's
/// labels only when their case matches: the bytes depend on the query's case, so these are
/// cached per spelling. The answers of every other type hold the query name only as owners (the
/// first written out, the others pointing at it), which a hit rewrites in the query's spelling.
fn spelled(qtype: RecordType) -> bool {
    qtype == RecordType::ANY || NAMES_IN_DATA.contains(&qtype)
}

/// Parses the cacheable shape of a query, writing the question name (lower-cased, but as sent
/// for [`spelled`] types) + type + EDNS payload + DO bit into `key`. None for anything the
/// general path must see.
pub fn shape(packet: &[u8], key: &mut Vec<u8>) -> Option<QueryShape> {
    key.clear();
    if packet.len() < HEADER_LEN + 5 {
        return None;
    }
    let header = header(packet)?;
    // A query, opcode QUERY, one question, nothing but an optional OPT after it.
    if header.message_type != MessageType::Query || header.op_code != OpCode::Query {
        return None;
    }
    let counts = header.counts;
    if counts.queries != 1
        || counts.answers != 0
        || counts.authorities != 0
        || counts.additionals > 1
    {
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
    let &[t0, t1, c0, c1] = packet.get(i..i + QUESTION_TAIL)? else {
        return None;
    };
    let qtype = RecordType::from(u16::from_be_bytes([t0, t1]));
    let qclass = u16::from_be_bytes([c0, c1]);
    let question_end = i + QUESTION_TAIL;
    // IN only; transfers and ANY-class are the general path's.
    if qclass != u16::from(DNSClass::IN) || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return None;
    }
    if spelled(qtype) {
        key[..i - HEADER_LEN].copy_from_slice(&packet[HEADER_LEN..i]);
    }
    let mut dnssec_ok = false;
    let payload = if counts.additionals == 1 {
        // OPT (RFC 6891 §6.1.2): root name, TYPE, CLASS = UDP payload, TTL = extended rcode,
        // version and flags, RDLENGTH: no extended rcode bits, version 0, no options.
        let &[0, t0, t1, p0, p1, 0, 0, flags, _, 0, 0] = packet.get(question_end..)? else {
            return None;
        };
        if RecordType::from(u16::from_be_bytes([t0, t1])) != RecordType::OPT {
            return None;
        }
        dnssec_ok = flags & DNSSEC_OK != 0;
        clamp_payload(u16::from_be_bytes([p0, p1]))
    } else {
        if packet.len() != question_end {
            return None;
        }
        0
    };
    key.extend_from_slice(&[t0, t1]);
    key.extend_from_slice(&payload.to_be_bytes());
    key.push(u8::from(dnssec_ok));
    Some(QueryShape {
        question_end,
        qtype,
        payload,
        dnssec_ok,
        header,
    })
}

/// A cached answer and the rcode it counts under.
struct Cached {
    /// The shape key past the name: type, EDNS payload, DO bit.
    variant: [u8; VARIANT_LEN],
    /// For [`spelled`] types, the name as spelled by the query that filled the entry.
    spelling: Option<Box<[u8]>>,
    /// Made from the node at the question name alone: kept across publishes that do not
    /// change that node. Every other answer is kept for one snapshot only.
    by_node: bool,
    /// The header of `bytes`, which a hit writes with the query's ID, RD and CD.
    header: Header,
    bytes: Vec<u8>,
    rcode: &'static str,
    /// Where answer owners are written out as the question name (in the case of the query that
    /// filled the cache): a hit writes the query's spelling there.
    owners: SmallVec<[u16; 2]>,
}

/// The part of a shape key after the name.
const VARIANT_LEN: usize = 5;
/// Entries per name at most: a client varying the case of a name in data (e.g. 0x20
/// encoding of SRV questions) replaces the oldest instead of growing the list.
const PER_NAME: usize = 8;

/// One worker's answering state: the cache and the snapshot it belongs to.
pub struct Responder {
    handler: Arc<Handler>,
    /// By the question name's key (lower-case wire labels, root included), so that a publish
    /// forgets exactly the names it changed.
    cache: HashMap<Box<[u8]>, SmallVec<[Cached; 1]>>,
    /// Entries in `cache`.
    entries: usize,
    /// Names holding an entry not made by a node alone (forgotten at every publish).
    volatile: Vec<Box<[u8]>>,
    /// Generation of the snapshot the cache belongs to (0: none yet).
    cached_for: u64,
    key: Vec<u8>,
    /// The question name's key (lower-case), for a shape key that keeps the spelling.
    lower: Vec<u8>,
    /// Counts by (qtype, rcode) of this batch's answers, flushed to the metrics per batch.
    counts: HashMap<(&'static str, &'static str), u64>,
}

impl Responder {
    pub fn new(handler: Arc<Handler>) -> Responder {
        Responder {
            handler,
            cache: HashMap::new(),
            entries: 0,
            volatile: Vec::new(),
            cached_for: 0,
            key: Vec::with_capacity(300),
            lower: Vec::with_capacity(256),
            counts: HashMap::new(),
        }
    }

    /// Brings the cache up to the snapshot now published: forgets the names a publish changed
    /// and the answers kept for one snapshot only, or everything when the changes since the
    /// cache's snapshot are not known.
    pub fn begin_batch(&mut self) {
        let snapshot = self.handler.snapshot.load();
        if snapshot.generation == self.cached_for {
            return;
        }
        match snapshot.changed_since(self.cached_for) {
            Some(names) => {
                for name in names {
                    self.forget(name);
                }
                for name in std::mem::take(&mut self.volatile) {
                    if let Some(list) = self.cache.get_mut(&name) {
                        let before = list.len();
                        list.retain(|c| c.by_node);
                        self.entries -= before - list.len();
                        if list.is_empty() {
                            self.cache.remove(&name);
                        }
                    }
                }
            }
            None => self.clear(),
        }
        self.cached_for = snapshot.generation;
    }

    /// Forgets the answers for the node `key` (zone key: lower-case labels without the root).
    fn forget(&mut self, key: &[u8]) {
        self.lower.clear();
        self.lower.extend_from_slice(key);
        self.lower.push(0);
        if let Some(list) = self.cache.remove(self.lower.as_slice()) {
            self.entries -= list.len();
        }
    }

    fn clear(&mut self) {
        self.cache.clear();
        self.volatile.clear();
        self.entries = 0;
    }

    /// Answers cached now (for tests and benchmarks).
    pub fn cached(&self) -> usize {
        self.entries
    }

    /// The answer to one UDP packet (into `out`), or false when none is to be sent.
    pub fn answer(&mut self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        out.clear();
        match self.handler.limit(src) {
            RateDecision::Send => {}
            RateDecision::Drop => return false,
            RateDecision::Slip => {
                let Some(bytes) = self.handler.slip_wire(packet, src) else {
                    return false;
                };
                out.extend_from_slice(&bytes);
                return true;
            }
        }
        let shape = shape(packet, &mut self.key);
        let mut split = None;
        if let Some(shape) = &shape {
            let (name, variant) = self.key.split_at(self.key.len() - VARIANT_LEN);
            let exact = spelled(shape.qtype);
            let lname = if exact {
                self.lower.clear();
                self.lower.extend(name.iter().map(u8::to_ascii_lowercase));
                self.lower.as_slice()
            } else {
                name
            };
            let hit = self.cache.get(lname).and_then(|list| {
                list.iter().find(|c| {
                    c.variant == variant && c.spelling.as_deref().is_none_or(|s| s == name)
                })
            });
            // (A header that cannot be written goes to the general path.)
            if let Some(cached) = hit.filter(|c| patch(c, shape, packet, out).is_some()) {
                let qtype = qtype_label(shape.qtype);
                *self.counts.entry((qtype, cached.rcode)).or_default() += 1;
                return true;
            }
            split = Some((name.len(), exact));
        }
        let Some(wire) = self.handler.wire_on(packet, src, Transport::Udp) else {
            return false;
        };
        if let Some(labels) = wire.counted {
            *self.counts.entry(labels).or_default() += 1;
        }
        // SERVFAIL (not loaded yet) must not outlive the moment; everything else depends only on
        // the key and the snapshot.
        let bytes = wire.bytes;
        if let (Some(shape), Some((name_len, exact)), Some((_, rcode))) =
            (&shape, split, wire.counted)
        {
            let header = header(&bytes).filter(|h| h.response_code != ResponseCode::ServFail);
            if let Some(header) = header {
                if let Some(owners) = owner_offsets(&bytes, &header, shape.question_end) {
                    self.insert(name_len, exact, &bytes, header, rcode, owners);
                }
            }
        }
        out.extend_from_slice(&bytes);
        true
    }

    /// Caches the general path's answer for the shape key in `self.key` (its name
    /// `name_len` bytes long).
    fn insert(
        &mut self,
        name_len: usize,
        exact: bool,
        bytes: &[u8],
        header: Header,
        rcode: &'static str,
        owners: SmallVec<[u16; 2]>,
    ) {
        if self.entries >= CACHE_MAX {
            self.clear();
        }
        let (name, variant) = self.key.split_at(name_len);
        let lname: Box<[u8]> = name.iter().map(u8::to_ascii_lowercase).collect();
        // A positive answer with nothing in authority, at a name answered by its node alone:
        // what a publish that leaves the node alone cannot change (negative answers carry the
        // SOA, whose serial every publish moves).
        let positive = header.response_code == ResponseCode::NoError
            && header.counts.answers > 0
            && header.counts.authorities == 0;
        let by_node = positive
            && self
                .handler
                .snapshot
                .load()
                .answered_by_node(&lname[..lname.len() - 1]);
        let cached = Cached {
            variant: variant.try_into().expect("shape keys end in the variant"),
            spelling: exact.then(|| Box::from(name)),
            by_node,
            header,
            bytes: bytes.to_vec(),
            rcode,
            owners,
        };
        let list = self.cache.entry(lname).or_default();
        if !by_node && list.iter().all(|c| c.by_node) {
            // Listed once per name, however many of its entries are volatile.
            self.volatile
                .push(Box::from(&name.to_ascii_lowercase()[..]));
        }
        if list.len() >= PER_NAME {
            list.remove(0);
            self.entries -= 1;
        }
        list.push(cached);
        self.entries += 1;
    }

    /// Adds this batch's answers to the metrics.
    pub fn flush_metrics(&mut self, latency: Duration, answered: usize, waits: &[Duration]) {
        let m = &self.handler.metrics;
        for (labels, n) in self.counts.drain() {
            count_queries(m, labels, "udp", n);
        }
        for _ in 0..answered {
            m.dns.latency.observe(latency.as_secs_f64());
        }
        for w in waits {
            m.dns.udp_wait.observe(w.as_secs_f64());
        }
    }
}

/// Cached answer → this query's answer: its ID, its RD and CD bits, its question bytes and the
/// owners written as the question name (the query's case).
/// None (and nothing in `out`) if the header could not be written.
fn patch(cached: &Cached, shape: &QueryShape, query: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut header = cached.header;
    header.metadata.id = shape.header.id;
    header.metadata.recursion_desired = shape.header.recursion_desired;
    header.metadata.checking_disabled = shape.header.checking_disabled;
    if header.emit(&mut BinEncoder::new(out)).is_err() {
        out.clear();
        return None;
    }
    out.extend_from_slice(&cached.bytes[HEADER_LEN..]);
    let question_end = shape.question_end;
    out[HEADER_LEN..question_end].copy_from_slice(&query[HEADER_LEN..question_end]);
    let name = &query[HEADER_LEN..question_end - QUESTION_TAIL];
    for &at in &cached.owners {
        let at = usize::from(at);
        out[at..at + name.len()].copy_from_slice(name);
    }
    Some(())
}

/// The offsets of the answer section's owners written out as the question name; None when the
/// response is not one to cache (no question, or not parsed to its answers' ends).
fn owner_offsets(
    response: &[u8],
    header: &Header,
    question_end: usize,
) -> Option<SmallVec<[u16; 2]>> {
    let name = response.get(HEADER_LEN..question_end.checked_sub(QUESTION_TAIL)?)?;
    let mut at = question_end;
    let mut out = SmallVec::new();
    for _ in 0..header.counts.answers {
        // Case only changes letters, never a length or pointer byte: a match is the same name.
        if response
            .get(at..at + name.len())?
            .eq_ignore_ascii_case(name)
        {
            out.push(u16::try_from(at).ok()?);
            at += name.len();
        } else {
            at = skip_name(response, at)?;
        }
        let &[l0, l1] = response.get(at + RDLENGTH_AT..at + RECORD_FIXED)? else {
            return None;
        };
        at += RECORD_FIXED + usize::from(u16::from_be_bytes([l0, l1]));
    }
    (at <= response.len()).then_some(out)
}

/// The offset after the name at `at` (labels up to the root or a compression pointer).
fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l > 63 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: RecordType, edns_flags: Option<u16>) -> Vec<u8> {
        let mut p = vec![
            0,
            1,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns_flags.is_some()),
        ];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&u16::from(qtype).to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(flags) = edns_flags {
            p.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0]);
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        p
    }

    fn key(p: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        shape(p, &mut k).expect("cacheable");
        k
    }

    #[test]
    fn keys_fold_case_but_for_names_in_data_and_split_on_the_do_bit() {
        let a = |n: &str| key(&query(n, RecordType::A, None));
        assert_eq!(a("HttpBin.bar.global"), a("httpbin.bar.global"));
        let srv = |n: &str| key(&query(n, RecordType::SRV, None));
        assert_ne!(srv("_http._tcp.H.global"), srv("_http._tcp.h.global"));
        let edns = |flags| key(&query("h.global", RecordType::A, Some(flags)));
        assert_ne!(edns(0x8000), edns(0));
        // Other flag bits do not change the answer.
        assert_eq!(edns(0x0001), edns(0));
        let s = shape(
            &query("h.global", RecordType::A, Some(0x8000)),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(s.dnssec_ok);
        assert_eq!(s.payload, 4096.min(crate::dns::MAX_UDP_PAYLOAD));
    }

    /// A zone of hosts with one address each, answered by one responder.
    struct Zone {
        builder: crate::zone::ZoneBuilder,
        published: Arc<crate::published::Published>,
        responder: Responder,
    }

    impl Zone {
        fn new(hosts: &[(&str, &str)]) -> Zone {
            let mut builder = builder(hosts);
            let published = Arc::new(crate::published::Published::new(builder.snapshot()));
            let handler =
                Handler::plain(published.clone(), Arc::new(crate::metrics::Metrics::new()));
            Zone {
                builder,
                published,
                responder: Responder::new(Arc::new(handler)),
            }
        }

        fn publish(&mut self, changes: &[(&str, Option<&str>)]) {
            for (host, ip) in changes {
                self.builder.set_host(host, ip.map(report));
            }
            self.published.publish(self.builder.snapshot());
        }

        /// The answer's rcode and A addresses, from a batch of its own.
        fn ask(&mut self, name: &str, qtype: RecordType) -> (u8, Vec<std::net::Ipv4Addr>) {
            self.responder.begin_batch();
            let mut out = Vec::new();
            let src = "127.0.0.1:5353".parse().unwrap();
            assert!(self
                .responder
                .answer(&query(name, qtype, None), src, &mut out));
            let msg = hickory_proto::op::Message::from_vec(&out).unwrap();
            let ips = msg
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_proto::rr::RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            (msg.metadata.response_code.low(), ips)
        }
    }

    fn builder(hosts: &[(&str, &str)]) -> crate::zone::ZoneBuilder {
        let cfg = crate::zone::ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let mut builder = crate::zone::ZoneBuilder::new(&cfg, &[]);
        for (host, ip) in hosts {
            builder.set_host(host, Some(report(ip)));
        }
        builder
    }

    fn report(ip: &str) -> crate::zone::ZoneHost {
        crate::zone::ZoneHost::serving(&[ip])
    }

    #[test]
    fn a_publish_forgets_the_names_it_changed_and_answers_that_need_more_than_a_node() {
        let mut z = Zone::new(&[("a.ns.global", "10.0.0.1"), ("b.ns.global", "10.0.0.2")]);
        let v4 = |s: &str| vec![s.parse::<std::net::Ipv4Addr>().unwrap()];
        assert_eq!(z.ask("a.ns.global", RecordType::A), (0, v4("10.0.0.1")));
        assert_eq!(z.ask("b.ns.global", RecordType::A), (0, v4("10.0.0.2")));
        // NODATA and NXDOMAIN carry the SOA (its serial): kept for one snapshot only.
        assert_eq!(z.ask("b.ns.global", RecordType::AAAA), (0, vec![]));
        assert_eq!(z.ask("c.ns.global", RecordType::A), (3, vec![]));
        assert_eq!(z.responder.cached(), 4);

        z.publish(&[
            ("a.ns.global", Some("10.0.0.9")),
            ("c.ns.global", Some("10.0.0.3")),
        ]);
        assert_eq!(
            z.ask("a.ns.global", RecordType::A),
            (0, v4("10.0.0.9")),
            "changed name"
        );
        // b's A is the one entry left from before the publish, then a's new answer joins it.
        assert_eq!(z.responder.cached(), 2);
        assert_eq!(z.ask("b.ns.global", RecordType::A), (0, v4("10.0.0.2")));
        assert_eq!(z.responder.cached(), 2, "b answered from the cache");
        assert_eq!(
            z.ask("c.ns.global", RecordType::A),
            (0, v4("10.0.0.3")),
            "new name"
        );

        // Removed, then two publishes between batches: both are applied.
        z.publish(&[("b.ns.global", None)]);
        z.publish(&[("a.ns.global", Some("10.0.0.10"))]);
        assert_eq!(z.ask("b.ns.global", RecordType::A), (3, vec![]));
        assert_eq!(z.ask("a.ns.global", RecordType::A), (0, v4("10.0.0.10")));
        assert_eq!(z.ask("c.ns.global", RecordType::A), (0, v4("10.0.0.3")));

        // A snapshot of another builder: nothing is known, everything is forgotten.
        let mut other = builder(&[("a.ns.global", "10.0.0.77")]);
        z.published.publish(other.snapshot());
        assert_eq!(z.ask("a.ns.global", RecordType::A), (0, v4("10.0.0.77")));
        assert_eq!(z.ask("c.ns.global", RecordType::A), (3, vec![]));
    }

    #[test]
    fn owners_written_as_the_question_are_found_past_pointers() {
        // Question h.global A IN; answers: h.global (written out), then a pointer to it.
        let q = query("h.global", RecordType::A, None);
        let mut r = q.clone();
        r[7] = 2;
        let owner = r.len();
        r.extend_from_slice(&q[HEADER_LEN..q.len() - 4]);
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 240, 10, 0, 1]);
        r.extend_from_slice(&[0xC0, owner as u8]);
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 240, 10, 0, 2]);
        let h = header(&r).unwrap();
        assert_eq!(
            owner_offsets(&r, &h, q.len()).unwrap().as_slice(),
            [owner as u16]
        );
        // Cut short: not cached.
        assert_eq!(owner_offsets(&r[..r.len() - 1], &h, q.len()), None);
    }
}
