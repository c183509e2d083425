//! Churn: hosts come, go and come back across restarts; no VIP ever moves or is shared.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::common::*;
use crate::support::*;

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
