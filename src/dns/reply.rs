//! One request's response: decided once ([`Reply::decide`]), then either sent through
//! hickory-server or encoded to bytes for the fast path, with the same size rule on UDP.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::ProtoError;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use super::tsig::{self, Signing, TsigCheck};
use super::xfr_out::TransfersOut;
use super::{bare_header, clamp_payload, qtype_label, Handler, Transport};
use crate::notify::Transfers;
use crate::zone::{digest, messages, unix_now, Answer, Snapshot};

/// hickory's response type with its four record iterators, spelt once.
macro_rules! response {
    ($q:lifetime, $a:lifetime) => {
        MessageResponse<
            $q,
            $a,
            impl Iterator<Item = &$a Record> + Send + $a,
            impl Iterator<Item = &$a Record> + Send + $a,
            impl Iterator<Item = &$a Record> + Send + $a,
            impl Iterator<Item = &$a Record> + Send + $a,
        >
    };
}

/// A response decided but not yet encoded.
pub(super) struct Reply<'s> {
    meta: Metadata,
    /// The response's OPT: our version 0, the client's payload size within our cap, its DO bit.
    edns: Option<Edns>,
    answer: Answer<'s>,
    /// A zone transfer to send (TCP only).
    transfer: Option<Plan<'s>>,
    /// The request was signed with our key: so is every message of the response.
    signing: Option<Signing>,
    pub qtype: &'static str,
}

impl<'s> Reply<'s> {
    /// A rate-limited client's response: TC, no records (as Knot's and BIND's slip).
    pub fn slip(request: &Request) -> Reply<'s> {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.truncation = true;
        Reply {
            meta,
            edns: response_edns(request),
            answer: Answer::empty(ResponseCode::NoError),
            transfer: None,
            signing: None,
            qtype: "NONE",
        }
    }

    pub fn decide(
        handler: &Handler,
        snapshot: &'s Snapshot,
        request: &Request,
        transport: Transport,
    ) -> Reply<'s> {
        let queries = request.queries.queries();
        let mut edns = response_edns(request);
        let mut transfer = None;
        let verdict = tsig::verify(handler.key.as_ref(), request, unix_now());
        let signed = matches!(verdict, TsigCheck::Signed(_));
        let answer = if matches!(verdict, TsigCheck::Bad) {
            // Counted where it matters: refused transfers.
            match queries.first().map(|q| q.query_type()) {
                Some(RecordType::AXFR) => handler.transfers.refused("axfr"),
                Some(RecordType::IXFR) => handler.transfers.refused("ixfr"),
                _ => {}
            }
            Answer::empty(tsig::BAD)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // Before anything else in the message is looked at (RFC 6891 §6.1.3; as Knot).
            Answer::empty(ResponseCode::BADVERS)
        } else if queries
            .first()
            .is_some_and(|q| !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY))
        {
            // Only IN data is served: a question of another class is not for us, whatever
            // its opcode (as Knot).
            Answer::empty(ResponseCode::Refused)
        } else if request.metadata.op_code == OpCode::Notify && handler.notify.is_some() {
            notified(handler, snapshot, request, signed)
        } else if request.metadata.op_code != OpCode::Query {
            Answer::empty(ResponseCode::NotImp)
        } else if queries.len() != 1 {
            Answer::empty(ResponseCode::FormErr)
        } else if !snapshot.loaded {
            // Before the first full load, an NXDOMAIN would be cached downstream: say SERVFAIL.
            Answer::empty(ResponseCode::ServFail)
        } else if matches!(queries[0].query_type(), RecordType::AXFR | RecordType::IXFR) {
            let (answer, plan, echo) = axfr(handler, snapshot, request, signed, transport);
            transfer = plan;
            if let (Some(e), Some(echo)) = (&mut edns, echo) {
                e.options_mut()
                    .insert(EdnsOption::Unknown(digest::EDNS_OPTION, echo));
            }
            answer
        } else {
            // The name as sent: answers are owned by the query's spelling.
            snapshot.lookup(queries[0].original().name(), queries[0].query_type())
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = answer.rcode;
        meta.authoritative = answer.authoritative;
        Reply {
            meta,
            edns,
            answer,
            transfer,
            signing: match verdict {
                TsigCheck::Signed(s) => Some(s),
                _ => None,
            },
            qtype: queries
                .first()
                .map_or("NONE", |q| qtype_label(q.query_type())),
        }
    }

    fn builder<'q>(&'q self, queries: &'q Queries) -> MessageResponseBuilder<'q> {
        MessageResponseBuilder::new(queries, self.edns.as_ref())
    }

    fn message<'r>(&'r self, queries: &'r Queries) -> response!('r, 'r) {
        self.builder(queries).build(
            self.meta,
            self.answer.answers.iter().map(|c| &**c),
            self.answer.authority.iter().copied(),
            std::iter::empty(),
            self.answer.additional.iter(),
        )
    }

    /// hickory's encoder would fill the answer section and drop the OPT for want of room; a
    /// truncated answer must keep it (RFC 6891 §7). Like Knot and BIND: TC, empty sections,
    /// OPT; the client retries over TCP.
    fn truncated<'r>(&'r self, queries: &'r Queries) -> response!('r, 'r) {
        let mut meta = self.meta;
        meta.truncation = true;
        self.builder(queries).build_no_records(meta)
    }

    fn transfer_message<'r>(
        &'r self,
        queries: &'r Queries,
        records: &'r [Record],
    ) -> response!('r, 'r) {
        self.builder(queries).build(
            self.meta,
            records.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        )
    }

    /// The size a response may take: the client's EDNS payload (clamped) or 512 on UDP.
    fn limit(&self, udp: bool) -> u16 {
        match (udp, &self.edns) {
            (false, _) => u16::MAX,
            (true, Some(e)) => e.max_payload(),
            (true, None) => 512,
        }
    }

    /// The response as bytes, encoded once unless it has to be truncated.
    pub fn encode(&self, queries: &Queries, udp: bool) -> (Vec<u8>, ResponseInfo) {
        let limit = self.limit(udp);
        if let Some(plan) = &self.transfer {
            // Not counted and not limited: transfers are sent by `send`.
            let last = plan
                .messages_now()
                .and_then(|(_, m)| m.last())
                .unwrap_or_default();
            return encode(self.transfer_message(queries, &last), limit);
        }
        if let Some(signing) = &self.signing {
            // Signed: encoded once to be signed, then with the signature.
            if let Ok((bytes, _)) = emit(self.message(queries), u16::MAX) {
                if let Ok(sig) = signing.chain().sign(&bytes) {
                    let mut msg = self.message(queries);
                    msg.set_signature(Box::new(sig));
                    return encode(msg, u16::MAX);
                }
            }
        }
        match emit(self.message(queries), limit) {
            Ok((bytes, info)) if !(udp && info.truncation) => (bytes, info),
            Err(e) if !udp => servfail(self.meta.id, &e),
            _ => encode(self.truncated(queries), limit),
        }
    }

    /// Sends the response through `response` (which encodes it).
    pub async fn send<R: ResponseHandler>(
        &self,
        queries: &Queries,
        udp: bool,
        response: &mut R,
        out: &TransfersOut,
    ) -> ResponseInfo {
        let id = self.meta.id;
        if let Some(plan) = &self.transfer {
            return self.send_transfer(plan, queries, response, out).await;
        }
        if let Some(signing) = &self.signing {
            if let Ok((bytes, _)) = emit(self.message(queries), u16::MAX) {
                if let Ok(sig) = signing.chain().sign(&bytes) {
                    let mut msg = self.message(queries);
                    msg.set_signature(Box::new(sig));
                    return send(response, msg, id).await;
                }
            }
        }
        let fits = !udp
            || emit(self.message(queries), self.limit(udp)).is_ok_and(|(_, info)| !info.truncation);
        if fits {
            send(response, self.message(queries), id).await
        } else {
            send(response, self.truncated(queries), id).await
        }
    }

    /// Sends a transfer when its turn comes (SERVFAIL when none comes in time), a message at a
    /// time: each is rendered, signed, chained to the one before, and written before the next
    /// is made, so a transfer holds one message whatever the zone's size.
    async fn send_transfer<R: ResponseHandler>(
        &self,
        plan: &Plan<'s>,
        queries: &Queries,
        response: &mut R,
        out: &TransfersOut,
    ) -> ResponseInfo {
        let id = self.meta.id;
        // SERVFAIL, signed when the request was (RFC 8945 §5.3).
        let servfail = || {
            let mut meta = self.meta;
            meta.response_code = ResponseCode::ServFail;
            meta.authoritative = false;
            let header = || self.builder(queries).build_no_records(meta);
            let mut msg = header();
            if let Some(signing) = &self.signing {
                if let Ok(sig) =
                    emit(header(), u16::MAX).and_then(|(b, _)| signing.chain().sign(&b))
                {
                    msg.set_signature(Box::new(sig));
                }
            }
            msg
        };
        let Some(_slot) = out.slot().await else {
            plan.transfers.count(plan.asked, "busy");
            warn!(client = %plan.client, zone = %plan.zone, limit_wait = ?out.wait,
                "too many transfers at once (--transfers-out): answered SERVFAIL");
            return send(response, servfail(), id).await;
        };
        let Some((kind, messages)) = plan.messages(out).await else {
            // Not a zone of this snapshot after all (`decide` checked its SOA).
            return send(response, servfail(), id).await;
        };
        plan.transfers.served(kind, plan.client);
        let mut chain = self.signing.as_ref().map(Signing::chain);
        let mut info = None;
        for records in messages {
            let mut msg = self.transfer_message(queries, &records);
            if let Some(chain) = &mut chain {
                // Unsigned when signing fails: the client then rejects the transfer.
                match emit(self.transfer_message(queries, &records), u16::MAX)
                    .and_then(|(bytes, _)| chain.sign(&bytes))
                {
                    Ok(sig) => msg.set_signature(Box::new(sig)),
                    Err(e) => warn!(error = %e, "cannot sign a transfer message"),
                }
            }
            match response.send_response(msg).await {
                Ok(i) => info = Some(i),
                Err(e) => {
                    plan.transfers.count(kind, "aborted");
                    debug!(client = %plan.client, zone = %plan.zone, error = %e, "transfer aborted");
                    break;
                }
            }
        }
        info.unwrap_or_else(|| bare_header(id, ResponseCode::NoError).into())
    }
}

/// The response's OPT for the request's: version 0, the client's payload size within our cap,
/// its DO bit (RFC 3225 §3: copied; the zone stays unsigned).
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(clamp_payload(req.max_payload()));
        e.set_version(0);
        e.set_dnssec_ok(req.flags().dnssec_ok);
        e
    })
}

/// A NOTIFY (RFC 1996) to a secondary: accepted from its primaries for a zone it serves, and
/// answered NOERROR with the question echoed; it triggers a refresh of that zone.
fn notified<'s>(
    handler: &Handler,
    snapshot: &'s Snapshot,
    request: &Request,
    signed: bool,
) -> Answer<'s> {
    let Some(trigger) = &handler.notify else {
        return Answer::empty(ResponseCode::NotImp);
    };
    let queries = request.queries.queries();
    let count = |result| {
        handler
            .metrics
            .transfer
            .notifies
            .get_or_create(&crate::metrics::TransferLabels {
                kind: "notify-in",
                result,
            })
            .inc();
    };
    if queries.len() != 1 {
        count("refused");
        return Answer::empty(ResponseCode::FormErr);
    }
    let zone = queries[0].name();
    if !snapshot.apex_names().contains(zone) {
        count("refused");
        return Answer::empty(ResponseCode::NotAuth);
    }
    // Signed when a key is configured, and from a primary either way.
    // RFC 1996 §3.7: the new SOA may ride in the answer section.
    let serial = request
        .answers
        .iter()
        .find(|r| r.name == zone.into())
        .and_then(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
            _ => None,
        });
    if (handler.key.is_some() && !signed) || !trigger(&zone.into(), request.src().ip(), serial) {
        count("refused");
        return Answer::empty(ResponseCode::Refused);
    }
    count("accepted");
    let mut answer = Answer::empty(ResponseCode::NoError);
    answer.authoritative = true;
    answer
}

/// A zone transfer decided but not rendered: its records are made as it is sent.
pub(super) struct Plan<'s> {
    snapshot: &'s Snapshot,
    zone: LowerName,
    /// `axfr` or `ixfr`, as asked.
    asked: &'static str,
    /// The client's serial (IXFR, from the request's authority section).
    ixfr_from: Option<u32>,
    client: IpAddr,
    transfers: Arc<Transfers>,
}

/// A transfer's kind as sent (`ixfr`, or `axfr` also for an IXFR the journal does not cover)
/// and its messages, each rendered when taken.
type Messages<'s> = (
    &'static str,
    Box<dyn Iterator<Item = Vec<Record>> + Send + 's>,
);

impl<'s> Plan<'s> {
    /// An IXFR from the journal when it reaches back to the client's serial, else the whole
    /// zone, in the order shared by the transfers of this snapshot.
    async fn messages(&self, out: &TransfersOut) -> Option<Messages<'s>> {
        if let Some(ixfr) = self.ixfr() {
            return Some(ixfr);
        }
        let order = out.order(self.snapshot, &self.zone).await?;
        Some(("axfr", Box::new(self.snapshot.axfr(order))))
    }

    /// [`Plan::messages`] with an order of its own (the byte path, which cannot wait).
    fn messages_now(&self) -> Option<Messages<'s>> {
        if let Some(ixfr) = self.ixfr() {
            return Some(ixfr);
        }
        let order = self.snapshot.transfer_order(&self.zone)?;
        Some(("axfr", Box::new(self.snapshot.axfr(order))))
    }

    fn ixfr(&self) -> Option<Messages<'s>> {
        let records = self.snapshot.ixfr(&self.zone, self.ixfr_from?)?;
        Some(("ixfr", Box::new(messages(records))))
    }
}

/// AXFR and IXFR over TCP (not UDP nor gRPC) from `--allow-transfer` networks only: the
/// answer's header, the transfer to send and the content-digest option of the answer, if any.
/// An IXFR is answered from the journal when it reaches back to the client's content (its
/// digest in the request's EDNS option, see `zone::digest`) or, without that option, to the
/// client's serial (in the request's authority section); else with the whole zone.
fn axfr<'s>(
    handler: &Handler,
    snapshot: &'s Snapshot,
    request: &Request,
    signed: bool,
    transport: Transport,
) -> (Answer<'s>, Option<Plan<'s>>, Option<Vec<u8>>) {
    // With a key, only signed transfers; from the allowed networks either way.
    let allowed = transport == Transport::Tcp
        && (handler.key.is_none() || signed)
        && handler
            .allow_transfer
            .iter()
            .any(|n| n.contains(&request.src().ip()));
    let query = &request.queries.queries()[0];
    let zone = query.name();
    let ixfr = query.query_type() == RecordType::IXFR;
    let asked = if ixfr { "ixfr" } else { "axfr" };
    if !allowed || snapshot.soa(zone).is_none() {
        // Not allowed, over UDP, or not the apex of a zone we serve.
        let rcode = if allowed {
            ResponseCode::NotAuth
        } else {
            ResponseCode::Refused
        };
        handler.transfers.refused(asked);
        return (Answer::empty(rcode), None, None);
    }
    // A globaldns secondary sends the digest of its copy's content: answered from the journal's
    // version with that content, whatever its serial (it may be another primary's), or whole.
    let content = request
        .edns
        .as_ref()
        .filter(|_| ixfr)
        .and_then(|e| e.option(EdnsCode::Unknown(digest::EDNS_OPTION)))
        .and_then(|o| match o {
            EdnsOption::Unknown(_, b) => digest::Digest::from_bytes(b),
            _ => None,
        });
    let mut echo = None;
    let ixfr_from = match content {
        Some(client) => {
            let found = snapshot.version_of_content(zone, client);
            let result = if found.is_some() {
                "matched"
            } else {
                "unmatched"
            };
            handler
                .metrics
                .transfer
                .ixfr_content
                .get_or_create(&crate::metrics::ResultLabels { result })
                .inc();
            found.map(|(serial, now)| {
                echo = Some([client.to_bytes(), now.to_bytes()].concat());
                serial
            })
        }
        None => ixfr
            .then(|| {
                request.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(soa.serial),
                    _ => None,
                })
            })
            .flatten(),
    };
    let mut answer = Answer::empty(ResponseCode::NoError);
    answer.authoritative = true;
    let plan = Plan {
        snapshot,
        zone: zone.clone(),
        asked,
        ixfr_from,
        client: request.src().ip(),
        transfers: handler.transfers.clone(),
    };
    (answer, Some(plan), echo)
}

fn emit<'a>(msg: response!('_, 'a), limit: u16) -> Result<(Vec<u8>, ResponseInfo), ProtoError> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(limit);
    let info = msg.destructive_emit(&mut encoder)?;
    Ok((bytes, info))
}

/// `msg` within `limit` bytes, or the bare SERVFAIL hickory-server sends when it cannot be
/// encoded.
pub(super) fn encode<'a>(msg: response!('_, 'a), limit: u16) -> (Vec<u8>, ResponseInfo) {
    let id = msg.metadata().id;
    emit(msg, limit).unwrap_or_else(|e| servfail(id, &e))
}

fn servfail(id: u16, error: &ProtoError) -> (Vec<u8>, ResponseInfo) {
    warn!(%error, "error encoding a response");
    let header = bare_header(id, ResponseCode::ServFail);
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    // A header always encodes.
    let _ = hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder);
    (bytes, header.into())
}

/// Sends through hickory-server; when that fails, the header of what was meant (for metrics).
async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: response!('_, 'a),
    id: u16,
) -> ResponseInfo {
    let rcode = msg.metadata().response_code;
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "failed to send a DNS response");
            bare_header(id, rcode).into()
        }
    }
}

/// The question section to echo in a response. hickory-server copies the request's question
/// bytes as they came, compression pointers included; a pointer into the request's header then
/// points at the response's header, whose bytes differ, and the response does not parse. A
/// question with any pointer (never sent by real resolvers) is echoed re-encoded without
/// compression, in the case sent; None: the bytes as they came are right.
pub(super) fn echoed(queries: &Queries) -> Option<Queries> {
    let bytes = queries.as_bytes();
    let mut i = 0;
    let mut compressed = false;
    for _ in 0..queries.len() {
        // Well-formed: hickory-server has read every question from these bytes.
        while let Some(&len) = bytes.get(i) {
            if len & 0xC0 != 0 {
                compressed = true;
                break;
            }
            i += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        i += 4;
    }
    if !compressed {
        return None;
    }
    let mut buf = Vec::with_capacity(bytes.len() + 255);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    for q in queries.queries() {
        q.original().emit(&mut encoder).ok()?;
    }
    Queries::read(&mut BinDecoder::new(&buf), queries.len()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::net::xfer::Protocol;

    /// Found by the dns_wire fuzz target: a question whose name is a pointer to offset 0 (the
    /// ID and flags, which happen to read as a name) was echoed as is, and the response did not
    /// parse. Also a pointer from the second question to the first, which is legal.
    #[test]
    fn questions_with_pointers_are_echoed_uncompressed() {
        let header = [1, 10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0];
        let into_header = [&header[..], &[0xC0, 0x00, 0x00, 0x01, 0x00, 0x01]].concat();
        let request = Request::from_bytes(
            into_header.clone(),
            "127.0.0.1:53".parse().unwrap(),
            Protocol::Udp,
        )
        .unwrap();
        let q = echoed(&request.queries).expect("re-encoded");
        // The name at offset 0 of the request: one label 0x0a, then the root.
        assert_eq!(q.as_bytes(), [1, 10, 0, 0, 1, 0, 1]);

        let mut two = vec![1, 10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
        two.extend_from_slice(b"\x03Svc\x06global\x00\x00\x01\x00\x01");
        two.extend_from_slice(&[0xC0, 12, 0, 28, 0, 1]);
        let request =
            Request::from_bytes(two, "127.0.0.1:53".parse().unwrap(), Protocol::Udp).unwrap();
        let q = echoed(&request.queries).expect("re-encoded");
        assert_eq!(
            q.as_bytes(),
            b"\x03Svc\x06global\x00\x00\x01\x00\x01\x03Svc\x06global\x00\x00\x1c\x00\x01"
        );

        let mut plain = header.to_vec();
        plain.extend_from_slice(b"\x03svc\x06global\x00\x00\x01\x00\x01");
        let request =
            Request::from_bytes(plain, "127.0.0.1:53".parse().unwrap(), Protocol::Udp).unwrap();
        assert!(echoed(&request.queries).is_none());
    }
}
