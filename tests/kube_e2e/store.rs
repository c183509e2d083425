//! The Kubernetes store (VipClaims): two instances sharing it, the store battery, kill -9 during
//! claims and a UDP flood.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::{eventually, query_a, Server, Transport};
use crate::kube_cluster::{admin_client, one_vip, se, serial, start, vips, Cluster};
use crate::store_battery;

#[test]
fn two_instances_share_one_store() {
    let _g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    c1.ensure_namespace("load");
    c1.apply(&se("load", "first", &["first.load.global"], &[]));
    let flags = ["--cluster", &c1.flag(), "--store", "kube"];
    let (_ta, a) = start(&flags);
    let (_tb, b) = start(&flags);
    assert_eq!(
        one_vip(&a, "first.load.global"),
        one_vip(&b, "first.load.global")
    );

    // 1,000 new hosts (200 ServiceEntries × 5 hosts) created while both instances run: each
    // allocates as the objects arrive, racing the other for the same claims.
    const OBJECTS: usize = 200;
    const PER: usize = 5;
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..OBJECTS {
        let hosts: Vec<String> = (0..PER)
            .map(|j| format!("\"h{}.load.global\"", i * PER + j))
            .collect();
        list.push_str(&format!(
            "- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {{name: se{i}, namespace: load}}\n  spec: {{hosts: [{}], location: MESH_INTERNAL, resolution: DNS}}\n",
            hosts.join(", ")
        ));
    }
    let t = Instant::now();
    let out = c1.kubectl_output(&["create", "-f", "-"], Some(&list));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = OBJECTS * PER + 1;
    let all_served = |s: &Server| {
        let v = vips(s);
        (v.values().filter(|x| x.len() == 1).count() == total).then_some(v)
    };
    let va = eventually(
        Duration::from_secs(120),
        "instance A serves all hosts",
        || all_served(&a),
    );
    let vb = eventually(
        Duration::from_secs(60),
        "instance B serves all hosts",
        || {
            let v = all_served(&b)?;
            (v == va).then_some(v)
        },
    );
    eprintln!(
        "{total} hosts allocated by two instances in {:?}",
        t.elapsed()
    );
    // 0 hosts with different VIPs (A and B agree), 0 duplicate VIPs.
    assert_eq!(va, vb);
    let unique: BTreeSet<&IpAddr> = va.values().flatten().collect();
    assert_eq!(unique.len(), total, "duplicate VIPs");
    // The store agrees: one claim per VIP, one per host, each the address served.
    let claims = eventually(Duration::from_secs(30), "store converged", || {
        let j = c1.get_json(&["vipclaims", "-n", "globaldns"]);
        let items = j["items"].as_array().unwrap().clone();
        (items.len() == total).then_some(items)
    });
    let mut hosts = BTreeSet::new();
    for c in &claims {
        let host = c["spec"]["host"].as_str().unwrap().to_string();
        let addr: IpAddr = c["spec"]["address"].as_str().unwrap().parse().unwrap();
        assert_eq!(va[&host], vec![addr], "claim of {host}");
        assert!(hosts.insert(host), "host with two claims");
    }
    // A restarted instance reads the same table back.
    drop(b);
    let (_tc, c) = start(&flags);
    assert_eq!(vips(&c), va);
}

/// The store battery against the Kubernetes store (VipClaims) on a real apiserver.
#[test]
fn kube_store_keeps_every_commit() {
    let (_g, c1, rt) = store_cluster();
    let store = kube_store(&c1, &rt);
    store_battery::run(store, || kube_store(&c1, &rt));
}

/// The serial lock, a cluster with the store namespace, and a runtime for a store in-process.
fn store_cluster() -> (
    std::sync::MutexGuard<'static, ()>,
    Cluster,
    tokio::runtime::Runtime,
) {
    let g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    (g, c1, rt)
}

/// A KubeStore over namespace `globaldns` of `c1`, as the server builds it.
fn kube_store(
    c1: &Cluster,
    rt: &tokio::runtime::Runtime,
) -> Box<dyn globaldns::alloc::store::Store> {
    use globaldns::kube::store::KubeStore;
    let client = rt.block_on(admin_client(c1));
    let (tx, _rx) = std::sync::mpsc::channel();
    let ranges: Vec<ipnet::IpNet> = vec![
        "240.10.0.0/16".parse().unwrap(),
        "fd00:10::/64".parse().unwrap(),
    ];
    let zone = globaldns::zone::ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    };
    let ctx = std::sync::Arc::new(globaldns::kube::KubeContext {
        home: "c1".into(),
        tx: globaldns::source::Events::new(tx),
        metrics: std::sync::Arc::new(globaldns::metrics::Metrics::new()),
        health: std::sync::Arc::new(globaldns::health::Health::default()),
        zones: vec!["global".into()],
        snapshot: std::sync::Arc::new(globaldns::published::Published::new(
            globaldns::zone::Snapshot::empty(&zone, &ranges),
        )),
        ranges,
        list: globaldns::kube::listing::ListFrom::Cache,
    });
    Box::new(KubeStore::new(
        rt.handle().clone(),
        client,
        "c1",
        "globaldns",
        ctx,
    ))
}

/// A first start commits a claim per host at once. The store's own claims, coming back through
/// its watch while that commit runs, are no other instance's change: the engine is not told
/// (each such event made it rebuild and adopt the whole table, every 20 ms of a commit that
/// takes minutes at 100,000 hosts). A claim another instance makes is still reported.
#[test]
fn own_claims_seen_during_a_commit_are_not_reported_as_changes() {
    use globaldns::alloc::store::{Commit, StoreEvent};
    use globaldns::alloc::{Allocation, Change};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (_g, c1, rt) = store_cluster();
    let mut store = kube_store(&c1, &rt);
    assert!(store.load().unwrap().is_empty());
    let changed = Arc::new(AtomicUsize::new(0));
    let seen = changed.clone();
    store.subscribe(Arc::new(move |ev| {
        if matches!(ev, StoreEvent::Changed) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    }));
    const HOSTS: usize = 600;
    let changes: Vec<Change> = (0..HOSTS)
        .map(|i| Change {
            host: format!("h{i}.load.global"),
            before: None,
            after: Some(Allocation {
                ipv4: Some(std::net::Ipv4Addr::new(
                    240,
                    10,
                    (i / 250) as u8,
                    (i % 250) as u8 + 1,
                )),
                ipv6: None,
                released_at: None,
            }),
        })
        .collect();
    let table = changes
        .iter()
        .map(|c| (c.host.clone(), c.after.unwrap()))
        .collect();
    let t = Instant::now();
    assert!(matches!(store.commit(&changes, &table), Ok(Commit::Done)));
    eprintln!("{HOSTS} claims committed in {:?}", t.elapsed());
    assert_eq!(
        changed.load(Ordering::SeqCst),
        0,
        "own claims reported as a change"
    );

    // Another instance's claim (made here with kubectl) is reported.
    c1.apply(
        "apiVersion: globaldns.io/v1alpha1\nkind: VipClaim\nmetadata: {name: v4-240-10-9-9, namespace: globaldns}\n\
         spec: {host: other.load.global, address: 240.10.9.9}\n",
    );
    eventually(Duration::from_secs(20), "the other claim reported", || {
        (changed.load(Ordering::SeqCst) >= 1).then_some(())
    });
    let shared = store.shared_table().unwrap();
    assert_eq!(shared.len(), HOSTS + 1);
}

/// A List of ServiceEntries, one host each, `h{first}…` in namespace `crash`.
fn host_list(first: usize, n: usize) -> String {
    let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in first..first + n {
        list.push_str(&format!(
            "- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {{name: h{i}, namespace: crash}}\n  spec: {{hosts: [\"h{i}.crash.global\"], location: MESH_INTERNAL, resolution: DNS}}\n"
        ));
    }
    list
}

/// kill -9 at a random instant while the server claims VIPs in the Kubernetes store, 20 rounds:
/// every VIP ever answered is still the host's after the restart, and the claims stay one per
/// host and address (the server refuses a store that does not validate, so a restart is the
/// check). Then a UDP flood does not starve /healthz nor a watch-driven change.
#[test]
fn kube_store_survives_kill9_and_floods() {
    use rand::{Rng, SeedableRng};
    let _g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    c1.ensure_namespace("crash");
    // Claims at once (no claimer lease): each restarted instance would otherwise wait for the
    // killed one's lease, and the kills would no longer land while claims are being written.
    let flags = [
        "--cluster",
        &c1.flag(),
        "--store",
        "kube",
        "--claim-defer",
        "0",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut answered: BTreeMap<String, IpAddr> = BTreeMap::new();
    const ROUNDS: usize = 20;
    const PER: usize = 10;
    for round in 0..ROUNDS {
        let (_t, s) = start(&flags);
        // Everything answered so far is answered the same after the restart.
        for (host, vip) in &answered {
            assert_eq!(
                query_a(s.dns, Transport::Udp, host),
                Some(vec![*vip]),
                "round {round}: {host} lost or moved its VIP"
            );
        }
        let out = c1.kubectl_output(&["create", "-f", "-"], Some(&host_list(round * PER, PER)));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Ask while claims are being written, until a random instant, then kill.
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..400));
        while Instant::now() < deadline {
            let i = round * PER + rng.random_range(0..PER);
            let host = format!("h{i}.crash.global");
            if let Some(a) = query_a(s.dns, Transport::Udp, &host).filter(|a| a.len() == 1) {
                answered.insert(host, a[0]);
            }
        }
        s.kill9();
    }
    let (_t, s) = start(&flags);
    let all = eventually(Duration::from_secs(60), "every host served", || {
        let v = vips(&s);
        (v.values().filter(|x| x.len() == 1).count() == ROUNDS * PER).then_some(v)
    });
    let unique: BTreeSet<&IpAddr> = all.values().flatten().collect();
    assert_eq!(unique.len(), ROUNDS * PER, "one VIP per host");
    for (host, vip) in &answered {
        assert_eq!(all[host], vec![*vip], "{host}");
    }
    let claims = c1.get_json(&["vipclaims", "-n", "globaldns"]);
    assert_eq!(
        claims["items"].as_array().unwrap().len(),
        ROUNDS * PER,
        "one claim per VIP"
    );
    eprintln!(
        "{ROUNDS} kills during claims; {} VIPs answered before a kill kept",
        answered.len()
    );

    // A UDP flood (2 threads, 3 s) while a ServiceEntry is created: /healthz answers throughout,
    // and the watch-driven change is served.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..2u16)
        .map(|t| {
            let (stop, dns) = (stop.clone(), s.dns);
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_nonblocking(true).unwrap();
                let packets: Vec<Vec<u8>> = (0..64u16)
                    .map(|i| {
                        let mut m = hickory_proto::op::Message::query();
                        m.metadata.id = t * 1000 + i;
                        m.add_query(hickory_proto::op::Query::query(
                            format!("h{i}.crash.global.").parse().unwrap(),
                            hickory_proto::rr::RecordType::A,
                        ));
                        m.to_vec().unwrap()
                    })
                    .collect();
                let mut buf = [0u8; 1500];
                let until = Instant::now() + Duration::from_secs(3);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    for p in &packets {
                        let _ = sock.send_to(p, dns);
                    }
                    while sock.recv_from(&mut buf).is_ok() {}
                }
            })
        })
        .collect();
    let written = Instant::now();
    c1.apply(&se("crash", "during", &["during.crash.global"], &[]));
    let mut worst = Duration::ZERO;
    let mut seen = None;
    while written.elapsed() < Duration::from_secs(3) || seen.is_none() {
        let t = Instant::now();
        assert_eq!(s.get("/healthz").0, 200, "/healthz during the flood");
        worst = worst.max(t.elapsed());
        // Over TCP: the flood fills the UDP socket's buffer, where any query may be dropped.
        if seen.is_none()
            && query_a(s.dns, Transport::Tcp, "during.crash.global").is_some_and(|a| a.len() == 1)
        {
            seen = Some(written.elapsed());
        }
        assert!(
            written.elapsed() < Duration::from_secs(30),
            "change not served during the flood"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    eprintln!(
        "during the flood: /healthz worst {worst:?}; the watched change served after {:?}",
        seen.unwrap()
    );
}
