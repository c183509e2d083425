//! Bad input over gRPC: each gets its documented status (INVALID_ARGUMENT) or a FORMERR
//! DnsPacket, never a crash, and the server keeps answering.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::{Rng, SeedableRng};

use crate::client::{GrpcClient, Reply};
use crate::common::*;
use crate::grpc_addr;
use crate::support::raw_query;

fn invalid(reply: &Reply, what: &str) {
    match reply {
        Err(status) => assert_eq!(status.code, "INVALID_ARGUMENT", "{what}: {status:?}"),
        Ok(m) => panic!("{what}: expected INVALID_ARGUMENT, got a DNS answer {m:?}"),
    }
}

fn formerr(reply: &Reply, id: u16, what: &str) {
    let bytes = reply
        .as_ref()
        .unwrap_or_else(|e| panic!("{what}: expected FORMERR, got {e:?}"));
    let m = Message::from_vec(bytes).unwrap_or_else(|e| panic!("{what}: undecodable: {e}"));
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::FormErr,
        "{what}: {m:?}"
    );
    assert_eq!(m.metadata.id, id, "{what}");
}

fn still_serving(grpc: &mut GrpcClient, s: &mut Server, what: &str) {
    let q = raw_query("httpbin.bar.global.", RecordType::A, None);
    let m = Message::from_vec(&grpc.query(&q.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "after {what}"
    );
    assert_eq!(m.answers.len(), 1, "after {what}");
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "server exited after {what}"
    );
}

#[test]
fn bad_input_gets_its_status_or_formerr_and_the_server_keeps_serving() {
    let (_t, mut s) = fixture(&["--grpc-listen", "127.0.0.1:0"]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));

    invalid(&grpc.query(&[]), "empty message");
    still_serving(&mut grpc, &mut s, "empty message");
    invalid(&grpc.query(&[0x12, 0x34, 0, 0, 0, 1]), "6 bytes");

    // A header alone (no question): FORMERR, as over UDP.
    let header = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    formerr(&grpc.query(&header), 0x1234, "12-byte header");
    // A header announcing a question that is not there: the same.
    let mut announced = header;
    announced[5] = 1;
    formerr(
        &grpc.query(&announced),
        0x1234,
        "header without its question",
    );
    still_serving(&mut grpc, &mut s, "headers");

    // 70 kB: more than any DNS message.
    let mut big = raw_query("httpbin.bar.global.", RecordType::A, None)
        .to_vec()
        .unwrap();
    big.resize(70_000, 0);
    invalid(&grpc.query(&big), "70 kB message");
    // Just over the limit, as well as far over it (tonic's own limit is a few bytes above).
    big.truncate(65_536);
    invalid(&grpc.query(&big), "65,536-byte message");
    still_serving(&mut grpc, &mut s, "oversized messages");

    // A response (QR set) is not a question: UDP drops it, gRPC says so.
    let mut response = raw_query("httpbin.bar.global.", RecordType::A, None)
        .to_vec()
        .unwrap();
    response[2] |= 0x80;
    invalid(&grpc.query(&response), "a response");
    still_serving(&mut grpc, &mut s, "a response");

    // Random bytes: an answer (with the packet's ID), FORMERR, or INVALID_ARGUMENT.
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    for i in 0..300 {
        let len = rng.random_range(0..600);
        let packet: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let what = format!("random packet {i} ({len} bytes)");
        match grpc.query(&packet) {
            Ok(bytes) => {
                let m = Message::from_vec(&bytes)
                    .unwrap_or_else(|e| panic!("{what}: answer undecodable: {e}"));
                assert_eq!(
                    m.metadata.id,
                    u16::from_be_bytes([packet[0], packet[1]]),
                    "{what}"
                );
            }
            Err(status) => {
                let short_or_response = len < 12 || packet[2] & 0x80 != 0;
                assert!(
                    status.code == "INVALID_ARGUMENT" && short_or_response,
                    "{what}: {status:?}"
                );
            }
        }
    }
    still_serving(&mut grpc, &mut s, "random bytes");
    assert!(metric0(&s, "globaldns_grpc_errors_total{kind=\"invalid_argument\"}") >= 6.0);
}

#[test]
fn methods_other_than_query_are_unimplemented() {
    let (_t, mut s) = fixture(&["--grpc-listen", "127.0.0.1:0"]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    let axfr = raw_query("global.", RecordType::AXFR, None)
        .to_vec()
        .unwrap();
    for method in [
        "/coredns.dns.DnsService/AXFRQuery",
        "/coredns.dns.DnsService/Nope",
        "/grpc.health.v1.Health/Watch",
    ] {
        let status = grpc.stream(method, &axfr).unwrap_err();
        assert_eq!(status.code, "UNIMPLEMENTED", "{method}: {status:?}");
    }
    still_serving(&mut grpc, &mut s, "unimplemented methods");
    assert_eq!(
        metric0(&s, "globaldns_grpc_errors_total{kind=\"unimplemented\"}"),
        3.0
    );
}
