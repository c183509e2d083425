//! The DNS frontend: protocol rules (opcode, question count, EDNS, transfers) around the zone's
//! answer engine, served by hickory-server over TCP (and UDP with `--udp-fast-path false`), and
//! encoded to bytes for the UDP fast path and gRPC by [`Handler::wire_on`].

mod listen;
pub mod metrics;
mod ratelimit;
mod reply;
mod tcp_io;
mod tsig;
mod xfr_out;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use ipnet::IpNet;

pub use listen::{bind, bind_pair, server, tcp_server, ConnectionCap, Listeners, TcpLimits};
pub use ratelimit::{RateDecision, RateLimiter};
use reply::{encode, Reply};
pub use xfr_out::TransfersOut;

use crate::metrics::{KindLabels, Metrics};
use crate::notify::Transfers;
use crate::published::Published;
use metrics::{ActionLabels, QueryLabels};

/// The UDP payload size we advertise and never exceed (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP payload size a response may use for a client's EDNS size.
pub fn clamp_payload(requested: u16) -> u16 {
    requested.clamp(512, MAX_UDP_PAYLOAD)
}

/// A secondary's NOTIFY receiver: called with the zone and the sender's address; true when the
/// sender is one of its primaries (the zone is then refreshed at once).
/// Called for a NOTIFY of a zone, with its sender and the serial its SOA carried (if any).
pub type OnNotify =
    Arc<dyn Fn(&hickory_proto::rr::Name, std::net::IpAddr, Option<u32>) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Handler {
    pub snapshot: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub allow_transfer: Vec<IpNet>,
    /// Transfers served and their recent clients (a primary NOTIFYs them).
    pub transfers: Arc<Transfers>,
    /// The cap on transfers sent at once (`--transfers-out`), and what they share.
    pub transfers_out: Arc<TransfersOut>,
    /// A secondary's NOTIFY receiver. None: NOTIFY is not implemented here (NOTIMP).
    pub notify: Option<OnNotify>,
    /// TSIG key: signed requests are verified and answered signed; transfers and NOTIFY must
    /// be signed when it is set.
    pub key: Option<hickory_proto::rr::TSigner>,
    /// Response rate limiting of UDP (`--rate-limit`); None: off.
    pub rate_limit: Option<Arc<RateLimiter>>,
}

impl Handler {
    /// A handler with no transfers, NOTIFY, TSIG or rate limiting: what tests, benchmarks and
    /// fuzzers answer with.
    pub fn plain(snapshot: Arc<Published>, metrics: Arc<Metrics>) -> Handler {
        Handler {
            snapshot,
            metrics,
            allow_transfer: vec![],
            transfers: Arc::default(),
            transfers_out: Arc::default(),
            notify: None,
            key: None,
            rate_limit: None,
        }
    }
}

/// How a message came: the size its answer may take, whether it may start a zone transfer, and
/// its `transport` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// CoreDNS's gRPC `DnsService` (src/grpc): one message in, one out. Sized like TCP (up to
    /// 65,535 bytes, never truncated); transfers are refused as over UDP, since a transfer of
    /// several messages cannot be one reply.
    Grpc,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Grpc => "grpc",
        }
    }

    /// hickory's protocol for the request: a stream's but for UDP.
    fn protocol(self) -> Protocol {
        match self {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp | Transport::Grpc => Protocol::Tcp,
        }
    }

    fn of(protocol: Protocol) -> Transport {
        if protocol == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }
}

/// A response as bytes, and the labels it counts under (None: the caller counts nothing; a
/// packet that does not parse is counted by [`Handler::unparsable`]).
pub struct Wire {
    pub bytes: Vec<u8>,
    pub counted: Option<(&'static str, &'static str)>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        let transport = Transport::of(request.protocol());
        let udp = transport == Transport::Udp;
        if udp {
            match self.limit(request.src()) {
                RateDecision::Send => {}
                RateDecision::Slip => {
                    let reply = Reply::slip(request);
                    return reply
                        .send(&request.queries, udp, &mut response, &self.transfers_out)
                        .await;
                }
                RateDecision::Drop => {
                    return bare_header(request.metadata.id, ResponseCode::Refused).into();
                }
            }
        }
        // Held across awaits (a transfer is sent over seconds): not a short-lived guard.
        let snapshot = self.snapshot.load_full();
        let reply = Reply::decide(self, &snapshot, request, transport);
        let echoed = reply::echoed(&request.queries);
        let queries = echoed.as_ref().unwrap_or(&request.queries);
        let info = reply
            .send(queries, udp, &mut response, &self.transfers_out)
            .await;
        count_queries(
            &self.metrics,
            (reply.qtype, rcode_label(info.response_code)),
            transport.label(),
            1,
        );
        self.metrics
            .dns
            .latency
            .observe(start.elapsed().as_secs_f64());
        info
    }
}

impl Handler {
    /// Whether a UDP response to `src` may be sent, within `--rate-limit`: the one place both
    /// UDP paths (the fast path and hickory-server's loop) ask, and where limiting is counted.
    /// TCP is never asked.
    pub fn limit(&self, src: SocketAddr) -> RateDecision {
        let Some(limiter) = &self.rate_limit else {
            return RateDecision::Send;
        };
        let verdict = limiter.check(src.ip());
        let action = match verdict {
            RateDecision::Send => return verdict,
            RateDecision::Slip => "slipped",
            RateDecision::Drop => "dropped",
        };
        self.metrics
            .dns
            .rate_limited
            .get_or_create(&ActionLabels { action })
            .inc();
        verdict
    }

    /// The truncated, empty response a limited client is sent instead of its answer (see
    /// [`Handler::limit`]), or None when the packet gets no response at all.
    pub fn slip_wire(&self, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let request = Request::from_bytes(packet.to_vec(), src, Protocol::Udp).ok()?;
        if request.metadata.message_type == MessageType::Response {
            return None;
        }
        Some(Reply::slip(&request).encode(&request.queries, true).0)
    }

    /// What hickory-server would send for this packet, encoded once (within the client's UDP
    /// size over UDP), or None when it would send nothing (shorter than a header, or a
    /// response). The fast path's and gRPC's only way to the general path. A transfer (TCP)
    /// gives its last message: transfers are streamed by `Reply::send`.
    pub fn wire_on(&self, packet: &[u8], src: SocketAddr, transport: Transport) -> Option<Wire> {
        let udp = transport == Transport::Udp;
        let Ok(request) = Request::from_bytes(packet.to_vec(), src, transport.protocol()) else {
            // Counted here, not by the caller: a fast-path caller caches what it counts.
            return self.unparsable(packet, transport).map(|bytes| Wire {
                bytes,
                counted: None,
            });
        };
        if request.metadata.message_type == MessageType::Response {
            self.dropped("response");
            return None;
        }
        let snapshot = self.snapshot.load();
        let reply = Reply::decide(self, &snapshot, &request, transport);
        let echoed = reply::echoed(&request.queries);
        let (bytes, info) = reply.encode(echoed.as_ref().unwrap_or(&request.queries), udp);
        Some(Wire {
            bytes,
            counted: Some((reply.qtype, rcode_label(info.response_code))),
        })
    }
}

impl Handler {
    /// The answer to a packet that does not parse as a DNS message: as hickory-server, None
    /// (dropped) without a header, FORMERR with one; counted either way.
    pub fn unparsable(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            self.dropped("short");
            return None;
        };
        let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
        let msg = MessageResponseBuilder::new(&queries, None)
            .error_msg(&header.metadata, ResponseCode::FormErr);
        let udp = transport == Transport::Udp;
        let (bytes, _) = encode(msg, if udp { 512 } else { u16::MAX });
        count_queries(&self.metrics, ("NONE", "FORMERR"), transport.label(), 1);
        Some(bytes)
    }

    pub fn dropped(&self, kind: &'static str) {
        self.metrics
            .dns
            .dropped
            .get_or_create(&KindLabels { kind })
            .inc();
    }
}

/// Counts `n` answered queries of one kind: the one place queries are counted, for both the
/// hickory-server handler and the fast path.
pub fn count_queries(
    metrics: &Metrics,
    (qtype, rcode): (&'static str, &'static str),
    transport: &'static str,
    n: u64,
) {
    metrics
        .dns
        .queries
        .get_or_create(&QueryLabels {
            qtype,
            rcode,
            transport,
        })
        .inc_by(n);
}

/// The query types counted under their own name (hickory's), every other under `OTHER`: every
/// type the zone answers (the zone's records test checks its data types are here), transfers,
/// and the types resolvers commonly ask of any name.
const LABELLED_TYPES: [RecordType; 14] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::NS,
    RecordType::ANY,
    RecordType::AXFR,
    RecordType::IXFR,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::HTTPS,
    RecordType::SVCB,
];

/// The `qtype` label a query is counted under (a bounded set: see [`LABELLED_TYPES`]).
pub fn qtype_label(t: RecordType) -> &'static str {
    if LABELLED_TYPES.contains(&t) {
        t.into()
    } else {
        "OTHER"
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

/// The header hickory-server sends when a response cannot be sent or encoded: no question, no
/// records.
fn bare_header(id: u16, rcode: ResponseCode) -> Header {
    let mut metadata = hickory_proto::op::Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = rcode;
    Header {
        metadata,
        counts: Default::default(),
    }
}
