//! One `Query` call: CoreDNS's `DnsPacket` in, the DNS answer out, through the same answer engine
//! as UDP and TCP ([`Handler::wire_on`]); what is not a DNS query gets a gRPC status instead.

use std::net::SocketAddr;
use std::time::Instant;

use tonic::Status;

use crate::dns::{count_queries, Handler, Transport};
use crate::metrics::KindLabels;

/// CoreDNS's `pb/dns.proto`: `message DnsPacket { bytes msg = 1; }`, for requests and replies.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DnsPacket {
    #[prost(bytes = "vec", tag = "1")]
    pub msg: Vec<u8>,
}

/// The largest DNS message, as over TCP: no larger request is read, no larger answer sent.
pub const MAX_DNS_MESSAGE: usize = 65_535;

/// A DNS message's fixed header: anything shorter is not a DNS message.
const HEADER_LEN: usize = 12;

/// The answer to `msg` from a client at `peer` (the address the transfer ACL and NOTIFY see),
/// counted under `transport="grpc"`. Errors: empty, shorter than a header, longer than
/// [`MAX_DNS_MESSAGE`], or a response (QR set): `INVALID_ARGUMENT`, as such a packet gets no
/// answer over UDP. A packet with a header that does not parse further gets FORMERR, as over UDP.
pub fn answer(handler: &Handler, msg: &[u8], peer: SocketAddr) -> Result<Vec<u8>, Status> {
    let start = Instant::now();
    if msg.len() < HEADER_LEN {
        handler.dropped("short");
        return Err(invalid(handler, "shorter than a DNS header (12 bytes)"));
    }
    if msg.len() > MAX_DNS_MESSAGE {
        return Err(invalid(handler, "longer than 65,535 bytes"));
    }
    // With a header, only a response gets no answer (counted as dropped by wire_on).
    let Some(wire) = handler.wire_on(msg, peer, Transport::Grpc) else {
        return Err(invalid(handler, "a DNS response (QR set), not a query"));
    };
    if let Some(labels) = wire.counted {
        count_queries(&handler.metrics, labels, Transport::Grpc.label(), 1);
    }
    handler
        .metrics
        .dns
        .latency
        .observe(start.elapsed().as_secs_f64());
    Ok(wire.bytes)
}

/// INVALID_ARGUMENT, counted.
pub fn invalid(handler: &Handler, why: &str) -> Status {
    error(handler, "invalid_argument");
    Status::invalid_argument(format!("DnsPacket.msg is {why}"))
}

pub fn error(handler: &Handler, kind: &'static str) {
    handler
        .metrics
        .grpc
        .errors
        .get_or_create(&KindLabels { kind })
        .inc();
}
