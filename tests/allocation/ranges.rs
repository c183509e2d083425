//! What the ranges hold: dual-stack, several IPv4 ranges as one pool, exhaustion, user
//! addresses inside a range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::*;
use crate::support::*;

#[test]
fn ipv4_and_ipv6_ranges_both_answer() {
    let (_t, zones, state) = dirs();
    let hosts: BTreeSet<String> = ["web.dual.global", "api.dual.global", "db.dual.global"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    let mut yaml = entries_yaml(&hosts);
    yaml.push_str("---\n");
    yaml.push_str(&se(
        "v4only",
        "dual",
        &["v4only.dual.global"],
        &["10.9.9.9"],
        "",
    ));
    write_file(&zones.join("d.yaml"), &yaml);
    let flags = [
        "--vip-range",
        "240.10.0.0/16",
        "--vip-range",
        "fd00:10::/64",
    ];
    let s = Server::start(&zones, &state, &flags);
    let v6net: ipnet::Ipv6Net = "fd00:10::/64".parse().unwrap();
    let model4 = model_v4("240.10.0.0/16", &hosts, &[]);
    let mut seen = BTreeMap::new();
    for h in &hosts {
        let a = eventually(Duration::from_secs(5), "A answer", || a_of(s.dns, h));
        assert_eq!(a, model4[h], "{h}: IPv4 VIP");
        let m = udp_ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let v6: Vec<Ipv6Addr> = answer_addrs(&m)
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v) => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(v6.len(), 1, "{h}: one AAAA: {m:?}");
        assert!(
            v6net.contains(&v6[0]),
            "{h}: {} outside fd00:10::/64",
            v6[0]
        );
        // Same rules in its own range: slot = FNV-1a-64 mod 2^64 from the range start.
        let want = Ipv6Addr::from(u128::from(v6net.network()) + u128::from(fnv1a64(h)));
        assert_eq!(
            v6[0], want,
            "{h}: IPv6 VIP is not the preferred slot of its own range"
        );
        seen.insert(h.clone(), (a, v6[0]));
    }
    // A host with only a user IPv4 address: no auto IPv6 → NODATA for AAAA.
    let m = udp_ask(s.dns, "v4only.dual.global.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        m.answers.is_empty(),
        "no AAAA for a host with its own address: {m:?}"
    );

    let table = read_store(&state);
    for (h, (a, aaaa)) in &seen {
        assert_eq!(table[h].ipv4, Some(*a));
        assert_eq!(table[h].ipv6, Some(*aaaa));
    }
    s.stop();
    let s = Server::start(&zones, &state, &flags);
    for (h, (a, aaaa)) in &seen {
        assert_eq!(a_of(s.dns, h), Some(*a), "{h} A after restart");
        let m = udp_ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert_eq!(
            answer_addrs(&m),
            vec![IpAddr::V6(*aaaa)],
            "{h} AAAA after restart"
        );
    }
}

#[test]
fn repeated_ipv4_ranges_form_one_pool() {
    let (_t, zones, state) = dirs();
    let hosts: BTreeSet<String> = (0..7).map(|i| format!("p{i}.pool.global")).collect();
    write_file(&zones.join("p.yaml"), &entries_yaml(&hosts));
    let ranges = ["240.10.0.0/30", "240.20.0.0/30"];
    let s = Server::start(
        &zones,
        &state,
        &["--vip-range", ranges[0], "--vip-range", ranges[1]],
    );
    eventually(Duration::from_secs(5), "7 hosts known", || {
        let v = try_debug_hosts(&s)?;
        (v["hosts"].as_object()?.len() == 7).then_some(())
    });
    let mut got = BTreeSet::new();
    for h in &hosts {
        if let Some(ip) = a_of(s.dns, h) {
            assert!(
                ranges.iter().any(|r| v4_range_contains(r, ip)),
                "{h}: {ip} outside both ranges"
            );
            assert!(got.insert(ip), "{ip} twice");
        }
    }
    assert_eq!(got.len(), 6, "3 usable addresses in each /30: {got:?}");
    assert!(ranges
        .iter()
        .all(|r| got.iter().any(|ip| v4_range_contains(r, *ip))));
}

#[test]
fn a_full_range_exhausts_cleanly() {
    let (_t, zones, state) = dirs();
    let hosts: BTreeSet<String> = (0..5).map(|i| format!("e{i}.full.global")).collect();
    write_file(&zones.join("e.yaml"), &entries_yaml(&hosts));
    let range = "240.10.0.0/30";
    let s = Server::start(&zones, &state, &["--vip-range", range]);
    let served = eventually(Duration::from_secs(5), "5 hosts known", || {
        let v = try_debug_hosts(&s)?;
        (v["hosts"].as_object()?.len() == 5).then_some(v)
    });
    let n_served = hosts
        .iter()
        .filter(|h| served["hosts"][h.as_str()]["served"] == true)
        .count();
    assert_eq!(n_served, 3, "a /30 has 3 usable addresses: {served}");

    let mut answered = BTreeSet::new();
    let mut nx = 0;
    for h in &hosts {
        match a_of(s.dns, h) {
            Some(ip) => {
                assert!(v4_range_contains(range, ip), "{h}: {ip} outside {range}");
                assert_ne!(ip, Ipv4Addr::new(240, 10, 0, 0), "{h}: network address");
                assert!(answered.insert(ip), "{ip} answered for two hosts");
            }
            None => nx += 1,
        }
        let m = udp_ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert!(
            answer_addrs(&m).is_empty(),
            "{h}: AAAA without an IPv6 range: {m:?}"
        );
    }
    assert_eq!(answered.len(), 3);
    assert_eq!(nx, 2, "hosts without a VIP must be NXDOMAIN");
    assert!(
        s.log_contains("exhausted"),
        "an error log mentions exhaustion"
    );
    assert!(
        metric0(&s, "globaldns_vip_exhausted_total") >= 2.0,
        "globaldns_vip_exhausted_total counts the failed allocations"
    );
    let table = read_store(&state);
    assert_eq!(table.len(), 3, "{table:?}");
    for (h, r) in &table {
        assert!(v4_range_contains(range, r.ipv4.unwrap()), "{h}: {r:?}");
    }
}

#[test]
fn user_address_displaces_an_auto_vip() {
    let (_t, zones, state) = dirs();
    let a = "auto.pin.global";
    write_file(&zones.join("a.yaml"), &se("auto", "pin", &[a], &[], ""));
    let s = Server::start(&zones, &state, &[]);
    let x = eventually(Duration::from_secs(5), "auto host served", || {
        a_of(s.dns, a)
    });
    let before = metric0(&s, "globaldns_vip_conflicts_total");

    let p = "pinned.pin.global";
    let xs = x.to_string();
    write_file(
        &zones.join("pin.yaml"),
        &se("pinned", "pin", &[p], &[&xs], ""),
    );
    let y = eventually(
        Duration::from_secs(3),
        "pinned host answers X and auto host moved",
        || {
            let pv = a_of(s.dns, p)?;
            let av = a_of(s.dns, a)?;
            (pv == x && av != x).then_some(av)
        },
    );
    assert!(
        v4_range_contains("240.10.0.0/16", y),
        "new VIP {y} outside the range"
    );
    assert!(y.octets()[3] != 0 && y.octets()[3] != 255, "{y}");
    eventually(
        Duration::from_secs(2),
        "vip_conflicts metric incremented",
        || (metric0(&s, "globaldns_vip_conflicts_total") == before + 1.0).then_some(()),
    );
    assert!(
        s.log_contains("displaced"),
        "a warning naming the displacement is logged"
    );
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("displaced") && l.contains(a)),
        "the displacement warning names the host {a}"
    );
    let hosts = debug_hosts(&s);
    assert_eq!(hosts["hosts"][p]["addresses"][0]["source"], "spec");
    assert_eq!(hosts["hosts"][a]["addresses"][0]["source"], "vip");
    let table = read_store(&state);
    assert_eq!(table[a].ipv4, Some(y), "the move is persisted");
    assert!(
        table.values().all(|r| r.ipv4 != Some(x)),
        "the user address {x} must not stay in the auto table: {table:?}"
    );

    // The moved VIP is stable from now on: across a restart, and when the user address goes away.
    s.stop();
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(a_of(s.dns, a), Some(y), "{a} after restart");
    assert_eq!(a_of(s.dns, p), Some(x), "{p} after restart");
    std::fs::remove_file(zones.join("pin.yaml")).unwrap();
    eventually(Duration::from_secs(2), "pinned host withdrawn", || {
        a_of(s.dns, p).is_none().then_some(())
    });
    assert_eq!(
        a_of(s.dns, a),
        Some(y),
        "{a} must not move back when the user address goes"
    );
    assert_eq!(
        metric0(&s, "globaldns_vip_conflicts_total"),
        0.0,
        "fresh process, no new conflict"
    );
}
