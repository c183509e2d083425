//! One claimer per store (the claimer lease): the holder alone creates claims, a successor takes
//! over when it dies or stops.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::{self, eventually, query_a, Server, Transport};
use crate::kube_cluster::{serial, start, Cluster};

/// A List of ServiceEntries, one host each, `c{i}.claims.global` for i in `range`.
fn claim_hosts(range: std::ops::Range<usize>) -> (String, Vec<String>) {
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    let mut hosts = Vec::new();
    for i in range {
        list.push_str(&format!(
            "- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {{name: c{i}, namespace: claims}}\n  spec: {{hosts: [\"c{i}.claims.global\"], location: MESH_INTERNAL, resolution: DNS}}\n"
        ));
        hosts.push(format!("c{i}.claims.global"));
    }
    (list, hosts)
}

/// host → its one VIP as answered over UDP, once every host of `hosts` answers exactly one.
fn answered(s: &Server, hosts: &[String]) -> Option<BTreeMap<String, IpAddr>> {
    hosts
        .iter()
        .map(|h| {
            let a = query_a(s.dns, Transport::Udp, h)?;
            (a.len() == 1).then(|| (h.clone(), a[0]))
        })
        .collect()
}

/// VipClaim creates an instance sent, by result (created, exists).
fn creates(s: &Server, result: &str) -> f64 {
    common::metric0(
        s,
        &format!("globaldns_store_claim_creates_total{{result=\"{result}\"}}"),
    )
}

/// The one instance holding the claimer lease (its index), once exactly one of `servers` does.
pub fn the_claimer(servers: &[&Server]) -> usize {
    eventually(Duration::from_secs(60), "exactly one claimer", || {
        let held: Vec<bool> = servers
            .iter()
            .map(|s| common::metric0(s, "globaldns_claimer ") == 1.0)
            .collect();
        (held.iter().filter(|h| **h).count() == 1).then(|| held.iter().position(|h| *h).unwrap())
    })
}

/// Creates the hosts and waits until every server answers each with one VIP, the same on all.
fn create_and_agree(
    c: &Cluster,
    servers: &[&Server],
    list: &str,
    hosts: &[String],
) -> BTreeMap<String, IpAddr> {
    let t = Instant::now();
    let out = c.kubectl_output(&["create", "-f", "-"], Some(list));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = eventually(
        Duration::from_secs(90),
        "every instance serves the new hosts",
        || {
            let all: Vec<_> = servers
                .iter()
                .map(|s| answered(s, hosts))
                .collect::<Option<_>>()?;
            Some(all)
        },
    );
    for (i, a) in first.iter().enumerate() {
        assert_eq!(
            a, &first[0],
            "instance {i} answers other VIPs than instance 0"
        );
    }
    eprintln!(
        "{} new hosts served by {} instances after {:?}",
        hosts.len(),
        servers.len(),
        t.elapsed()
    );
    first[0].clone()
}

/// One claimer per store: with three instances sharing one store, the lease holder alone sends
/// the VipClaim creates of new hosts and the others adopt them through the watch (no request of
/// theirs). kill -9 the holder: new hosts are still served everywhere (after the grace, or at
/// once by a successor), existing VIPs stay, and a successor takes the lease and becomes the one
/// that claims. Every VIP served is the store's claim.
#[test]
fn one_claimer_per_store_and_a_successor_when_it_dies() {
    let _g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    c1.ensure_namespace("claims");
    // The grace is long enough for the holder's claims to arrive even on a busy machine; the
    // lease short enough for a quick takeover.
    let flags = [
        "--cluster",
        &c1.flag(),
        "--store",
        "kube",
        "--claim-lease",
        "6s",
        "--claim-defer",
        "10s",
    ];
    let mut instances: Vec<Option<(tempfile::TempDir, Server)>> =
        (0..3).map(|_| Some(start(&flags))).collect();
    let live = |inst: &[Option<(tempfile::TempDir, Server)>]| -> Vec<usize> {
        (0..inst.len()).filter(|i| inst[*i].is_some()).collect()
    };
    let servers: Vec<&Server> = instances.iter().map(|x| &x.as_ref().unwrap().1).collect();
    let holder = the_claimer(&servers);

    // 1. Twenty new hosts: the holder creates every claim, the others send no create at all.
    const N: usize = 20;
    let (list, hosts) = claim_hosts(0..N);
    let before = create_and_agree(&c1, &servers, &list, &hosts);
    for (i, s) in servers.iter().enumerate() {
        let (created, exists) = (creates(s, "created"), creates(s, "exists"));
        let adopted = common::metric0(s, "globaldns_claims_adopted_after_defer_total");
        let claimed_late = common::metric0(s, "globaldns_claims_after_defer_total");
        if i == holder {
            assert_eq!(
                (created, exists),
                (N as f64, 0.0),
                "the holder claims every new host"
            );
        } else {
            assert_eq!((created, exists), (0.0, 0.0), "instance {i} sent creates");
            // A host whose claim arrived before its ServiceEntry never waited, so "adopted
            // after waiting" can be below N; none was claimed by this instance itself.
            assert_eq!(claimed_late, 0.0, "instance {i} claimed after its grace");
            assert!(adopted <= N as f64, "instance {i} adopted {adopted}");
        }
    }
    drop(servers);

    // 2. kill -9 the holder, then new hosts: served by both others, old VIPs unchanged.
    let (_dir, dead) = instances[holder].take().unwrap();
    dead.kill9();
    let rest = live(&instances);
    let servers: Vec<&Server> = rest
        .iter()
        .map(|i| &instances[*i].as_ref().unwrap().1)
        .collect();
    let (list, more) = claim_hosts(N..N + 5);
    create_and_agree(&c1, &servers, &list, &more);
    for s in &servers {
        assert_eq!(
            answered(s, &hosts).as_ref(),
            Some(&before),
            "an existing VIP moved"
        );
    }

    // 3. A successor holds the lease and claims new hosts alone.
    let successor = the_claimer(&servers);
    let posts = |s: &Server| creates(s, "created") + creates(s, "exists");
    let was: Vec<f64> = servers.iter().map(|s| posts(s)).collect();
    let (list, last) = claim_hosts(N + 5..N + 10);
    create_and_agree(&c1, &servers, &list, &last);
    for (k, s) in servers.iter().enumerate() {
        let sent = posts(s) - was[k];
        let want = if k == successor { 5.0 } else { 0.0 };
        assert_eq!(
            sent, want,
            "instance {} (successor: {})",
            rest[k], rest[successor]
        );
    }

    // 4. A holder that stops (SIGTERM) gives the lease up: the last instance takes it.
    let last_one = servers[1 - successor].dns;
    drop(servers);
    let (_dir, stopping) = instances[rest[successor]].take().unwrap();
    let log = stopping.log.clone();
    stopping.stop();
    // Its stderr is read on another thread: the last lines may still be on their way.
    let released = || {
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("claimer lease released"))
    };
    let t = Instant::now();
    while !released() && t.elapsed() < Duration::from_secs(10) {
        std::thread::yield_now();
    }
    let tail: Vec<String> = log.lock().unwrap().iter().rev().take(40).cloned().collect();
    assert!(
        released(),
        "the stopped holder released its lease; its last lines: {tail:#?}"
    );
    let survivor = &instances[rest[1 - successor]].as_ref().unwrap().1;
    assert_eq!(survivor.dns, last_one);
    the_claimer(&[survivor]);

    // The store holds exactly what is served: one claim per host, each the answered VIP.
    let all: Vec<String> = hosts.iter().chain(&more).chain(&last).cloned().collect();
    let served = answered(survivor, &all).expect("every host answered");
    let claims = c1.get_json(&["vipclaims", "-n", "globaldns"]);
    let items = claims["items"].as_array().unwrap();
    assert_eq!(items.len(), all.len(), "one claim per host");
    let stored: BTreeMap<String, IpAddr> = items
        .iter()
        .map(|c| {
            (
                c["spec"]["host"].as_str().unwrap().to_string(),
                c["spec"]["address"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(stored, served);
}
