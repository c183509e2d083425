//! EDNS, truncation, UDP and TCP alike.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};

use crate::common::*;
use crate::support::*;

#[test]
fn edns_is_echoed_with_our_payload_size() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, Some((4096, 0))),
        );
        let e = r
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{t:?}: OPT must be echoed: {r:?}"));
        assert_eq!(e.version(), 0, "{t:?}: EDNS version 0");
        assert_eq!(
            e.max_payload(),
            1232,
            "{t:?}: advertises 1232 to a client offering 4096"
        );
        assert_eq!(answer_addrs(&r).len(), 1);

        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, Some((600, 0))),
        );
        let e = r.edns.as_ref().expect("OPT echoed");
        assert!(
            (512..=1232).contains(&e.max_payload()),
            "{t:?}: advertised size {}",
            e.max_payload()
        );
        // No EDNS in, no EDNS out.
        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, None),
        );
        assert!(r.edns.is_none(), "{t:?}: no OPT to a non-EDNS query: {r:?}");
        // Alternating with and without EDNS for one name: each response matches its own query.
        for edns in [Some((512, 0)), None, Some((512, 0)), Some((100, 0)), None] {
            let r = exchange(
                s.dns,
                t,
                &raw_query("static.bar.global.", RecordType::A, edns),
            );
            assert_eq!(
                r.edns.is_some(),
                edns.is_some(),
                "{t:?}: query EDNS {edns:?} -> response OPT {:?}",
                r.edns
            );
            assert_eq!(answer_addrs(&r), ips(&["10.1.2.3", "10.1.2.4"]), "{t:?}");
        }
        // Negative answers and errors carry OPT too.
        for qn in ["nope.bar.global.", "example.com."] {
            let r = exchange(s.dns, t, &raw_query(qn, RecordType::A, Some((1232, 0))));
            assert!(r.edns.is_some(), "{t:?} {qn}: OPT echoed: {r:?}");
        }
    }
}

#[test]
fn unknown_edns_version_is_badvers() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for version in [1u8, 2, 255] {
            let r = exchange(
                s.dns,
                t,
                &raw_query("httpbin.bar.global.", RecordType::A, Some((1232, version))),
            );
            check_header(&r, &format!("{t:?} EDNS {version}"));
            // 16 is BADVERS in an OPT-carrying response (hickory decodes the number as BADSIG).
            assert_eq!(
                u16::from(r.metadata.response_code),
                u16::from(ResponseCode::BADVERS),
                "{t:?}: EDNS version {version}: {r:?}"
            );
            assert!(r.answers.is_empty(), "{t:?}: {r:?}");
            let e = r.edns.as_ref().expect("BADVERS comes in an OPT");
            assert_eq!(e.version(), 0, "{t:?}: we speak version 0");
        }
    }
}

fn big_hosts() -> Vec<(&'static str, String)> {
    fn host(name: &str, n: u32) -> String {
        let addrs: Vec<String> = (1..=n)
            .map(|i| format!("10.60.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        se(name, "bar", &[&format!("{name}.bar.global")], &refs, "")
    }
    vec![
        ("big.yaml", host("big", 60)),
        ("huge.yaml", host("huge", 100)),
    ]
}

#[test]
fn large_answers_are_truncated_on_udp_and_complete_on_tcp() {
    let (_t, s) = start_fixture(&[], &big_hosts());
    let qn = "big.bar.global.";
    // ~1 KB answer: fits the client's 1232, not 512.
    for (edns, fits) in [
        (Some((512u16, 0u8)), false),
        (None, false),
        (Some((1232, 0)), true),
        (Some((4096, 0)), true),
    ] {
        let r = exchange(s.dns, Transport::Udp, &raw_query(qn, RecordType::A, edns));
        check_header(&r, "big over UDP");
        if fits {
            assert!(!r.metadata.truncation, "UDP {edns:?}: 60 A fit: {r:?}");
            assert_eq!(answer_addrs(&r).len(), 60, "UDP {edns:?}");
        } else {
            assert!(
                r.metadata.truncation,
                "UDP {edns:?}: 60 A records do not fit 512 bytes: TC must be set"
            );
            assert!(answer_addrs(&r).len() < 60, "UDP {edns:?}");
        }
        let r = exchange(s.dns, Transport::Tcp, &raw_query(qn, RecordType::A, edns));
        assert!(!r.metadata.truncation, "TCP {edns:?}: never truncated");
        assert_eq!(answer_addrs(&r).len(), 60, "TCP {edns:?}: every record");
    }
    // ~1.7 KB: over the 1232 we allow even when the client offers more; hickory's client.
    let m = q(&s, Transport::Udp, "huge.bar.global.", RecordType::A);
    assert!(
        m.metadata.truncation,
        "UDP: 100 A records exceed 1232 bytes: TC"
    );
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("huge.bar.global.", RecordType::A, Some((65000, 0))),
    );
    assert!(
        r.metadata.truncation,
        "UDP, client offers 65000: we cap at 1232: TC"
    );
    let m = q(&s, Transport::Tcp, "huge.bar.global.", RecordType::A);
    assert!(!m.metadata.truncation);
    assert_eq!(answer_addrs(&m).len(), 100, "TCP: all 100");
    positive(&m, "huge.bar.global.", RecordType::A, 30, "huge over TCP");
}

#[test]
fn truncated_responses_keep_the_opt_record() {
    let (_t, s) = start_fixture(&[], &big_hosts());
    for (qn, size) in [
        ("big.bar.global.", 512u16),
        ("huge.bar.global.", 1232),
        ("huge.bar.global.", 4096),
    ] {
        let r = exchange(
            s.dns,
            Transport::Udp,
            &raw_query(qn, RecordType::A, Some((size, 0))),
        );
        assert!(r.metadata.truncation, "{qn} with EDNS {size}: TC expected");
        assert!(
            r.edns.is_some(),
            "UDP {qn} A, EDNS udp={size}: the response has TC set but no OPT record; an EDNS \
             query must get an OPT back, truncated or not (RFC 6891 §7) — got {} answers and \
             additionals {:?}",
            r.answers.len(),
            r.additionals
        );
    }
}

/// Comparable form of a response: rcode, flags and sorted sections.
fn shape(
    m: &Message,
) -> (
    ResponseCode,
    bool,
    bool,
    Vec<String>,
    Vec<String>,
    Vec<String>,
) {
    let sorted = |rs: &[Record]| {
        let mut v: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
        v.sort();
        v
    };
    (
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        sorted(&m.answers),
        sorted(&m.authorities),
        sorted(&m.additionals),
    )
}

#[test]
fn tcp_answers_equal_udp_answers() {
    let (_t, s) = fixture(&[]);
    for (qname, rtype) in [
        ("httpbin.bar.global.", RecordType::A),
        ("static.bar.global.", RecordType::A),
        ("static.bar.global.", RecordType::AAAA),
        ("multi.bar.global.", RecordType::A),
        ("only4.bar.global.", RecordType::AAAA),
        ("bar.global.", RecordType::A),
        ("nope.bar.global.", RecordType::A),
        ("foo.a.mix.global.", RecordType::A),
        ("x.wild.global.", RecordType::A),
        ("global.", RecordType::SOA),
        ("global.", RecordType::NS),
        ("_http._tcp.httpbin.bar.global.", RecordType::SRV),
        ("_tcp-app._tcp.static.bar.global.", RecordType::SRV),
        ("7.7.10.240.in-addr.arpa.", RecordType::PTR),
        ("httpbin.bar.global.", RecordType::ANY),
        ("example.com.", RecordType::A),
    ] {
        let u = q(&s, Transport::Udp, qname, rtype);
        let t = q(&s, Transport::Tcp, qname, rtype);
        assert_eq!(shape(&u), shape(&t), "{qname} {rtype}: UDP and TCP differ");
    }
}
