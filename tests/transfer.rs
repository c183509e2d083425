//! A primary's zone transfers against real clients: `dig` (AXFR, IXFR from the journal, IXFR
//! from a serial the journal no longer covers) and Knot DNS as a secondary (AXFR, then NOTIFY →
//! IXFR after a change), answering the same as the primary.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const ZONE: &str = "global";

fn primary(zones_dir: &Path, state: &Path, extra: &[&str]) -> Server {
    let mut flags = vec!["--allow-transfer", "127.0.0.0/8"];
    flags.extend_from_slice(extra);
    Server::start(zones_dir, state, &flags)
}

/// `dig AXFR`/`IXFR=N` answer records (every message), as (name, type, rdata) lines.
fn transfer(server: SocketAddr, kind: &str) -> Vec<String> {
    transfer_with(server, &[kind])
}

/// [`transfer`] with more dig arguments (a TSIG key).
fn transfer_with(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut all = vec![ZONE, "+tcp"];
    all.extend_from_slice(args);
    // dig prints a transfer's records without section headers: every line that is not a comment.
    let d = dig(server, &all);
    d.raw
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let r: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", r[0], r[3], r[4..].join(" "))
        })
        .collect()
}

fn serial(server: SocketAddr) -> u32 {
    let d = dig(server, &[ZONE, "SOA"]);
    d.answer[0][6].parse().unwrap()
}

#[test]
fn ixfr_sends_the_difference_from_the_clients_serial() {
    let (_t, dir, state) = dirs();
    small_mesh(&dir);
    let s = primary(&dir, &state, &[]);
    let axfr = transfer(s.dns, "AXFR");
    assert!(axfr.first().unwrap().contains(" SOA "), "{axfr:?}");
    assert!(
        axfr.iter()
            .any(|l| l.starts_with("static.bar.global. A 10.1.2.3")),
        "{axfr:?}"
    );
    let old = serial(s.dns);

    // One host added, one address changed.
    write_file(
        &dir.join("b.yaml"),
        &se("new", "bar", &["new.bar.global"], &["10.9.9.9"], ""),
    );
    let a = std::fs::read_to_string(dir.join("a.yaml")).unwrap();
    write_file(&dir.join("a.yaml"), &a.replace("10.1.2.3", "10.1.2.4"));
    eventually(Duration::from_secs(5), "both changes served", || {
        let d = dig(s.dns, &["static.bar.global"]);
        let n = dig(s.dns, &["new.bar.global"]);
        (d.answer_data() == ["10.1.2.4"] && n.answer_data() == ["10.9.9.9"]).then_some(())
    });
    let now = serial(s.dns);
    assert_ne!(old, now);
    // The changes were timed from being seen to being served (the first load is not).
    let timed = s
        .metric("globaldns_propagation_seconds_count")
        .unwrap_or(0.0);
    assert!(
        (1.0..=2.0).contains(&timed),
        "{timed} propagations observed"
    );

    let ixfr = transfer(s.dns, &format!("IXFR={old}"));
    // RFC 1995: SOA(new), SOA(old), removed…, SOA(new), added…, SOA(new).
    let soas: Vec<usize> = ixfr
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(" SOA "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(soas.len(), 4, "{ixfr:#?}");
    assert!(ixfr[soas[1]].contains(&format!(" {old} ")), "{ixfr:#?}");
    let removed = &ixfr[soas[1] + 1..soas[2]];
    let added = &ixfr[soas[2] + 1..soas[3]];
    assert!(
        removed.contains(&"static.bar.global. A 10.1.2.3".to_string()),
        "{ixfr:#?}"
    );
    assert!(
        added.contains(&"static.bar.global. A 10.1.2.4".to_string()),
        "{ixfr:#?}"
    );
    assert!(
        added.contains(&"new.bar.global. A 10.9.9.9".to_string()),
        "{ixfr:#?}"
    );
    // The reverse zone is separate: its PTR changes are not in global.'s difference.
    assert!(!ixfr.iter().any(|l| l.contains(" PTR ")), "{ixfr:#?}");
    assert!(
        removed.len() + added.len() < axfr.len(),
        "smaller than the zone"
    );

    // Up to date: our SOA alone. Unknown serial: the whole zone.
    let same = transfer(s.dns, &format!("IXFR={now}"));
    assert_eq!(same.len(), 1, "{same:?}");
    let full = transfer(s.dns, "IXFR=12345");
    assert_eq!(full.len(), transfer(s.dns, "AXFR").len(), "{full:#?}");
    eventually(Duration::from_secs(5), "transfer metrics", || {
        let ixfr = s.metric("globaldns_transfers_served_total{kind=\"ixfr\",result=\"served\"}")?;
        (ixfr >= 2.0).then_some(())
    });
}

/// What a resolver sees: rcode and sorted answer data, for a set of questions.
#[test]
fn knot_follows_a_primary_by_notify_and_ixfr() {
    let (_t, dir, state) = dirs();
    small_mesh(&dir);
    // Knot's port is needed for --notify before the primary starts: reserve it first.
    let knot_port = free_ports(1);
    let s = primary(
        &dir,
        &state,
        &["--notify", &format!("127.0.0.1:{knot_port}")],
    );
    let knot = Knot::secondary_of(s.dns, knot_port);
    let questions = [
        ("httpbin.bar.global", "A"),
        ("static.bar.global", "AAAA"),
        ("static.bar.global", "TXT"),
        ("x.y.wild.global", "A"),
        ("_http._tcp.httpbin.bar.global", "SRV"),
        ("nope.bar.global", "A"),
        ("bar.global", "A"),
        ("new.bar.global", "A"),
    ];
    eventually(
        Duration::from_secs(20),
        "knot loaded the zone by AXFR",
        || (answers(knot.addr, &questions) == answers(s.dns, &questions)).then_some(()),
    );

    write_file(
        &dir.join("b.yaml"),
        &se("new", "bar", &["new.bar.global"], &["10.9.9.9"], ""),
    );
    eventually(Duration::from_secs(20), "knot has the change", || {
        let d = dig(knot.addr, &["new.bar.global"]);
        (d.answer_data() == ["10.9.9.9"]).then_some(())
    });
    assert_eq!(answers(knot.addr, &questions), answers(s.dns, &questions));
    eventually(Duration::from_secs(5), "IXFR and NOTIFY counted", || {
        let ixfr = s.metric("globaldns_transfers_served_total{kind=\"ixfr\",result=\"served\"}")?;
        let sent = s.metric("globaldns_notifies_total{kind=\"notify-out\",result=\"sent\"}")?;
        (ixfr >= 1.0 && sent >= 1.0).then_some(())
    });
    assert!(
        knot.log().to_ascii_lowercase().contains("ixfr"),
        "knot transferred incrementally:\n{}",
        knot.log()
    );
}

#[test]
fn the_serial_never_goes_back_across_a_restart() {
    let (_t, dir, state) = dirs();
    small_mesh(&dir);
    let s = primary(&dir, &state, &[]);
    // A burst of changes: one serial each, running ahead of the clock.
    for i in 0..5 {
        write_file(
            &dir.join("b.yaml"),
            &se(
                "burst",
                "bar",
                &["burst.bar.global"],
                &[&format!("10.8.0.{i}")],
                "",
            ),
        );
        eventually(Duration::from_secs(5), "change served", || {
            (dig(s.dns, &["burst.bar.global"]).answer_data() == [format!("10.8.0.{i}")])
                .then_some(())
        });
    }
    let before = serial(s.dns);
    s.kill9();
    // The journal on disk continues the serials: the same content keeps its serial.
    let s = primary(&dir, &state, &[]);
    assert_eq!(serial(s.dns), before, "the same content, the same serial");
    // Without the journal, the serial floor: a serial above every one published.
    s.kill9();
    std::fs::remove_file(state.join("journal")).unwrap();
    let s = primary(&dir, &state, &[]);
    let after = serial(s.dns);
    assert!(
        after.wrapping_sub(before) as i32 > 0,
        "serial {before} before the restart, {after} after"
    );
    let floor: u32 = std::fs::read_to_string(state.join("serial"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        floor > after,
        "the stored floor {floor} is above what is served"
    );
}

const KEY: &str = "xfr-key:hmac-sha256:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";

#[test]
fn tsig_signs_transfers_and_notify_and_refuses_the_rest() {
    let (_t, dir, state) = dirs();
    small_mesh(&dir);
    // Enough hosts for a transfer of several messages: each is signed, chained to the last.
    let many: Vec<String> = (0..700)
        .map(|i| {
            se(
                &format!("m{i}"),
                "many",
                &[&format!("m{i}.many.global")],
                &[&format!("10.7.{}.{}", i / 200, i % 200 + 1)],
                "",
            )
        })
        .collect();
    write_file(&dir.join("many.yaml"), &many.join("---\n"));
    let knot_port = free_ports(1);
    let notify = format!("127.0.0.1:{knot_port}");
    let s = primary(&dir, &state, &["--tsig-key", KEY, "--notify", &notify]);
    let knot = Knot::secondary_with_key(s.dns, knot_port, Some(KEY));
    eventually(
        Duration::from_secs(20),
        "knot loaded the zone with TSIG",
        || {
            (dig(knot.addr, &["static.bar.global", "A"]).answer_data() == ["10.1.2.3"])
                .then_some(())
        },
    );
    write_file(
        &dir.join("b.yaml"),
        &se("new", "bar", &["new.bar.global"], &["10.9.9.9"], ""),
    );
    eventually(
        Duration::from_secs(20),
        "knot has the change (signed NOTIFY, IXFR)",
        || (dig(knot.addr, &["new.bar.global"]).answer_data() == ["10.9.9.9"]).then_some(()),
    );

    // dig with the key: a signed transfer; without it, or with another key: refused.
    let k: Vec<&str> = KEY.splitn(3, ':').collect();
    let signed = format!("{}:{}:{}", k[1], k[0], k[2]);
    let good = transfer_with(s.dns, &["AXFR", "-y", &signed]);
    assert!(
        good.iter()
            .any(|l| l.starts_with("new.bar.global. A 10.9.9.9")),
        "{good:#?}"
    );
    let unsigned = dig(s.dns, &[ZONE, "AXFR", "+tcp"]);
    assert!(
        unsigned.raw.contains("REFUSED") || unsigned.raw.contains("Transfer failed"),
        "{}",
        unsigned.raw
    );
    let other = "hmac-sha256:xfr-key:b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI=";
    let bad = dig(s.dns, &[ZONE, "AXFR", "+tcp", "-y", other]);
    assert!(!bad.raw.contains("new.bar.global"), "{}", bad.raw);
    eventually(Duration::from_secs(5), "refusals counted", || {
        let refused =
            s.metric("globaldns_transfers_served_total{kind=\"axfr\",result=\"refused\"}")?;
        (refused >= 1.0).then_some(())
    });
}
/// A transfer of many messages to a client that reads slowly (a 4 KiB receive buffer): it
/// arrives whole (the server waits for the reader; it once queued what did not fit and dropped
/// the rest).
#[test]
fn a_large_zone_transfers_whole_to_a_slow_reader() {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;

    let (_t, dir, state) = dirs();
    const HOSTS: usize = 40_000;
    big_hosts(&dir, HOSTS, 0);
    let p = primary(&dir, &state, &[]);

    let mut tcp = tcp_stream(p.dns, true);
    ask_axfr(&mut tcp, 1);

    let (mut messages, mut a, mut soa) = (0, 0, 0);
    while soa < 2 {
        let m = Message::from_vec(&read_message(&mut tcp)).unwrap();
        messages += 1;
        for r in &m.answers {
            match r.record_type() {
                RecordType::A if r.name.to_ascii().ends_with(".big.global.") => a += 1,
                RecordType::SOA => soa += 1,
                _ => {}
            }
        }
    }
    assert!(
        messages > 64,
        "more messages ({messages}) than hickory's response queue held"
    );
    assert_eq!(a, HOSTS, "every host's A record");
}
