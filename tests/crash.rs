//! SIGKILL during bursts of allocations: the store must always parse and validate, the server must
//! restart, and no VIP that was ever answered may be lost or moved.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 25;
const BATCH: usize = 50;
const RANGE: &str = "240.10.0.0/16";

/// Reads the store (`allocations.json` + `allocations.log`) and checks it the way the server
/// must at start: documented format, one row per host, one host per IP, every IP usable in the
/// range. Returns host → (IPv4, held).
fn validated_store(state: &Path, round: usize) -> BTreeMap<String, (Ipv4Addr, bool)> {
    let net: ipnet::Ipv4Net = RANGE.parse().unwrap();
    let mut out = BTreeMap::new();
    let mut owners: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for (host, row) in store_rows(state) {
        let ip: Ipv4Addr = row["ipv4"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: {host} has no ipv4: {row}"));
        assert!(
            net.contains(&ip),
            "round {round}: {host}: {ip} outside {RANGE}"
        );
        assert!(
            ip.octets()[3] != 0 && ip.octets()[3] != 255,
            "round {round}: {host}: {ip}"
        );
        if let Some(other) = owners.insert(ip, host.clone()) {
            panic!("round {round}: {ip} held by {other} and {host}");
        }
        let held = row.get("releasedAt").is_some_and(|x| !x.is_null());
        out.insert(host, (ip, held));
    }
    out
}

#[test]
fn sigkill_during_allocation_bursts_loses_no_served_vip() {
    let (_t, zones, state) = dirs();
    let mut rng = StdRng::seed_from_u64(0x6b11_6b11);
    // Every (host, VIP) ever seen in a DNS answer.
    let mut observed: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut all_hosts: BTreeSet<String> = BTreeSet::new();
    let started = Instant::now();
    let mut kills_with_answers = 0;
    let mut kills_before_any_answer = 0;

    let mut s = Server::start(&zones, &state, &[]);
    for round in 0..ROUNDS {
        let hosts: Vec<String> = (0..BATCH)
            .map(|i| format!("r{round:02}-h{i:02}.burst.global"))
            .collect();
        all_hosts.extend(hosts.iter().cloned());
        let delay = Duration::from_millis(rng.random_range(0..=400));

        // Write the batch, poll it until the randomly chosen instant, then SIGKILL.
        let written = Instant::now();
        write_file(
            &zones.join(format!("batch-{round:02}.yaml")),
            &entries_yaml(&hosts),
        );
        let mut seen_this_round = BTreeMap::new();
        let mut i = 0;
        while written.elapsed() < delay {
            let h = &hosts[i % hosts.len()];
            i += 1;
            if let Some(ip) = a_of(s.dns, h) {
                if let Some(old) = seen_this_round.insert(h.clone(), ip) {
                    assert_eq!(old, ip, "round {round}: {h} changed VIP while running");
                }
            }
        }
        s.kill9();
        if seen_this_round.is_empty() {
            kills_before_any_answer += 1;
        } else {
            kills_with_answers += 1;
        }
        for (h, ip) in &seen_this_round {
            if let Some(old) = observed.insert(h.clone(), *ip) {
                assert_eq!(old, *ip, "round {round}: {h}");
            }
        }

        // What is on disk now parses, validates, and holds every VIP that was answered.
        let table = validated_store(&state, round);
        for (h, ip) in &observed {
            match table.get(h) {
                Some((stored, held)) => {
                    assert_eq!(
                        stored, ip,
                        "round {round} (kill after {delay:?}): {h} was answered {ip}, store has {stored}"
                    );
                    assert!(!held, "round {round}: {h} marked released");
                }
                None => panic!(
                    "round {round} (kill after {delay:?}): {h} was answered {ip} before the kill \
                     but is missing from allocations.json (persist-before-answer violated)"
                ),
            }
        }

        // Restart succeeds and serves the same VIPs.
        s = Server::spawn(&zones, &state, &[])
            .unwrap_or_else(|log| panic!("round {round}: restart after SIGKILL failed:\n{log}"));
        s.wait_ready();
        let vips = eventually(
            Duration::from_secs(10),
            "every host of every batch served after restart",
            || {
                // Every served host with its IPv4 VIP; none yet for one of them: ask again.
                let v: BTreeMap<String, Ipv4Addr> = served_vips(&s)?
                    .into_iter()
                    .map(|(h, vips)| Some((h, v4_of(&vips)?)))
                    .collect::<Option<_>>()?;
                (v.len() == all_hosts.len()).then_some(v)
            },
        );
        for (h, ip) in &observed {
            assert_eq!(
                vips.get(h),
                Some(ip),
                "round {round}: {h} answered {ip} before the kill, /debug/hosts differs after restart"
            );
        }
        for (h, ip) in &seen_this_round {
            assert_eq!(
                a_of(s.dns, h),
                Some(*ip),
                "round {round}: {h} over DNS after restart"
            );
        }
        // Record the rest of this batch too: from now on they must not move either.
        for (h, ip) in vips {
            observed.entry(h).or_insert(ip);
        }
    }
    s.stop();
    let took = started.elapsed();
    eprintln!(
        "crash: {ROUNDS} rounds in {took:?}; {kills_with_answers} kills after some answers, \
         {kills_before_any_answer} before any"
    );
    assert_eq!(observed.len(), ROUNDS * BATCH);
    assert!(
        kills_with_answers >= 3,
        "too few kills happened after the batch was answered ({kills_with_answers}): the test \
         would not be checking anything"
    );
}
