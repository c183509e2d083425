//! Write-back of status.addresses: the ServiceAccount's RBAC (with and without the write-back
//! role), every manifest of deploy/ dry-run, the guarded patch, and each instance answering its
//! home cluster's Istio allocation.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::{debug_hosts, eventually, Server};
use crate::kube_cluster::{
    one_vip, se, serial, serviceentry_api, set_istio_status, start, wait_answer, writeback_settled,
    Cluster, ROOT,
};

/// The guard of write-back, straight against the API server: a status patch computed from an
/// old resourceVersion is refused (409) once someone else wrote, and their value stays.
fn guarded_patch_is_refused(c: &Cluster, ns: &str, name: &str) {
    use kube::api::{Patch, PatchParams};
    let (rt, api) = serviceentry_api(c, ns);
    rt.block_on(async {
        let before = api.get(name).await.unwrap();
        let old_rv = before.metadata.resource_version.clone().unwrap();
        // Another writer (Istio's allocator, say) sets status.addresses.
        let theirs = serde_json::json!({"status": {"addresses": [{"value": "10.77.0.77", "host": "contested.wb.global"}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&theirs))
            .await
            .unwrap();
        // globaldns's patch, computed from what it saw before: refused.
        let ours = globaldns::kube::writeback::status_patch(
            &old_rv,
            &[("240.10.0.1".into(), "contested.wb.global".into())],
        );
        let err = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&ours))
            .await
            .expect_err("a stale guarded patch must fail");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.is_conflict()),
            "{err:?}"
        );
        let after = api.get(name).await.unwrap();
        assert_eq!(
            after.data["status"]["addresses"][0]["value"], "10.77.0.77",
            "the other writer's value stays"
        );
    });
}

/// The manifests of deploy/ as the 1.20 test apiserver takes them. Two fields are newer than
/// 1.20: PodDisruptionBudget `policy/v1` (1.21+; 1.20 serves only `policy/v1beta1`, the same
/// fields, which 1.25 removed) is sent as `policy/v1beta1`; `Service.internalTrafficPolicy`
/// (1.21+) would fail kubectl 1.20's client-side validation, so that is off (`--validate=false`)
/// and the server drops the field.
fn for_apiserver_1_20(yaml: &str) -> String {
    yaml.replace(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget",
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget",
    )
}

/// Dry-runs (server side) every manifest under `deploy` and every kustomization's build; fails
/// on a YAML file left out. Returns what kubectl reported.
fn dry_run_deploy(c: &Cluster, deploy: &Path) -> String {
    let mut report = String::new();
    let mut dry_run = |yaml: &str, what: &str| {
        let args = ["apply", "--dry-run=server", "--validate=false", "-f", "-"];
        let out = c.kubectl_output(&args, Some(&for_apiserver_1_20(yaml)));
        assert!(
            out.status.success(),
            "dry run of {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report.push_str(&String::from_utf8_lossy(&out.stdout));
    };
    let manifests = [
        "rbac-writeback.yaml",
        "rbac-writeback-spec.yaml",
        "base/namespace.yaml",
        "base/vipclaim-crd.yaml",
        "base/serviceaccount.yaml",
        "base/rbac.yaml",
        "all-in-one/service.yaml",
        "all-in-one/daemonset.yaml",
        "fleet/primary.yaml",
        "fleet/secondary.yaml",
        "fleet/tsig-secret.example.yaml",
        "istiocoredns/rbac.yaml",
        "istiocoredns/service.yaml",
        "istiocoredns/deployment.yaml",
    ];
    let kustomizations = ["base", "all-in-one", "fleet", "istiocoredns"];
    let mut on_disk = BTreeSet::new();
    for dir in ["", "base", "all-in-one", "fleet", "istiocoredns"] {
        for e in std::fs::read_dir(deploy.join(dir)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                on_disk.insert(Path::new(dir).join(name).display().to_string());
            }
        }
        assert_eq!(
            deploy.join(dir).join("kustomization.yaml").exists(),
            kustomizations.contains(&dir),
            "kustomization in deploy/{dir}"
        );
    }
    let listed: BTreeSet<String> = manifests.iter().map(|m| m.to_string()).collect();
    assert_eq!(on_disk, listed, "every manifest of deploy/ is dry-run");
    for m in manifests {
        dry_run(&std::fs::read_to_string(deploy.join(m)).unwrap(), m);
    }
    for k in kustomizations {
        let built = c.kubectl(&["kustomize", &deploy.join(k).display().to_string()]);
        dry_run(&built, &format!("kustomization {k}"));
    }
    report
}

#[test]
fn service_account_rbac_write_back_and_manifests() {
    let _g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    c1.ensure_namespace("istio-system");
    c1.ensure_namespace("wb");

    // deploy/, both topologies: every manifest applies with a server-side dry run, each
    // kustomization builds (kubectl 1.20's own kustomize) and its output dry-runs as a whole.
    let deploy = Path::new(ROOT).join("deploy");
    let created = dry_run_deploy(&c1, &deploy);
    for object in [
        "daemonset.apps/globaldns created",
        "deployment.apps/globaldns-primary created",
        "poddisruptionbudget.policy/globaldns-primary created",
        "service/globaldns-primary created",
        "daemonset.apps/globaldns-secondary created",
        "serviceaccount/globaldns-secondary created",
        "secret/globaldns-tsig created",
        "deployment.apps/istiocoredns created",
        "service/istiocoredns created",
    ] {
        assert!(created.contains(object), "{object} in:\n{created}");
    }
    for f in ["base/serviceaccount.yaml", "base/rbac.yaml"] {
        c1.apply_file(&deploy.join(f));
    }

    // What the ServiceAccount may do (deploy/base/rbac.yaml only).
    let sa = "system:serviceaccount:globaldns:globaldns";
    let can = |args: &[&str]| -> String {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", sa]);
        let out = c1.kubectl_output(&a, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        can(&["watch", "serviceentries.networking.istio.io", "-A"]),
        "yes"
    );
    assert_eq!(
        can(&["create", "vipclaims.globaldns.io", "-n", "globaldns"]),
        "yes"
    );
    assert_eq!(
        can(&["create", "vipclaims.globaldns.io", "-n", "default"]),
        "no"
    );
    // The claimer lease: its one name, in the store namespace only; never deleted.
    for (args, want) in [
        (
            &["update", "leases/globaldns-claimer", "-n", "globaldns"][..],
            "yes",
        ),
        (&["create", "leases", "-n", "globaldns"], "yes"),
        (&["update", "leases/other", "-n", "globaldns"], "no"),
        (
            &["update", "leases/globaldns-claimer", "-n", "default"],
            "no",
        ),
        (
            &["delete", "leases/globaldns-claimer", "-n", "globaldns"],
            "no",
        ),
    ] {
        assert_eq!(can(args), want, "{args:?}");
    }
    assert_eq!(can(&["list", "secrets", "-n", "istio-system"]), "yes");
    assert_eq!(can(&["list", "secrets", "-n", "default"]), "no");
    assert_eq!(
        can(&["create", "serviceentries.networking.istio.io", "-n", "wb"]),
        "no"
    );
    assert_eq!(
        can(&["patch", "serviceentries.networking.istio.io", "-n", "wb"]),
        "no"
    );
    assert_eq!(
        can(&[
            "patch",
            "serviceentries.networking.istio.io",
            "--subresource=status",
            "-n",
            "wb"
        ]),
        "no",
        "no status write without the write-back role"
    );
    // The secondaries' ServiceAccount (deploy/fleet/secondary.yaml) is granted nothing.
    let secondary = "system:serviceaccount:globaldns:globaldns-secondary";
    for args in [
        &["watch", "serviceentries.networking.istio.io", "-A"][..],
        &["list", "secrets", "-n", "istio-system"],
        &["get", "vipclaims.globaldns.io", "-n", "globaldns"],
    ] {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--as", secondary]);
        let out = c1.kubectl_output(&a, None);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "{args:?}"
        );
    }

    // globaldns as the ServiceAccount (not admin): sources, remote secrets, kube store.
    let sa_kc = c1.sa_kubeconfig("globaldns", "globaldns");
    let sa_flag = format!("c1={}", sa_kc.display());
    c1.apply(&se("wb", "plain", &["plain.wb.global"], &[]));
    let (_t, gd) = start(&[
        "--cluster",
        &sa_flag,
        "--store",
        "kube",
        "--remote-secrets",
        "--write-back",
        "status",
    ]);
    let plain = one_vip(&gd, "plain.wb.global");
    // Write-back asked for but not granted: the patch is refused, nothing written, the server
    // keeps working.
    eventually(Duration::from_secs(10), "a refused write-back", || {
        (gd.metric("globaldns_status_writes_total{cluster=\"c1\",result=\"failed\"}")? >= 1.0)
            .then_some(())
    });
    let se_json = c1.get_json(&["serviceentry", "-n", "wb", "plain"]);
    assert!(se_json["status"]["addresses"].is_null(), "{se_json}");
    assert!(gd.log_contains("write-back failed (RBAC"));
    // Gracefully: the claimer lease is released, and the next instance writes at once.
    gd.stop();
    // The same for spec write-back (the server-side apply of spec.addresses), on an entry whose
    // manifest has no `addresses` key (`se`'s `addresses: []` makes kubectl the field's owner:
    // such an entry is never applied, see tests/kube_e2e/spec_write_back.rs).
    c1.apply(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bare, namespace: wb}\n\
         spec:\n  hosts: [bare.wb.global]\n  resolution: DNS\n",
    );
    let (_t, gd) = start(&[
        "--cluster",
        &sa_flag,
        "--store",
        "kube",
        "--write-back",
        "spec",
    ]);
    assert_eq!(one_vip(&gd, "plain.wb.global"), plain);
    eventually(Duration::from_secs(30), "a refused spec write-back", || {
        (gd.metric("globaldns_spec_writes_total{cluster=\"c1\",result=\"failed\"}")? >= 1.0)
            .then_some(())
    });
    let se_json = c1.get_json(&["serviceentry", "-n", "wb", "bare"]);
    assert!(se_json["spec"]["addresses"].is_null(), "{se_json}");
    assert_eq!(one_vip(&gd, "plain.wb.global"), plain, "answers unchanged");
    assert!(gd.log_contains("retried with backoff"));
    // Tried again after its backoff (5 s), not given up.
    eventually(Duration::from_secs(20), "a retried spec write-back", || {
        (gd.metric("globaldns_spec_writes_total{cluster=\"c1\",result=\"failed\"}")? >= 2.0)
            .then_some(())
    });
    // Gracefully: the claimer lease is released, and the next instance writes at once.
    gd.stop();
    c1.apply_file(&deploy.join("rbac-writeback-spec.yaml"));
    assert_eq!(
        can(&["patch", "serviceentries.networking.istio.io", "-n", "wb"]),
        "yes"
    );

    // With the optional write-back role: status.addresses gets the VIP.
    c1.apply_file(&deploy.join("rbac-writeback.yaml"));
    assert_eq!(
        can(&[
            "patch",
            "serviceentries.networking.istio.io",
            "--subresource=status",
            "-n",
            "wb"
        ]),
        "yes"
    );
    // The instance runs for cluster c1's pods: c1 is its home (whose Istio status it serves).
    let (_t, gd) = start(&[
        "--cluster",
        &sa_flag,
        "--cluster-name",
        "c1",
        "--store",
        "kube",
        "--write-back",
        "status",
    ]);
    assert_eq!(
        one_vip(&gd, "plain.wb.global"),
        plain,
        "same VIP from the store"
    );
    let status = eventually(Duration::from_secs(10), "status.addresses written", || {
        let j = c1.get_json(&["serviceentry", "-n", "wb", "plain"]);
        let a = j["status"]["addresses"].as_array()?.clone();
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["value"], plain.to_string());
    assert_eq!(status[0]["host"], "plain.wb.global");
    // The apiserver holds the status before globaldns has its reply and counts it.
    eventually(Duration::from_secs(10), "the write counted", || {
        (gd.metric("globaldns_status_writes_total{cluster=\"c1\",result=\"written\"}")? >= 1.0)
            .then_some(())
    });

    // An entry with its own address is never written; one whose status someone else wrote keeps it.
    c1.apply(&se("wb", "own", &["own.wb.global"], &["10.7.7.7"]));
    c1.apply(&se("wb", "contested", &["contested.wb.global"], &[]));
    guarded_patch_is_refused(&c1, "wb", "contested");
    let (a, _) = wait_answer(&gd, "contested.wb.global", Duration::from_secs(10), |a| {
        a.as_deref() == Some(&["10.77.0.77".parse().unwrap()][..])
    });
    assert!(
        a.is_some(),
        "Istio's status address is served (prefer-istio-status)"
    );
    writeback_settled(&gd);
    let j = c1.get_json(&["serviceentry", "-n", "wb", "contested"]);
    assert_eq!(j["status"]["addresses"][0]["value"], "10.77.0.77");
    assert_eq!(j["status"]["addresses"].as_array().unwrap().len(), 1);
    let j = c1.get_json(&["serviceentry", "-n", "wb", "own"]);
    assert!(j["status"]["addresses"].is_null(), "{j}");

    // Istio's allocator's address (inside 240.240.0.0/16, set through the status subresource as
    // istiod does) is taken over: the mesh-wide VIP replaces it, and is what DNS answers.
    c1.apply(&se("wb", "taken", &["taken.wb.global"], &[]));
    let taken = one_vip(&gd, "taken.wb.global");
    set_istio_status(&c1, "wb", "taken", "taken.wb.global", "240.240.0.7");
    eventually(
        Duration::from_secs(10),
        "Istio's address taken over",
        || {
            let j = c1.get_json(&["serviceentry", "-n", "wb", "taken"]);
            (j["status"]["addresses"]
                == serde_json::json!([{"value": taken.to_string(), "host": "taken.wb.global"}]))
            .then_some(())
        },
    );
    writeback_settled(&gd);
    assert_eq!(one_vip(&gd, "taken.wb.global"), taken);

    // Without write-back, even with the role bound, nothing is written: no write-back loop runs.
    // Gracefully: the claimer lease is released, and the next instance writes at once.
    gd.stop();
    c1.apply(&se("wb", "quiet", &["quiet.wb.global"], &[]));
    let (_t3, gd3) = start(&["--cluster", &sa_flag, "--store", "kube"]);
    one_vip(&gd3, "quiet.wb.global");
    assert!(!gd3.log_contains("write-back enabled"));
    let j = c1.get_json(&["serviceentry", "-n", "wb", "quiet"]);
    assert!(j["status"]["addresses"].is_null(), "{j}");
    // What was written back is read as the VIP it is, not as Istio's address, from the first load.
    let d = debug_hosts(&gd3);
    assert_eq!(
        d["hosts"]["plain.wb.global"]["addresses"][0]["source"], "vip",
        "{d}"
    );
    assert_eq!(one_vip(&gd3, "plain.wb.global"), plain);
}

#[test]
fn each_instance_answers_its_home_clusters_istio_allocation() {
    let _g = serial();
    let c1 = Cluster::up("c1");
    let c2 = Cluster::up("c2");
    c1.ensure_namespace("globaldns");
    for (c, allocated) in [(&c1, "240.240.0.5"), (&c2, "240.240.0.9")] {
        c.ensure_namespace("bar");
        c.apply(&se("bar", "httpbin", &["httpbin.bar.global"], &[]));
        c.apply(&se("bar", "plain", &["plain.bar.global"], &[]));
        // Each cluster's Istio allocated its own address for the same host.
        set_istio_status(c, "bar", "httpbin", "httpbin.bar.global", allocated);
    }
    let (f1, f2) = (c1.flag(), c2.flag());
    let shared = ["--cluster", &f1, "--cluster", &f2, "--store", "kube"];
    let home = |name: &'static str, write_back: &'static str| {
        let mut flags = shared.to_vec();
        flags.extend(["--cluster-name", name, "--write-back", write_back]);
        start(&flags)
    };
    let own = |s: &Server, ip: &str| {
        let want: IpAddr = ip.parse().unwrap();
        wait_answer(s, "httpbin.bar.global", Duration::from_secs(30), |a| {
            a.as_deref() == Some(&[want][..])
        });
    };

    // Write-back off: each instance answers its own cluster's allocation, never the other's,
    // and both answer the one shared VIP for the host without addresses.
    let (_ta, a) = home("c1", "off");
    let (_tb, b) = home("c2", "off");
    own(&a, "240.240.0.5");
    own(&b, "240.240.0.9");
    let vip = one_vip(&a, "plain.bar.global");
    assert_eq!(one_vip(&b, "plain.bar.global"), vip);
    assert_eq!(
        debug_hosts(&a)["hosts"]["httpbin.bar.global"]["rule"],
        "home-istio-status"
    );
    assert_eq!(
        debug_hosts(&a)["hosts"]["httpbin.bar.global"]["conflict"]["istio_status"],
        true
    );
    a.stop();
    b.stop();

    // Write-back of status on (both instances): Istio's per-cluster allocations (inside its
    // prefix) are taken over with the host's one mesh-wide VIP, and the entry without an address
    // gets its VIP: every instance answers the same address, in every cluster.
    let (_ta, a) = home("c1", "status");
    let (_tb, b) = home("c2", "status");
    let httpbin = *debug_hosts(&a)["hosts"]["httpbin.bar.global"]["unserved_vips"]
        .as_array()
        .and_then(|v| v.first())
        .and_then(|v| v.as_str())
        .map(|v| v.parse::<IpAddr>().unwrap())
        .get_or_insert_with(|| one_vip(&a, "httpbin.bar.global"));
    for c in [&c1, &c2] {
        eventually(Duration::from_secs(30), "VIPs written back", || {
            let plain = c.get_json(&["serviceentry", "plain", "-n", "bar"]);
            let taken = c.get_json(&["serviceentry", "httpbin", "-n", "bar"]);
            (plain["status"]["addresses"][0]["value"] == vip.to_string()
                && taken["status"]["addresses"]
                    == serde_json::json!([{"value": httpbin.to_string(), "host": "httpbin.bar.global"}]))
            .then_some(())
        });
    }
    own(&a, &httpbin.to_string());
    own(&b, &httpbin.to_string());
    assert_eq!(one_vip(&a, "plain.bar.global"), vip);
    assert_eq!(one_vip(&b, "plain.bar.global"), vip);
}
