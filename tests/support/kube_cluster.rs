//! Throw-away Kubernetes clusters for end-to-end tests: etcd + a REAL kube-apiserver (v1.20.2,
//! on 127.0.0.1 only), built from Debian sources by scripts/kube/build-apiserver.sh (cached in
//! ~/.cache/globaldns; the first run builds it, which takes minutes) and run by
//! scripts/kube/cluster.sh; kubectl and kube-rs helpers; and `start`, which runs the real
//! `globaldns` binary against them.
//!
//! A test binary includes it next to the common harness, which it uses:
//! `#[path = "../common/mod.rs"] mod common;` and
//! `#[path = "../support/kube_cluster.rs"] mod kube_cluster;` (paths from a suite's own `main.rs` under tests/).
//!
//! Every test binary uses part of it: hence `dead_code` allowed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch};

use crate::common::{
    self, debug_hosts, eventually, free_ports, host_vips, query_a, Server, Transport,
};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn script(name: &str) -> PathBuf {
    Path::new(ROOT).join("scripts/kube").join(name)
}

/// Serialises the tests that bring clusters up, and builds (or finds cached) the apiserver once.
pub fn serial() -> MutexGuard<'static, ()> {
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
pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub name: String,
}

impl Cluster {
    pub fn up(name: &str) -> Cluster {
        let crd = std::fs::read_to_string(Path::new(ROOT).join("tests/kube/serviceentry-crd.yaml"))
            .unwrap();
        Cluster::up_with_crd(name, &crd)
    }

    /// A cluster whose ServiceEntry CRD is `crd` (YAML or JSON).
    pub fn up_with_crd(name: &str, crd: &str) -> Cluster {
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

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn flag(&self) -> String {
        format!("{}={}", self.name, self.admin_kubeconfig().display())
    }

    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(script("cluster.sh"));
        cmd.arg("kubectl").arg(&self.dir).args(args);
        run(&mut cmd, stdin)
    }

    /// kubectl as admin; panics on failure. Returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_output(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply on {}: {}\n{yaml}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn apply_file(&self, path: &Path) {
        self.kubectl(&["apply", "-f", &path.display().to_string()]);
    }

    pub fn ensure_namespace(&self, ns: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ));
    }

    pub fn stop_apiserver(&self) {
        run_ok(
            Command::new(script("cluster.sh"))
                .arg("stop-apiserver")
                .arg(&self.dir),
        );
    }

    pub fn start_apiserver(&self) {
        run_ok(
            Command::new(script("cluster.sh"))
                .arg("start-apiserver")
                .arg(&self.dir),
        );
    }

    /// Sends SIGSTOP to the apiserver (its connections stay open, nothing answers) until the
    /// guard is dropped (SIGCONT).
    pub fn freeze(&self) -> Frozen<'_> {
        self.signal_apiserver("STOP");
        Frozen(self)
    }

    pub fn signal_apiserver(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("apiserver.pid")).unwrap();
        run_ok(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.trim()),
        );
    }

    /// A kubeconfig authenticating as ServiceAccount ns/sa (created if missing).
    pub fn sa_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
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

    /// The ServiceEntry lists the apiserver answered, oldest first (its audit log; see
    /// scripts/kube/cluster.sh), those of kubectl left out.
    pub fn lists(&self) -> Vec<Listed> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter(|e| !e["userAgent"].as_str().unwrap_or("").starts_with("kubectl"))
            .map(|e| Listed {
                user: e["user"]["username"].as_str().unwrap_or("").to_string(),
                uri: e["requestURI"].as_str().unwrap_or("").to_string(),
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            })
            .collect()
    }

    /// JSON of `kubectl get`.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }
}

/// One ServiceEntry list request, as the apiserver's audit log tells it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub user: String,
    pub uri: String,
    pub code: u16,
}

impl Listed {
    fn has(&self, param: &str) -> bool {
        let query = self.uri.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .any(|p| p == param || p.starts_with(&format!("{param}=")))
    }

    /// The whole list asked of the watch cache: `resourceVersion=0` and no limit.
    pub fn cache_list(&self) -> bool {
        self.has("resourceVersion=0") && !self.has("limit")
    }

    /// A page read from etcd (the latest state): a limit and no resourceVersion.
    pub fn paged(&self) -> bool {
        self.has("limit") && !self.has("resourceVersion")
    }
}

pub struct Frozen<'a>(&'a Cluster);

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

pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
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

pub fn run_ok(cmd: &mut Command) {
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ServiceEntry (networking.istio.io/v1) as YAML, namespace first (as kubectl's `-n` reads),
/// with one HTTP port.
pub fn se(ns: &str, name: &str, hosts: &[&str], addresses: &[&str]) -> String {
    common::se(
        name,
        ns,
        hosts,
        addresses,
        "  ports:\n  - {number: 8000, name: http, protocol: HTTP}\n",
    )
}

/// Waits until `name` answers something satisfying `ok`; returns the answer and how long it took.
pub fn wait_answer(
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

pub fn one_vip(server: &Server, name: &str) -> IpAddr {
    let (a, _) = wait_answer(server, name, Duration::from_secs(20), |a| {
        a.as_ref().is_some_and(|v| v.len() == 1)
    });
    a.unwrap()[0]
}

/// Starts globaldns in Kubernetes mode (empty zones dir) and waits until ready.
pub fn start(extra: &[&str]) -> (tempfile::TempDir, Server) {
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
pub fn vips(server: &Server) -> BTreeMap<String, Vec<IpAddr>> {
    host_vips(&debug_hosts(server), false)
}

pub fn readyz(server: &Server) -> (u16, String) {
    server.get("/readyz")
}

/// Waits until write-back has acted on the snapshot being served (every object looked at, every
/// patch finished).
pub fn writeback_settled(gd: &Server) {
    let serial = gd.metric("globaldns_zone_serial").expect("zone serial");
    eventually(Duration::from_secs(10), "write-back caught up", || {
        (gd.metric("globaldns_writeback_checked_serial")? >= serial).then_some(())
    });
}

/// A kube-rs client with the cluster's admin kubeconfig (inside a runtime).
pub async fn admin_client(c: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(c.admin_kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Sets `status.addresses` of a ServiceEntry through the status subresource, as Istio's
/// allocator does.
pub fn set_istio_status(c: &Cluster, ns: &str, name: &str, host: &str, address: &str) {
    set_status_addresses(c, ns, name, &[(address.to_string(), host.to_string())]);
}

/// Replaces `status.addresses` of a ServiceEntry with `(value, host)` pairs (an empty list
/// clears it) through the status subresource, as Istio's allocator does.
pub fn set_status_addresses(c: &Cluster, ns: &str, name: &str, addresses: &[(String, String)]) {
    let list: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(value, host)| serde_json::json!({"value": value, "host": host}))
        .collect();
    let status = serde_json::json!({"status": {"addresses": list}});
    let (rt, api) = serviceentry_api(c, ns);
    rt.block_on(api.patch_status(name, &Default::default(), &Patch::Merge(&status)))
        .unwrap();
}

/// A current-thread runtime and the kube-rs API (as admin) of the v1 ServiceEntries in `ns`.
pub fn serviceentry_api(c: &Cluster, ns: &str) -> (tokio::runtime::Runtime, Api<DynamicObject>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(admin_client(c));
    let ar = globaldns::kube::crd::serviceentry_resource("v1");
    (rt, Api::namespaced_with(client, ns, &ar))
}
