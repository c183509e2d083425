//! gRPC answers are the UDP answers, byte for byte (same request bytes, so the same ID): the UDP
//! fast path and gRPC meet only in the answer engine. A large answer is the TCP one.

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::client::{hex, GrpcClient};
use crate::common::*;
use crate::grpc_addr;
use crate::support::{raw_query, tcp_exchange, udp_exchange};

/// A question, what it must get (so that UDP and gRPC cannot agree on a wrong answer), and how
/// many answer records.
struct Case {
    what: &'static str,
    query: Message,
    rcode: ResponseCode,
    answers: usize,
}

fn case(what: &'static str, query: Message, rcode: ResponseCode, answers: usize) -> Case {
    Case {
        what,
        query,
        rcode,
        answers,
    }
}

fn cases() -> Vec<Case> {
    use RecordType::*;
    use ResponseCode::*;
    let q = |name: &str, t| raw_query(name, t, None);
    let mut cases = vec![
        case("A", q("httpbin.bar.global.", A), NoError, 1),
        case("AAAA", q("static.bar.global.", AAAA), NoError, 1),
        case("NXDOMAIN", q("nope.bar.global.", A), NXDomain, 0),
        case("NODATA", q("only4.bar.global.", AAAA), NoError, 0),
        case("wildcard", q("any-name.wild.global.", A), NoError, 1),
        case("SRV", q("_http._tcp.httpbin.bar.global.", SRV), NoError, 1),
        case("PTR", q("7.7.10.240.in-addr.arpa.", PTR), NoError, 1),
        case("SOA", q("global.", SOA), NoError, 1),
        case("out of zone", q("www.example.com.", A), Refused, 0),
        // CoreDNS's grpc health check.
        case("health check . NS", q(".", NS), Refused, 0),
        case("mixed case", q("HtTpBiN.bAr.GLOBAL.", A), NoError, 1),
    ];
    for size in [512, 1232, 4096] {
        let what = match size {
            512 => "EDNS 512",
            1232 => "EDNS 1232",
            _ => "EDNS 4096",
        };
        cases.push(case(
            what,
            raw_query("httpbin.bar.global.", A, Some((size, 0))),
            NoError,
            1,
        ));
    }
    let mut dnssec = raw_query("static.bar.global.", A, Some((1232, 0)));
    dnssec.edns.as_mut().unwrap().set_dnssec_ok(true);
    cases.push(case("DO bit", dnssec, NoError, 2));
    cases.push(case(
        "EDNS version 1",
        raw_query("httpbin.bar.global.", A, Some((1232, 1))),
        BADVERS,
        0,
    ));
    let mut notify = q("global.", SOA);
    notify.metadata.op_code = OpCode::Notify;
    cases.push(case("NOTIFY to a primary", notify, NotImp, 0));
    cases
}

#[test]
fn grpc_answers_are_the_udp_answers_byte_for_byte() {
    let (_t, s) = fixture(&["--grpc-listen", "127.0.0.1:0"]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    for (i, c) in cases().into_iter().enumerate() {
        let mut query = c.query;
        query.metadata.id = 1000 + i as u16;
        let bytes = query.to_vec().unwrap();
        let udp =
            udp_exchange(s.dns, &bytes).unwrap_or_else(|| panic!("{}: no UDP answer", c.what));
        let answer = grpc
            .query(&bytes)
            .unwrap_or_else(|e| panic!("{}: gRPC status {e:?}", c.what));
        let m = Message::from_vec(&answer).unwrap();
        assert_eq!(
            hex(&answer),
            hex(&udp),
            "{}: gRPC {m:?}\nUDP {:?}",
            c.what,
            Message::from_vec(&udp)
        );
        assert_eq!(m.metadata.id, query.metadata.id, "{}", c.what);
        // By number: BADVERS and BADSIG share 16, which hickory decodes as BADSIG.
        assert_eq!(
            u16::from(m.metadata.response_code),
            u16::from(c.rcode),
            "{}: {m:?}",
            c.what
        );
        assert_eq!(m.answers.len(), c.answers, "{}: {m:?}", c.what);
        if c.what == "mixed case" {
            assert_eq!(m.answers[0].name.to_string(), "HtTpBiN.bAr.GLOBAL.");
        }
        if c.what == "DO bit" {
            assert!(m.edns.as_ref().unwrap().flags().dnssec_ok, "{m:?}");
        }
    }
    // Counted as gRPC queries, apart from UDP's.
    let grpc_a = "globaldns_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\",transport=\"grpc\"}";
    assert_eq!(metric0(&s, grpc_a), 7.0);
    let refused = "globaldns_dns_queries_total{qtype=\"NS\",rcode=\"REFUSED\",transport=\"grpc\"}";
    assert_eq!(metric0(&s, refused), 1.0);
}

/// One host with 60 addresses: 60 A records do not fit in 512 bytes.
fn big_host() -> (&'static str, String) {
    let addresses: Vec<String> = (1..=60).map(|i| format!("10.7.0.{i}")).collect();
    let refs: Vec<&str> = addresses.iter().map(|a| a.as_str()).collect();
    ("big.yaml", se("big", "bar", &["big.bar.global"], &refs, ""))
}

#[test]
fn a_large_answer_is_whole_as_over_tcp_where_udp_truncates() {
    let (_t, s) = start_fixture(&["--grpc-listen", "127.0.0.1:0"], &[big_host()]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    let bytes = raw_query("big.bar.global.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let udp = Message::from_vec(&udp_exchange(s.dns, &bytes).unwrap()).unwrap();
    assert!(
        udp.metadata.truncation,
        "UDP without EDNS truncates: {udp:?}"
    );
    let tcp = tcp_exchange(s.dns, &bytes).unwrap();
    let answer = grpc.query(&bytes).unwrap();
    assert_eq!(hex(&answer), hex(&tcp));
    let m = Message::from_vec(&answer).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    assert!(matches!(m.answers[0].data, RData::A(_)));
}

#[test]
fn transfers_are_refused_over_grpc_as_over_udp_even_from_allowed_peers() {
    let (_t, s) = fixture(&[
        "--grpc-listen",
        "127.0.0.1:0",
        "--allow-transfer",
        "127.0.0.0/8",
    ]);
    let mut grpc = GrpcClient::plain(grpc_addr(&s));
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let bytes = raw_query("global.", t, None).to_vec().unwrap();
        // TCP serves the peer...
        let tcp = Message::from_vec(&tcp_exchange(s.dns, &bytes).unwrap()).unwrap();
        assert_eq!(
            tcp.metadata.response_code,
            ResponseCode::NoError,
            "{t}: {tcp:?}"
        );
        assert!(!tcp.answers.is_empty(), "{t}: {tcp:?}");
        // ...one gRPC reply cannot carry a transfer: refused, as UDP refuses it.
        let answer = grpc.query(&bytes).unwrap();
        assert_eq!(
            hex(&answer),
            hex(&udp_exchange(s.dns, &bytes).unwrap()),
            "{t}"
        );
        let m = Message::from_vec(&answer).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{t}: {m:?}"
        );
    }
}
