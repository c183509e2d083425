//! SRV for named ports, PTR in the reverse zones.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use ipnet::IpNet;

use crate::common::*;
use crate::support::*;

fn srv_data(m: &Message) -> Vec<(u16, u16, u16, String)> {
    let mut v: Vec<_> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_ascii()),
            o => panic!("expected SRV, got {o:?}"),
        })
        .collect();
    v.sort();
    v
}

fn additional_addrs(m: &Message, owner: &str) -> Vec<IpAddr> {
    record_addrs(m.additionals.iter().filter(|r| r.name == name(owner)))
}

#[test]
fn srv_records_for_named_ports_with_target_addresses() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let vip = answer_addrs(&q(&s, t, "httpbin.bar.global.", RecordType::A));
        assert_eq!(vip.len(), 1);

        let qn = "_http._tcp.httpbin.bar.global.";
        let m = q(&s, t, qn, RecordType::SRV);
        positive(&m, qn, RecordType::SRV, 30, &w(qn));
        assert_eq!(
            srv_data(&m),
            vec![(0, 100, 8000, "httpbin.bar.global.".to_string())],
            "{t:?}"
        );
        assert_eq!(
            additional_addrs(&m, "httpbin.bar.global."),
            vip,
            "{t:?}: the target's A in additional"
        );
        // Protocol UDP -> _udp.
        let qn = "_dns._udp.httpbin.bar.global.";
        let m = q(&s, t, qn, RecordType::SRV);
        positive(&m, qn, RecordType::SRV, 30, &w(qn));
        assert_eq!(
            srv_data(&m),
            vec![(0, 100, 53, "httpbin.bar.global.".to_string())]
        );
        assert_eq!(additional_addrs(&m, "httpbin.bar.global."), vip);
        // Wrong transport, unknown port name: NXDOMAIN. SRV name, other type: NODATA.
        for qn in [
            "_dns._tcp.httpbin.bar.global.",
            "_http._udp.httpbin.bar.global.",
            "_nope._tcp.httpbin.bar.global.",
        ] {
            let m = q(&s, t, qn, RecordType::SRV);
            nxdomain(&m, "global.", 30, &w(qn));
        }
        let m = q(&s, t, "_http._tcp.httpbin.bar.global.", RecordType::A);
        nodata(&m, "global.", 30, &w("SRV owner, type A"));

        // A dual-stack target: A and AAAA in additional.
        let qn = "_tcp-app._tcp.static.bar.global.";
        let m = q(&s, t, qn, RecordType::SRV);
        positive(&m, qn, RecordType::SRV, 30, &w(qn));
        assert_eq!(
            srv_data(&m),
            vec![(0, 100, 7070, "static.bar.global.".to_string())]
        );
        assert_eq!(
            additional_addrs(&m, "static.bar.global."),
            ips(&["10.1.2.3", "10.1.2.4", "fd00:1::7"]),
            "{t:?}: A and AAAA of the target in additional"
        );

        // Ports from two clusters' ServiceEntries for one host: both SRV names.
        for (qn, port) in [
            ("_http._tcp.vipboth.bar.global.", 80),
            ("_grpc._tcp.vipboth.bar.global.", 9000),
        ] {
            let m = q(&s, t, qn, RecordType::SRV);
            positive(&m, qn, RecordType::SRV, 30, &w(qn));
            assert_eq!(
                srv_data(&m),
                vec![(0, 100, port, "vipboth.bar.global.".to_string())]
            );
        }
    }
}

fn ptr_targets(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::PTR(p) => p.0.to_ascii(),
            o => panic!("expected PTR, got {o:?}"),
        })
        .collect();
    v.sort();
    v
}

#[test]
fn ptr_in_the_reverse_zone_of_the_vip_range() {
    let (_t, s) = fixture(&[]);
    let vip = answer_addrs(&q(&s, Transport::Udp, "httpbin.bar.global.", RecordType::A))[0];
    let wildcard_vip = answer_addrs(&q(&s, Transport::Udp, "x.wild.global.", RecordType::A))[0];
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        for (ip, want) in [
            (vip.to_string(), vec!["httpbin.bar.global."]),
            ("240.10.7.7".to_string(), vec!["legacy.bar.global."]),
            (
                "240.10.8.8".to_string(),
                vec!["one.shared.global.", "two.shared.global."],
            ),
        ] {
            let rev = reverse(&ip);
            let m = q(&s, t, &rev, RecordType::PTR);
            positive(&m, &rev, RecordType::PTR, 30, &w(&rev));
            assert_eq!(ptr_targets(&m), want, "{t:?}: PTR {ip}");
        }
        // The reverse zone is an authoritative zone.
        let m = q(&s, t, "10.240.in-addr.arpa.", RecordType::SOA);
        positive(
            &m,
            "10.240.in-addr.arpa.",
            RecordType::SOA,
            30,
            &w("reverse SOA"),
        );
        let m = q(&s, t, "10.240.in-addr.arpa.", RecordType::NS);
        positive(
            &m,
            "10.240.in-addr.arpa.",
            RecordType::NS,
            30,
            &w("reverse NS"),
        );
        let free = ["240.10.0.1", "240.10.0.2", "240.10.0.3"]
            .into_iter()
            .find(|a| {
                a.parse::<IpAddr>().unwrap() != vip && a.parse::<IpAddr>().unwrap() != wildcard_vip
            })
            .unwrap();
        let m = q(&s, t, &reverse(free), RecordType::PTR);
        nxdomain(&m, "10.240.in-addr.arpa.", 30, &w("unused address"));
        let rev = reverse("240.10.7.7");
        let m = q(&s, t, &rev, RecordType::A);
        nodata(&m, "10.240.in-addr.arpa.", 30, &w("PTR name, type A"));
        let m = q(&s, t, "7.10.240.in-addr.arpa.", RecordType::PTR);
        nodata(
            &m,
            "10.240.in-addr.arpa.",
            30,
            &w("ENT in the reverse zone"),
        );
        // User addresses outside every reverse zone: no PTR (outside every zone).
        let m = q(&s, t, &reverse("10.1.2.3"), RecordType::PTR);
        refused(&m, &w("10.1.2.3 reverse without --reverse-zone"));
        let m = q(&s, t, "in-addr.arpa.", RecordType::SOA);
        refused(&m, &w("in-addr.arpa."));
    }
}

#[test]
fn reverse_zone_flag_adds_ptr_for_user_addresses() {
    let (_t, s) = fixture(&["--reverse-zone", "10.in-addr.arpa"]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        for (ip, want) in [
            ("10.1.2.3", vec!["static.bar.global."]),
            ("10.1.2.4", vec!["static.bar.global."]),
            ("10.5.0.2", vec!["multi.bar.global."]),
        ] {
            let rev = reverse(ip);
            let m = q(&s, t, &rev, RecordType::PTR);
            positive(&m, &rev, RecordType::PTR, 30, &w(&rev));
            assert_eq!(ptr_targets(&m), want, "{t:?}: PTR {ip}");
        }
        let m = q(&s, t, &reverse("10.99.99.99"), RecordType::PTR);
        nxdomain(&m, "10.in-addr.arpa.", 30, &w("unused 10.x address"));
        let m = q(&s, t, "10.in-addr.arpa.", RecordType::SOA);
        positive(
            &m,
            "10.in-addr.arpa.",
            RecordType::SOA,
            30,
            &w("--reverse-zone SOA"),
        );
        // The VIP range's reverse zone is still served.
        let m = q(&s, t, &reverse("240.10.7.7"), RecordType::PTR);
        assert_eq!(ptr_targets(&m), vec!["legacy.bar.global."], "{t:?}");
        // IPv6 user address: no IPv6 reverse zone configured.
        let m = q(&s, t, &reverse("fd00:1::7"), RecordType::PTR);
        refused(&m, &w("fd00:1::7 reverse"));
    }
}

#[test]
fn ipv6_vip_only_with_an_ipv6_range() {
    let (_t, s) = fixture(&[
        "--vip-range",
        "240.10.0.0/16",
        "--vip-range",
        "fd00:10::/48",
    ]);
    let v6range: IpNet = "fd00:10::/48".parse().unwrap();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let m = q(&s, t, "httpbin.bar.global.", RecordType::AAAA);
        let got = positive(
            &m,
            "httpbin.bar.global.",
            RecordType::AAAA,
            30,
            &w("AAAA VIP"),
        );
        assert_eq!(got.len(), 1, "{t:?}: one IPv6 VIP");
        assert!(
            v6range.contains(&got[0]),
            "{t:?}: {} in fd00:10::/48",
            got[0]
        );
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        let v4 = positive(&m, "httpbin.bar.global.", RecordType::A, 30, &w("A VIP"));
        assert_eq!(v4.len(), 1);
        assert!(vip_range().contains(&v4[0]));
        // Its PTR in the IPv6 range's reverse zone.
        let rev = reverse(&got[0].to_string());
        let m = q(&s, t, &rev, RecordType::PTR);
        positive(&m, &rev, RecordType::PTR, 30, &w("IPv6 PTR"));
        assert_eq!(ptr_targets(&m), vec!["httpbin.bar.global."]);
        // Hosts with their own addresses get no VIP of either family.
        let m = q(&s, t, "only4.bar.global.", RecordType::AAAA);
        nodata(
            &m,
            "global.",
            30,
            &w("only4 AAAA: user address, no IPv6 VIP"),
        );
        let m = q(&s, t, "static.bar.global.", RecordType::AAAA);
        assert_eq!(answer_addrs(&m), ips(&["fd00:1::7"]), "{t:?}");
    }
}
