//! A rollout sends changes, not zones. A primary restarted on its state directory (with a change
//! made while it was down) continues its serials and journal: a globaldns secondary and Knot
//! both take an IXFR of the change, and the primary serves no AXFR. A secondary whose primary
//! goes away moves to the other replica (its own serials, the same sources) by an IXFR matched
//! by content.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

fn answer(server: SocketAddr, host: &str) -> Vec<String> {
    dig(server, &[host, "A"]).answer_data()
}

/// Gives `moved.bar.global` the address `ip`.
fn set_moved(dir: &Path, ip: &str) {
    write_file(
        &dir.join("moved.yaml"),
        &se("moved", "bar", &["moved.bar.global"], &[ip], ""),
    );
}

fn serial(server: SocketAddr) -> u32 {
    dig(server, &["global", "SOA"]).answer[0][6]
        .parse()
        .unwrap()
}

/// Waits until the clock is past `serial`: serials follow the clock, so a replica started from
/// now on publishes newer ones.
fn clock_past(serial: u32) {
    eventually(
        Duration::from_secs(10),
        "the clock passes the serial",
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            (now > u64::from(serial)).then_some(())
        },
    );
}

/// What Knot logged about transfers after `from` bytes of its log.
fn knot_transfers(knot: &Knot, from: usize) -> Vec<String> {
    knot.log()[from..]
        .lines()
        .filter(|l| l.contains("XFR") || l.contains("refresh"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_restarted_primary_sends_the_change_not_the_zone() {
    let (t, dir, state) = dirs();
    small_mesh(&dir);
    set_moved(&dir, "10.7.0.1");
    let ports = free_ports(5);
    let addr = |i: u16| format!("127.0.0.1:{}", ports + i);
    let (pdns, padmin, sdns, sadmin) = (addr(0), addr(1), addr(2), addr(3));
    let knot_addr = addr(4);
    let pflags = [
        "--listen",
        &pdns,
        "--admin",
        &padmin,
        "--allow-transfer",
        "127.0.0.0/8",
        "--notify",
        &sdns,
        "--notify",
        &knot_addr,
    ];
    let primary = Server::start(&dir, &state, &pflags);
    let knot = Knot::secondary_of(primary.dns, ports + 4);
    let sec = Server::start_secondary(
        t.path(),
        "s",
        &[
            "--listen",
            &sdns,
            "--admin",
            &sadmin,
            "--primary",
            &pdns,
            "--refresh",
            "1s",
        ],
    );
    eventually(Duration::from_secs(20), "knot loaded the zone", || {
        (answer(knot.addr, "moved.bar.global") == ["10.7.0.1"]).then_some(())
    });
    assert_eq!(answer(sec.dns, "moved.bar.global"), ["10.7.0.1"]);
    let before = serial(primary.dns);
    let knot_log = knot.log().len();
    // One AXFR per zone (the forward and the reverse zone) for the first load.
    let axfrs = metric0(
        &sec,
        "globaldns_transfers_total{kind=\"axfr\",result=\"ok\"}",
    );

    // Down, a change while down, up again on the same state directory.
    primary.kill9();
    set_moved(&dir, "10.7.0.2");
    let primary = Server::start(&dir, &state, &pflags);
    let after = serial(primary.dns);
    assert!(after > before, "serial {before} then {after}");
    for (who, server) in [("the secondary", sec.dns), ("knot", knot.addr)] {
        eventually(
            Duration::from_secs(20),
            &format!("{who} has the change"),
            || (answer(server, "moved.bar.global") == ["10.7.0.2"]).then_some(()),
        );
    }
    // Then a change made while it runs.
    set_moved(&dir, "10.7.0.3");
    for (who, server) in [("the secondary", sec.dns), ("knot", knot.addr)] {
        eventually(
            Duration::from_secs(20),
            &format!("{who} has the next change"),
            || (answer(server, "moved.bar.global") == ["10.7.0.3"]).then_some(()),
        );
    }

    // The secondary: one AXFR (the first load), then IXFRs only.
    let m = |name: &str| metric0(&sec, name);
    assert_eq!(
        m("globaldns_transfers_total{kind=\"axfr\",result=\"ok\"}"),
        axfrs
    );
    assert_eq!(
        m("globaldns_transfers_total{kind=\"ixfr\",result=\"full\"}"),
        0.0
    );
    assert!(m("globaldns_transfers_total{kind=\"ixfr\",result=\"ok\"}") >= 2.0);
    // Knot: incremental transfers from the serial it had, no AXFR and no fallback to one.
    let lines = knot_transfers(&knot, knot_log);
    // Knot logs the transfer, then the serials its refresh went between.
    let ixfr = lines
        .iter()
        .position(|l| l.contains("IXFR, incoming") && l.contains("finished"));
    let updated = "zone updated, ";
    let serials = format!("serial {before} -> {after},");
    assert!(
        ixfr.is_some_and(|i| lines[i + 1..]
            .iter()
            .any(|l| l.contains(updated) && l.contains(&serials))),
        "knot took the change made while down by IXFR from its serial: {lines:#?}"
    );
    // Knot names AXFR only for one ("AXFR, incoming"), an answer in full ("AXFR-style
    // IXFR") or a fallback ("fallback to AXFR").
    assert!(
        !lines.iter().any(|l| l.contains("AXFR")),
        "knot fell back to a full transfer: {lines:#?}"
    );
    // The primary's side: only IXFRs served since its restart.
    eventually(Duration::from_secs(5), "served IXFRs counted", || {
        let served =
            primary.metric("globaldns_transfers_served_total{kind=\"ixfr\",result=\"served\"}")?;
        (served >= 4.0).then_some(())
    });
    assert_eq!(
        metric0(
            &primary,
            "globaldns_transfers_served_total{kind=\"axfr\",result=\"served\"}"
        ),
        0.0
    );
}

#[test]
fn a_secondary_moves_to_the_other_replica_by_ixfr() {
    let (t, dir, state) = dirs();
    small_mesh(&dir);
    set_moved(&dir, "10.7.0.1");
    let ports = free_ports(4);
    let addr = |i: u16| format!("127.0.0.1:{}", ports + i);
    let (p1, p1admin, p2, p2admin) = (addr(0), addr(1), addr(2), addr(3));
    let replica = |dns: &str, admin: &str, state: &Path| {
        Server::start(
            &dir,
            state,
            &[
                "--listen",
                dns,
                "--admin",
                admin,
                "--allow-transfer",
                "127.0.0.0/8",
            ],
        )
    };
    let first = replica(&p1, &p1admin, &state);
    // The other replica is not up yet: the secondary loads from the first.
    let sec = Server::start_secondary(
        t.path(),
        "s",
        &["--primary", &p1, "--primary", &p2, "--refresh", "1s"],
    );
    assert_eq!(answer(sec.dns, "moved.bar.global"), ["10.7.0.1"]);
    let axfrs = metric0(
        &sec,
        "globaldns_transfers_total{kind=\"axfr\",result=\"ok\"}",
    );
    clock_past(serial(sec.dns));
    let second = replica(&p2, &p2admin, &t.path().join("state2"));
    assert_ne!(
        serial(second.dns),
        serial(first.dns),
        "serials of their own"
    );

    // The first goes away and a change comes: the secondary takes it from the second.
    first.kill9();
    set_moved(&dir, "10.7.0.2");
    eventually(
        Duration::from_secs(20),
        "the secondary has the change",
        || (answer(sec.dns, "moved.bar.global") == ["10.7.0.2"]).then_some(()),
    );
    assert_eq!(
        metric0(
            &sec,
            "globaldns_transfers_total{kind=\"axfr\",result=\"ok\"}"
        ),
        axfrs,
        "the first load only"
    );
    assert_eq!(
        metric0(
            &sec,
            "globaldns_transfers_total{kind=\"ixfr\",result=\"full\"}"
        ),
        0.0
    );
    assert!(
        metric0(
            &sec,
            "globaldns_transfers_total{kind=\"ixfr\",result=\"ok\"}"
        ) >= 1.0
    );
    assert!(metric0(&second, "globaldns_ixfr_content_total{result=\"matched\"}") >= 1.0);
    assert_eq!(
        metric0(
            &second,
            "globaldns_transfers_served_total{kind=\"axfr\",result=\"served\"}"
        ),
        0.0
    );
    assert_eq!(serial(sec.dns), serial(second.dns));
}
