//! Two clusters, one server: propagation of creates/changes/deletes, and a cluster that freezes,
//! stops and comes back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{debug_hosts, eventually};
use crate::kube_cluster::{one_vip, readyz, se, serial, start, wait_answer, Cluster};

#[test]
fn two_clusters_one_server_propagation_and_outage() {
    let _g = serial();
    let c1 = Cluster::up("c1");
    let c2 = Cluster::up("c2");
    for c in [&c1, &c2] {
        c.ensure_namespace("bar");
        c.ensure_namespace("globaldns");
    }
    c1.apply(&se("bar", "httpbin", &["httpbin.bar.global"], &[]));
    c2.apply(&se("bar", "echo", &["echo.bar.global"], &[]));
    // The same host in both clusters.
    c1.apply(&se("bar", "shared", &["shared.bar.global"], &[]));
    c2.apply(&se("bar", "shared", &["shared.bar.global"], &[]));

    let (_t, gd) = start(&[
        "--cluster",
        &c1.flag(),
        "--cluster",
        &c2.flag(),
        "--store",
        "kube",
    ]);
    let httpbin = one_vip(&gd, "httpbin.bar.global");
    let echo = one_vip(&gd, "echo.bar.global");
    let shared = one_vip(&gd, "shared.bar.global");
    assert_ne!(httpbin, echo);
    let d = debug_hosts(&gd);
    let objects = d["hosts"]["shared.bar.global"]["objects"].to_string();
    assert!(
        objects.contains("c1/bar/shared") && objects.contains("c2/bar/shared"),
        "{objects}"
    );
    // Answered from the store: one VipClaim per VIP, named after it.
    let claims = c1.get_json(&["vipclaims", "-n", "globaldns"]);
    let names: BTreeSet<String> = claims["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&format!("v4-{}", shared.to_string().replace('.', "-"))));

    // A second instance (different cluster order, same store cluster c1): same VIPs.
    let (_t2, gd2) = start(&[
        "--cluster",
        &c2.flag(),
        "--cluster",
        &c1.flag(),
        "--store-cluster",
        "c1",
        "--store",
        "kube",
    ]);
    assert_eq!(one_vip(&gd2, "shared.bar.global"), shared);
    assert_eq!(one_vip(&gd2, "httpbin.bar.global"), httpbin);
    drop(gd2);

    // Create, change, delete: each visible within a second.
    let mut delays = Vec::new();
    let t = Instant::now();
    c2.apply(&se("bar", "new", &["new.bar.global"], &[]));
    let (_, _) = wait_answer(&gd, "new.bar.global", Duration::from_secs(5), |a| {
        a.as_ref().is_some_and(|v| v.len() == 1)
    });
    delays.push(("create", t.elapsed()));
    let t = Instant::now();
    c2.apply(&se("bar", "new", &["new.bar.global"], &["10.1.2.3"]));
    wait_answer(&gd, "new.bar.global", Duration::from_secs(5), |a| {
        a.as_deref() == Some(&["10.1.2.3".parse().unwrap()][..])
    });
    delays.push(("change", t.elapsed()));
    let t = Instant::now();
    c2.kubectl(&["delete", "serviceentry", "-n", "bar", "new", "--wait=false"]);
    wait_answer(&gd, "new.bar.global", Duration::from_secs(5), |a| {
        a.is_none()
    });
    delays.push(("delete", t.elapsed()));
    // A measurement, not a goal (the 5 s above is the test's bound): benches/scale.sh measures
    // propagation for files; kubectl itself takes ~0.1–0.3 s of this.
    eprintln!("propagation (kubectl start → answer): {delays:?}");

    // c2 freezes (SIGSTOP: the watch stays open, nothing answers): the probe notices, its
    // entries stay; SIGCONT brings it back.
    assert!(!readyz(&gd).1.contains("stale"));
    let restarts = || {
        gd.metric("globaldns_watch_restarts_total{cluster=\"c2\"}")
            .unwrap_or(0.0)
    };
    let before = restarts();
    let frozen = c2.freeze();
    let t = Instant::now();
    let why = eventually(Duration::from_secs(30), "frozen c2 reported stale", || {
        let (_, body) = readyz(&gd);
        body.lines()
            .find(|l| l.starts_with("stale: cluster/c2"))
            .map(String::from)
    });
    eprintln!("frozen apiserver noticed in {:?}: {why}", t.elapsed());
    assert!(why.contains("not answering"), "{why}");
    assert_eq!(readyz(&gd).0, 200);
    assert_eq!(one_vip(&gd, "echo.bar.global"), echo);
    assert_eq!(gd.metric("globaldns_source_up{cluster=\"c2\"}"), Some(0.0));
    assert!(restarts() > before);
    drop(frozen);
    let t = Instant::now();
    eventually(Duration::from_secs(30), "thawed c2 no longer stale", || {
        (!readyz(&gd).1.contains("stale")).then_some(())
    });
    eprintln!("thawed apiserver back in {:?}", t.elapsed());
    assert_eq!(gd.metric("globaldns_source_up{cluster=\"c2\"}"), Some(1.0));
    c2.apply(&se("bar", "thawed", &["thawed.bar.global"], &["10.1.2.4"]));
    wait_answer(&gd, "thawed.bar.global", Duration::from_secs(10), |a| {
        a.as_deref() == Some(&["10.1.2.4".parse().unwrap()][..])
    });
    assert_eq!(one_vip(&gd, "echo.bar.global"), echo);

    // c2 stops answering: its entries stay, /readyz names it stale.
    let at_stop = restarts();
    c2.stop_apiserver();
    eventually(Duration::from_secs(20), "c2 reported stale", || {
        let (_, body) = readyz(&gd);
        body.contains("stale: cluster/c2").then_some(())
    });
    assert_eq!(
        readyz(&gd).0,
        200,
        "a stale cluster does not make the server unready"
    );
    assert_eq!(one_vip(&gd, "echo.bar.global"), echo);
    assert_eq!(one_vip(&gd, "shared.bar.global"), shared);
    assert_eq!(gd.metric("globaldns_source_up{cluster=\"c2\"}"), Some(0.0));
    let before = restarts();
    assert!(before > at_stop);
    // Two more failed attempts to reach c2 (backoff 0.5 s … 5 s): still served, nothing withdrawn.
    eventually(Duration::from_secs(20), "c2's watch retried twice", || {
        (restarts() >= before + 2.0).then_some(())
    });
    assert_eq!(one_vip(&gd, "echo.bar.global"), echo, "no flapping");
    assert_eq!(readyz(&gd).0, 200);

    // Back: the watch resumes and converges; a change shows.
    c2.start_apiserver();
    // The change: the entry gets a second host.
    c2.apply(&se(
        "bar",
        "echo",
        &["echo.bar.global", "echo2.bar.global"],
        &[],
    ));
    let (_, took) = wait_answer(&gd, "echo2.bar.global", Duration::from_secs(20), |a| {
        a.as_ref().is_some_and(|v| v.len() == 1)
    });
    eprintln!("after the apiserver restart, change visible in {took:?}");
    assert_eq!(one_vip(&gd, "echo.bar.global"), echo);
    // A restarting apiserver answers discovery before it knows its CRDs: that must not have
    // withdrawn c2's entries, even for a moment.
    assert!(
        !gd.log_contains("VIP held host=echo.bar.global"),
        "echo.bar.global was withdrawn during c2's outage or restart"
    );
    eventually(Duration::from_secs(10), "c2 no longer stale", || {
        (!readyz(&gd).1.contains("stale")).then_some(())
    });
    assert_eq!(gd.metric("globaldns_source_up{cluster=\"c2\"}"), Some(1.0));
    assert!(gd.metric("globaldns_source_objects{cluster=\"c1\"}") == Some(2.0));
}
