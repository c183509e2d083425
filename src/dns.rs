//! The DNS frontend: protocol rules (opcode, question count, EDNS, transfers) around the snapshot's
//! lookup, served by hickory-server over UDP and TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::published::Published;
use anyhow::{Context, Result};
use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tracing::warn;

use crate::metrics::{Metrics, QueryLabels};
use crate::zone::{Answer, Snapshot};

/// The UDP payload size we advertise and never exceed (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Records per message in a zone transfer.
const AXFR_CHUNK: usize = 500;

#[derive(Clone)]
pub struct Handler {
    pub snapshot: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub allow_transfer: Vec<IpNet>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        let snapshot = self.snapshot.load();
        let (info, qtype) = self.respond(&snapshot, request, response).await;
        let transport = match request.protocol() {
            Protocol::Udp => "udp",
            _ => "tcp",
        };
        self.metrics
            .queries
            .get_or_create(&QueryLabels {
                qtype,
                rcode: rcode_label(info.response_code),
                transport,
            })
            .inc();
        self.metrics.latency.observe(start.elapsed().as_secs_f64());
        info
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(
        &self,
        snapshot: &Snapshot,
        request: &Request,
        mut response: R,
    ) -> (ResponseInfo, &'static str) {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let queries = request.queries.queries();
        let qtype = queries
            .first()
            .map_or("NONE", |q| qtype_label(q.query_type()));

        // The response's OPT: our version 0, capped payload (the encoder truncates to it on UDP).
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e.set_version(0);
            e.set_dnssec_ok(false);
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        let error = |code| {
            let mut m = meta;
            m.response_code = code;
            m
        };
        if request.metadata.op_code != OpCode::Query {
            return (
                send_empty(&mut response, builder, error(ResponseCode::NotImp)).await,
                qtype,
            );
        }
        if queries.len() != 1 {
            return (
                send_empty(&mut response, builder, error(ResponseCode::FormErr)).await,
                qtype,
            );
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (
                send_empty(&mut response, builder, error(ResponseCode::BADVERS)).await,
                qtype,
            );
        }
        let query = &queries[0];
        if !snapshot.loaded {
            // Before the first full load, an NXDOMAIN would be cached downstream: say SERVFAIL.
            return (
                send_empty(&mut response, builder, error(ResponseCode::ServFail)).await,
                qtype,
            );
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return (
                self.transfer(snapshot, request, response, meta, edns.as_ref())
                    .await,
                qtype,
            );
        }

        let answer: Answer<'_> = snapshot.lookup(query.name(), query.query_type());
        meta.response_code = answer.rcode;
        meta.authoritative = answer.authoritative;
        let build = |meta| {
            MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
                meta,
                answer.answers.iter().map(|c| c.as_ref()),
                answer.authority.iter().copied(),
                std::iter::empty(),
                answer.additional.iter().map(|c| c.as_ref()),
            )
        };
        if request.protocol() == Protocol::Udp {
            let limit = edns.as_ref().map_or(512, Edns::max_payload);
            if !fits(limit, build(meta)) {
                // hickory's encoder would fill the answer section and drop the OPT for want of
                // room; a truncated answer must keep it (RFC 6891 §7). Like Knot and BIND: TC,
                // empty sections, OPT; the client retries over TCP.
                meta.truncation = true;
                return (send_empty(&mut response, builder, meta).await, qtype);
            }
        }
        (
            send(&mut response, build(meta), request.metadata.id).await,
            qtype,
        )
    }

    /// AXFR (IXFR answered the same way) over TCP from `--allow-transfer` networks only.
    async fn transfer<R: ResponseHandler>(
        &self,
        snapshot: &Snapshot,
        request: &Request,
        mut response: R,
        mut meta: Metadata,
        edns: Option<&Edns>,
    ) -> ResponseInfo {
        let query = &request.queries.queries()[0];
        let allowed = request.protocol() == Protocol::Tcp
            && self
                .allow_transfer
                .iter()
                .any(|n| n.contains(&request.src().ip()));
        let records = if allowed {
            snapshot.zone_records(query.name())
        } else {
            vec![]
        };
        let builder = || MessageResponseBuilder::new(&request.queries, edns);
        if records.is_empty() {
            // Not allowed, over UDP, or not the apex of a zone we serve.
            meta.response_code = if allowed {
                ResponseCode::NotAuth
            } else {
                ResponseCode::Refused
            };
            return send_empty(&mut response, builder(), meta).await;
        }
        meta.authoritative = true;
        // RFC 5936: the SOA opens and closes the transfer.
        let soa = records[0].clone();
        let mut all: Vec<Record> = records;
        all.push(soa);
        let mut info = None;
        for chunk in all.chunks(AXFR_CHUNK) {
            let msg = builder().build(
                meta,
                chunk.iter(),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
            );
            info = Some(send(&mut response, msg, request.metadata.id).await);
        }
        info.expect("at least one chunk")
    }
}

/// Whether the whole message encodes within `limit` bytes.
fn fits<'a>(
    limit: u16,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> bool {
    let mut buf = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    msg.destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

async fn send_empty<R: ResponseHandler>(
    response: &mut R,
    builder: MessageResponseBuilder<'_>,
    meta: Metadata,
) -> ResponseInfo {
    let id = meta.id;
    send(response, builder.build_no_records(meta), id).await
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    id: u16,
) -> ResponseInfo {
    let rcode = msg.metadata().response_code;
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "failed to send a DNS response");
            let mut meta =
                Metadata::new(id, hickory_proto::op::MessageType::Response, OpCode::Query);
            meta.response_code = rcode;
            hickory_proto::op::Header {
                metadata: meta,
                counts: Default::default(),
            }
            .into()
        }
    }
}

pub fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        _ => "OTHER",
    }
}

pub fn rcode_label(c: ResponseCode) -> &'static str {
    match c {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// Binds UDP and TCP on the same address. With port 0, the TCP listener takes the port the UDP
/// socket got, so one address serves both (retrying if that TCP port is taken).
pub async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind UDP {addr}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => {
                warn!(error = %e, port = bound.port(), "TCP port taken, trying another");
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind TCP {addr}")),
        }
    }
    anyhow::bail!(
        "could not find a free port for UDP and TCP on {}",
        addr.ip()
    )
}

/// TCP only: UDP is answered by the fast path.
pub fn tcp_server(handler: Handler, tcp: TcpListener) -> Server<Handler> {
    let mut server = Server::new(handler);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    server
}

pub fn server(handler: Handler, udp: UdpSocket, tcp: TcpListener) -> Server<Handler> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 64);
    server
}
