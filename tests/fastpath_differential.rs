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
use globaldns::dns::{Handler, Transport};
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
            // Listed, not served: no records, so not among the zone's hosts.
            "none.n.global",
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
        .flat_map(|h| h.into_owned().into_parts().0)
        .take(200)
    {
        v.push(reverse(a));
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
        let expected = general(&handler, &p, src, Transport::Udp);
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

/// A changing part of the mesh: hosts of the corpus given new addresses, hosts added and
/// removed, a wildcard that comes and goes (it turns names that did not exist into answers).
fn churn_yaml(rng: &mut StdRng, round: usize) -> String {
    let mut docs = Vec::new();
    for i in 0..40 {
        if rng.random_bool(0.3) {
            continue; // this round without it: removed, or back to its corpus entry alone
        }
        let host = if i % 2 == 0 {
            format!("svc-{i}.ns-{}.global", i % 7)
        } else {
            format!("new-{i}.ns-{}.global", i % 7)
        };
        let ip = format!("240.2.{round}.{i}");
        let addrs: Vec<&str> = if rng.random_bool(0.5) {
            vec![&ip]
        } else {
            vec![]
        };
        docs.push(se(&format!("c{i}"), "churn", &[&host], &addrs, ""));
    }
    if round % 3 == 1 {
        docs.push(se("wc", "churn", &["*.ns-3.global"], &["240.3.0.1"], ""));
    }
    docs.join("---\n")
}

#[test]
fn fast_path_equals_general_path_across_publishes_and_keeps_what_they_did_not_change() {
    let zones = vec!["global".to_string()];
    let ranges: Vec<ipnet::IpNet> = RANGES.iter().map(|r| r.parse().unwrap()).collect();
    let cfg = ZoneConfig {
        zones: zones.clone(),
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    };
    let mut pipeline = Pipeline::new(
        &cfg,
        &ranges,
        true,
        Allocator::new(&ranges, 60, Table::new()),
    );
    let mut store = MemoryStore::default();
    let set = |pipeline: &mut Pipeline, unit: &str, yaml: &str| {
        let (entries, problems) = parse_text(yaml, unit, "local", &zones).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let key = SourceKey {
            cluster: "local".into(),
            unit: unit.into(),
        };
        pipeline.set_unit(key, entries);
    };
    set(&mut pipeline, "corpus.yaml", &zone_yaml(200));
    let published = Arc::new(Published::new(
        pipeline.pass(1, &mut store).unwrap().snapshot,
    ));
    let handler = Arc::new(Handler::plain(published.clone(), Arc::new(Metrics::new())));
    let mut responder = Responder::new(handler.clone());
    let mut rng = StdRng::seed_from_u64(20261202);
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut out = Vec::new();
    let mut kept = Vec::new();
    for round in 0..24 {
        let mut names = names(&published.load());
        names.extend((0..40).map(|i| format!("new-{i}.ns-{}.global", i % 7)));
        names.extend(
            [
                "a.ns-3.global",
                "svc-3.ns-3.global",
                "_http._tcp.new-1.ns-1.global",
            ]
            .map(String::from),
        );
        for i in 0..600 {
            if i % 8 == 0 {
                responder.begin_batch(); // as the worker does once per received batch
                if i == 0 {
                    kept.push(responder.cached());
                }
            }
            let pick = names.choose(&mut rng).unwrap().clone();
            let name = random_case(&mut rng, &pick);
            let qtype = if i % 4 == 0 {
                *QTYPES.choose(&mut rng).unwrap()
            } else {
                1
            };
            let p = packet(&mut rng, &name, qtype);
            let expected = general(&handler, &p, src, Transport::Udp);
            let sent = responder.answer(&p, src, &mut out);
            assert_eq!(
                sent,
                expected.is_some(),
                "round {round} packet {i} {p:02x?}"
            );
            if let Some(exp) = expected {
                assert_eq!(
                    out, exp,
                    "round {round}: {name} type {qtype} differs after a publish"
                );
            }
        }
        set(&mut pipeline, "churn.yaml", &churn_yaml(&mut rng, round));
        published.publish(
            pipeline
                .pass(2 + round as u64, &mut store)
                .unwrap()
                .snapshot,
        );
    }
    // A publish of a few dozen names leaves most of the cache in place (the first round starts
    // empty).
    let warm = kept.iter().skip(2).filter(|&&n| n > 100).count();
    assert!(warm >= 20, "entries kept at each publish: {kept:?}");
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
        let vip = snap.host(name).unwrap().addresses()[0];
        assert_eq!(
            u.answer_data(),
            vec![vip.to_string()],
            "{name}: the VIP computed in-process"
        );
    }
}
