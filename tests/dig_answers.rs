//! The core answer rules (README, "Answers") as an operator sees them: through the real `dig`,
//! over UDP and TCP (`+tcp`). Same fixture as tests/answers/ (`tests/data/answers/`).

mod common;
use common::*;

use std::net::IpAddr;

/// The two ways to ask: plain (UDP) and `+tcp`.
const MODES: [&[&str]; 2] = [&[], &["+tcp"]];

fn dig_in(s: &Server, mode: &[&str], args: &[&str]) -> Dig {
    let mut all: Vec<&str> = mode.to_vec();
    all.extend_from_slice(args);
    let d = dig(s.dns, &all);
    assert!(
        !d.status.is_empty(),
        "dig {all:?} printed no header (no answer?):\n{}",
        d.raw
    );
    d
}

/// Flags of an authoritative response: qr and aa, never ra.
fn assert_aa(d: &Dig, what: &str) {
    assert!(
        d.flags.iter().any(|f| f == "qr"),
        "{what}: qr: {:?}",
        d.flags
    );
    assert!(
        d.flags.iter().any(|f| f == "aa"),
        "{what}: aa must be set: {:?}\n{}",
        d.flags,
        d.raw
    );
    assert!(
        !d.flags.iter().any(|f| f == "ra"),
        "{what}: ra must be clear: {:?}",
        d.flags
    );
}

/// Answer rows as (owner, ttl, type, rdata).
fn rows(section: &[Vec<String>]) -> Vec<(String, u32, String, String)> {
    let mut v: Vec<_> = section
        .iter()
        .map(|f| {
            assert_eq!(f[2], "IN", "class: {f:?}");
            (
                f[0].to_lowercase(),
                f[1].parse().expect("ttl"),
                f[3].clone(),
                f[4..].join(" "),
            )
        })
        .collect();
    v.sort();
    v
}

fn positive(d: &Dig, owner: &str, rtype: &str, ttl: u32, what: &str) -> Vec<String> {
    assert_eq!(d.status, "NOERROR", "{what}:\n{}", d.raw);
    assert_aa(d, what);
    assert!(!d.answer.is_empty(), "{what}: answers expected:\n{}", d.raw);
    for (o, t, ty, _) in rows(&d.answer) {
        assert_eq!(o, owner, "{what}: owner");
        assert_eq!(t, ttl, "{what}: TTL");
        assert_eq!(ty, rtype, "{what}: type");
    }
    sorted_data(d)
}

/// NODATA or NXDOMAIN: `status`, AA, empty answer, the zone's SOA alone in authority with
/// minimum = `ttl`.
fn negative(d: &Dig, status: &str, zone: &str, ttl: u32, what: &str) {
    assert_eq!(d.status, status, "{what}:\n{}", d.raw);
    assert_aa(d, what);
    assert!(d.answer.is_empty(), "{what}: no answer:\n{}", d.raw);
    let auth = rows(&d.authority);
    assert_eq!(auth.len(), 1, "{what}: one SOA in authority:\n{}", d.raw);
    let (owner, soa_ttl, ty, data) = &auth[0];
    assert_eq!(ty, "SOA", "{what}");
    assert_eq!(owner, zone, "{what}: SOA of the zone");
    assert!(*soa_ttl <= ttl, "{what}: SOA TTL {soa_ttl}");
    assert_eq!(
        data.split_whitespace().last(),
        Some(ttl.to_string().as_str()),
        "{what}: SOA minimum = --ttl: {data}"
    );
}

fn in_vip_range(a: &str) -> bool {
    vip_range().contains(&a.parse::<IpAddr>().unwrap())
}

#[test]
fn dig_positive_answers() {
    let (_t, s) = fixture(&[]);
    let mut vips = Vec::new();
    for mode in MODES {
        let w = |x: &str| format!("{mode:?} {x}");
        let d = dig_in(&s, mode, &["httpbin.bar.global", "A"]);
        let got = positive(&d, "httpbin.bar.global.", "A", 30, &w("httpbin A"));
        assert_eq!(got.len(), 1, "{mode:?}");
        assert!(in_vip_range(&got[0]), "{mode:?}: {got:?}");
        vips.push(got[0].clone());

        let d = dig_in(&s, mode, &["static.bar.global", "A"]);
        assert_eq!(
            positive(&d, "static.bar.global.", "A", 30, &w("static A")),
            vec!["10.1.2.3", "10.1.2.4"]
        );
        let d = dig_in(&s, mode, &["static.bar.global", "AAAA"]);
        assert_eq!(
            positive(&d, "static.bar.global.", "AAAA", 30, &w("static AAAA")),
            vec!["fd00:1::7"]
        );
        let d = dig_in(&s, mode, &["multi.bar.global", "A"]);
        assert_eq!(
            positive(&d, "multi.bar.global.", "A", 30, &w("multi-cluster union")),
            vec!["10.5.0.1", "10.5.0.2", "10.5.0.3"]
        );
        let d = dig_in(&s, mode, &["vipboth.bar.global", "A"]);
        let got = positive(
            &d,
            "vipboth.bar.global.",
            "A",
            30,
            &w("one VIP for 2 clusters"),
        );
        assert_eq!(got.len(), 1, "{mode:?}");
        assert!(in_vip_range(&got[0]));
    }
    assert_eq!(vips[0], vips[1], "same VIP over UDP and TCP");
}

#[test]
fn dig_negative_answers() {
    let (_t, s) = fixture(&["--ttl", "12"]);
    for mode in MODES {
        let w = |x: &str| format!("{mode:?} {x}");
        for (qname, rtype, status) in [
            ("httpbin.bar.global", "TXT", "NOERROR"),
            ("httpbin.bar.global", "AAAA", "NOERROR"),
            ("only4.bar.global", "AAAA", "NOERROR"),
            ("bar.global", "A", "NOERROR"),
            ("global", "A", "NOERROR"),
            ("wild.global", "A", "NOERROR"),
            ("nope.bar.global", "A", "NXDOMAIN"),
            ("none.bar.global", "A", "NXDOMAIN"),
            ("optout.bar.global", "A", "NXDOMAIN"),
            ("x.novip.global", "A", "NXDOMAIN"),
            ("_nope._tcp.httpbin.bar.global", "SRV", "NXDOMAIN"),
        ] {
            let d = dig_in(&s, mode, &[qname, rtype]);
            negative(&d, status, "global.", 12, &w(&format!("{qname} {rtype}")));
        }
        for (qname, rtype) in [("example.com", "A"), ("httpbin.example.com", "A")] {
            let d = dig_in(&s, mode, &[qname, rtype]);
            assert_eq!(d.status, "REFUSED", "{mode:?} {qname}:\n{}", d.raw);
            assert!(
                !d.flags.iter().any(|f| f == "aa" || f == "ra"),
                "{mode:?} {qname}: REFUSED has neither aa nor ra: {:?}",
                d.flags
            );
            assert!(d.answer.is_empty() && d.authority.is_empty());
        }
    }
}

#[test]
fn dig_wildcards() {
    let (_t, s) = fixture(&[]);
    for mode in MODES {
        let w = |x: &str| format!("{mode:?} {x}");
        let d = dig_in(&s, mode, &["deep.er.wild.global", "A"]);
        let got = positive(
            &d,
            "deep.er.wild.global.",
            "A",
            30,
            &w("DYNAMIC_DNS wildcard"),
        );
        assert_eq!(got.len(), 1);
        assert!(in_vip_range(&got[0]));
        for (qname, want) in [
            ("exact.mix.global", "10.4.0.2"),
            ("foo.mix.global", "10.4.0.1"),
            ("foo.a.mix.global", "10.4.0.3"),
            ("z.y.x.a.mix.global", "10.4.0.3"),
        ] {
            let d = dig_in(&s, mode, &[qname, "A"]);
            assert_eq!(
                positive(&d, &format!("{qname}."), "A", 30, &w(qname)),
                vec![want],
                "{mode:?} {qname}"
            );
        }
    }
}

#[test]
fn dig_apex_srv_ptr_any() {
    let (_t, s) = fixture(&[]);
    for mode in MODES {
        let w = |x: &str| format!("{mode:?} {x}");
        let d = dig_in(&s, mode, &["global", "SOA"]);
        let soa = positive(&d, "global.", "SOA", 30, &w("SOA"));
        let f: Vec<&str> = soa[0].split_whitespace().collect();
        assert_eq!(f[0], "ns.global.", "{mode:?}: MNAME");
        assert_eq!(f[1], "hostmaster.global.", "{mode:?}: RNAME");
        assert_eq!(f[6], "30", "{mode:?}: minimum");
        let d = dig_in(&s, mode, &["global", "NS"]);
        assert_eq!(
            positive(&d, "global.", "NS", 30, &w("NS")),
            vec!["ns.global."]
        );

        let vip = dig_in(&s, mode, &["httpbin.bar.global", "A"]).answer_data();
        let d = dig_in(&s, mode, &["_http._tcp.httpbin.bar.global", "SRV"]);
        assert_eq!(
            positive(&d, "_http._tcp.httpbin.bar.global.", "SRV", 30, &w("SRV")),
            vec!["0 100 8000 httpbin.bar.global."]
        );
        let extra: Vec<String> = d
            .additional
            .iter()
            .filter(|f| f[0] == "httpbin.bar.global." && f[3] == "A")
            .map(|f| f[4].clone())
            .collect();
        assert_eq!(extra, vip, "{mode:?}: target A in additional:\n{}", d.raw);
        let d = dig_in(&s, mode, &["_dns._udp.httpbin.bar.global", "SRV"]);
        assert_eq!(
            positive(
                &d,
                "_dns._udp.httpbin.bar.global.",
                "SRV",
                30,
                &w("SRV udp")
            ),
            vec!["0 100 53 httpbin.bar.global."]
        );

        let d = dig_in(&s, mode, &["-x", &vip[0]]);
        let owner = {
            let o: Vec<&str> = vip[0].split('.').rev().collect();
            format!("{}.in-addr.arpa.", o.join("."))
        };
        assert_eq!(
            positive(&d, &owner, "PTR", 30, &w("PTR of the VIP")),
            vec!["httpbin.bar.global."]
        );
        let d = dig_in(&s, mode, &["-x", "240.10.8.8"]);
        assert_eq!(
            positive(&d, "8.8.10.240.in-addr.arpa.", "PTR", 30, &w("PTR shared")),
            vec!["one.shared.global.", "two.shared.global."]
        );
        let d = dig_in(&s, mode, &["-x", "240.10.250.251"]);
        negative(&d, "NXDOMAIN", "10.240.in-addr.arpa.", 30, &w("PTR unused"));
        let d = dig_in(&s, mode, &["-x", "10.1.2.3"]);
        assert_eq!(
            d.status, "REFUSED",
            "{mode:?}: no reverse zone for 10/8 by default"
        );

        let d = dig_in(&s, mode, &["httpbin.bar.global", "ANY"]);
        assert_eq!(
            positive(&d, "httpbin.bar.global.", "HINFO", 30, &w("ANY")),
            vec!["\"RFC8482\" \"\""]
        );
    }
}

#[test]
fn dig_question_keeps_its_case() {
    let (_t, s) = fixture(&[]);
    for mode in MODES {
        let d = dig_in(&s, mode, &["HttpBin.Bar.Global", "A"]);
        assert_eq!(d.question.len(), 1, "{mode:?}:\n{}", d.raw);
        assert!(
            d.question[0].starts_with("HttpBin.Bar.Global.\t"),
            "{mode:?}: question echoed as {:?}, expected the query's case HttpBin.Bar.Global.",
            d.question[0]
        );
        assert_eq!(d.status, "NOERROR");
        assert_aa(&d, "mixed case");
        assert_eq!(d.answer.len(), 1, "{mode:?}:\n{}", d.raw);
        assert!(in_vip_range(&d.answer[0][4]));
    }
}

#[test]
fn dig_opcodes_and_edns() {
    let (_t, s) = fixture(&[]);
    for mode in MODES {
        for op in ["status", "notify", "update"] {
            let opcode = format!("+opcode={op}");
            let d = dig_in(&s, mode, &[opcode.as_str(), "global", "SOA"]);
            assert_eq!(d.status, "NOTIMP", "{mode:?} {op}:\n{}", d.raw);
            assert!(!d.flags.iter().any(|f| f == "ra"));
        }
        // EDNS version 1: BADVERS (no negotiation down to 0, which dig does by default).
        let d = dig_in(
            &s,
            mode,
            &["+edns=1", "+noednsnegotiation", "httpbin.bar.global"],
        );
        assert_eq!(d.status, "BADVERS", "{mode:?}:\n{}", d.raw);
        assert!(d.answer.is_empty());
        assert!(
            d.raw.contains("EDNS: version: 0"),
            "{mode:?}: the BADVERS OPT says version 0:\n{}",
            d.raw
        );
        // The OPT comes back with our 1232 whatever the client offers.
        for bufsize in ["+bufsize=1232", "+bufsize=4096"] {
            let d = dig_in(&s, mode, &[bufsize, "httpbin.bar.global"]);
            assert_eq!(d.edns_udp, Some(1232), "{mode:?} {bufsize}:\n{}", d.raw);
        }
        let d = dig_in(&s, mode, &["+noedns", "httpbin.bar.global"]);
        assert_eq!(d.edns_udp, None, "{mode:?}: no OPT to a non-EDNS query");
        assert_eq!(d.answer.len(), 1);
    }
}

#[test]
fn dig_truncation_and_tcp() {
    let addrs: Vec<String> = (1..=60).map(|i| format!("10.60.0.{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let big = se("big", "bar", &["big.bar.global"], &refs, "");
    let (_t, s) = start_fixture(&[], &[("big.yaml", big)]);
    for args in [
        &["+bufsize=512", "+ignore"][..],
        &["+noedns", "+ignore"][..],
    ] {
        let mut all = args.to_vec();
        all.push("big.bar.global");
        let d = dig(s.dns, &all);
        assert!(
            d.flags.iter().any(|f| f == "tc"),
            "{args:?}: 60 A records do not fit 512 bytes: tc expected: {:?}\n{}",
            d.flags,
            d.raw
        );
        assert!(d.answer.len() < 60);
    }
    // dig's default (1232) fits, and TCP always gets everything.
    for args in [
        &["big.bar.global"][..],
        &["+tcp", "+bufsize=512", "big.bar.global"][..],
    ] {
        let d = dig(s.dns, args);
        assert!(
            !d.flags.iter().any(|f| f == "tc"),
            "{args:?}: {:?}",
            d.flags
        );
        assert_eq!(d.answer.len(), 60, "{args:?}:\n{}", d.raw);
        positive(&d, "big.bar.global.", "A", 30, "big");
    }
    // Without +ignore, dig retries over TCP after TC and gets all of it.
    let d = dig(s.dns, &["+bufsize=512", "big.bar.global"]);
    assert_eq!(d.answer.len(), 60, "TC then TCP retry:\n{}", d.raw);
}

#[test]
fn dig_tcp_equals_udp() {
    let (_t, s) = fixture(&[]);
    for args in [
        &["httpbin.bar.global", "A"][..],
        &["static.bar.global", "AAAA"][..],
        &["multi.bar.global", "A"][..],
        &["bar.global", "A"][..],
        &["nope.bar.global", "A"][..],
        &["global", "NS"][..],
        &["_tcp-app._tcp.static.bar.global", "SRV"][..],
        &["x.a.mix.global", "A"][..],
        &["-x", "240.10.7.7"][..],
    ] {
        let u = dig(s.dns, args);
        let mut tcp = vec!["+tcp"];
        tcp.extend_from_slice(args);
        let t = dig(s.dns, &tcp);
        assert_eq!(u.status, t.status, "{args:?}");
        let mut uf = u.flags.clone();
        let mut tf = t.flags.clone();
        uf.sort();
        tf.sort();
        assert_eq!(uf, tf, "{args:?}: flags");
        assert_eq!(rows(&u.answer), rows(&t.answer), "{args:?}: answer");
        assert_eq!(
            rows(&u.authority),
            rows(&t.authority),
            "{args:?}: authority"
        );
        assert_eq!(
            rows(&u.additional),
            rows(&t.additional),
            "{args:?}: additional"
        );
    }
}

/// Records of a `dig AXFR` printout (no section headers there).
fn axfr_records(raw: &str) -> Vec<Vec<String>> {
    raw.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn dig_axfr_refused_by_default() {
    let (_t, s) = fixture(&[]);
    let d = dig(s.dns, &["AXFR", "global"]);
    assert!(
        axfr_records(&d.raw).is_empty(),
        "no records without --allow-transfer:\n{}",
        d.raw
    );
    assert!(d.raw.contains("Transfer failed"), "{}", d.raw);
}

#[test]
fn dig_axfr_with_allow_transfer() {
    let (_t, s) = fixture(&["--allow-transfer", "127.0.0.0/8"]);
    let d = dig(s.dns, &["AXFR", "global"]);
    let recs = axfr_records(&d.raw);
    assert!(recs.len() > 10, "{}", d.raw);
    assert_eq!(
        recs.first().unwrap()[3],
        "SOA",
        "opens with SOA:\n{}",
        d.raw
    );
    assert_eq!(
        recs.last().unwrap()[3],
        "SOA",
        "closes with SOA:\n{}",
        d.raw
    );
    assert_eq!(recs.iter().filter(|r| r[3] == "SOA").count(), 2);
    let has = |owner: &str, ty: &str, data: &str| {
        recs.iter()
            .any(|r| r[0] == owner && r[3] == ty && (data.is_empty() || r[4..].join(" ") == data))
    };
    for (owner, ty, data) in [
        ("global.", "NS", "ns.global."),
        ("httpbin.bar.global.", "A", ""),
        ("static.bar.global.", "AAAA", "fd00:1::7"),
        (
            "_http._tcp.httpbin.bar.global.",
            "SRV",
            "0 100 8000 httpbin.bar.global.",
        ),
        ("*.wild.global.", "A", ""),
        ("multi.bar.global.", "A", "10.5.0.2"),
    ] {
        assert!(
            has(owner, ty, data),
            "AXFR lacks {owner} {ty} {data}:\n{}",
            d.raw
        );
    }
}
