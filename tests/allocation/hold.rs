//! The hold period: a removed host keeps its VIP for a while, then the address is free again.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

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
            let v = try_debug_hosts(&s)?;
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
