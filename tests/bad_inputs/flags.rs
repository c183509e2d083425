//! Bad flags. Expected: the process exits non-zero with an error naming the flag or address,
//! a range that is merely too small starts and says which hosts it
//! cannot serve (`globaldns_vip_exhausted_total`).

use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::*;

/// Runs `serve` on an empty zones dir with `flags` (free ports unless given) and returns its
/// stderr; fails if it is still running after 20 s.
fn start_fails(flags: &[&str]) -> String {
    let (_t, zones, state) = dirs();
    wait_exit(serve_command(&zones, &state, flags))
}

fn wait_exit(mut cmd: Command) -> String {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("started with bad flags");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn has(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "error should contain {n:?}:\n{err}");
    }
}

#[test]
fn overlapping_vip_ranges_are_refused() {
    let err = start_fails(&[
        "--vip-range",
        "240.10.0.0/16",
        "--vip-range",
        "240.10.5.0/24",
    ]);
    has(
        &err,
        &["--vip-range 240.10.0.0/16 and 240.10.5.0/24 overlap"],
    );
    let err = start_fails(&["--vip-range", "fd00:10::/64,fd00:10::/96"]);
    has(&err, &["overlap"]);
}

#[test]
fn a_vip_range_with_no_usable_address_is_refused() {
    for r in ["240.10.0.0/32", "240.10.0.255/32", "fd00:10::/128"] {
        has(
            &start_fails(&["--vip-range", r]),
            &[r, "holds no usable VIP"],
        );
    }
}

/// One usable VIP (.1 of a /31) for the fixture's three VIP hosts: it starts, serves one, logs
/// and counts those it cannot, and serves every host with its own addresses.
#[test]
fn a_too_small_vip_range_serves_what_fits_and_says_what_does_not() {
    let (_t, s) = fixture(&["--vip-range", "240.10.0.0/31"]);
    logged(&s, &["VIP range exhausted: host not served"]);
    metric_reaches(&s, "globaldns_vip_exhausted_total", 1.0);
    let served = served_vips(&s).unwrap();
    let vips: usize = served.values().map(Vec::len).sum();
    assert_eq!(vips, 1, "{served:?}");
    still_serves(&s);
}

#[test]
fn an_ipv4_range_written_as_ipv6_is_refused() {
    has(
        &start_fails(&["--vip-range", "::ffff:240.10.0.0/112"]),
        &["::ffff:240.10.0.0/112", "IPv4-mapped"],
    );
    // And an IPv4 address with an IPv6 prefix length: refused by the flag parser.
    has(
        &start_fails(&["--vip-range", "240.10.0.0/64"]),
        &["invalid value '240.10.0.0/64'"],
    );
}

#[test]
fn a_taken_listen_port_is_refused_naming_it() {
    let p = free_ports(2);
    let listen = format!("127.0.0.1:{p}");
    let admin = format!("127.0.0.1:{}", p + 1);
    let flags = ["--listen", listen.as_str(), "--admin", admin.as_str()];
    {
        let _udp = UdpSocket::bind(&listen).unwrap();
        has(&start_fails(&flags), &["cannot bind", &listen]);
    }
    {
        let _tcp = TcpListener::bind(&listen).unwrap();
        has(&start_fails(&flags), &["cannot bind", &listen]);
    }
    let _admin = TcpListener::bind(&admin).unwrap();
    has(&start_fails(&flags), &["cannot bind admin", &admin]);
}

#[test]
fn a_zero_tcp_connection_cap_is_refused() {
    has(
        &start_fails(&["--tcp-max-connections", "0"]),
        &["--tcp-max-connections"],
    );
    has(
        &start_fails(&["--tcp-idle-timeout", "soon"]),
        &["--tcp-idle-timeout"],
    );
}
