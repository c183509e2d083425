//! The UDP fast path must give the same bytes as the general path (hickory-server's handler):
//! in-process over a corpus of 12,000+ queries, and over real sockets against the running server
//! (UDP fast path vs TCP through hickory-server), and dig must agree.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use globaldns::alloc::store::MemoryStore;
use globaldns::alloc::{Allocator, Table};
use globaldns::dns::Handler;
use globaldns::fastpath::{general, shape, Responder};
use globaldns::metrics::Metrics;
use globaldns::pipeline::Pipeline;
use globaldns::published::Published;
use globaldns::registry::SourceKey;
use globaldns::source::files::parse_text;
use globaldns::zone::{Snapshot, ZoneConfig};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const RANGES: [&str; 2] = ["240.10.0.0/16", "fd00:10::/64"];

/// Zone data with every kind of name: VIP hosts, dual-stack user addresses, wildcards at two
/// depths, SRV ports, a host with many addresses (truncation), NONE hosts.
fn zone_yaml(hosts: usize) -> String {
    let mut docs = Vec::new();
    for i in 0..hosts {
        docs.push(se(
            &format!("svc-{i}"),
            &format!("ns-{}", i % 7),
            &[&format!("svc-{i}.ns-{}.global", i % 7)],
            &[],
            "  ports: [{name: http, number: 8080, protocol: HTTP}, {name: dns, number: 53, protocol: UDP}]\n",
        ));
    }
    docs.push(se(
        "dual",
        "d",
        &["dual.d.global"],
        &["240.0.0.9", "fd00:99::9"],
        "",
    ));
    docs.push(se("w1", "w", &["*.w.global"], &["240.0.1.1"], ""));
    docs.push(se("w2", "w", &["*.deep.w.global"], &["240.0.1.2"], ""));
    let many: Vec<String> = (0..80).map(|i| format!("240.1.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    docs.push(se("big", "b", &["big.b.global"], &many, ""));
    docs.push(
        se("none", "n", &["none.n.global"], &[], "").replace("resolution: DNS", "resolution: NONE"),
    );
    docs.join("---\n")
}

fn snapshot(yaml: &str) -> Snapshot {
    let zones = vec!["global".to_string()];
    let (entries, problems) = parse_text(yaml, "corpus.yaml", "local", &zones).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let ranges: Vec<ipnet::IpNet> = RANGES.iter().map(|r| r.parse().unwrap()).collect();
    let cfg = ZoneConfig {
        zones,
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    };
    let alloc = Allocator::new(&ranges, 60, Table::new());
    let mut pipeline = Pipeline::new(&cfg, &ranges, true, alloc);
    pipeline.set_unit(
        SourceKey {
            cluster: "local".into(),
            unit: "corpus.yaml".into(),
        },
        entries,
    );
    pipeline
        .pass(1, &mut MemoryStore::default())
        .expect("in-memory pass")
        .snapshot
}

fn names(snap: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = snap.hosts().keys().map(|h| h.replace('*', "x")).collect();
    v.extend(
        [
            "global",
            "ns-1.global",
            "missing.ns-1.global",
            "a.b.c.w.global",
            "x.deep.w.global",
            "deep.w.global",
            "_http._tcp.svc-1.ns-1.global",
            "_dns._udp.svc-2.ns-2.global",
            "_tcp.svc-3.ns-3.global",
            "_nope._tcp.svc-4.ns-4.global",
            "example.com",
            "10.240.in-addr.arpa",
            "1.1.10.240.in-addr.arpa",
            "ns.global",
        ]
        .map(String::from),
    );
    for a in snap
        .hosts()
        .into_values()
        .flat_map(|h| &h.addresses)
        .take(200)
    {
        v.push(reverse(a.address));
    }
    v
}

fn reverse(ip: std::net::IpAddr) -> String {
    hickory_proto::rr::Name::from(ip).to_ascii()
}

fn random_case(rng: &mut StdRng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.random_bool(0.3) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// A query packet, built by hand so that every header bit and EDNS field can vary.
fn packet(rng: &mut StdRng, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&rng.random::<u16>().to_be_bytes());
    let rd = if rng.random_bool(0.5) { 0x01 } else { 0 };
    let cd = if rng.random_bool(0.2) { 0x10 } else { 0 };
    p.extend_from_slice(&[rd, cd]);
    let edns = rng.random_range(0..10);
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns > 2)]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if edns > 2 {
        let payload: u16 = *[100u16, 512, 1232, 1400, 4096].choose(rng).unwrap();
        let version = if edns == 3 { 1 } else { 0 };
        let flags: u16 = if edns == 4 { 0x8000 } else { 0 }; // DO
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&payload.to_be_bytes());
        p.extend_from_slice(&[0, version]);
        p.extend_from_slice(&flags.to_be_bytes());
        if edns == 5 {
            // An EDNS option (a client cookie): unusual, so always the general path.
            p.extend_from_slice(&[0, 12, 0, 10, 0, 8]);
            p.extend_from_slice(&rng.random::<u64>().to_be_bytes());
        } else {
            p.extend_from_slice(&[0, 0]);
        }
    }
    p
}

/// Packets that are not plain queries: garbage, truncations, other opcodes, QR set, 2 questions.
fn odd_packet(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    match rng.random_range(0..7) {
        0 => p.truncate(rng.random_range(0..p.len())),
        1 => p[2] |= 0x10 << rng.random_range(0..3), // opcode 2/4/8
        2 => p[2] |= 0x80,                           // a response
        3 => p[5] = 2,                               // QDCOUNT 2
        4 => p.extend_from_slice(&[1, 2, 3]),        // trailing bytes
        5 => {
            let n = rng.random_range(0..64);
            p = (0..n).map(|_| rng.random()).collect();
        }
        _ => {
            let i = rng.random_range(0..p.len());
            p[i] = rng.random();
        }
    }
    p
}

const QTYPES: [u16; 11] = [1, 28, 33, 12, 6, 2, 255, 16, 15, 252, 65];

#[test]
fn fast_path_bytes_equal_general_path_bytes_in_process() {
    let snap = snapshot(&zone_yaml(400));
    let handler = Arc::new(Handler::plain(
        Arc::new(Published::new(snap)),
        Arc::new(Metrics::new()),
    ));
    let names = names(&handler.snapshot.load());
    let mut rng = StdRng::seed_from_u64(20261125);
    let mut responder = Responder::new(handler.clone());
    responder.begin_batch();
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let (mut total, mut fast_shaped, mut seen_keys) = (0, 0, HashSet::new());
    let mut key = Vec::new();
    let mut out = Vec::new();
    for i in 0..12_000 {
        let pick = names.choose(&mut rng).unwrap().clone();
        let name = random_case(&mut rng, &pick);
        let qtype = if i % 5 == 0 {
            *QTYPES.choose(&mut rng).unwrap()
        } else {
            1
        };
        let mut p = packet(&mut rng, &name, qtype);
        if i % 10 == 9 {
            p = odd_packet(&mut rng, &p);
        }
        if shape(&p, &mut key).is_some() && !seen_keys.insert(key.clone()) {
            fast_shaped += 1; // answered from the cache: the case that must be proven equal
        }
        let expected = general(&handler, &p, src, true);
        let sent = responder.answer(&p, src, &mut out);
        assert_eq!(sent, expected.is_some(), "packet {i} {p:02x?}");
        if let Some(exp) = expected {
            assert_eq!(
                out, exp,
                "packet {i} ({name} type {qtype}) differs: {p:02x?}"
            );
        }
        total += 1;
    }
    assert!(total >= 12_000);
    assert!(
        fast_shaped > 4_000,
        "only {fast_shaped} cache hits: the corpus does not exercise the fast path"
    );
}

fn udp_exchange(sock: &UdpSocket, p: &[u8]) -> Option<Vec<u8>> {
    sock.send(p).unwrap();
    let mut buf = [0u8; 65535];
    match sock.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn tcp_exchange(stream: &mut TcpStream, p: &[u8]) -> Vec<u8> {
    // One write: a separate 2-byte length would wait on Nagle and delayed ACKs.
    let mut framed = (p.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(p);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn udp_fast_path_equals_tcp_general_path_over_sockets_and_dig_agrees() {
    let (_t, zones, state) = dirs();
    std::fs::write(zones.join("corpus.yaml"), zone_yaml(300)).unwrap();
    let s = Server::start(
        &zones,
        &state,
        &["--vip-range", RANGES[0], "--vip-range", RANGES[1]],
    );
    let snap = snapshot(&zone_yaml(300));
    let names = names(&snap);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(s.dns).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut tcp = TcpStream::connect(s.dns).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut compared = 0;
    for i in 0..3_000 {
        let pick = names.choose(&mut rng).unwrap().clone();
        let name = random_case(&mut rng, &pick);
        let qtype = if i % 4 == 0 {
            *QTYPES[..8].choose(&mut rng).unwrap()
        } else {
            1
        };
        let p = packet(&mut rng, &name, qtype);
        let Some(fast) = udp_exchange(&udp, &p) else {
            panic!("no UDP answer to {name} type {qtype}")
        };
        let slow = tcp_exchange(&mut tcp, &p);
        if fast[2] & 0x02 != 0 {
            // Truncated over UDP: TCP carries the whole answer, so only the header differs.
            assert_eq!(fast[3] & 0xF, slow[3] & 0xF, "{name}: same rcode");
            continue;
        }
        assert_eq!(
            fast, slow,
            "query {i}: {name} type {qtype}: UDP fast path and TCP differ"
        );
        compared += 1;
    }
    assert!(compared > 2_500, "{compared} compared");

    // dig agrees with itself over UDP and TCP, and with the data.
    for name in names.iter().filter(|n| n.starts_with("svc-")).take(20) {
        let u = dig(s.dns, &[name, "A"]);
        let t = dig(s.dns, &[name, "A", "+tcp"]);
        assert_eq!(u.status, "NOERROR", "{}", u.raw);
        assert_eq!(u.answer_data(), t.answer_data(), "{name}");
        let vip = &snap.host(name).unwrap().addresses[0].address;
        assert_eq!(
            u.answer_data(),
            vec![vip.to_string()],
            "{name}: the VIP computed in-process"
        );
    }
}
