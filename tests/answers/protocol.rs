//! REFUSED, ANY, opcodes, malformed packets, header fields.

use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;
use crate::support::*;

#[test]
fn outside_every_zone_is_refused() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for (qname, rtype) in [
            ("example.com.", RecordType::A),
            ("httpbin.example.com.", RecordType::A),
            ("xglobal.", RecordType::A),
            ("global.example.", RecordType::SOA),
            (".", RecordType::NS),
            ("3.2.1.10.in-addr.arpa.", RecordType::PTR),
        ] {
            let m = q(&s, t, qname, rtype);
            refused(&m, &format!("{t:?} {qname} {rtype}"));
        }
    }
}

#[test]
fn any_gets_the_rfc8482_minimal_answer() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        for qname in ["httpbin.bar.global.", "static.bar.global."] {
            let m = q(&s, t, qname, RecordType::ANY);
            positive(&m, qname, RecordType::HINFO, 30, &w(qname));
            assert_eq!(m.answers.len(), 1, "{t:?} {qname}: one record only: {m:?}");
            match &m.answers[0].data {
                RData::HINFO(h) => {
                    assert_eq!(&*h.cpu, b"RFC8482", "{t:?}");
                    assert_eq!(&*h.os, b"", "{t:?}");
                }
                o => panic!("{t:?}: {o:?}"),
            }
        }
        let m = q(&s, t, "nope.bar.global.", RecordType::ANY);
        nxdomain(&m, "global.", 30, &w("ANY of a missing name"));
        let m = q(&s, t, "global.", RecordType::ANY);
        check_header(&m, &w("apex ANY"));
        assert_eq!(
            m.answers.len(),
            1,
            "{t:?}: apex ANY: one RRset at most: {m:?}"
        );
        let m = q(&s, t, "example.com.", RecordType::ANY);
        refused(&m, &w("ANY outside"));
    }
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for op in [
            OpCode::Notify,
            OpCode::Status,
            OpCode::Update,
            OpCode::Unknown(3),
        ] {
            let mut m = Message::new(rand::random(), MessageType::Query, op);
            m.add_query(Query::query(name("global."), RecordType::SOA));
            let r = exchange(s.dns, t, &m);
            check_header(&r, &format!("{t:?} {op:?}"));
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NotImp,
                "{t:?}: opcode {op:?}: {r:?}"
            );
            assert_eq!(r.metadata.op_code, op, "{t:?}: opcode echoed");
            assert!(r.answers.is_empty(), "{t:?}: {r:?}");
        }
    }
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        let mut none = Message::query();
        none.metadata.recursion_desired = false;
        let mut two = raw_query("httpbin.bar.global.", RecordType::A, None);
        two.add_query(Query::query(name("static.bar.global."), RecordType::A));
        for (what, m) in [("QDCOUNT 0", none), ("QDCOUNT 2", two)] {
            let r = exchange(s.dns, t, &m);
            check_header(&r, &format!("{t:?} {what}"));
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::FormErr,
                "{t:?} {what}: {r:?}"
            );
            assert!(r.answers.is_empty(), "{t:?} {what}: {r:?}");
        }
        // A header announcing a question that is not there.
        let mut bytes = raw_query("httpbin.bar.global.", RecordType::A, None)
            .to_vec()
            .unwrap();
        bytes.truncate(12 + 5);
        let r = exchange_bytes(s.dns, t, &bytes).map(|b| Message::from_vec(&b).unwrap());
        let r = r.unwrap_or_else(|| panic!("{t:?}: no answer to a truncated question"));
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::FormErr,
            "{t:?}: {r:?}"
        );
    }
}

#[test]
fn runt_packets_are_dropped() {
    let (_t, s) = fixture(&[]);
    let good = raw_query("httpbin.bar.global.", RecordType::A, None);
    let good_bytes = good.to_vec().unwrap();
    for runt in [&b"\x12\x34\x01"[..], &b"hello"[..], &good_bytes[..11]] {
        // UDP: the runt then a good query from the same socket; the first reply is the good one's.
        let sock = udp_socket();
        sock.send_to(runt, s.dns).unwrap();
        sock.send_to(&good_bytes, s.dns).unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("an answer to the good query");
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            r.metadata.id,
            good.metadata.id,
            "UDP: the {}-byte runt got an answer: {r:?}",
            runt.len()
        );
        assert_eq!(answer_addrs(&r).len(), 1);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "UDP: a second datagram came back for the {}-byte runt",
            runt.len()
        );

        // TCP: no answer to the runt frame; the server may close the connection, but must not
        // reply to it.
        let mut c = tcp_connect(s.dns);
        tcp_send(&mut c, runt);
        tcp_send(&mut c, &good_bytes);
        if let Some(b) = tcp_read(&mut c) {
            let r = Message::from_vec(&b).unwrap();
            assert_eq!(
                r.metadata.id,
                good.metadata.id,
                "TCP: the {}-byte runt got an answer: {r:?}",
                runt.len()
            );
        }
    }
    // Still serving.
    for t in BOTH {
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        assert_eq!(
            answer_addrs(&m).len(),
            1,
            "{t:?}: still answering after runts"
        );
    }
}

#[test]
fn question_keeps_its_original_case() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        // Each name asked in one spelling, then another, then the first again: an answer built (or
        // cached) for one spelling must not leak its question into the other's response.
        for (spellings, rtype) in [
            (
                ["httpbin.bar.global.", "HttpBin.BAR.global."],
                RecordType::A,
            ),
            (["NoPe.Bar.GLOBAL.", "nope.bar.global."], RecordType::A),
            (["x.wild.global.", "X.Wild.Global."], RecordType::A),
            (["Example.COM.", "example.com."], RecordType::A),
            (["GLOBAL.", "global."], RecordType::SOA),
        ] {
            for qname in [spellings[0], spellings[1], spellings[0]] {
                for edns in [Some((1232, 0)), None] {
                    let m = raw_query(qname, rtype, edns);
                    let r = exchange(s.dns, t, &m);
                    assert_eq!(r.queries.len(), 1, "{t:?} {qname}");
                    assert_eq!(
                        r.queries[0].name().to_string(),
                        qname,
                        "{t:?} EDNS {edns:?}: the question must be echoed with its original case"
                    );
                    assert_eq!(r.queries[0].query_type(), rtype);
                }
            }
        }
        let r = exchange(
            s.dns,
            t,
            &raw_query("HttpBin.BAR.global.", RecordType::A, None),
        );
        assert!(r.metadata.authoritative, "{t:?}");
        assert_eq!(
            answer_addrs(&r).len(),
            1,
            "{t:?}: mixed-case query answered: {r:?}"
        );
        // hickory's client checks the echoed question as well.
        let m = q(&s, t, "HttpBin.BAR.global.", RecordType::A);
        assert_eq!(answer_addrs(&m).len(), 1, "{t:?}");
    }
}

#[test]
fn header_fields_are_copied_from_the_query() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for rd in [true, false, true] {
            for cd in [false, true] {
                let mut m = raw_query("httpbin.bar.global.", RecordType::A, Some((1232, 0)));
                m.metadata.recursion_desired = rd;
                m.metadata.checking_disabled = cd;
                let r = exchange(s.dns, t, &m);
                check_header(&r, &format!("{t:?} rd={rd} cd={cd}"));
                assert_eq!(
                    r.metadata.recursion_desired, rd,
                    "{t:?}: RD copied (RFC 1035)"
                );
                assert_eq!(r.metadata.op_code, OpCode::Query);
                assert!(r.metadata.authoritative);
                assert_eq!(answer_addrs(&r).len(), 1);
            }
        }
    }
}
