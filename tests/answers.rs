//! The answer rules of DESIGN §3, checked on the real binary over UDP and TCP with hickory's client,
//! and with hand-built packets (hickory_proto `Message`, raw bytes) for the protocol edge cases.
//!
//! Fixture: `tests/data/answers/main.yaml` (cluster `local`) and `tests/data/answers/c{1,2}/` (two
//! clusters listing the same hosts). Every test starts its own server on ephemeral loopback ports.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

// ---------------------------------------------------------------------------------------------
// Fixture

/// Starts a server on a copy of the fixture (plus `extra_files` as (relative path, body)).
fn start_with(extra_flags: &[&str], extra_files: &[(&str, String)]) -> (tempfile::TempDir, Server) {
    start_fixture(extra_flags, extra_files)
}

fn start(extra_flags: &[&str]) -> (tempfile::TempDir, Server) {
    start_with(extra_flags, &[])
}

fn vip_range() -> IpNet {
    "240.10.0.0/16".parse().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Assertions on responses

/// What every response must satisfy: QR set, RA clear.
fn check_header(m: &Message, what: &str) {
    assert_eq!(
        m.metadata.message_type,
        MessageType::Response,
        "{what}: QR must be set: {m:?}"
    );
    assert!(
        !m.metadata.recursion_available,
        "{what}: RA must be clear (authoritative only): {m:?}"
    );
}

/// Sorted addresses of the A/AAAA records in the answer section.
fn addrs(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}

fn soa(r: &Record) -> &SOA {
    match &r.data {
        RData::SOA(s) => s,
        other => panic!("expected SOA, got {other:?} in {r:?}"),
    }
}

/// A positive authoritative answer: NOERROR, AA, only records owned by `qname` of `rtype`, all
/// with `ttl`. Returns the answer's addresses (sorted) for A/AAAA.
fn positive(m: &Message, qname: &str, rtype: RecordType, ttl: u32, what: &str) -> Vec<IpAddr> {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: rcode: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(!m.answers.is_empty(), "{what}: expected answers: {m:?}");
    for r in &m.answers {
        assert_eq!(r.name, name(qname), "{what}: owner name: {r:?}");
        assert_eq!(r.record_type(), rtype, "{what}: type: {r:?}");
        assert_eq!(r.ttl, ttl, "{what}: TTL: {r:?}");
    }
    addrs(m)
}

/// The one SOA in the authority section of a negative answer; checks owner `zone`, TTL and minimum.
fn negative_soa<'a>(m: &'a Message, zone: &str, ttl: u32, what: &str) -> &'a SOA {
    let soas: Vec<&Record> = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .collect();
    assert_eq!(soas.len(), 1, "{what}: exactly one SOA in authority: {m:?}");
    assert_eq!(soas[0].name, name(zone), "{what}: SOA owner: {m:?}");
    let s = soa(soas[0]);
    assert_eq!(
        s.minimum, ttl,
        "{what}: SOA minimum (negative TTL) must be --ttl"
    );
    assert!(
        soas[0].ttl <= ttl,
        "{what}: SOA TTL {} must not exceed the negative TTL {ttl}",
        soas[0].ttl
    );
    s
}

fn nodata(m: &Message, zone: &str, ttl: u32, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: NODATA is NOERROR: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(m.answers.is_empty(), "{what}: empty answer: {m:?}");
    negative_soa(m, zone, ttl, what);
}

fn nxdomain(m: &Message, zone: &str, ttl: u32, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "{what}: rcode: {m:?}"
    );
    assert!(m.metadata.authoritative, "{what}: AA must be set: {m:?}");
    assert!(m.answers.is_empty(), "{what}: empty answer: {m:?}");
    negative_soa(m, zone, ttl, what);
}

fn refused(m: &Message, what: &str) {
    check_header(m, what);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "{what}: rcode: {m:?}"
    );
    assert!(
        !m.metadata.authoritative,
        "{what}: REFUSED must not be AA: {m:?}"
    );
    assert!(
        m.answers.is_empty() && m.authorities.is_empty(),
        "{what}: no records: {m:?}"
    );
}

fn q(s: &Server, t: Transport, qname: &str, rtype: RecordType) -> Message {
    query(s.dns, t, qname, rtype)
}

// ---------------------------------------------------------------------------------------------
// Raw packets

fn raw_query(qname: &str, rtype: RecordType, edns: Option<(u16, u8)>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), rtype));
    if let Some((size, version)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_version(version);
        m.set_edns(e);
    }
    m
}

fn udp_socket() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock
}

/// One datagram out, the first datagram back (None on timeout).
fn udp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = udp_socket();
    sock.send_to(bytes, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn tcp_send(s: &mut TcpStream, bytes: &[u8]) {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).unwrap();
}

/// The next length-prefixed message (None on EOF or timeout).
fn tcp_read(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = tcp_connect(addr);
    tcp_send(&mut s, bytes);
    tcp_read(&mut s)
}

fn exchange_bytes(addr: SocketAddr, t: Transport, bytes: &[u8]) -> Option<Vec<u8>> {
    match t {
        Transport::Udp => udp_exchange(addr, bytes),
        Transport::Tcp => tcp_exchange(addr, bytes),
    }
}

/// Sends `m` and decodes the answer; panics when there is none.
fn exchange(addr: SocketAddr, t: Transport, m: &Message) -> Message {
    let bytes = exchange_bytes(addr, t, &m.to_vec().unwrap())
        .unwrap_or_else(|| panic!("{t:?}: no response to {m:?}"));
    let r = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("{t:?}: undecodable: {e}"));
    assert_eq!(r.metadata.id, m.metadata.id, "{t:?}: response id");
    r
}

// ---------------------------------------------------------------------------------------------
// A / AAAA

#[test]
fn a_and_aaaa_serve_user_addresses_and_vips() {
    let (_t, s) = start(&[]);
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
    let (_t, s) = start(&[]);
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
    let (_t, s) = start(&[]);
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

// ---------------------------------------------------------------------------------------------
// Wildcards

#[test]
fn wildcards_match_any_depth_and_lose_to_exact_and_longer() {
    let (_t, s) = start(&[]);
    let mut wild_vip = BTreeSet::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        // DYNAMIC_DNS wildcard: one VIP, the owner is the query name, at any depth.
        for qname in [
            "x.wild.global.",
            "a.b.c.wild.global.",
            "Mixed-Case.Wild.Global.",
        ] {
            let m = q(&s, t, qname, RecordType::A);
            let got = positive(&m, qname, RecordType::A, 30, &w(qname));
            assert_eq!(got.len(), 1, "{t:?} {qname}: {m:?}");
            assert!(vip_range().contains(&got[0]), "{t:?} {qname}: {}", got[0]);
            wild_vip.insert(got[0]);
            let m = q(&s, t, qname, RecordType::AAAA);
            nodata(&m, "global.", 30, &w(&format!("{qname} AAAA")));
        }
        // Never the wildcard's own parent.
        let m = q(&s, t, "wild.global.", RecordType::A);
        nodata(
            &m,
            "global.",
            30,
            &w("wild.global is not matched by *.wild.global"),
        );
        let m = q(&s, t, "mix.global.", RecordType::A);
        nodata(
            &m,
            "global.",
            30,
            &w("mix.global is not matched by *.mix.global"),
        );

        for (qname, want, why) in [
            (
                "exact.mix.global.",
                "10.4.0.2",
                "exact host beats *.mix.global",
            ),
            (
                "x.b.mix.global.",
                "10.4.0.2",
                "exact host beats *.mix.global (deep)",
            ),
            ("foo.mix.global.", "10.4.0.1", "*.mix.global"),
            (
                "foo.bar.baz.mix.global.",
                "10.4.0.1",
                "*.mix.global at depth 3",
            ),
            (
                "sub.exact.mix.global.",
                "10.4.0.1",
                "below an exact host: *.mix.global",
            ),
            (
                "foo.a.mix.global.",
                "10.4.0.3",
                "*.a.mix.global beats *.mix.global",
            ),
            ("x.y.a.mix.global.", "10.4.0.3", "*.a.mix.global at depth 2"),
        ] {
            let m = q(&s, t, qname, RecordType::A);
            assert_eq!(
                positive(&m, qname, RecordType::A, 30, &w(qname)),
                ips(&[want]),
                "{t:?} {qname}: {why}"
            );
        }
        // ANY on a wildcard match: the RFC 8482 HINFO, owned by the query name.
        let m = q(&s, t, "any.wild.global.", RecordType::ANY);
        check_header(&m, &w("wildcard ANY"));
        assert_eq!(m.answers.len(), 1, "{t:?}: {m:?}");
        assert_eq!(m.answers[0].name, name("any.wild.global."));
        assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
    }
    assert_eq!(
        wild_vip.len(),
        1,
        "every name below *.wild.global gets the wildcard's one VIP: {wild_vip:?}"
    );
}

/// `a.mix.global` is "below mix.global" and no longer wildcard covers it (`*.a.mix.global` does
/// not match `a.mix.global` itself), so the contract's "any depth" gives it `*.mix.global`'s
/// address — exactly as the server already does for `b.mix.global`, which is likewise only the
/// parent of another host (`x.b.mix.global`).
#[test]
fn wildcard_covers_names_that_only_exist_as_parents() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        for qname in ["b.mix.global.", "a.mix.global."] {
            let m = q(&s, t, qname, RecordType::A);
            assert_eq!(
                addrs(&m),
                ips(&["10.4.0.1"]),
                "{t:?} {qname} A: *.mix.global matches any name below mix.global (the contract's \
                 'any depth'); got rcode {} with answers {:?}",
                m.metadata.response_code,
                m.answers
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Apex, zones, TTL, serial

#[test]
fn apex_has_soa_and_ns() {
    let (_t, s) = start(&[]);
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
    let (_t, s) = start(&[
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
    let (_t, s) = start_with(
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
    let (_t, s) = start_with(&["--zone", "mesh.internal"], &[("mesh.yaml", extra)]);
    for t in BOTH {
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        refused(
            &m,
            &format!("{t:?}: global. is not served with --zone mesh.internal"),
        );
        let m = q(&s, t, "app.ns.mesh.internal.", RecordType::A);
        assert_eq!(addrs(&m), ips(&["10.20.0.1"]), "{t:?}");
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
    let (_t, s) = start(&[]);
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
        (addrs(&m) == ips(&["10.1.2.55"])).then_some(())
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

// ---------------------------------------------------------------------------------------------
// SRV, PTR

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
    let mut v: Vec<IpAddr> = m
        .additionals
        .iter()
        .filter(|r| r.name == name(owner))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn srv_records_for_named_ports_with_target_addresses() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let vip = addrs(&q(&s, t, "httpbin.bar.global.", RecordType::A));
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

fn reverse(ip: &str) -> String {
    let mut n = Name::from(ip.parse::<IpAddr>().unwrap());
    n.set_fqdn(true);
    n.to_ascii()
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
    let (_t, s) = start(&[]);
    let vip = addrs(&q(&s, Transport::Udp, "httpbin.bar.global.", RecordType::A))[0];
    let wildcard_vip = addrs(&q(&s, Transport::Udp, "x.wild.global.", RecordType::A))[0];
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
    let (_t, s) = start(&["--reverse-zone", "10.in-addr.arpa"]);
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
    let (_t, s) = start(&[
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
        assert_eq!(addrs(&m), ips(&["fd00:1::7"]), "{t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-cluster

#[test]
fn clusters_listing_one_host_give_the_union_and_one_vip() {
    let (_t, s) = start(&[]);
    let mut vips = BTreeSet::new();
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        let m = q(&s, t, "multi.bar.global.", RecordType::A);
        assert_eq!(
            positive(&m, "multi.bar.global.", RecordType::A, 30, &w("multi A")),
            ips(&["10.5.0.1", "10.5.0.2", "10.5.0.3"]),
            "{t:?}: union over c1 and c2, de-duplicated (10.5.0.2 is in both): {m:?}"
        );
        let m = q(&s, t, "multi.bar.global.", RecordType::AAAA);
        assert_eq!(
            positive(
                &m,
                "multi.bar.global.",
                RecordType::AAAA,
                30,
                &w("multi AAAA")
            ),
            ips(&["fd00:5::1"])
        );
        let m = q(&s, t, "vipboth.bar.global.", RecordType::A);
        let got = positive(&m, "vipboth.bar.global.", RecordType::A, 30, &w("vipboth"));
        assert_eq!(
            got.len(),
            1,
            "{t:?}: one VIP for a host listed without address in two clusters: {m:?}"
        );
        assert!(vip_range().contains(&got[0]));
        vips.insert(got[0]);
    }
    assert_eq!(vips.len(), 1, "same VIP over UDP and TCP");
}

#[test]
fn a_cluster_adding_an_address_extends_the_union() {
    let (_t, s) = start(&[]);
    let c3 = s.zones.join("c3");
    std::fs::create_dir_all(&c3).unwrap();
    write_file(
        &c3.join("m.yaml"),
        &se("multi", "bar", &["multi.bar.global"], &["10.5.0.9"], ""),
    );
    eventually(
        Duration::from_secs(5),
        "c3's address joins the union",
        || {
            let m = q(&s, Transport::Udp, "multi.bar.global.", RecordType::A);
            (addrs(&m).len() == 4).then_some(())
        },
    );
    for t in BOTH {
        let m = q(&s, t, "multi.bar.global.", RecordType::A);
        assert_eq!(
            addrs(&m),
            ips(&["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.9"]),
            "{t:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// REFUSED, ANY, opcodes, malformed

#[test]
fn outside_every_zone_is_refused() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        for (qname, rtype) in [
            ("example.com.", RecordType::A),
            ("httpbin.example.com.", RecordType::A),
            ("xglobal.", RecordType::A),
            ("global.example.", RecordType::SOA),
            (".", RecordType::NS),
            ("3.2.1.10.in-addr.arpa.", RecordType::PTR),
        ] {
            let m = q(&s, t, qname, rtype);
            refused(&m, &format!("{t:?} {qname} {rtype}"));
        }
    }
}

#[test]
fn any_gets_the_rfc8482_minimal_answer() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        let w = |x: &str| format!("{t:?} {x}");
        for qname in ["httpbin.bar.global.", "static.bar.global."] {
            let m = q(&s, t, qname, RecordType::ANY);
            positive(&m, qname, RecordType::HINFO, 30, &w(qname));
            assert_eq!(m.answers.len(), 1, "{t:?} {qname}: one record only: {m:?}");
            match &m.answers[0].data {
                RData::HINFO(h) => {
                    assert_eq!(&*h.cpu, b"RFC8482", "{t:?}");
                    assert_eq!(&*h.os, b"", "{t:?}");
                }
                o => panic!("{t:?}: {o:?}"),
            }
        }
        let m = q(&s, t, "nope.bar.global.", RecordType::ANY);
        nxdomain(&m, "global.", 30, &w("ANY of a missing name"));
        let m = q(&s, t, "global.", RecordType::ANY);
        check_header(&m, &w("apex ANY"));
        assert_eq!(
            m.answers.len(),
            1,
            "{t:?}: apex ANY: one RRset at most: {m:?}"
        );
        let m = q(&s, t, "example.com.", RecordType::ANY);
        refused(&m, &w("ANY outside"));
    }
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        for op in [
            OpCode::Notify,
            OpCode::Status,
            OpCode::Update,
            OpCode::Unknown(3),
        ] {
            let mut m = Message::new(rand::random(), MessageType::Query, op);
            m.add_query(Query::query(name("global."), RecordType::SOA));
            let r = exchange(s.dns, t, &m);
            check_header(&r, &format!("{t:?} {op:?}"));
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NotImp,
                "{t:?}: opcode {op:?}: {r:?}"
            );
            assert_eq!(r.metadata.op_code, op, "{t:?}: opcode echoed");
            assert!(r.answers.is_empty(), "{t:?}: {r:?}");
        }
    }
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        let mut none = Message::query();
        none.metadata.recursion_desired = false;
        let mut two = raw_query("httpbin.bar.global.", RecordType::A, None);
        two.add_query(Query::query(name("static.bar.global."), RecordType::A));
        for (what, m) in [("QDCOUNT 0", none), ("QDCOUNT 2", two)] {
            let r = exchange(s.dns, t, &m);
            check_header(&r, &format!("{t:?} {what}"));
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::FormErr,
                "{t:?} {what}: {r:?}"
            );
            assert!(r.answers.is_empty(), "{t:?} {what}: {r:?}");
        }
        // A header announcing a question that is not there.
        let mut bytes = raw_query("httpbin.bar.global.", RecordType::A, None)
            .to_vec()
            .unwrap();
        bytes.truncate(12 + 5);
        let r = exchange_bytes(s.dns, t, &bytes).map(|b| Message::from_vec(&b).unwrap());
        let r = r.unwrap_or_else(|| panic!("{t:?}: no answer to a truncated question"));
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::FormErr,
            "{t:?}: {r:?}"
        );
    }
}

#[test]
fn runt_packets_are_dropped() {
    let (_t, s) = start(&[]);
    let good = raw_query("httpbin.bar.global.", RecordType::A, None);
    let good_bytes = good.to_vec().unwrap();
    for runt in [&b"\x12\x34\x01"[..], &b"hello"[..], &good_bytes[..11]] {
        // UDP: the runt then a good query from the same socket; the first reply is the good one's.
        let sock = udp_socket();
        sock.send_to(runt, s.dns).unwrap();
        sock.send_to(&good_bytes, s.dns).unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = sock
            .recv_from(&mut buf)
            .expect("an answer to the good query");
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            r.metadata.id,
            good.metadata.id,
            "UDP: the {}-byte runt got an answer: {r:?}",
            runt.len()
        );
        assert_eq!(addrs(&r).len(), 1);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "UDP: a second datagram came back for the {}-byte runt",
            runt.len()
        );

        // TCP: no answer to the runt frame; the server may close the connection, but must not
        // reply to it.
        let mut c = tcp_connect(s.dns);
        tcp_send(&mut c, runt);
        tcp_send(&mut c, &good_bytes);
        if let Some(b) = tcp_read(&mut c) {
            let r = Message::from_vec(&b).unwrap();
            assert_eq!(
                r.metadata.id,
                good.metadata.id,
                "TCP: the {}-byte runt got an answer: {r:?}",
                runt.len()
            );
        }
    }
    // Still serving.
    for t in BOTH {
        let m = q(&s, t, "httpbin.bar.global.", RecordType::A);
        assert_eq!(addrs(&m).len(), 1, "{t:?}: still answering after runts");
    }
}

#[test]
fn question_keeps_its_original_case() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        // Each name asked in one spelling, then another, then the first again: an answer built (or
        // cached) for one spelling must not leak its question into the other's response.
        for (spellings, rtype) in [
            (
                ["httpbin.bar.global.", "HttpBin.BAR.global."],
                RecordType::A,
            ),
            (["NoPe.Bar.GLOBAL.", "nope.bar.global."], RecordType::A),
            (["x.wild.global.", "X.Wild.Global."], RecordType::A),
            (["Example.COM.", "example.com."], RecordType::A),
            (["GLOBAL.", "global."], RecordType::SOA),
        ] {
            for qname in [spellings[0], spellings[1], spellings[0]] {
                for edns in [Some((1232, 0)), None] {
                    let m = raw_query(qname, rtype, edns);
                    let r = exchange(s.dns, t, &m);
                    assert_eq!(r.queries.len(), 1, "{t:?} {qname}");
                    assert_eq!(
                        r.queries[0].name().to_string(),
                        qname,
                        "{t:?} EDNS {edns:?}: the question must be echoed with its original case"
                    );
                    assert_eq!(r.queries[0].query_type(), rtype);
                }
            }
        }
        let r = exchange(
            s.dns,
            t,
            &raw_query("HttpBin.BAR.global.", RecordType::A, None),
        );
        assert!(r.metadata.authoritative, "{t:?}");
        assert_eq!(
            addrs(&r).len(),
            1,
            "{t:?}: mixed-case query answered: {r:?}"
        );
        // hickory's client checks the echoed question as well.
        let m = q(&s, t, "HttpBin.BAR.global.", RecordType::A);
        assert_eq!(addrs(&m).len(), 1, "{t:?}");
    }
}

#[test]
fn header_fields_are_copied_from_the_query() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        for rd in [true, false, true] {
            for cd in [false, true] {
                let mut m = raw_query("httpbin.bar.global.", RecordType::A, Some((1232, 0)));
                m.metadata.recursion_desired = rd;
                m.metadata.checking_disabled = cd;
                let r = exchange(s.dns, t, &m);
                check_header(&r, &format!("{t:?} rd={rd} cd={cd}"));
                assert_eq!(
                    r.metadata.recursion_desired, rd,
                    "{t:?}: RD copied (RFC 1035)"
                );
                assert_eq!(r.metadata.op_code, OpCode::Query);
                assert!(r.metadata.authoritative);
                assert_eq!(addrs(&r).len(), 1);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// EDNS, truncation

#[test]
fn edns_is_echoed_with_our_payload_size() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, Some((4096, 0))),
        );
        let e = r
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{t:?}: OPT must be echoed: {r:?}"));
        assert_eq!(e.version(), 0, "{t:?}: EDNS version 0");
        assert_eq!(
            e.max_payload(),
            1232,
            "{t:?}: advertises 1232 to a client offering 4096"
        );
        assert_eq!(addrs(&r).len(), 1);

        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, Some((600, 0))),
        );
        let e = r.edns.as_ref().expect("OPT echoed");
        assert!(
            (512..=1232).contains(&e.max_payload()),
            "{t:?}: advertised size {}",
            e.max_payload()
        );
        // No EDNS in, no EDNS out.
        let r = exchange(
            s.dns,
            t,
            &raw_query("httpbin.bar.global.", RecordType::A, None),
        );
        assert!(r.edns.is_none(), "{t:?}: no OPT to a non-EDNS query: {r:?}");
        // Alternating with and without EDNS for one name: each response matches its own query.
        for edns in [Some((512, 0)), None, Some((512, 0)), Some((100, 0)), None] {
            let r = exchange(
                s.dns,
                t,
                &raw_query("static.bar.global.", RecordType::A, edns),
            );
            assert_eq!(
                r.edns.is_some(),
                edns.is_some(),
                "{t:?}: query EDNS {edns:?} -> response OPT {:?}",
                r.edns
            );
            assert_eq!(addrs(&r), ips(&["10.1.2.3", "10.1.2.4"]), "{t:?}");
        }
        // Negative answers and errors carry OPT too.
        for qn in ["nope.bar.global.", "example.com."] {
            let r = exchange(s.dns, t, &raw_query(qn, RecordType::A, Some((1232, 0))));
            assert!(r.edns.is_some(), "{t:?} {qn}: OPT echoed: {r:?}");
        }
    }
}

#[test]
fn unknown_edns_version_is_badvers() {
    let (_t, s) = start(&[]);
    for t in BOTH {
        for version in [1u8, 2, 255] {
            let r = exchange(
                s.dns,
                t,
                &raw_query("httpbin.bar.global.", RecordType::A, Some((1232, version))),
            );
            check_header(&r, &format!("{t:?} EDNS {version}"));
            // 16 is BADVERS in an OPT-carrying response (hickory decodes the number as BADSIG).
            assert_eq!(
                u16::from(r.metadata.response_code),
                u16::from(ResponseCode::BADVERS),
                "{t:?}: EDNS version {version}: {r:?}"
            );
            assert!(r.answers.is_empty(), "{t:?}: {r:?}");
            let e = r.edns.as_ref().expect("BADVERS comes in an OPT");
            assert_eq!(e.version(), 0, "{t:?}: we speak version 0");
        }
    }
}

fn big_hosts() -> Vec<(&'static str, String)> {
    fn host(name: &str, n: u32) -> String {
        let addrs: Vec<String> = (1..=n)
            .map(|i| format!("10.60.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        se(name, "bar", &[&format!("{name}.bar.global")], &refs, "")
    }
    vec![
        ("big.yaml", host("big", 60)),
        ("huge.yaml", host("huge", 100)),
    ]
}

#[test]
fn large_answers_are_truncated_on_udp_and_complete_on_tcp() {
    let (_t, s) = start_with(&[], &big_hosts());
    let qn = "big.bar.global.";
    // ~1 KB answer: fits the client's 1232, not 512.
    for (edns, fits) in [
        (Some((512u16, 0u8)), false),
        (None, false),
        (Some((1232, 0)), true),
        (Some((4096, 0)), true),
    ] {
        let r = exchange(s.dns, Transport::Udp, &raw_query(qn, RecordType::A, edns));
        check_header(&r, "big over UDP");
        if fits {
            assert!(!r.metadata.truncation, "UDP {edns:?}: 60 A fit: {r:?}");
            assert_eq!(addrs(&r).len(), 60, "UDP {edns:?}");
        } else {
            assert!(
                r.metadata.truncation,
                "UDP {edns:?}: 60 A records do not fit 512 bytes: TC must be set"
            );
            assert!(addrs(&r).len() < 60, "UDP {edns:?}");
        }
        let r = exchange(s.dns, Transport::Tcp, &raw_query(qn, RecordType::A, edns));
        assert!(!r.metadata.truncation, "TCP {edns:?}: never truncated");
        assert_eq!(addrs(&r).len(), 60, "TCP {edns:?}: every record");
    }
    // ~1.7 KB: over the 1232 we allow even when the client offers more; hickory's client.
    let m = q(&s, Transport::Udp, "huge.bar.global.", RecordType::A);
    assert!(
        m.metadata.truncation,
        "UDP: 100 A records exceed 1232 bytes: TC"
    );
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("huge.bar.global.", RecordType::A, Some((65000, 0))),
    );
    assert!(
        r.metadata.truncation,
        "UDP, client offers 65000: we cap at 1232: TC"
    );
    let m = q(&s, Transport::Tcp, "huge.bar.global.", RecordType::A);
    assert!(!m.metadata.truncation);
    assert_eq!(addrs(&m).len(), 100, "TCP: all 100");
    positive(&m, "huge.bar.global.", RecordType::A, 30, "huge over TCP");
}

#[test]
fn truncated_responses_keep_the_opt_record() {
    let (_t, s) = start_with(&[], &big_hosts());
    for (qn, size) in [
        ("big.bar.global.", 512u16),
        ("huge.bar.global.", 1232),
        ("huge.bar.global.", 4096),
    ] {
        let r = exchange(
            s.dns,
            Transport::Udp,
            &raw_query(qn, RecordType::A, Some((size, 0))),
        );
        assert!(r.metadata.truncation, "{qn} with EDNS {size}: TC expected");
        assert!(
            r.edns.is_some(),
            "UDP {qn} A, EDNS udp={size}: the response has TC set but no OPT record; an EDNS \
             query must get an OPT back, truncated or not (RFC 6891 §7) — got {} answers and \
             additionals {:?}",
            r.answers.len(),
            r.additionals
        );
    }
}

/// Comparable form of a response: rcode, flags and sorted sections.
fn shape(
    m: &Message,
) -> (
    ResponseCode,
    bool,
    bool,
    Vec<String>,
    Vec<String>,
    Vec<String>,
) {
    let sorted = |rs: &[Record]| {
        let mut v: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
        v.sort();
        v
    };
    (
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        sorted(&m.answers),
        sorted(&m.authorities),
        sorted(&m.additionals),
    )
}

#[test]
fn tcp_answers_equal_udp_answers() {
    let (_t, s) = start(&[]);
    for (qname, rtype) in [
        ("httpbin.bar.global.", RecordType::A),
        ("static.bar.global.", RecordType::A),
        ("static.bar.global.", RecordType::AAAA),
        ("multi.bar.global.", RecordType::A),
        ("only4.bar.global.", RecordType::AAAA),
        ("bar.global.", RecordType::A),
        ("nope.bar.global.", RecordType::A),
        ("foo.a.mix.global.", RecordType::A),
        ("x.wild.global.", RecordType::A),
        ("global.", RecordType::SOA),
        ("global.", RecordType::NS),
        ("_http._tcp.httpbin.bar.global.", RecordType::SRV),
        ("_tcp-app._tcp.static.bar.global.", RecordType::SRV),
        ("7.7.10.240.in-addr.arpa.", RecordType::PTR),
        ("httpbin.bar.global.", RecordType::ANY),
        ("example.com.", RecordType::A),
    ] {
        let u = q(&s, Transport::Udp, qname, rtype);
        let t = q(&s, Transport::Tcp, qname, rtype);
        assert_eq!(shape(&u), shape(&t), "{qname} {rtype}: UDP and TCP differ");
    }
}

// ---------------------------------------------------------------------------------------------
// AXFR

/// Every message of a TCP AXFR until the closing SOA (or EOF).
fn axfr_tcp(addr: SocketAddr, zone: &str) -> Vec<Message> {
    let m = raw_query(zone, RecordType::AXFR, None);
    let mut c = tcp_connect(addr);
    tcp_send(&mut c, &m.to_vec().unwrap());
    let mut out = Vec::new();
    let mut soas = 0;
    while let Some(b) = tcp_read(&mut c) {
        let r = Message::from_vec(&b).unwrap();
        soas += r
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let stop = r.metadata.response_code != ResponseCode::NoError || soas >= 2;
        out.push(r);
        if stop || out.len() > 100 {
            break;
        }
    }
    out
}

#[test]
fn axfr_is_refused_by_default() {
    let (_t, s) = start(&[]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert_eq!(msgs.len(), 1, "one refusal: {msgs:?}");
    refused(&msgs[0], "TCP AXFR without --allow-transfer");
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("global.", RecordType::AXFR, None),
    );
    refused(&r, "UDP AXFR without --allow-transfer");
}

#[test]
fn axfr_refused_outside_allowed_networks() {
    let (_t, s) = start(&["--allow-transfer", "10.0.0.0/8"]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    refused(
        &msgs[0],
        "TCP AXFR from 127.0.0.1 with --allow-transfer 10.0.0.0/8",
    );
}

#[test]
fn axfr_from_allowed_networks_over_tcp_only() {
    let (_t, s) = start(&["--allow-transfer", "127.0.0.0/8"]);
    let msgs = axfr_tcp(s.dns, "global.");
    assert!(!msgs.is_empty());
    for m in &msgs {
        check_header(m, "AXFR message");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        assert!(m.metadata.authoritative, "AXFR answers are AA");
    }
    let records: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert!(records.len() > 10, "{records:?}");
    let first = records.first().unwrap();
    let last = records.last().unwrap();
    assert_eq!(
        first.record_type(),
        RecordType::SOA,
        "transfer opens with SOA"
    );
    assert_eq!(
        last.record_type(),
        RecordType::SOA,
        "transfer closes with SOA"
    );
    assert_eq!(first.name, name("global."));
    assert_eq!(soa(first), soa(last), "same SOA at both ends");
    let soa_count = records
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .count();
    assert_eq!(soa_count, 2, "SOA only at both ends");

    let has = |owner: &str, rtype: RecordType, data: Option<&str>| {
        records.iter().any(|r| {
            r.name == name(owner)
                && r.record_type() == rtype
                && data.is_none_or(|d| r.data.to_string() == d)
        })
    };
    let vip = addrs(&q(&s, Transport::Udp, "httpbin.bar.global.", RecordType::A))[0].to_string();
    for (owner, rtype, data) in [
        ("global.", RecordType::NS, Some("ns.global.")),
        ("httpbin.bar.global.", RecordType::A, Some(vip.as_str())),
        ("static.bar.global.", RecordType::A, Some("10.1.2.3")),
        ("static.bar.global.", RecordType::A, Some("10.1.2.4")),
        ("static.bar.global.", RecordType::AAAA, Some("fd00:1::7")),
        ("multi.bar.global.", RecordType::A, Some("10.5.0.3")),
        ("vipboth.bar.global.", RecordType::A, None),
        ("_http._tcp.httpbin.bar.global.", RecordType::SRV, None),
        ("_dns._udp.httpbin.bar.global.", RecordType::SRV, None),
        ("*.wild.global.", RecordType::A, None),
        ("*.mix.global.", RecordType::A, Some("10.4.0.1")),
        ("*.a.mix.global.", RecordType::A, Some("10.4.0.3")),
        ("exact.mix.global.", RecordType::A, Some("10.4.0.2")),
    ] {
        assert!(
            has(owner, rtype, data),
            "AXFR lacks {owner} {rtype} {data:?}: {:#?}",
            records.iter().map(|r| r.to_string()).collect::<Vec<_>>()
        );
    }
    for r in &records {
        assert!(
            !matches!(r.record_type(), RecordType::PTR),
            "PTR records belong to the reverse zone's transfer: {r}"
        );
        assert!(
            !r.name.to_ascii().contains("none.bar") && !r.name.to_ascii().contains("optout.bar"),
            "unserved host in AXFR: {r}"
        );
    }

    // The reverse zone transfers too.
    let msgs = axfr_tcp(s.dns, "10.240.in-addr.arpa.");
    let rev: Vec<&Record> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert_eq!(rev.first().map(|r| r.record_type()), Some(RecordType::SOA));
    assert_eq!(rev.last().map(|r| r.record_type()), Some(RecordType::SOA));
    assert!(
        rev.iter().any(|r| r.name == name(&reverse("240.10.7.7"))
            && r.data.to_string() == "legacy.bar.global."),
        "reverse AXFR has legacy's PTR: {rev:?}"
    );

    // Never over UDP, even from an allowed network.
    let r = exchange(
        s.dns,
        Transport::Udp,
        &raw_query("global.", RecordType::AXFR, None),
    );
    refused(&r, "UDP AXFR with --allow-transfer 127.0.0.0/8");
}
