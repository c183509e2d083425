//! AXFR: refused by default, TCP only from allowed networks.

use std::net::SocketAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};

use crate::common::*;
use crate::support::*;

/// Every message of a TCP AXFR until the closing SOA (or EOF).
fn axfr_tcp(addr: SocketAddr, zone: &str) -> Vec<Message> {
    let m = raw_query(zone, RecordType::AXFR, None);
    let mut c = tcp_connect(addr);
    tcp_send(&mut c, &m.to_vec().unwrap());
    let mut out = Vec::new();
    let mut soas = 0;
    while let Some(b) = tcp_read(&mut c) {
        let r = Message::from_vec(&b).unwrap();
        soas += r
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let stop = r.metadata.response_code != ResponseCode::NoError || soas >= 2;
        out.push(r);
        if stop || out.len() > 100 {
            break;
        }
    }
    out
}

#[test]
fn axfr_is_refused_by_default() {
    let (_t, s) = fixture(&[]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert_eq!(msgs.len(), 1, "one refusal: {msgs:?}");
    refused(&msgs[0], "TCP AXFR without --allow-transfer");
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("global.", RecordType::AXFR, None),
    );
    refused(&r, "UDP AXFR without --allow-transfer");
}

#[test]
fn axfr_refused_outside_allowed_networks() {
    let (_t, s) = fixture(&["--allow-transfer", "10.0.0.0/8"]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    refused(
        &msgs[0],
        "TCP AXFR from 127.0.0.1 with --allow-transfer 10.0.0.0/8",
    );
}

#[test]
fn axfr_from_allowed_networks_over_tcp_only() {
    let (_t, s) = fixture(&["--allow-transfer", "127.0.0.0/8"]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert!(!msgs.is_empty());
    for m in &msgs {
        check_header(m, "AXFR message");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert!(m.metadata.authoritative, "AXFR answers are AA");
    }
    let records: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert!(records.len() > 10, "{records:?}");
    let first = records.first().unwrap();
    let last = records.last().unwrap();
    assert_eq!(
        first.record_type(),
        RecordType::SOA,
        "transfer opens with SOA"
    );
    assert_eq!(
        last.record_type(),
        RecordType::SOA,
        "transfer closes with SOA"
    );
    assert_eq!(first.name, name("global."));
    assert_eq!(soa(first), soa(last), "same SOA at both ends");
    let soa_count = records
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .count();
    assert_eq!(soa_count, 2, "SOA only at both ends");

    let has = |owner: &str, rtype: RecordType, data: Option<&str>| {
        records.iter().any(|r| {
            r.name == name(owner)
                && r.record_type() == rtype
                && data.is_none_or(|d| r.data.to_string() == d)
        })
    };
    let vip =
        answer_addrs(&q(&s, Transport::Udp, "httpbin.bar.global.", RecordType::A))[0].to_string();
    for (owner, rtype, data) in [
        ("global.", RecordType::NS, Some("ns.global.")),
        ("httpbin.bar.global.", RecordType::A, Some(vip.as_str())),
        ("static.bar.global.", RecordType::A, Some("10.1.2.3")),
        ("static.bar.global.", RecordType::A, Some("10.1.2.4")),
        ("static.bar.global.", RecordType::AAAA, Some("fd00:1::7")),
        ("multi.bar.global.", RecordType::A, Some("10.5.0.3")),
        ("vipboth.bar.global.", RecordType::A, None),
        ("_http._tcp.httpbin.bar.global.", RecordType::SRV, None),
        ("_dns._udp.httpbin.bar.global.", RecordType::SRV, None),
        ("*.wild.global.", RecordType::A, None),
        ("*.mix.global.", RecordType::A, Some("10.4.0.1")),
        ("*.a.mix.global.", RecordType::A, Some("10.4.0.3")),
        ("exact.mix.global.", RecordType::A, Some("10.4.0.2")),
    ] {
        assert!(
            has(owner, rtype, data),
            "AXFR lacks {owner} {rtype} {data:?}: {:#?}",
            records.iter().map(|r| r.to_string()).collect::<Vec<_>>()
        );
    }
    for r in &records {
        assert!(
            !matches!(r.record_type(), RecordType::PTR),
            "PTR records belong to the reverse zone's transfer: {r}"
        );
        assert!(
            !r.name.to_ascii().contains("none.bar") && !r.name.to_ascii().contains("optout.bar"),
            "unserved host in AXFR: {r}"
        );
    }

    // The reverse zone transfers too.
    let msgs = axfr_tcp(s.dns, "10.240.in-addr.arpa.");
    let rev: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert_eq!(rev.first().map(|r| r.record_type()), Some(RecordType::SOA));
    assert_eq!(rev.last().map(|r| r.record_type()), Some(RecordType::SOA));
    assert!(
        rev.iter().any(|r| r.name == name(&reverse("240.10.7.7"))
            && r.data.to_string() == "legacy.bar.global."),
        "reverse AXFR has legacy's PTR: {rev:?}"
    );

    // Never over UDP, even from an allowed network.
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("global.", RecordType::AXFR, None),
    );
    refused(&r, "UDP AXFR with --allow-transfer 127.0.0.0/8");
}
