//! Response rate limiting (`--rate-limit`, `--rate-limit-slip`) with real UDP clients, on both
//! UDP paths: past the limit a client /24 gets every second response truncated (TC, empty)
//! and the others dropped, counted in `globaldns_rate_limited_total`; TCP still answers it;
//! another /24 is answered as before.

mod common;
use common::*;

use std::net::UdpSocket;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const RATE: usize = 5;
const BURST: usize = 40;

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(
        Name::from_ascii("httpbin.bar.global.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// What came back for a burst: full answers and truncated (slipped) ones.
#[derive(Debug, Default)]
struct Got {
    full: usize,
    slipped: usize,
}

fn metric(s: &Server, action: &str) -> usize {
    s.metric(&format!(
        "globaldns_rate_limited_total{{action=\"{action}\"}}"
    ))
    .unwrap_or(0.0) as usize
}

/// Sends `n` queries at once from `from`, then reads responses until every query is
/// accounted for: answered, slipped, or counted as dropped by the server (whose counters
/// started at `dropped_before`).
fn burst(s: &Server, from: &str, n: usize, dropped_before: usize) -> Got {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for id in 0..n {
        sock.send_to(&query(id as u16), s.dns).unwrap();
    }
    let mut got = Got::default();
    let mut buf = [0u8; 4096];
    eventually(
        Duration::from_secs(20),
        "every query of the burst accounted for",
        || {
            while let Ok(len) = sock.recv(&mut buf) {
                let m = Message::from_vec(&buf[..len]).unwrap();
                assert!(usize::from(m.metadata.id) < n, "{m:?}");
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
                assert_eq!(m.queries.len(), 1, "the question is echoed: {m:?}");
                if m.metadata.truncation {
                    assert!(m.answers.is_empty() && m.authorities.is_empty(), "{m:?}");
                    got.slipped += 1;
                } else {
                    assert_eq!(m.answers.len(), 1, "{m:?}");
                    got.full += 1;
                }
            }
            let dropped = metric(s, "dropped") - dropped_before;
            (got.full + got.slipped + dropped == n).then_some(())
        },
    );
    got
}

fn check(fast_path: bool) {
    let rate = RATE.to_string();
    let (_t, s) = fixture(&[
        "--rate-limit",
        &rate,
        "--rate-limit-slip",
        "2",
        "--udp-fast-path",
        if fast_path { "true" } else { "false" },
    ]);
    let what = if fast_path {
        "fast path"
    } else {
        "hickory loop"
    };

    let got = burst(&s, "127.0.0.1", BURST, 0);
    let (dropped, slipped) = (metric(&s, "dropped"), metric(&s, "slipped"));
    // The allowance of one second (plus what refilled while the burst went out), then
    // every second limited response slipped, the others dropped.
    assert!(got.full >= RATE && got.full < BURST, "{what}: {got:?}");
    assert_eq!(
        got.slipped, slipped,
        "{what}: TC responses received = counted"
    );
    assert_eq!(got.full + slipped + dropped, BURST, "{what}: {got:?}");
    assert!(
        dropped == slipped || dropped == slipped + 1,
        "{what}: slip 2 = one in two limited responses sent truncated: {dropped} dropped, \
         {slipped} slipped"
    );

    // TCP is never limited.
    for _ in 0..3 {
        let m = common::query(s.dns, Transport::Tcp, "httpbin.bar.global", RecordType::A);
        assert_eq!(m.answers.len(), 1, "{what}: TCP answered: {m:?}");
    }

    // Another /24 has its own allowance; the same /24 (127.0.0.2) shares the limited one.
    let other = burst(&s, "127.0.1.2", RATE, dropped);
    assert_eq!((other.full, other.slipped), (RATE, 0), "{what}: 127.0.1.2");
    let same = burst(&s, "127.0.0.2", BURST, dropped);
    assert!(
        same.full < BURST / 2,
        "{what}: 127.0.0.2 is limited too: {same:?}"
    );
    assert!(same.slipped > 0, "{what}: {same:?}");
}

#[test]
fn limited_clients_get_slips_and_drops_on_the_fast_path() {
    check(true);
}

#[test]
fn limited_clients_get_slips_and_drops_on_hickorys_udp_loop() {
    check(false);
}

#[test]
fn without_the_flag_nothing_is_limited() {
    let (_t, s) = fixture(&[]);
    let got = burst(&s, "127.0.0.1", BURST, 0);
    assert_eq!((got.full, got.slipped), (BURST, 0));
    assert_eq!(metric(&s, "dropped") + metric(&s, "slipped"), 0);
}
