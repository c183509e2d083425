//! A primary's outgoing transfers as a whole, over real sockets: they stream (a client that
//! stops reading holds its transfer, not the server's memory), at most `--transfers-out` are
//! sent at once (one more waits its turn, or is answered SERVFAIL and counted), every message of
//! a large signed transfer verifies in `dig -y`, and a secondary turned away backs off, jittered,
//! while a NOTIFY still brings it in at once.

mod common;
use common::*;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};

const KEY: &str = "xfr:hmac-sha256:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";

/// A message's rcode and how many SOA records its answer section holds, walked without
/// decoding the records (a debug build decodes a quarter of a million of them slowly).
fn rcode_and_soas(m: &[u8]) -> (u8, usize) {
    fn skip_name(m: &[u8], mut i: usize) -> usize {
        while m[i] != 0 && m[i] & 0xC0 != 0xC0 {
            i += 1 + usize::from(m[i]);
        }
        i + if m[i] == 0 { 1 } else { 2 }
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([m[at], m[at + 1]]));
    let mut i = 12;
    for _ in 0..count(4) {
        i = skip_name(m, i) + 4;
    }
    let mut soas = 0;
    for _ in 0..count(6) {
        i = skip_name(m, i);
        soas += usize::from(count(i) == 6);
        i += 10 + count(i + 8);
    }
    (m[3] & 0x0F, soas)
}

/// The rest of a transfer whose first messages are `got`: every message's bytes, up to the
/// closing SOA (or the first message, when it is an error).
fn read_transfer(tcp: &mut TcpStream, mut got: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut seen: usize = got.iter().map(|m| rcode_and_soas(m).1).sum();
    loop {
        if let Some(last) = got.last() {
            if seen >= 2 || rcode_and_soas(last).0 != 0 {
                return got;
            }
        }
        let m = read_message(tcp);
        seen += rcode_and_soas(&m).1;
        got.push(m);
    }
}

/// A whole AXFR of `global.` with message ID `id`, as the bytes of each message.
fn axfr(server: SocketAddr, id: u16) -> Vec<Vec<u8>> {
    let mut tcp = tcp_stream(server, false);
    ask_axfr(&mut tcp, id);
    read_transfer(&mut tcp, vec![])
}

#[test]
fn transfers_over_the_cap_wait_their_turn_or_are_answered_servfail_and_counted() {
    let (_t, dir, state) = dirs();
    // ~0.5 MB on the wire: many times what the socket buffers hold between the server (a
    // 32 KiB send buffer, which the kernel doubles) and a client with a 4 KiB receive buffer,
    // so a client that stops reading stops the transfer.
    big_hosts(&dir, 2_000, 8);
    let p = Server::start(
        &dir,
        &state,
        &[
            "--allow-transfer",
            "127.0.0.0/8",
            "--transfers-out",
            "1",
            "--transfers-out-wait",
            "10s",
            "--tcp-send-buffer",
            "32768",
            // A client that stops reading is given up on after this: longer than the wait.
            "--tcp-idle-timeout",
            "60s",
        ],
    );
    let alone = axfr(p.dns, 7);
    let bytes: usize = alone.iter().map(Vec::len).sum();
    assert!(bytes > 400_000, "{bytes} bytes in {} messages", alone.len());

    // A client that reads one message and stops holds the only turn: the server waits for it
    // (a transfer in memory would have been written whole into the socket's queue).
    let mut holder = tcp_stream(p.dns, true);
    ask_axfr(&mut holder, 7);
    let first = read_message(&mut holder);
    eventually(
        Duration::from_secs(10),
        "the held transfer is counted",
        || (metric0(&p, "globaldns_transfers_out_active") == 1.0).then_some(()),
    );

    // Another waits for the turn, and gets SERVFAIL when none comes within the wait.
    let busy = axfr(p.dns, 8);
    let m = Message::from_vec(&busy[0]).unwrap();
    assert_eq!(busy.len(), 1);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    assert_eq!(
        metric0(
            &p,
            "globaldns_transfers_served_total{kind=\"axfr\",result=\"busy\"}"
        ),
        1.0
    );

    // One more, asked while the holder still holds the turn, is sent once the holder reads
    // on: its messages are those of the transfer made alone, byte for byte, as are the
    // holder's.
    let server = p.dns;
    let queued = std::thread::spawn(move || axfr(server, 7));
    eventually(Duration::from_secs(10), "a transfer waits its turn", || {
        (metric0(&p, "globaldns_transfers_out_waiting") == 1.0).then_some(())
    });
    let held = read_transfer(&mut holder, vec![first]);
    assert!(
        held == alone,
        "the held transfer differs from the one made alone"
    );
    let queued = queued.join().unwrap();
    assert!(
        queued == alone,
        "the queued transfer differs from the one made alone: {} messages, first {:?}",
        queued.len(),
        rcode_and_soas(&queued[0])
    );
    eventually(Duration::from_secs(5), "no transfer left", || {
        (metric0(&p, "globaldns_transfers_out_active") == 0.0
            && metric0(&p, "globaldns_transfers_out_waiting") == 0.0)
            .then_some(())
    });
    assert_eq!(
        metric0(
            &p,
            "globaldns_transfers_served_total{kind=\"axfr\",result=\"busy\"}"
        ),
        1.0
    );
}

/// A transfer of many messages, signed: `dig -y` checks every message's MAC, each chained to
/// the one before (RFC 8945 §5.3.1), and gets every host.
#[test]
fn a_large_signed_transfer_verifies_message_by_message_in_dig() {
    let (_t, dir, state) = dirs();
    const N: usize = 2_000;
    big_hosts(&dir, N, 0);
    let p = Server::start(
        &dir,
        &state,
        &["--allow-transfer", "127.0.0.0/8", "--tsig-key", KEY],
    );
    let k: Vec<&str> = KEY.splitn(3, ':').collect();
    let key = format!("{}:{}:{}", k[1], k[0], k[2]);
    let d = dig(p.dns, &["global", "AXFR", "+tcp", "-y", &key]);
    assert!(
        !d.raw.contains("failed") && !d.raw.contains("verify"),
        "{}",
        d.raw
            .lines()
            .filter(|l| l.starts_with(';'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let hosts = d
        .raw
        .lines()
        .filter(|l| l.starts_with('s') && l.contains(".big.global.") && l.contains("\tA\t"))
        .count();
    assert_eq!(hosts, N, "every host's A record");
    // ";; XFR size: 2004 records (messages 5, bytes …)"
    let messages: usize = d
        .raw
        .split("(messages ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no XFR size line:\n{}", d.raw));
    assert!(messages >= 4, "{messages} messages");
}

/// A secondary whose transfers are refused waits longer after each failed round (jittered
/// between half and all of `--refresh × 2^(n-1)`); a NOTIFY brings it in at once all the same.
#[test]
fn a_refused_secondary_backs_off_and_a_notify_still_brings_it_in_at_once() {
    let (t, dir, state) = dirs();
    small_mesh(&dir);
    let port = free_ports(2);
    let (dns, admin) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{}", port + 1),
    );
    let primary = |extra: &[&str]| {
        let mut flags = vec!["--listen", &dns, "--admin", &admin];
        flags.extend_from_slice(extra);
        Server::start(&dir, &state, &flags)
    };
    // A primary that allows no one here: every transfer is refused.
    let closed = primary(&["--allow-transfer", "192.0.2.0/24"]);
    let s = Server::spawn(
        &t.path().join("unused-zones"),
        &t.path().join("secondary"),
        &["--primary", &dns, "--refresh", "2s"],
    )
    .unwrap();
    let refused = || {
        metric0(
            &s,
            "globaldns_transfers_total{kind=\"axfr\",result=\"refused\"}",
        )
    };
    let retry = || metric0(&s, "globaldns_secondary_retry_seconds{zone=\"global.\"}");
    // Both zones' loops are refused in turn; after global.'s third failure in a row its wait
    // is at least half of 2 s × 4.
    let (failed_at, wait) = eventually(Duration::from_secs(60), "three failed rounds", || {
        (retry() >= 4.0).then(|| (Instant::now(), retry()))
    });
    assert!(wait <= 8.0, "at most 2 s × 4: {wait}");
    assert!(refused() >= 3.0, "{} refusals", refused());
    assert_eq!(
        s.get("/readyz").0,
        503,
        "nothing loaded from a primary that refuses"
    );

    // The primary comes back allowing transfers and NOTIFYing the secondary: the secondary
    // loads well before its next round was due.
    closed.stop();
    let notify = s.dns.to_string();
    let open = primary(&["--allow-transfer", "127.0.0.0/8", "--notify", &notify]);
    // A new serial to NOTIFY about.
    write_file(
        &dir.join("b.yaml"),
        &se("new", "bar", &["new.bar.global"], &["10.9.9.9"], ""),
    );
    eventually(Duration::from_secs(10), "the change at the primary", || {
        (dig(open.dns, &["new.bar.global"]).answer_data() == ["10.9.9.9"]).then_some(())
    });
    eventually(Duration::from_secs(10), "the secondary loads", || {
        (dig(s.dns, &["new.bar.global"]).answer_data() == ["10.9.9.9"]).then_some(())
    });
    assert!(
        failed_at.elapsed().as_secs_f64() < wait,
        "loaded {:?} after the last failure, when the next round was due after {wait} s",
        failed_at.elapsed()
    );
    eventually(
        Duration::from_secs(5),
        "back to --refresh once loaded",
        || (retry() == 2.0).then_some(()),
    );
}
