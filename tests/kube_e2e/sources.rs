//! Where clusters come from and how they are read: remote secrets added and removed at runtime,
//! a cluster whose Istio predates `networking.istio.io/v1`.

use std::path::Path;
use std::time::Duration;

use crate::common::{query_a, Transport};
use crate::kube_cluster::{one_vip, readyz, se, serial, start, wait_answer, Cluster, ROOT};

#[test]
fn remote_secrets_add_and_remove_clusters() {
    let _g = serial();
    let local = Cluster::up("local");
    let remote = Cluster::up("remote");
    local.ensure_namespace("istio-system");
    remote.ensure_namespace("r");
    remote.apply(&se("r", "svc", &["svc.r.global"], &[]));
    local.ensure_namespace("l");
    local.apply(&se("l", "svc", &["svc.l.global"], &[]));

    let (_t, gd) = start(&[
        "--cluster",
        &local.flag(),
        "--remote-secrets",
        "--remote-secrets-namespace",
        "istio-system",
    ]);
    one_vip(&gd, "svc.l.global");
    assert_eq!(query_a(gd.dns, Transport::Udp, "svc.r.global"), None);

    // A remote secret added at runtime brings its cluster in…
    let kubeconfig = std::fs::read_to_string(remote.admin_kubeconfig()).unwrap();
    let secret = |data: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: istio-remote-secret-remote\n  namespace: istio-system\n  labels: {{istio/multiCluster: \"true\"}}\nstringData:\n  remote: |\n{}\n",
            data.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    local.apply(&secret(&kubeconfig));
    let (_, took) = wait_answer(&gd, "svc.r.global", Duration::from_secs(20), |a| {
        a.as_ref().is_some_and(|v| v.len() == 1)
    });
    eprintln!("remote secret → cluster answered in {took:?}");
    assert!(gd.metric("globaldns_source_up{cluster=\"remote\"}") == Some(1.0));

    // …a server started with the secret in place is ready only once that cluster listed…
    let (_t2, gd2) = start(&["--cluster", &local.flag(), "--remote-secrets"]);
    assert!(query_a(gd2.dns, Transport::Udp, "svc.r.global").is_some_and(|v| v.len() == 1));
    drop(gd2);

    // …and deleting it takes it out.
    local.kubectl(&[
        "delete",
        "secret",
        "-n",
        "istio-system",
        "istio-remote-secret-remote",
    ]);
    let (_, took) = wait_answer(&gd, "svc.r.global", Duration::from_secs(20), |a| {
        a.is_none()
    });
    eprintln!("remote secret deleted → cluster withdrawn in {took:?}");
    assert!(!readyz(&gd).1.contains("remote"), "{}", readyz(&gd).1);
    one_vip(&gd, "svc.l.global");
}

/// The test CRD without v1 (v1beta1 the storage version): a cluster with an Istio older than 1.22.
fn crd_without_v1() -> String {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/kube/serviceentry-crd.yaml")).unwrap();
    let mut crd: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let versions = crd["spec"]["versions"].as_array_mut().unwrap();
    versions.retain(|v| v["name"] != "v1");
    for v in versions.iter_mut() {
        v["storage"] = serde_json::Value::Bool(v["name"] == "v1beta1");
    }
    assert_eq!(versions.len(), 2, "v1beta1 and v1alpha3 remain");
    crd.to_string()
}

#[test]
fn a_cluster_without_v1_is_read_through_v1beta1() {
    let _g = serial();
    let old = Cluster::up_with_crd("old", &crd_without_v1());
    let new = Cluster::up("new");
    for c in [&old, &new] {
        c.ensure_namespace("bar");
    }
    old.apply(
        &se("bar", "legacy", &["legacy.bar.global"], &["10.7.0.1"])
            .replace("networking.istio.io/v1\n", "networking.istio.io/v1beta1\n"),
    );
    new.apply(&se(
        "bar",
        "current",
        &["current.bar.global"],
        &["10.7.0.2"],
    ));
    let (_t, gd) = start(&["--cluster", &old.flag(), "--cluster", &new.flag()]);
    let (a, _) = wait_answer(&gd, "legacy.bar.global", Duration::from_secs(20), |a| {
        a.is_some()
    });
    assert_eq!(a, Some(vec!["10.7.0.1".parse().unwrap()]));
    let (a, _) = wait_answer(&gd, "current.bar.global", Duration::from_secs(20), |a| {
        a.is_some()
    });
    assert_eq!(a, Some(vec!["10.7.0.2".parse().unwrap()]));
    // Each cluster through the newest version it serves, found by discovery.
    assert!(
        gd.log_contains("cluster synced cluster=old version=v1beta1 objects="),
        "old cluster watched through v1beta1"
    );
    assert!(
        gd.log_contains("cluster synced cluster=new version=v1 objects="),
        "new cluster watched through v1"
    );
    // A change through the old version shows too.
    old.apply(
        &se("bar", "legacy", &["legacy.bar.global"], &["10.7.0.3"])
            .replace("networking.istio.io/v1\n", "networking.istio.io/v1beta1\n"),
    );
    wait_answer(&gd, "legacy.bar.global", Duration::from_secs(5), |a| {
        a.as_deref() == Some(&["10.7.0.3".parse().unwrap()][..])
    });
}
