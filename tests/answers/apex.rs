//! The apex (SOA, NS), the zones served, TTL and the serial.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;
use crate::support::*;

#[test]
fn apex_has_soa_and_ns() {
    let (_t, s) = fixture(&[]);
    let mut serials = Vec::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let m = q(&s, t, "global.", RecordType::SOA);
        positive(&m, "global.", RecordType::SOA, 30, &w("apex SOA"));
        assert_eq!(m.answers.len(), 1, "{t:?}: one SOA");
        let sd = soa(&m.answers[0]);
        assert_eq!(sd.mname, name("ns.global."), "{t:?}: MNAME");
        assert_eq!(sd.rname, name("hostmaster.global."), "{t:?}: RNAME");
        assert_eq!(sd.minimum, 30, "{t:?}: SOA minimum = --ttl");
        assert!(sd.serial > 0);
        serials.push(sd.serial);

        let m = q(&s, t, "global.", RecordType::NS);
        positive(&m, "global.", RecordType::NS, 30, &w("apex NS"));
        let ns: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(n) => n.0.to_ascii(),
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(ns, vec!["ns.global."], "{t:?}: default NS is ns.<zone>");
        // Other types at the apex: NODATA.
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            let m = q(&s, t, "global.", rtype);
            nodata(&m, "global.", 30, &w(&format!("apex {rtype}")));
        }
        // Case-insensitive apex.
        let m = q(&s, t, "GLOBAL.", RecordType::SOA);
        assert_eq!(m.answers.len(), 1, "{t:?}: GLOBAL. SOA");
    }
    assert_eq!(serials[0], serials[1], "same serial over UDP and TCP");
}

#[test]
fn ttl_and_ns_flags_shape_every_answer() {
    let (_t, s) = fixture(&[
        "--ttl",
        "7",
        "--ns",
        "ns1.example.net",
        "--ns",
        "ns2.example.net.",
    ]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let m = q(&s, t, "static.bar.global.", RecordType::A);
        positive(
            &m,
            "static.bar.global.",
            RecordType::A,
            7,
            &w("A with --ttl 7"),
        );
        let m = q(&s, t, "x.wild.global.", RecordType::A);
        positive(
            &m,
            "x.wild.global.",
            RecordType::A,
            7,
            &w("wildcard with --ttl 7"),
        );
        let m = q(&s, t, "_http._tcp.httpbin.bar.global.", RecordType::SRV);
        positive(
            &m,
            "_http._tcp.httpbin.bar.global.",
            RecordType::SRV,
            7,
            &w("SRV with --ttl 7"),
        );
        let m = q(&s, t, "nope.bar.global.", RecordType::A);
        nxdomain(&m, "global.", 7, &w("NXDOMAIN: negative TTL 7"));
        let m = q(&s, t, "static.bar.global.", RecordType::TXT);
        nodata(&m, "global.", 7, &w("NODATA: negative TTL 7"));

        let m = q(&s, t, "global.", RecordType::NS);
        positive(&m, "global.", RecordType::NS, 7, &w("NS"));
        let mut ns: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(n) => n.0.to_ascii(),
                o => panic!("{o:?}"),
            })
            .collect();
        ns.sort();
        assert_eq!(ns, vec!["ns1.example.net.", "ns2.example.net."], "{t:?}");
        let m = q(&s, t, "global.", RecordType::SOA);
        positive(&m, "global.", RecordType::SOA, 7, &w("SOA"));
        let sd = soa(&m.answers[0]);
        assert_eq!(
            sd.mname,
            name("ns1.example.net."),
            "{t:?}: MNAME = first --ns"
        );
        assert_eq!(sd.minimum, 7, "{t:?}");
        // The reverse zone has the same shape.
        let m = q(&s, t, "10.240.in-addr.arpa.", RecordType::SOA);
        positive(
            &m,
            "10.240.in-addr.arpa.",
            RecordType::SOA,
            7,
            &w("reverse SOA"),
        );
        assert_eq!(soa(&m.answers[0]).minimum, 7);
    }
}

#[test]
fn repeated_zone_flags_serve_each_zone() {
    let extra = se(
        "mesh",
        "ns",
        &["app.ns.mesh.internal", "other.team.global"],
        &["10.20.0.1"],
        "",
    );
    let (_t, s) = start_fixture(
        &["--zone", "mesh.internal", "--zone", "global"],
        &[("mesh.yaml", extra)],
    );
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        for apex in ["mesh.internal.", "global."] {
            let m = q(&s, t, apex, RecordType::SOA);
            positive(&m, apex, RecordType::SOA, 30, &w(apex));
        }
        let m = q(&s, t, "app.ns.mesh.internal.", RecordType::A);
        assert_eq!(
            positive(
                &m,
                "app.ns.mesh.internal.",
                RecordType::A,
                30,
                &w("mesh host")
            ),
            ips(&["10.20.0.1"])
        );
        let m = q(&s, t, "other.team.global.", RecordType::A);
        assert_eq!(
            positive(
                &m,
                "other.team.global.",
                RecordType::A,
                30,
                &w("global host")
            ),
            ips(&["10.20.0.1"])
        );
        let m = q(&s, t, "nope.mesh.internal.", RecordType::A);
        nxdomain(
            &m,
            "mesh.internal.",
            30,
            &w("NXDOMAIN carries its own zone's SOA"),
        );
        // The default name server is ns.<first zone>, for every zone.
        for apex in ["mesh.internal.", "global."] {
            let m = q(&s, t, apex, RecordType::NS);
            let ns: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(ns, vec!["ns.mesh.internal."], "{t:?}: {apex} NS");
        }
        let m = q(&s, t, "ns.mesh.internal.", RecordType::AAAA);
        nodata(
            &m,
            "mesh.internal.",
            30,
            &w("the in-zone name server exists"),
        );
        let m = q(&s, t, "ns.global.", RecordType::A);
        nxdomain(&m, "global.", 30, &w("ns.global is not a name server here"));
        let m = q(&s, t, "internal.", RecordType::SOA);
        refused(&m, &w("parent of a zone"));
    }
}

#[test]
fn zone_flag_replaces_the_default_zone() {
    let extra = se("mesh", "ns", &["app.ns.mesh.internal"], &["10.20.0.1"], "");
    let (_t, s) = start_fixture(&["--zone", "mesh.internal"], &[("mesh.yaml", extra)]);
    for t in BOTH {
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        refused(
            &m,
            &format!("{t:?}: global. is not served with --zone mesh.internal"),
        );
        let m = q(&s, t, "app.ns.mesh.internal.", RecordType::A);
        assert_eq!(answer_addrs(&m), ips(&["10.20.0.1"]), "{t:?}");
        let m = q(&s, t, "mesh.internal.", RecordType::NS);
        let ns: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ns, vec!["ns.mesh.internal."], "{t:?}: default NS ns.<zone>");
    }
}

fn serial(s: &Server, t: Transport, zone: &str) -> u32 {
    let m = q(s, t, zone, RecordType::SOA);
    assert_eq!(m.answers.len(), 1, "{t:?}: {zone} SOA: {m:?}");
    soa(&m.answers[0]).serial
}

#[test]
fn serial_increases_when_answers_change() {
    let (_t, s) = fixture(&[]);
    let before = serial(&s, Transport::Udp, "global.");
    assert_eq!(serial(&s, Transport::Tcp, "global."), before);
    let rev_before = serial(&s, Transport::Udp, "10.240.in-addr.arpa.");

    // Add a host (with a VIP, so the reverse zone changes too).
    let file = s.zones.join("added.yaml");
    write_file(&file, &se("added", "bar", &["added.bar.global"], &[], ""));
    let m = eventually(Duration::from_secs(5), "added.bar.global served", || {
        let m = q(&s, Transport::Udp, "added.bar.global.", RecordType::A);
        (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()).then_some(m)
    });
    positive(&m, "added.bar.global.", RecordType::A, 30, "added host");
    let after_add = serial(&s, Transport::Udp, "global.");
    assert!(
        after_add > before,
        "serial must increase after adding a host: {before} -> {after_add}"
    );
    assert_eq!(serial(&s, Transport::Tcp, "global."), after_add);
    let rev_after = serial(&s, Transport::Udp, "10.240.in-addr.arpa.");
    assert!(
        rev_after > rev_before,
        "reverse zone serial must increase when a PTR appears: {rev_before} -> {rev_after}"
    );

    // Change an address of an existing host.
    let main = s.zones.join("main.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    write_file(&main, &text.replace("10.1.2.5]", "10.1.2.55]"));
    eventually(Duration::from_secs(5), "only4 moved to 10.1.2.55", || {
        let m = q(&s, Transport::Udp, "only4.bar.global.", RecordType::A);
        (answer_addrs(&m) == ips(&["10.1.2.55"])).then_some(())
    });
    let after_edit = serial(&s, Transport::Udp, "global.");
    assert!(
        after_edit > after_add,
        "serial must increase after an address change: {after_add} -> {after_edit}"
    );

    // Remove the host again.
    std::fs::remove_file(&file).unwrap();
    eventually(Duration::from_secs(5), "added.bar.global gone", || {
        let m = q(&s, Transport::Udp, "added.bar.global.", RecordType::A);
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    });
    let after_remove = serial(&s, Transport::Udp, "global.");
    assert!(
        after_remove > after_edit,
        "serial must increase after removing a host: {after_edit} -> {after_remove}"
    );
}
