//! VIP allocation against the real binary: the documented preferred slot, stability across
//! restarts and churn, the hold period, user addresses displacing auto VIPs, exhaustion, agreement
//! between fresh instances, dual-stack ranges, refusal of corrupt stores and of a second server.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Helpers (local to this file: tests/common is shared and not ours to change).

/// FNV-1a 64, written out here so that the test checks the documented hash, not the crate's.
fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The contract's allocation model for one IPv4 range, hosts taken in sorted order: preferred slot
/// = hash mod size, then linear probing, never `.0`/`.255`, never a taken address.
fn model_v4(
    range: &str,
    hosts: &BTreeSet<String>,
    reserved: &[Ipv4Addr],
) -> BTreeMap<String, Ipv4Addr> {
    let net: ipnet::Ipv4Net = range.parse().unwrap();
    let base = u32::from(net.network());
    let size = 1u64 << (32 - net.prefix_len());
    let mut taken: BTreeSet<Ipv4Addr> = reserved.iter().copied().collect();
    let mut out = BTreeMap::new();
    for h in hosts {
        let mut idx = fnv1a64(h) % size;
        for _ in 0..size {
            let ip = Ipv4Addr::from(base + idx as u32);
            let last = ip.octets()[3];
            if last != 0 && last != 255 && !taken.contains(&ip) {
                taken.insert(ip);
                out.insert(h.clone(), ip);
                break;
            }
            idx = (idx + 1) % size;
        }
    }
    out
}

/// One DNS question over UDP with a short timeout and retries; never panics on a slow server.
fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..6 {
        sock.send_to(&bytes, server).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if m.metadata.id == q.metadata.id {
                    return m;
                }
            }
        }
    }
    panic!("no DNS answer from {server} for {name} {rtype}");
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The single A answer of a host: Some(ip) on NOERROR with one address, None on NXDOMAIN.
fn a_of(server: SocketAddr, host: &str) -> Option<Ipv4Addr> {
    let m = ask(server, &format!("{host}."), RecordType::A);
    match m.metadata.response_code {
        ResponseCode::NXDomain => None,
        ResponseCode::NoError => match ips(&m).as_slice() {
            [IpAddr::V4(ip)] => Some(*ip),
            other => panic!("{host}: expected exactly one A record, got {other:?}: {m:?}"),
        },
        rc => panic!("{host}: unexpected rcode {rc:?}"),
    }
}

fn debug_hosts(s: &Server) -> Option<serde_json::Value> {
    let (code, body) = s.get("/debug/hosts");
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Served hosts of `/debug/hosts` with their addresses of source `vip`.
fn served_vips(s: &Server) -> Option<BTreeMap<String, Vec<IpAddr>>> {
    let v = debug_hosts(s)?;
    let hosts = v.get("hosts")?.as_object()?;
    let mut out = BTreeMap::new();
    for (h, r) in hosts {
        if r.get("served") != Some(&serde_json::Value::Bool(true)) {
            continue;
        }
        let vips = r["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["source"] == "vip")
            .filter_map(|a| a["address"].as_str()?.parse().ok())
            .collect();
        out.insert(h.clone(), vips);
    }
    Some(out)
}

fn v4_of(vips: &[IpAddr]) -> Option<Ipv4Addr> {
    vips.iter().find_map(|ip| match ip {
        IpAddr::V4(v) => Some(*v),
        _ => None,
    })
}

/// Waits until the served hosts are exactly `want`; returns host → IPv4 VIP.
fn wait_served(
    s: &Server,
    want: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, Ipv4Addr> {
    let mut last = BTreeMap::new();
    let started = Instant::now();
    loop {
        if let Some(v) = served_vips(s) {
            if v.keys().eq(want.iter()) {
                return v
                    .into_iter()
                    .map(|(h, ips)| {
                        let ip = v4_of(&ips).unwrap_or_else(|| panic!("{h}: no IPv4 VIP: {ips:?}"));
                        (h, ip)
                    })
                    .collect();
            }
            last = v;
        }
        if started.elapsed() > timeout {
            let have: BTreeSet<&String> = last.keys().collect();
            let missing: Vec<_> = want.iter().filter(|h| !have.contains(h)).take(10).collect();
            let extra: Vec<_> = have
                .iter()
                .filter(|h| !want.contains(**h))
                .take(10)
                .collect();
            panic!(
                "served hosts did not become the expected {} within {timeout:?}: have {}, \
                 missing (first 10) {missing:?}, extra (first 10) {extra:?}",
                want.len(),
                have.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Row {
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    released: bool,
}

/// The allocation table of `STATE`, parsed per the documented format (base + log).
fn read_store(state: &Path) -> BTreeMap<String, Row> {
    store_rows(state)
        .into_iter()
        .map(|(host, row)| {
            let r = Row {
                ipv4: row
                    .get("ipv4")
                    .and_then(|x| x.as_str())
                    .map(|x| x.parse().unwrap()),
                ipv6: row
                    .get("ipv6")
                    .and_then(|x| x.as_str())
                    .map(|x| x.parse().unwrap()),
                released: row.get("releasedAt").is_some_and(|x| !x.is_null()),
            };
            (host, r)
        })
        .collect()
}

fn metric0(s: &Server, name: &str) -> f64 {
    s.metric(name).unwrap_or(0.0)
}

/// One ServiceEntry per host (`svc.ns.global` → name `svc`, namespace `ns`), multi-document.
fn entries_yaml<'a>(hosts: impl IntoIterator<Item = &'a String>) -> String {
    hosts
        .into_iter()
        .map(|h| {
            let mut parts = h.split('.');
            let name = parts.next().unwrap();
            let ns = parts.next().unwrap();
            se(name, ns, &[h.as_str()], &[], "")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Runs `globaldns serve` expecting it to refuse to start: (exit status, stderr).
fn serve_must_fail(zones: &Path, state: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let mut child = serve_command(zones, state, extra).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "globaldns serve kept running (it should have refused to start):\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn v4_range_contains(range: &str, ip: Ipv4Addr) -> bool {
    range.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip)
}

// ---------------------------------------------------------------------------------------------

#[test]
fn preferred_slot_is_fnv1a_and_vips_survive_restarts() {
    let (_t, zones, state) = dirs();
    let mut hosts: BTreeSet<String> = (0..30)
        .map(|i| format!("app-{i}.team{}.global", i % 3))
        .collect();
    let mut yaml = entries_yaml(&hosts);
    // Upper case in the file: the hash is over the lower-cased name.
    yaml.push_str("---\n");
    yaml.push_str(&se(
        "mixed",
        "team0",
        &["Mixed-Case.Team0.GLOBAL."],
        &[],
        "",
    ));
    hosts.insert("mixed-case.team0.global".into());
    write_file(&zones.join("apps.yaml"), &yaml);

    let expected = model_v4("240.10.0.0/16", &hosts, &[]);
    let s = Server::start(&zones, &state, &[]);
    let first = wait_served(&s, &hosts, Duration::from_secs(10));
    for h in &hosts {
        assert_eq!(
            a_of(s.dns, h),
            Some(expected[h]),
            "{h}: VIP is not the documented preferred slot (FNV-1a-64 of the lower-cased host mod \
             range size, then linear probing)"
        );
    }
    assert_eq!(first, expected, "/debug/hosts VIPs");
    assert_eq!(s.get("/healthz").0, 200, "/healthz");
    let raw = std::fs::read_to_string(state.join("allocations.json")).unwrap();
    assert!(
        raw.lines().count() > hosts.len() && raw.contains("\n      \"host\": \""),
        "allocations.json is pretty-printed JSON:\n{raw}"
    );
    let store_before = read_store(&state);
    for (h, ip) in &expected {
        assert_eq!(store_before[h].ipv4, Some(*ip), "{h} in allocations.json");
    }

    // Graceful restart, then a crash and restart: same VIPs every time.
    s.stop();
    let s = Server::start(&zones, &state, &[]);
    for h in &hosts {
        assert_eq!(
            a_of(s.dns, h),
            Some(expected[h]),
            "{h} after SIGTERM + restart"
        );
    }
    s.kill9();
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(wait_served(&s, &hosts, Duration::from_secs(10)), expected);
    for h in &hosts {
        assert_eq!(
            a_of(s.dns, h),
            Some(expected[h]),
            "{h} after SIGKILL + restart"
        );
    }
    assert_eq!(
        read_store(&state),
        store_before,
        "table changed across restarts"
    );
}

#[test]
fn churn_of_1000_hosts_with_restarts_never_moves_a_vip() {
    const FILES: usize = 10;
    let (_t, zones, state) = dirs();
    let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
    let all: Vec<String> = (0..1000)
        .map(|i| format!("svc-{i:04}.ns{}.global", i % 17))
        .collect();
    let file_of = |h: &String| all.iter().position(|x| x == h).unwrap() % FILES;
    let mut pending: Vec<String> = all.clone();
    pending.shuffle(&mut rng);

    let mut present: BTreeSet<String> = BTreeSet::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    // First VIP ever seen per host: with the default 24 h hold it must never change, and no two
    // hosts (present or held) may ever share one.
    let mut first_vip: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut owner: BTreeMap<Ipv4Addr, String> = BTreeMap::new();

    let write_files = |present: &BTreeSet<String>, touched: &BTreeSet<usize>| {
        for &f in touched {
            let mine: Vec<&String> = present.iter().filter(|h| file_of(h) == f).collect();
            let path = zones.join(format!("part-{f}.yaml"));
            if mine.is_empty() {
                let _ = std::fs::remove_file(&path);
            } else {
                write_file(&path, &entries_yaml(mine));
            }
        }
    };

    let mut server = Some(Server::start(&zones, &state, &[]));
    let mut step = 0;
    let started = Instant::now();
    while !(pending.is_empty() && present.is_empty()) {
        step += 1;
        let mut touched = BTreeSet::new();
        // Remove some hosts that were present (and observed) before this step; everything, at
        // the end, in random chunks.
        let n_rm = if pending.is_empty() {
            rng.random_range(150..=400).min(present.len())
        } else {
            rng.random_range(0..=present.len() / 3)
        };
        let mut cur: Vec<String> = present.iter().cloned().collect();
        cur.shuffle(&mut rng);
        for h in cur.into_iter().take(n_rm) {
            touched.insert(file_of(&h));
            present.remove(&h);
            removed.insert(h);
        }
        // Add a batch of never-seen hosts.
        let n_add = rng.random_range(80..=200).min(pending.len());
        for h in pending.drain(..n_add) {
            touched.insert(file_of(&h));
            present.insert(h);
        }
        // Bring back some removed hosts (not in the final drain).
        if !pending.is_empty() {
            let mut back: Vec<String> = removed.iter().cloned().collect();
            back.shuffle(&mut rng);
            for h in back.into_iter().take(rng.random_range(0..=40)) {
                touched.insert(file_of(&h));
                removed.remove(&h);
                present.insert(h);
            }
        }

        // Every third step restart; alternately SIGTERM and SIGKILL, files changed while down.
        let restart = step % 3 == 0;
        if restart {
            let s = server.take().unwrap();
            if step % 2 == 0 {
                s.stop();
            } else {
                s.kill9();
            }
        }
        write_files(&present, &touched);
        if restart {
            server = Some(Server::start(&zones, &state, &[]));
        }
        let s = server.as_ref().unwrap();

        let vips = wait_served(s, &present, Duration::from_secs(15));
        assert_eq!(
            metric0(s, "globaldns_hosts_served"),
            present.len() as f64,
            "step {step}: globaldns_hosts_served"
        );
        for (h, ip) in &vips {
            assert!(
                v4_range_contains("240.10.0.0/16", *ip),
                "{h}: {ip} outside the range"
            );
            let last = ip.octets()[3];
            assert!(last != 0 && last != 255, "{h}: {ip} is a .0/.255 address");
            match first_vip.get(h) {
                Some(old) => assert_eq!(
                    old, ip,
                    "step {step}: {h} moved from {old} to {ip} (restart this step: {restart})"
                ),
                None => {
                    if let Some(other) = owner.get(ip) {
                        panic!("step {step}: {h} got {ip}, which {other} holds (present or held)");
                    }
                    first_vip.insert(h.clone(), *ip);
                    owner.insert(*ip, h.clone());
                }
            }
        }
        // The store already holds everything served (persisted before answering), and every
        // removed host is held with its VIP.
        let table = read_store(&state);
        for (h, ip) in &first_vip {
            let row = table
                .get(h)
                .unwrap_or_else(|| panic!("step {step}: {h} ({ip}) missing from allocations.json"));
            assert_eq!(row.ipv4, Some(*ip), "step {step}: {h} in allocations.json");
            assert_eq!(
                row.released,
                !present.contains(h),
                "step {step}: {h}: releasedAt must be set exactly while the host is gone"
            );
        }
        assert_eq!(
            table.len(),
            first_vip.len(),
            "step {step}: unexpected rows in the store"
        );

        // Spot checks over DNS.
        let sample: Vec<&String> = present.iter().collect();
        for h in sample.choose_multiple(&mut rng, 15) {
            assert_eq!(
                a_of(s.dns, h),
                Some(first_vip[*h]),
                "step {step}: DNS for {h}"
            );
        }
        let gone: Vec<&String> = removed.iter().collect();
        for h in gone.choose_multiple(&mut rng, 5) {
            assert_eq!(
                a_of(s.dns, h),
                None,
                "step {step}: removed {h} must be NXDOMAIN"
            );
        }
    }
    eprintln!(
        "churn: {step} steps, {} hosts seen, {:?}",
        first_vip.len(),
        started.elapsed()
    );
    assert_eq!(first_vip.len(), 1000);
    assert!(step >= 6, "the scenario should include several restarts");
}

/// A host name, different from `host`, whose preferred slot in a range of `size` is `host`'s.
fn collider(host: &str, size: u64, prefix: &str) -> String {
    let want = fnv1a64(host) % size;
    (0..10_000_000u64)
        .map(|i| format!("{prefix}-{i}.hold.global"))
        .find(|c| c != host && fnv1a64(c) % size == want)
        .expect("a colliding host name")
}

#[test]
fn hold_period_is_honoured() {
    let (_t, zones, state) = dirs();
    let a = "held.hold.global".to_string();
    let keep = "keep.hold.global".to_string();
    write_file(&zones.join("keep.yaml"), &entries_yaml([&keep]));
    write_file(&zones.join("a.yaml"), &entries_yaml([&a]));
    let s = Server::start(&zones, &state, &["--vip-hold", "3s"]);
    let x = eventually(Duration::from_secs(5), "held host served", || {
        a_of(s.dns, &a)
    });
    let model = model_v4("240.10.0.0/16", &[a.clone(), keep.clone()].into(), &[]);
    assert_eq!(x, model[&a], "preferred slot of {a}");
    let b = collider(&a, 1 << 16, "b");
    let c = collider(&a, 1 << 16, "c");

    // Gone: NXDOMAIN, held in the table.
    std::fs::remove_file(zones.join("a.yaml")).unwrap();
    eventually(Duration::from_secs(2), "removed host NXDOMAIN", || {
        a_of(s.dns, &a).is_none().then_some(())
    });
    let released = Instant::now();
    let row = read_store(&state).get(&a).cloned();
    assert_eq!(
        row,
        Some(Row {
            ipv4: Some(x),
            ipv6: None,
            released: true
        }),
        "{a} must be held (releasedAt set, same VIP) in allocations.json"
    );

    // A new host that prefers the held address must not get it.
    write_file(&zones.join("b.yaml"), &entries_yaml([&b]));
    let vb = eventually(Duration::from_secs(2), "colliding host served", || {
        a_of(s.dns, &b)
    });
    assert_ne!(vb, x, "{b} was given {x}, the VIP {a} holds");
    assert_eq!(a_of(s.dns, &a), None, "held host must not be served");

    // The same host back within the hold: same VIP.
    write_file(&zones.join("a.yaml"), &entries_yaml([&a]));
    let back = eventually(Duration::from_secs(2), "host back", || a_of(s.dns, &a));
    let within = released.elapsed();
    assert!(
        within < Duration::from_secs(2),
        "test too slow to be inside the 3 s hold ({within:?}); inconclusive"
    );
    assert_eq!(
        back, x,
        "{a} came back within its hold and must get its VIP back"
    );
    assert!(
        !read_store(&state)[&a].released,
        "releasedAt must be cleared"
    );

    // Gone again, and this time for longer than the hold: forgotten (the engine checks every 5 s).
    std::fs::remove_file(zones.join("a.yaml")).unwrap();
    eventually(Duration::from_secs(2), "removed again", || {
        a_of(s.dns, &a).is_none().then_some(())
    });
    let released = Instant::now();
    let mut held_seen_at = Duration::ZERO;
    eventually(
        Duration::from_secs(16),
        "expired hold dropped from allocations.json",
        || {
            let t = read_store(&state);
            if t.contains_key(&a) {
                held_seen_at = released.elapsed();
                assert_eq!(a_of(s.dns, &a), None, "{a} served during its hold");
                None
            } else {
                Some(())
            }
        },
    );
    let freed = released.elapsed();
    assert!(
        freed >= Duration::from_secs(2),
        "hold of 3 s ended after only {freed:?} (last seen held at {held_seen_at:?})"
    );
    assert!(
        freed <= Duration::from_secs(14),
        "hold of 3 s took {freed:?} to be released (contract: ~10 s after expiry at most)"
    );
    eprintln!("hold: freed {freed:?} after removal");
    eventually(Duration::from_secs(2), "held gauge back to 0", || {
        (metric0(&s, "globaldns_vips_held") == 0.0).then_some(())
    });

    // The freed address can be handed out again: another host preferring it gets it.
    write_file(&zones.join("c.yaml"), &entries_yaml([&c]));
    let vc = eventually(Duration::from_secs(2), "third host served", || {
        a_of(s.dns, &c)
    });
    assert_eq!(vc, x, "{c} prefers the freed {x} and should get it");
    assert_eq!(a_of(s.dns, &b), Some(vb), "{b} keeps its VIP");
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
    let hosts = debug_hosts(&s).unwrap();
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

#[test]
fn a_full_range_exhausts_cleanly() {
    let (_t, zones, state) = dirs();
    let hosts: BTreeSet<String> = (0..5).map(|i| format!("e{i}.full.global")).collect();
    write_file(&zones.join("e.yaml"), &entries_yaml(&hosts));
    let range = "240.10.0.0/30";
    let s = Server::start(&zones, &state, &["--vip-range", range]);
    let served = eventually(Duration::from_secs(5), "5 hosts known", || {
        let v = debug_hosts(&s)?;
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
        let m = ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert!(ips(&m).is_empty(), "{h}: AAAA without an IPv6 range: {m:?}");
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
fn two_fresh_instances_with_the_same_files_agree() {
    // A small range so that probing (and thus allocation order) matters.
    let range = "240.10.0.0/22";
    let t = tempfile::tempdir().unwrap();
    let zones1 = t.path().join("z1");
    let zones2 = t.path().join("z2");
    let (state1, state2) = (t.path().join("s1"), t.path().join("s2"));
    let hosts: Vec<String> = (0..400)
        .map(|i| format!("h{i}.agree{}.global", i % 5))
        .collect();
    let pinned = "pinned.agree0.global".to_string();
    for z in [&zones1, &zones2] {
        std::fs::create_dir_all(z.join("west")).unwrap();
        for (f, chunk) in hosts.chunks(100).enumerate() {
            let path = if f % 2 == 0 {
                z.join(format!("f{f}.yaml"))
            } else {
                z.join("west").join(format!("f{f}.yaml"))
            };
            write_file(&path, &entries_yaml(chunk));
        }
        // User addresses inside the range are reserved in both.
        write_file(
            &z.join("pinned.yaml"),
            &se(
                "pinned",
                "agree0",
                &[&pinned],
                &["240.10.1.1", "240.10.2.2"],
                "",
            ),
        );
    }
    let mut want: BTreeSet<String> = hosts.iter().cloned().collect();
    want.insert(pinned.clone());

    let s1 = Server::start(&zones1, &state1, &["--vip-range", range]);
    let s2 = Server::start(&zones2, &state2, &["--vip-range", range]);
    let (v1, v2) = eventually(
        Duration::from_secs(15),
        "both instances serve every host",
        || {
            let v1 = served_vips(&s1)?;
            let v2 = served_vips(&s2)?;
            (v1.keys().eq(want.iter()) && v2.keys().eq(want.iter())).then_some((v1, v2))
        },
    );
    for h in &hosts {
        assert!(v4_of(&v1[h]).is_some(), "{h}: no VIP on the first instance");
        assert_eq!(v1[h], v2[h], "{h}: instances disagree");
    }
    let mut rng = StdRng::seed_from_u64(7);
    for h in hosts.choose_multiple(&mut rng, 20) {
        assert_eq!(a_of(s1.dns, h), a_of(s2.dns, h), "{h}: DNS answers differ");
    }
    s1.stop();
    s2.stop();

    let list = |state: &Path| {
        let out = Command::new(BIN)
            .args(["allocations", "--json", "--state-dir"])
            .arg(state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (l1, l2) = (list(&state1), list(&state2));
    assert!(l1.contains("h399.agree4.global"), "{l1}");
    assert_eq!(
        l1, l2,
        "`globaldns allocations --json` differs between the two instances"
    );
    let f1 = std::fs::read(state1.join("allocations.json")).unwrap();
    let f2 = std::fs::read(state2.join("allocations.json")).unwrap();
    assert!(f1 == f2, "allocations.json files differ");
    let table = read_store(&state1);
    assert_eq!(table.len(), 400);
    for r in table.values() {
        let ip = r.ipv4.unwrap();
        assert!(v4_range_contains(range, ip));
        assert!(
            ip != Ipv4Addr::new(240, 10, 1, 1) && ip != Ipv4Addr::new(240, 10, 2, 2),
            "reserved {ip} handed out"
        );
    }
}

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
        let m = ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let v6: Vec<Ipv6Addr> = ips(&m)
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
    let m = ask(s.dns, "v4only.dual.global.", RecordType::AAAA);
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
        let m = ask(s.dns, &format!("{h}."), RecordType::AAAA);
        assert_eq!(ips(&m), vec![IpAddr::V6(*aaaa)], "{h} AAAA after restart");
    }
}

#[test]
fn corrupt_stores_are_refused_and_left_untouched() {
    let row = |h: &str, ip: &str| {
        format!("    {{\n      \"host\": \"{h}\",\n      \"ipv4\": \"{ip}\"\n    }}")
    };
    let doc = |rows: &[String]| {
        format!(
            "{{\n  \"format\": \"globaldns-allocations/v1\",\n  \"allocations\": [\n{}\n  ]\n}}\n",
            rows.join(",\n")
        )
    };
    let good = doc(&[
        row("a.ns.global", "240.10.1.1"),
        row("b.ns.global", "240.10.1.2"),
    ]);
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "same IP for two hosts",
            doc(&[
                row("a.ns.global", "240.10.1.1"),
                row("b.ns.global", "240.10.1.1"),
            ]),
            vec![],
            vec!["a.ns.global", "b.ns.global", "240.10.1.1"],
        ),
        (
            "IP outside the range",
            doc(&[
                row("a.ns.global", "240.10.1.1"),
                row("c.ns.global", "10.0.0.1"),
            ]),
            vec![],
            vec!["c.ns.global", "10.0.0.1"],
        ),
        (
            "network address of a /24",
            doc(&[row("a.ns.global", "240.10.3.0")]),
            vec![],
            vec!["a.ns.global", "240.10.3.0"],
        ),
        (
            "range changed under an existing table",
            good.clone(),
            vec!["--vip-range", "240.20.0.0/16"],
            vec!["a.ns.global", "240.10.1.1"],
        ),
        (
            "truncated JSON",
            good[..good.len() / 2].to_string(),
            vec![],
            vec!["allocations.json"],
        ),
        (
            "empty file",
            String::new(),
            vec![],
            vec!["allocations.json"],
        ),
    ];
    for (what, body, flags, named) in cases {
        let (_t, zones, state) = dirs();
        write_file(
            &zones.join("x.yaml"),
            &entries_yaml(&[
                "a.ns.global".to_string(),
                "b.ns.global".to_string(),
                "new.ns.global".to_string(),
            ]),
        );
        std::fs::create_dir_all(&state).unwrap();
        let path = state.join("allocations.json");
        std::fs::write(&path, &body).unwrap();
        let (status, log) = serve_must_fail(&zones, &state, &flags);
        assert!(!status.success(), "{what}: exit status {status}");
        for n in named {
            assert!(log.contains(n), "{what}: the error must name {n:?}:\n{log}");
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            body,
            "{what}: allocations.json must be left byte-for-byte unchanged"
        );
    }
}

#[test]
fn a_second_server_on_the_same_state_dir_is_refused() {
    let (_t, zones, state) = dirs();
    write_file(
        &zones.join("x.yaml"),
        &se("x", "lock", &["x.lock.global"], &[], ""),
    );
    let s1 = Server::start(&zones, &state, &[]);
    let x = eventually(Duration::from_secs(5), "first server answers", || {
        a_of(s1.dns, "x.lock.global")
    });
    let before = std::fs::read(state.join("allocations.json")).unwrap();

    let (status, log) = serve_must_fail(&zones, &state, &[]);
    assert!(!status.success(), "second server exit status {status}");
    assert!(
        log.contains(&state.display().to_string()) || log.contains("lock"),
        "the refusal names the state directory or its lock:\n{log}"
    );
    assert_eq!(
        a_of(s1.dns, "x.lock.global"),
        Some(x),
        "first server still answers"
    );
    assert_eq!(
        std::fs::read(state.join("allocations.json")).unwrap(),
        before
    );

    // The lock dies with its holder, even on SIGKILL.
    s1.kill9();
    let s3 = Server::start(&zones, &state, &[]);
    assert_eq!(a_of(s3.dns, "x.lock.global"), Some(x));
}

#[test]
fn hold_expires_while_unrelated_no_op_events_keep_arriving() {
    // Sources that keep sending events which change nothing (a comment rewritten by a config tool;
    // in Kubernetes, resyncs and status-only updates) must not postpone the end of a hold: the
    // contract is that the engine checks every 5 s.
    let (_t, zones, state) = dirs();
    let a = "brief.noise.global".to_string();
    write_file(&zones.join("a.yaml"), &entries_yaml([&a]));
    let noise_body = se(
        "steady",
        "noise",
        &["steady.noise.global"],
        &["10.8.0.1"],
        "",
    );
    write_file(&zones.join("noise.yaml"), &noise_body);
    let s = Server::start(&zones, &state, &["--vip-hold", "2s"]);
    eventually(Duration::from_secs(5), "host served", || a_of(s.dns, &a));
    std::fs::remove_file(zones.join("a.yaml")).unwrap();
    eventually(Duration::from_secs(2), "host withdrawn", || {
        a_of(s.dns, &a).is_none().then_some(())
    });
    assert!(read_store(&state)[&a].released, "held after removal");
    let released = Instant::now();
    let mut last_touch = Instant::now();
    let mut touches = 0;
    let deadline = Duration::from_secs(2 + 10 + 2);
    loop {
        if !read_store(&state).contains_key(&a) {
            break;
        }
        let waited = released.elapsed();
        assert!(
            waited < deadline,
            "hold of 2 s not released after {waited:?} while another file kept being rewritten \
             with no effective change every second ({touches} rewrites): expiry only runs after 5 s \
             without any source event"
        );
        if last_touch.elapsed() >= Duration::from_secs(1) {
            touches += 1;
            write_file(
                &zones.join("noise.yaml"),
                &format!("# rewritten {touches}\n{noise_body}"),
            );
            last_touch = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("hold under noise: freed after {:?}", released.elapsed());
}

#[test]
fn an_exhausted_host_gets_the_address_freed_by_an_expired_hold() {
    let (_t, zones, state) = dirs();
    let range = "240.10.0.0/30";
    let hosts: Vec<String> = (0..3).map(|i| format!("x{i}.wait.global")).collect();
    write_file(&zones.join("three.yaml"), &entries_yaml(&hosts));
    let s = Server::start(&zones, &state, &["--vip-range", range, "--vip-hold", "1s"]);
    let before: Vec<Ipv4Addr> = hosts
        .iter()
        .map(|h| eventually(Duration::from_secs(5), "served", || a_of(s.dns, h)))
        .collect();
    let late = "late.wait.global".to_string();
    write_file(&zones.join("late.yaml"), &entries_yaml([&late]));
    eventually(
        Duration::from_secs(2),
        "late host known but not served",
        || {
            let v = debug_hosts(&s)?;
            (v["hosts"][late.as_str()]["served"] == false).then_some(())
        },
    );
    assert_eq!(a_of(s.dns, &late), None, "no VIP left for {late}");

    // x0 goes away: its address is held (not given to `late`), then freed and handed out.
    write_file(&zones.join("three.yaml"), &entries_yaml(&hosts[1..]));
    let t0 = Instant::now();
    let got = eventually(
        Duration::from_secs(1 + 10 + 2),
        "late host served after the hold",
        || a_of(s.dns, &late),
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{late} got {got} only {:?} after x0 left: the hold was not honoured",
        t0.elapsed()
    );
    assert_eq!(got, before[0], "the only free address is the one x0 held");
    assert_eq!(a_of(s.dns, &hosts[0]), None);
}

/// A host whose preferred slot in 240.10.0.0/16 satisfies `pred`.
fn host_with_slot(prefix: &str, pred: impl Fn(u64) -> bool) -> String {
    (0..50_000_000u64)
        .map(|i| format!("{prefix}-{i}.edge.global"))
        .find(|h| pred(fnv1a64(h) % (1 << 16)))
        .expect("a host with such a slot")
}

#[test]
fn network_and_broadcast_slots_are_skipped_and_probing_wraps() {
    let (_t, zones, state) = dirs();
    let on_255 = host_with_slot("b", |s| s % 256 == 255 && s != 65535);
    let on_0 = host_with_slot("n", |s| s % 256 == 0 && s != 0);
    let last = host_with_slot("w", |s| s == 65535);
    let slot = |h: &str| fnv1a64(h) % (1 << 16);
    let ip = |idx: u64| Ipv4Addr::from(u32::from(Ipv4Addr::new(240, 10, 0, 0)) + idx as u32);
    write_file(
        &zones.join("edge.yaml"),
        &entries_yaml([&on_255, &on_0, &last]),
    );
    let s = Server::start(&zones, &state, &[]);
    for (h, want, why) in [
        (
            &on_255,
            ip(slot(&on_255) + 2),
            ".255 and the next .0 are skipped",
        ),
        (&on_0, ip(slot(&on_0) + 1), ".0 is skipped"),
        (
            &last,
            Ipv4Addr::new(240, 10, 0, 1),
            "240.10.255.255 wraps past 240.10.0.0 to .1",
        ),
    ] {
        let got = eventually(Duration::from_secs(5), "served", || a_of(s.dns, h));
        assert_eq!(got, want, "{h} (preferred {}): {why}", ip(slot(h)));
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
        let v = debug_hosts(&s)?;
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
fn a_store_that_cannot_write_publishes_nothing_new_until_it_can() {
    // Persist before answering: while the allocation log cannot be written, a new host gets no
    // answer (its VIP was never durable), hosts already served keep theirs, and the pass is
    // retried until the store takes it.
    let (_t, zones, state) = dirs();
    let old = "kept.durable.global".to_string();
    let new = "waits.durable.global".to_string();
    write_file(&zones.join("a.yaml"), &entries_yaml([&old]));
    let s = Server::start(&zones, &state, &[]);
    let old_vip = eventually(Duration::from_secs(5), "first host served", || {
        a_of(s.dns, &old)
    });
    // A directory where the log must be appended: every append fails.
    let log = state.join("allocations.log");
    std::fs::create_dir(&log).unwrap();
    write_file(&zones.join("b.yaml"), &entries_yaml([&new]));
    eventually(Duration::from_secs(10), "the failed commit counted", || {
        (metric0(&s, "globaldns_store_errors_total") >= 1.0).then_some(())
    });
    assert_eq!(
        a_of(s.dns, &new),
        None,
        "a VIP that is not durable must not be answered"
    );
    assert_eq!(
        a_of(s.dns, &old),
        Some(old_vip),
        "what was served stays served"
    );
    assert!(
        !read_store_dir_has(&state, &new),
        "nothing about the new host is on disk"
    );
    std::fs::remove_dir(&log).unwrap();
    // Retried on the engine's beat (every 5 s), without any further source event.
    let new_vip = eventually(
        Duration::from_secs(15),
        "new host served once the store works",
        || a_of(s.dns, &new),
    );
    assert_eq!(
        read_store(&state)[&new].ipv4,
        Some(new_vip),
        "served VIP is the stored one"
    );
    assert_eq!(a_of(s.dns, &old), Some(old_vip));
}

fn read_store_dir_has(state: &Path, host: &str) -> bool {
    std::fs::read_to_string(state.join("allocations.json")).is_ok_and(|t| t.contains(host))
}
