//! CoreDNS's gRPC `DnsService` (`--grpc-listen`), asked by Python's grpcio (`dns_client.py`, a
//! client that is not ours, shaped like CoreDNS's `grpc` plugin) against the real binary: the
//! answers are the UDP answers byte for byte, many calls share one channel, a restarted server
//! is reconnected to, TLS (with and without client certificates) is enforced, and bad input gets
//! the documented status or FORMERR while the server keeps serving.

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../answers/support.rs"]
mod support;

mod answers;
mod client;
mod connections;
mod inputs;
mod tls;

use std::net::SocketAddr;

use common::Server;

/// The first `grpc=` address of the server's listening line.
pub fn grpc_addr(s: &Server) -> SocketAddr {
    let log = s.log.lock().unwrap();
    log.iter()
        .find_map(|line| {
            line.split("listening ")
                .nth(1)?
                .split_whitespace()
                .find_map(|w| w.strip_prefix("grpc="))?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .expect("a grpc= address in the listening line")
}
