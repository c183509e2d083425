//! End-to-end tests of the Kubernetes part against REAL kube-apiservers (v1.20.2 + etcd, on
//! 127.0.0.1 only), built from Debian sources by scripts/kube/build-apiserver.sh (cached in
//! ~/.cache/globaldns; the first run builds it, which takes minutes) and run by
//! scripts/kube/cluster.sh. The real `globaldns` binary runs against them; answers are checked
//! over DNS.
//!
//! The tests take one lock and run one after the other: each brings its own clusters up (about
//! 5 s each) and down, and timing assertions (propagation within a second) need a quiet machine.

mod common;
#[path = "support/store_battery.rs"]
mod store_battery;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::{debug_hosts, eventually, free_ports, host_vips, query_a, Server, Transport};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn script(name: &str) -> PathBuf {
    Path::new(ROOT).join("scripts/kube").join(name)
}

/// Serialises the tests of this file, and builds (or finds cached) the apiserver once.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static BUILT: OnceLock<()> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT.get_or_init(|| {
        let t = Instant::now();
        let out = Command::new(script("build-apiserver.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kube/build-apiserver.sh");
        assert!(
            out.status.success(),
            "build-apiserver.sh failed (it needs Debian's archive the first time)"
        );
        eprintln!("kube-apiserver ready in {:?}", t.elapsed());
    });
    guard
}

/// One throw-away cluster (etcd + kube-apiserver). Brought down on drop.
struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    name: String,
}

impl Cluster {
    fn up(name: &str) -> Cluster {
        let crd = std::fs::read_to_string(Path::new(ROOT).join("tests/kube/serviceentry-crd.yaml"))
            .unwrap();
        Cluster::up_with_crd(name, &crd)
    }

    /// A cluster whose ServiceEntry CRD is `crd` (YAML or JSON).
    fn up_with_crd(name: &str, crd: &str) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("kube-{name}-"))
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("cluster");
        let t = Instant::now();
        // A port can still be lost to another process between the check and the bind: then the
        // apiserver or etcd exits at start, and the cluster is brought up again on others.
        let mut attempt = 0;
        let port = loop {
            attempt += 1;
            let port = free_ports(3);
            let out = run(
                Command::new(script("cluster.sh"))
                    .arg("up")
                    .arg(&dir)
                    .arg(port.to_string()),
                None,
            );
            if out.status.success() {
                break port;
            }
            let mut why = String::from_utf8_lossy(&out.stderr).into_owned();
            for log in ["etcd.log", "apiserver.log"] {
                let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                for line in tail.into_iter().rev() {
                    why.push_str(&format!("{log}: {line}\n"));
                }
            }
            assert!(attempt < 3, "cluster {name} did not come up:\n{why}");
            eprintln!("cluster {name} failed on port {port}, retrying:\n{why}");
            let _ = Command::new(script("cluster.sh"))
                .arg("down")
                .arg(&dir)
                .status();
            let _ = std::fs::remove_dir_all(&dir);
        };
        eprintln!("cluster {name} up on port {port} in {:?}", t.elapsed());
        let c = Cluster {
            _tmp: tmp,
            dir,
            name: name.to_string(),
        };
        c.apply(crd);
        c.apply_file(&Path::new(ROOT).join("deploy/base/vipclaim-crd.yaml"));
        for crd in [
            "serviceentries.networking.istio.io",
            "vipclaims.globaldns.io",
        ] {
            c.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &format!("crd/{crd}"),
            ]);
        }
        c
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    fn flag(&self) -> String {
        format!("{}={}", self.name, self.admin_kubeconfig().display())
    }

    fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(script("cluster.sh"));
        cmd.arg("kubectl").arg(&self.dir).args(args);
        run(&mut cmd, stdin)
    }

    /// kubectl as admin; panics on failure. Returns stdout.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let out = self.kubectl_output(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply on {}: {}\n{yaml}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn apply_file(&self, path: &Path) {
        self.kubectl(&["apply", "-f", &path.display().to_string()]);
    }

    fn ensure_namespace(&self, ns: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ));
    }

    fn stop_apiserver(&self) {
        run_ok(
            Command::new(script("cluster.sh"))
                .arg("stop-apiserver")
                .arg(&self.dir),
        );
    }

    fn start_apiserver(&self) {
        run_ok(
            Command::new(script("cluster.sh"))
                .arg("start-apiserver")
                .arg(&self.dir),
        );
    }

    /// Sends SIGSTOP to the apiserver (its connections stay open, nothing answers) until the
    /// guard is dropped (SIGCONT).
    fn freeze(&self) -> Frozen<'_> {
        self.signal_apiserver("STOP");
        Frozen(self)
    }

    fn signal_apiserver(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("apiserver.pid")).unwrap();
        run_ok(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.trim()),
        );
    }

    /// A kubeconfig authenticating as ServiceAccount ns/sa (created if missing).
    fn sa_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
        let out = self.dir.join(format!("sa-{ns}-{sa}.kubeconfig"));
        run_ok(
            Command::new(script("cluster.sh"))
                .arg("sa-kubeconfig")
                .arg(&self.dir)
                .args([ns, sa])
                .arg(&out),
        );
        out
    }

    /// JSON of `kubectl get`.
    fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }
}

struct Frozen<'a>(&'a Cluster);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.signal_apiserver("CONT");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script("cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn run_ok(cmd: &mut Command) {
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ServiceEntry (networking.istio.io/v1) as YAML, namespace first (as kubectl's `-n` reads),
/// with one HTTP port.
fn se(ns: &str, name: &str, hosts: &[&str], addresses: &[&str]) -> String {
    common::se(
        name,
        ns,
        hosts,
        addresses,
        "  ports:\n  - {number: 8000, name: http, protocol: HTTP}\n",
    )
}

/// Waits until `name` answers something satisfying `ok`; returns the answer and how long it took.
fn wait_answer(
    server: &Server,
    name: &str,
    timeout: Duration,
    ok: impl Fn(&Option<Vec<IpAddr>>) -> bool,
) -> (Option<Vec<IpAddr>>, Duration) {
    let t = Instant::now();
    let a = eventually(timeout, &format!("answer for {name}"), || {
        let a = query_a(server.dns, Transport::Udp, name);
        ok(&a).then_some(a)
    });
    (a, t.elapsed())
}

fn one_vip(server: &Server, name: &str) -> IpAddr {
    let (a, _) = wait_answer(server, name, Duration::from_secs(20), |a| {
        a.as_ref().is_some_and(|v| v.len() == 1)
    });
    a.unwrap()[0]
}

/// Starts globaldns in Kubernetes mode (empty zones dir) and waits until ready.
fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let (t, zones, state) = common::dirs();
    let mut flags: Vec<&str> = vec!["--log", "info,globaldns=debug"];
    flags.extend_from_slice(extra);
    let s = Server::spawn(&zones, &state, &flags).unwrap_or_else(|log| panic!("{log}"));
    eventually(Duration::from_secs(60), "/readyz 200", || {
        (s.get("/readyz").0 == 200).then_some(())
    });
    (t, s)
}

/// host → its VIPs (addresses with source "vip"), every host of /debug/hosts.
fn vips(server: &Server) -> BTreeMap<String, Vec<IpAddr>> {
    host_vips(&debug_hosts(server), false)
}

fn readyz(server: &Server) -> (u16, String) {
    server.get("/readyz")
}

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

/// The guard of write-back, straight against the API server: a status patch computed from an
/// old resourceVersion is refused (409) once someone else wrote, and their value stays.
fn guarded_patch_is_refused(c: &Cluster, ns: &str, name: &str) {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = admin_client(c).await;
        let ar = globaldns::kube::crd::serviceentry_resource("v1");
        let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &ar);
        let before = api.get(name).await.unwrap();
        let old_rv = before.metadata.resource_version.clone().unwrap();
        // Another writer (Istio's allocator, say) sets status.addresses.
        let theirs = serde_json::json!({"status": {"addresses": [{"value": "240.240.0.77", "host": "contested.wb.global"}]}});
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
            after.data["status"]["addresses"][0]["value"], "240.240.0.77",
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
    assert!(gd.log_contains("status write-back failed"));
    drop(gd);

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
        a.as_deref() == Some(&["240.240.0.77".parse().unwrap()][..])
    });
    assert!(
        a.is_some(),
        "Istio's status address is served (prefer-istio-status)"
    );
    writeback_settled(&gd);
    let j = c1.get_json(&["serviceentry", "-n", "wb", "contested"]);
    assert_eq!(j["status"]["addresses"][0]["value"], "240.240.0.77");
    assert_eq!(j["status"]["addresses"].as_array().unwrap().len(), 1);
    let j = c1.get_json(&["serviceentry", "-n", "wb", "own"]);
    assert!(j["status"]["addresses"].is_null(), "{j}");

    // Without write-back, even with the role bound, nothing is written: no write-back loop runs.
    drop(gd);
    c1.apply(&se("wb", "quiet", &["quiet.wb.global"], &[]));
    let (_t3, gd3) = start(&["--cluster", &sa_flag, "--store", "kube"]);
    one_vip(&gd3, "quiet.wb.global");
    assert!(!gd3.log_contains("write-back of status.addresses enabled"));
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

/// Waits until write-back has acted on the snapshot being served (every object looked at, every
/// patch finished).
fn writeback_settled(gd: &Server) {
    let serial = gd.metric("globaldns_zone_serial").expect("zone serial");
    eventually(Duration::from_secs(10), "write-back caught up", || {
        (gd.metric("globaldns_writeback_checked_serial")? >= serial).then_some(())
    });
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

/// A kube-rs client with the cluster's admin kubeconfig (inside a runtime).
async fn admin_client(c: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(c.admin_kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Sets `status.addresses` of a ServiceEntry through the status subresource, as Istio's
/// allocator does.
fn set_istio_status(c: &Cluster, ns: &str, name: &str, host: &str, address: &str) {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = admin_client(c).await;
        let ar = globaldns::kube::crd::serviceentry_resource("v1");
        let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &ar);
        let status =
            serde_json::json!({"status": {"addresses": [{"value": address, "host": host}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    });
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
    drop((a, b));

    // Write-back on (both instances): the VIP is written into each cluster's status of the
    // entry without an address; Istio's allocations are left alone and still answered per home.
    let (_ta, a) = home("c1", "status");
    let (_tb, b) = home("c2", "status");
    for c in [&c1, &c2] {
        eventually(Duration::from_secs(30), "VIP written back", || {
            let se = c.get_json(&["serviceentry", "plain", "-n", "bar"]);
            (se["status"]["addresses"][0]["value"] == vip.to_string()).then_some(())
        });
        let se = c.get_json(&["serviceentry", "httpbin", "-n", "bar"]);
        assert_eq!(se["status"]["addresses"].as_array().unwrap().len(), 1);
    }
    own(&a, "240.240.0.5");
    own(&b, "240.240.0.9");
    assert_eq!(one_vip(&a, "plain.bar.global"), vip);
    assert_eq!(one_vip(&b, "plain.bar.global"), vip);
}

/// The store battery against the Kubernetes store (VipClaims) on a real apiserver.
#[test]
fn kube_store_keeps_every_commit() {
    use globaldns::kube::store::KubeStore;
    let _g = serial();
    let c1 = Cluster::up("c1");
    c1.ensure_namespace("globaldns");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let open = |rt: &tokio::runtime::Runtime| -> Box<dyn globaldns::alloc::store::Store> {
        let client = rt.block_on(admin_client(&c1));
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
        let ctx = std::sync::Arc::new(globaldns::kube::Context {
            home: "c1".into(),
            tx: globaldns::source::Events::new(tx),
            metrics: std::sync::Arc::new(globaldns::metrics::Metrics::new()),
            health: std::sync::Arc::new(globaldns::health::Health::default()),
            zones: vec!["global".into()],
            snapshot: std::sync::Arc::new(globaldns::published::Published::new(
                globaldns::zone::Snapshot::empty(&zone, &ranges),
            )),
            ranges,
        });
        Box::new(KubeStore::new(
            rt.handle().clone(),
            client,
            "c1",
            "globaldns",
            ctx,
        ))
    };
    let store = open(&rt);
    store_battery::run(store, || open(&rt));
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
fn the_claimer(servers: &[&Server]) -> usize {
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
