//! The `coredns.dns.DnsService` HTTP/2 service tonic's server runs: `Query` (unary) through
//! tonic's gRPC framing and prost's codec; every other method (`AXFRQuery` of older plugins
//! included) is UNIMPLEMENTED. Written out by hand: one method does not need protoc.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use super::conn::Busy;
use super::query::{answer, error, invalid, DnsPacket, MAX_DNS_MESSAGE};
use crate::dns::Handler;

/// The one method served.
pub const QUERY: &str = "/coredns.dns.DnsService/Query";

/// The protobuf of a [`MAX_DNS_MESSAGE`] packet: a tag byte and a 3-byte length (CoreDNS's own
/// client caps its messages at this). A larger request is refused before it is read whole.
const MAX_PROTOBUF: usize = MAX_DNS_MESSAGE + 4;

#[derive(Clone)]
pub struct DnsService {
    handler: Arc<Handler>,
}

impl DnsService {
    pub fn new(handler: Arc<Handler>) -> DnsService {
        DnsService { handler }
    }
}

type Reply = http::Response<Body>;

impl tower_service::Service<http::Request<Body>> for DnsService {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Held until the reply is made: the connection is not idle meanwhile.
        let busy = Busy::of(request.extensions());
        let handler = self.handler.clone();
        Box::pin(async move {
            if request.uri().path() != QUERY {
                error(&handler, "unimplemented");
                let why = format!("{} is not served; {QUERY} is", request.uri().path());
                return Ok(Status::unimplemented(why).into_http());
            }
            let peer = busy
                .as_ref()
                .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), Busy::peer);
            let mut grpc = Grpc::new(ProstCodec::<DnsPacket, DnsPacket>::default())
                .max_decoding_message_size(MAX_PROTOBUF)
                .max_encoding_message_size(MAX_PROTOBUF);
            let reply = grpc
                .unary(
                    Query {
                        handler: handler.clone(),
                        peer,
                    },
                    request,
                )
                .await;
            Ok(too_large_is_invalid(&handler, reply))
        })
    }
}

/// tonic refuses a request over [`MAX_PROTOBUF`] with OUT_OF_RANGE; over 65,535 bytes is
/// INVALID_ARGUMENT here, however much larger. (Replies never reach the limit: they are made
/// within 65,535 bytes.)
fn too_large_is_invalid(handler: &Handler, reply: Reply) -> Reply {
    let status = reply
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    if status == Some(Code::OutOfRange as i32) {
        return invalid(handler, "longer than 65,535 bytes").into_http();
    }
    reply
}

struct Query {
    handler: Arc<Handler>,
    peer: SocketAddr,
}

impl UnaryService<DnsPacket> for Query {
    type Response = DnsPacket;
    type Future = Ready<Result<tonic::Response<DnsPacket>, Status>>;

    fn call(&mut self, request: tonic::Request<DnsPacket>) -> Self::Future {
        let reply = answer(&self.handler, &request.get_ref().msg, self.peer);
        ready(reply.map(|msg| tonic::Response::new(DnsPacket { msg })))
    }
}
