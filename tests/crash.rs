//! SIGKILL at a random instant during bursts of allocations and file changes (new hosts, hosts
//! removed and brought back, entries rewritten): the store must always parse and validate, the
//! server must restart, and no VIP that was ever answered may be lost or moved.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 50;
const BATCH: usize = 20;
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

/// The files' content: round → the hosts its batch file lists now.
type Files = BTreeMap<usize, Vec<String>>;

fn batch_file(zones: &Path, round: usize, hosts: &[String], ports: bool) {
    let body = if hosts.is_empty() {
        String::new()
    } else if ports {
        // The same hosts with a port added: an entry rewritten without a host change.
        entries_yaml(hosts).replace(
            "resolution: DNS\n",
            "resolution: DNS\n  ports: [{name: http, number: 80, protocol: HTTP}]\n",
        )
    } else {
        entries_yaml(hosts)
    };
    write_file(&zones.join(format!("batch-{round:02}.yaml")), &body);
}

#[test]
fn sigkill_during_allocation_bursts_loses_no_served_vip() {
    let (_t, zones, state) = dirs();
    let mut rng = StdRng::seed_from_u64(0x6b11_6b11);
    // Every (host, VIP) ever seen in a DNS answer.
    let mut observed: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut files = Files::new();
    let started = Instant::now();
    let mut kills_with_answers = 0;
    let mut kills_before_any_answer = 0;
    let mut removed_total = 0;

    let mut s = Server::start(&zones, &state, &[]);
    for round in 0..ROUNDS {
        let hosts: Vec<String> = (0..BATCH)
            .map(|i| format!("r{round:02}-h{i:02}.burst.global"))
            .collect();
        let delay = Duration::from_millis(rng.random_range(0..=400));

        // The burst: a new batch, and an earlier batch changed at once (hosts dropped, dropped
        // ones brought back, or the entries rewritten with a port).
        let written = Instant::now();
        batch_file(&zones, round, &hosts, false);
        files.insert(round, hosts.clone());
        if round > 0 {
            let old = rng.random_range(0..round);
            let all: Vec<String> = (0..BATCH)
                .map(|i| format!("r{old:02}-h{i:02}.burst.global"))
                .collect();
            let keep: Vec<String> = match rng.random_range(0..3) {
                0 => all.into_iter().filter(|_| rng.random_bool(0.7)).collect(),
                1 => all,
                _ => files[&old].clone(),
            };
            removed_total += BATCH - keep.len();
            batch_file(&zones, old, &keep, rng.random_bool(0.5));
            files.insert(old, keep);
        }
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

        // What is on disk now parses, validates, and holds every VIP that was answered: listed
        // hosts not released; hosts no file lists any more may be held (their VIP reserved).
        let listed: BTreeSet<String> = files.values().flatten().cloned().collect();
        let table = validated_store(&state, round);
        for (h, ip) in &observed {
            match table.get(h) {
                // Held is fine: a host dropped then brought back in a burst may still be.
                Some((stored, _held)) => {
                    assert_eq!(
                        stored, ip,
                        "round {round} (kill after {delay:?}): {h} was answered {ip}, store has {stored}"
                    );
                }
                None => panic!(
                    "round {round} (kill after {delay:?}): {h} was answered {ip} before the kill \
                     but is missing from the store (persist-before-answer violated)"
                ),
            }
        }

        // Restart succeeds and serves the same VIPs, for exactly the hosts the files list.
        s = Server::spawn(&zones, &state, &[])
            .unwrap_or_else(|log| panic!("round {round}: restart after SIGKILL failed:\n{log}"));
        s.wait_ready();
        let vips = eventually(
            Duration::from_secs(10),
            "every listed host served after restart",
            || {
                // Every served host with its IPv4 VIP; none yet for one of them: ask again.
                let v: BTreeMap<String, Ipv4Addr> = served_vips(&s)?
                    .into_iter()
                    .map(|(h, vips)| Some((h, v4_of(&vips)?)))
                    .collect::<Option<_>>()?;
                v.keys().eq(listed.iter()).then_some(v)
            },
        );
        for (h, ip) in &observed {
            if listed.contains(h) {
                assert_eq!(
                    vips.get(h),
                    Some(ip),
                    "round {round}: {h} answered {ip} before, /debug/hosts differs after restart"
                );
            }
        }
        for (h, ip) in &seen_this_round {
            assert_eq!(
                a_of(s.dns, h),
                Some(*ip),
                "round {round}: {h} over DNS after restart"
            );
        }
        // Record the rest too: from now on they must not move either.
        for (h, ip) in vips {
            assert_eq!(
                *observed.entry(h.clone()).or_insert(ip),
                ip,
                "round {round}: {h}"
            );
        }
    }
    s.stop();
    let took = started.elapsed();
    eprintln!(
        "crash: {ROUNDS} rounds in {took:?}; {kills_with_answers} kills after some answers, \
         {kills_before_any_answer} before any; {removed_total} hosts dropped from files on the way"
    );
    assert_eq!(observed.len(), ROUNDS * BATCH);
    assert!(
        kills_with_answers >= 5,
        "too few kills happened after the batch was answered ({kills_with_answers}): the test \
         would not be checking anything"
    );
    assert!(
        removed_total > 0,
        "no host was ever dropped: the changes did not happen"
    );
}
