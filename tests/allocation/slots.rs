//! The documented preferred slot (FNV-1a-64 mod range size, then linear probing), the same on
//! every instance and across restarts.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;

use crate::common::*;
use crate::support::*;

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
