//! A catalogue of bad inputs, each a test asserting its outcome: a clear error or log line naming
//! the problem, a metric where it happens at run time, and the server still answering what it
//! answered before (nothing lost). Also bounded resources under floods (`resources`).
//!
//! Fixture: `tests/data/answers` (as tests/answers/); `only4.bar.global` → 10.1.2.5 is the name
//! asked after each bad input.

#[path = "../common/mod.rs"]
mod common;

mod dns;
mod flags;
mod resources;
mod serviceentries;
mod state;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use common::*;

/// The name asked after each bad input, and its one address in the fixture.
pub const KNOWN: &str = "only4.bar.global";
pub const KNOWN_IP: &str = "10.1.2.5";

/// The server still answers the known name, over UDP and TCP.
pub fn still_serves(s: &Server) {
    let want: Vec<IpAddr> = vec![KNOWN_IP.parse().unwrap()];
    for t in BOTH {
        assert_eq!(
            query_a(s.dns, t, KNOWN),
            Some(want.clone()),
            "{t:?}: {KNOWN} after the bad input"
        );
    }
}

/// Polls until the metric line starting with `prefix` is at least `at_least`.
pub fn metric_reaches(s: &Server, prefix: &str, at_least: f64) {
    eventually(
        Duration::from_secs(10),
        &format!("{prefix} ≥ {at_least}"),
        || (metric0(s, prefix) >= at_least).then_some(()),
    );
}

/// Polls until a log line contains every one of `needles`.
pub fn logged(s: &Server, needles: &[&str]) {
    eventually(
        Duration::from_secs(10),
        &format!("a log line with {needles:?}"),
        || {
            let log = s.log.lock().unwrap();
            log.iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
                .then_some(())
        },
    );
}

/// A well-formed A query for `name` with the given ID.
pub fn good_query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// Sends `bad` then a good query (ID 0x7777) from one socket, and returns the first datagram
/// received: the answer to `bad`, or, when `bad` got none, the good query's answer. The fast path
/// hashes one source to one worker, which answers in order, so "no answer" needs no timeout.
pub fn udp_then_good(addr: SocketAddr, bad: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(bad, addr).unwrap();
    sock.send_to(&good_query(&format!("{KNOWN}."), 0x7777), addr)
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    buf.truncate(n);
    buf
}

/// ID and RCODE of a raw response.
pub fn id_rcode(resp: &[u8]) -> (u16, u8) {
    assert!(resp.len() >= 12, "short response {resp:?}");
    assert_eq!(resp[2] & 0x80, 0x80, "QR set: {resp:?}");
    (u16::from_be_bytes([resp[0], resp[1]]), resp[3] & 0x0F)
}
