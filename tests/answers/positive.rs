//! A and AAAA: user addresses and VIPs; NXDOMAIN and NODATA.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use crate::common::*;
use crate::support::*;

#[test]
fn a_and_aaaa_serve_user_addresses_and_vips() {
    let (_t, s) = fixture(&[]);
    let mut vips = Vec::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        // No spec.addresses: one VIP from the default range.
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        let got = positive(
            &m,
            "httpbin.bar.global.",
            RecordType::A,
            30,
            &w("httpbin A"),
        );
        assert_eq!(got.len(), 1, "{t:?}: one VIP: {m:?}");
        assert!(
            vip_range().contains(&got[0]),
            "{t:?}: VIP {} outside 240.10.0.0/16",
            got[0]
        );
        vips.push(got[0]);
        assert_eq!(m.queries.len(), 1, "{t:?}: question echoed");
        assert_eq!(m.queries[0].name(), &name("httpbin.bar.global."));
        // No IPv6 range configured: no IPv6 VIP, so AAAA is NODATA.
        let m = q(&s, t, "httpbin.bar.global.", RecordType::AAAA);
        nodata(&m, "global.", 30, &w("httpbin AAAA (no IPv6 range)"));

        // x and x/32 are host addresses, /128 too; the /16 is not served. Host spelled
        // `Static.Bar.Global.` in the ServiceEntry.
        let m = q(&s, t, "static.bar.global.", RecordType::A);
        assert_eq!(
            positive(&m, "static.bar.global.", RecordType::A, 30, &w("static A")),
            ips(&["10.1.2.3", "10.1.2.4"]),
            "{t:?}: static A: bare and /32 addresses, never the /16's network"
        );
        let m = q(&s, t, "static.bar.global.", RecordType::AAAA);
        assert_eq!(
            positive(
                &m,
                "static.bar.global.",
                RecordType::AAAA,
                30,
                &w("static AAAA")
            ),
            ips(&["fd00:1::7"])
        );
        // An IPv4-only host: AAAA is NODATA.
        let m = q(&s, t, "only4.bar.global.", RecordType::AAAA);
        nodata(&m, "global.", 30, &w("only4 AAAA"));
        // resolution NONE with an address, opt-out label with an address, a user address that
        // lies inside the VIP range: all served with their own address only.
        for (host, want) in [
            ("noneaddr.bar.global.", "10.1.2.6"),
            ("optoutaddr.bar.global.", "10.1.2.8"),
            ("legacy.bar.global.", "240.10.7.7"),
            ("one.shared.global.", "240.10.8.8"),
            ("two.shared.global.", "240.10.8.8"),
        ] {
            let m = q(&s, t, host, RecordType::A);
            assert_eq!(
                positive(&m, host, RecordType::A, 30, &w(host)),
                ips(&[want]),
                "{t:?}: {host}"
            );
        }
    }
    assert_eq!(vips[0], vips[1], "UDP and TCP give the same VIP");
    for reserved in ["240.10.7.7", "240.10.8.8"] {
        assert_ne!(
            vips[0],
            reserved.parse::<IpAddr>().unwrap(),
            "a user address in the range is never handed out as a VIP"
        );
    }
}

#[test]
fn unserved_hosts_are_nxdomain() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for (host, why) in [
            ("none.bar.global.", "resolution NONE without address"),
            ("optout.bar.global.", "opt-out label without address"),
            (
                "x.novip.global.",
                "wildcard without DYNAMIC_DNS nor address",
            ),
            ("nope.bar.global.", "no ServiceEntry at all"),
            ("a.b.c.nope.global.", "no ServiceEntry at all (deep)"),
        ] {
            for rtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
                let m = q(&s, t, host, rtype);
                nxdomain(&m, "global.", 30, &format!("{t:?} {host} {rtype} ({why})"));
            }
        }
    }
}

#[test]
fn nodata_for_other_types_and_empty_non_terminals() {
    let (_t, s) = fixture(&[]);
    for t in BOTH {
        for (qname, rtype, why) in [
            (
                "httpbin.bar.global.",
                RecordType::TXT,
                "existing host, other type",
            ),
            (
                "httpbin.bar.global.",
                RecordType::MX,
                "existing host, other type",
            ),
            (
                "httpbin.bar.global.",
                RecordType::CNAME,
                "existing host, other type",
            ),
            (
                "httpbin.bar.global.",
                RecordType::SRV,
                "host itself has no SRV",
            ),
            (
                "static.bar.global.",
                RecordType::PTR,
                "existing host, other type",
            ),
            ("bar.global.", RecordType::A, "empty non-terminal"),
            ("bar.global.", RecordType::AAAA, "empty non-terminal"),
            ("shared.global.", RecordType::A, "empty non-terminal"),
            (
                "_tcp.httpbin.bar.global.",
                RecordType::SRV,
                "ENT below a host",
            ),
            ("ns.global.", RecordType::TXT, "the in-zone name server"),
        ] {
            let m = q(&s, t, qname, rtype);
            nodata(&m, "global.", 30, &format!("{t:?} {qname} {rtype}: {why}"));
        }
    }
}
