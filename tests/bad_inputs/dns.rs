//! Malformed DNS messages over UDP and TCP. Expected: FORMERR (counted with qtype NONE when the
//! message does not parse), REFUSED for classes we do not serve, no answer (counted in
//! `globaldns_dns_dropped_total`) for runts and responses; the known name answered after each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use crate::*;

const ID: u16 = 0x1234;
const FORMERR: u8 = 1;
const REFUSED: u8 = 5;

fn header(qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = ID.to_be_bytes().to_vec();
    h.extend_from_slice(&[0, 0]);
    for c in [qd, an, ns, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut out = vec![];
    for l in name.trim_end_matches('.').split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn question(name: &str, qtype: u16, class: u16) -> Vec<u8> {
    let mut q = wire_name(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&class.to_be_bytes());
    q
}

/// An OPT record (root owner, 1232 bytes, version 0).
fn opt() -> Vec<u8> {
    let mut o = vec![0];
    o.extend_from_slice(&41u16.to_be_bytes());
    o.extend_from_slice(&1232u16.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    o
}

fn msg(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn known_q() -> Vec<u8> {
    question(&format!("{KNOWN}."), 1, 1)
}

/// Sends `bad` over UDP and expects `rcode` for ID 0x1234; then the known name still answers.
fn expect_rcode(s: &Server, bad: &[u8], rcode: u8) {
    let resp = udp_then_good(s.dns, bad);
    assert_eq!(id_rcode(&resp), (ID, rcode), "answer to the bad message");
    still_serves(s);
}

/// Sends `bad` over UDP and expects no answer to it (the good query's comes first).
fn expect_no_answer(s: &Server, bad: &[u8]) {
    let resp = udp_then_good(s.dns, bad);
    assert_eq!(
        id_rcode(&resp),
        (0x7777, 0),
        "the bad message got an answer"
    );
    still_serves(s);
}

const FORMERR_UNPARSED: &str =
    "globaldns_dns_queries_total{qtype=\"NONE\",rcode=\"FORMERR\",transport=\"udp\"}";

#[test]
fn truncated_header_is_dropped_and_counted() {
    let (_t, s) = fixture(&[]);
    expect_no_answer(&s, &header(1, 0, 0, 0)[..7]);
    metric_reaches(&s, "globaldns_dns_dropped_total{kind=\"short\"}", 1.0);
}

#[test]
fn zero_byte_datagram_is_dropped_and_counted() {
    let (_t, s) = fixture(&[]);
    expect_no_answer(&s, &[]);
    metric_reaches(&s, "globaldns_dns_dropped_total{kind=\"short\"}", 1.0);
}

#[test]
fn qdcount_zero_is_formerr() {
    let (_t, s) = fixture(&[]);
    expect_rcode(&s, &header(0, 0, 0, 0), FORMERR);
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn qdcount_two_is_formerr() {
    let (_t, s) = fixture(&[]);
    expect_rcode(
        &s,
        &msg(&[&header(2, 0, 0, 0), &known_q(), &known_q()]),
        FORMERR,
    );
    metric_reaches(
        &s,
        "globaldns_dns_queries_total{qtype=\"A\",rcode=\"FORMERR\",transport=\"udp\"}",
        1.0,
    );
}

#[test]
fn compression_pointer_to_itself_is_formerr() {
    let (_t, s) = fixture(&[]);
    // The question's name is a pointer to offset 12: itself.
    expect_rcode(
        &s,
        &msg(&[&header(1, 0, 0, 0), &[0xC0, 12, 0, 1, 0, 1]]),
        FORMERR,
    );
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn compression_loop_through_a_label_is_formerr() {
    let (_t, s) = fixture(&[]);
    // "abc" then a pointer back to its own start: an endless name.
    let bad = msg(&[&header(1, 0, 0, 0), b"\x03abc\xC0\x0C", &[0, 1, 0, 1]]);
    expect_rcode(&s, &bad, FORMERR);
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn name_over_255_bytes_is_formerr() {
    let (_t, s) = fixture(&[]);
    let long = vec!["a".repeat(63); 4].join(".") + ".global.";
    assert!(long.len() > 255);
    expect_rcode(
        &s,
        &msg(&[&header(1, 0, 0, 0), &question(&long, 1, 1)]),
        FORMERR,
    );
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn label_over_63_bytes_is_formerr() {
    let (_t, s) = fixture(&[]);
    let bad = format!("{}.bar.global.", "a".repeat(64));
    expect_rcode(
        &s,
        &msg(&[&header(1, 0, 0, 0), &question(&bad, 1, 1)]),
        FORMERR,
    );
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn unknown_class_is_refused() {
    let (_t, s) = fixture(&[]);
    for class in [3u16 /* CH */, 999] {
        let bad = msg(&[
            &header(1, 0, 0, 0),
            &question(&format!("{KNOWN}."), 1, class),
        ]);
        expect_rcode(&s, &bad, REFUSED);
    }
    metric_reaches(
        &s,
        "globaldns_dns_queries_total{qtype=\"A\",rcode=\"REFUSED\",transport=\"udp\"}",
        2.0,
    );
}

#[test]
fn opt_outside_the_additional_section_is_formerr_and_not_cached() {
    let (_t, s) = fixture(&[]);
    // The same question as the good query that follows: a FORMERR cached by question would
    // be served to it.
    expect_rcode(
        &s,
        &msg(&[&header(1, 1, 0, 0), &known_q(), &opt()]),
        FORMERR,
    );
    expect_rcode(
        &s,
        &msg(&[&header(1, 0, 1, 0), &known_q(), &opt()]),
        FORMERR,
    );
    metric_reaches(&s, FORMERR_UNPARSED, 2.0);
}

#[test]
fn two_opt_records_are_formerr() {
    let (_t, s) = fixture(&[]);
    expect_rcode(
        &s,
        &msg(&[&header(1, 0, 0, 2), &known_q(), &opt(), &opt()]),
        FORMERR,
    );
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

#[test]
fn response_sent_as_a_query_is_dropped_and_counted() {
    let (_t, s) = fixture(&[]);
    let mut bad = msg(&[&header(1, 0, 0, 0), &known_q()]);
    bad[2] |= 0x80; // QR
    expect_no_answer(&s, &bad);
    metric_reaches(&s, "globaldns_dns_dropped_total{kind=\"response\"}", 1.0);
}

#[test]
fn counts_that_promise_more_records_than_sent_are_formerr() {
    let (_t, s) = fixture(&[]);
    expect_rcode(&s, &msg(&[&header(1, 0, 0, 5), &known_q()]), FORMERR);
    metric_reaches(&s, FORMERR_UNPARSED, 1.0);
}

/// 65,535 bytes cannot be sent over UDP/IPv4 (65,507 is the most an IPv4 datagram holds): the
/// largest one, a good query followed by zeros, is answered (bytes after the message are ignored,
/// as hickory-server does) within our 512-byte answer size.
#[test]
fn largest_udp_datagram_is_answered() {
    let (_t, s) = fixture(&[]);
    let mut big = msg(&[&header(1, 0, 0, 0), &known_q()]);
    big.resize(65_507, 0);
    let resp = udp_then_good(s.dns, &big);
    assert_eq!(id_rcode(&resp), (ID, 0));
    assert!(resp.len() <= 512, "{} bytes", resp.len());
    still_serves(&s);
}

fn tcp(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.dns).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Reads one length-prefixed response.
fn tcp_read(c: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut buf).unwrap();
    buf
}

fn framed(m: &[u8]) -> Vec<u8> {
    let mut out = (m.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(m);
    out
}

/// A length prefix of 65,535 followed by 100 bytes: the server waits for the rest, and closes
/// the connection after the idle timeout (counted); other clients are served meanwhile.
#[test]
fn oversized_tcp_length_prefix_is_cut_at_the_idle_timeout() {
    let (_t, s) = fixture(&["--tcp-idle-timeout", "1s"]);
    let mut c = tcp(&s);
    c.write_all(&[0xFF, 0xFF]).unwrap();
    c.write_all(&[0u8; 100]).unwrap();
    still_serves(&s);
    let mut rest = vec![];
    // EOF: the server closed it (a reset is a close too).
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a cut message: {rest:?}");
    metric_reaches(&s, "globaldns_tcp_closed_total{kind=\"idle\"}", 1.0);
    still_serves(&s);
}

/// Garbage framed as a message (3 bytes, shorter than a header) is dropped; the same connection
/// then answers a good query. A message that does not parse gets FORMERR over TCP too.
#[test]
fn tcp_garbage_messages_keep_the_connection() {
    let (_t, s) = fixture(&[]);
    let mut c = tcp(&s);
    c.write_all(&framed(b"abc")).unwrap();
    c.write_all(&framed(&msg(&[
        &header(1, 0, 0, 0),
        &[0xC0, 12, 0, 1, 0, 1],
    ])))
    .unwrap();
    c.write_all(&framed(&good_query(&format!("{KNOWN}."), 0x7777)))
        .unwrap();
    assert_eq!(id_rcode(&tcp_read(&mut c)), (ID, FORMERR));
    assert_eq!(id_rcode(&tcp_read(&mut c)), (0x7777, 0));
    metric_reaches(&s, "globaldns_dns_dropped_total{kind=\"short\"}", 1.0);
    metric_reaches(
        &s,
        "globaldns_dns_queries_total{qtype=\"NONE\",rcode=\"FORMERR\",transport=\"tcp\"}",
        1.0,
    );
    still_serves(&s);
}
