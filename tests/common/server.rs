//! The running server: `globaldns serve` on free loopback ports, and what its admin port says
//! (`/debug/hosts`, `/metrics`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{eventually, free_listen, BIN};

/// `globaldns serve` on `zones`/`state`, free loopback ports, text logs on a piped stderr.
/// With `--admin` in `extra` (and its `--listen`: a server restarted where its peers expect it),
/// no free ports are added; a `--listen` alone is a listener more.
pub fn serve_command(zones: &Path, state: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--zones")
        .arg(zones)
        .arg("--state-dir")
        .arg(state);
    if !(extra.contains(&"--listen") && extra.contains(&"--admin")) {
        let (dns, admin) = free_listen();
        cmd.args(["--listen", &dns, "--admin", &admin]);
    }
    cmd.args(extra)
        .env("GLOBALDNS_LOG", "info")
        .env_remove("GLOBALDNS_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running `globaldns serve`. Killed on drop.
pub struct Server {
    pub child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub zones: PathBuf,
    pub state: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on `zones`/`state` with extra flags and waits until `/readyz` is 200.
    pub fn start(zones: &Path, state: &Path, extra: &[&str]) -> Server {
        let s = Server::spawn(zones, state, extra).unwrap_or_else(|log| {
            panic!("server did not start:\n{log}");
        });
        s.wait_ready();
        s
    }

    /// A secondary: no ServiceEntry files of its own (an empty `dir/unused-zones`), its state in
    /// `dir/NAME`, following the `--primary` flags among `flags`; ready when it returns.
    pub fn start_secondary(dir: &Path, name: &str, flags: &[&str]) -> Server {
        let zones = dir.join("unused-zones");
        std::fs::create_dir_all(&zones).unwrap();
        Server::start(&zones, &dir.join(name), flags)
    }

    /// Starts the server and waits for its listening line; Err(log) if it exits first. A port
    /// lost between [`free_ports`]'s check and the server's bind means a new start on others.
    pub fn spawn(zones: &Path, state: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Server::spawn_once(zones, state, extra) {
                Err(log) if attempt < 5 && log.contains("cannot bind") => continue,
                other => return other,
            }
        }
    }

    fn spawn_once(zones: &Path, state: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut child = serve_command(zones, state, extra)
            .spawn()
            .expect("spawn globaldns");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening ").nth(1) {
                    let _ = tx.send(rest.to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(rest) = rx.recv_timeout(Duration::from_millis(50)) {
                let field = |k: &str| {
                    rest.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.split(',').next())
                        .and_then(|v| v.parse::<SocketAddr>().ok())
                        .expect("address in listening line")
                };
                return Ok(Server {
                    dns: field("dns="),
                    admin: field("admin="),
                    child,
                    zones: zones.to_path_buf(),
                    state: state.to_path_buf(),
                    log,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Let the reader thread drain what the process wrote.
                std::thread::sleep(Duration::from_millis(50));
                return Err(log.lock().unwrap().join("\n"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "no listening line:\n{}",
                    log.lock().unwrap().join("\n")
                ));
            }
        }
    }

    pub fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "/readyz 200", || {
            (self.get("/readyz").0 == 200).then_some(())
        });
    }

    /// GET on the admin port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// Value of a metric line starting with `prefix` (e.g. `globaldns_hosts_served`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server said last: the first thing to read.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap();
            let tail = &log[log.len().saturating_sub(60)..];
            eprintln!(
                "--- last {} log lines of globaldns ({}):",
                tail.len(),
                self.dns
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `/debug/hosts`, parsed; None unless it answers 200 with JSON (for polling).
pub fn try_debug_hosts(s: &Server) -> Option<serde_json::Value> {
    let (code, body) = s.get("/debug/hosts");
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// `/debug/hosts`, parsed; fails the test unless it answers 200 with JSON.
pub fn debug_hosts(s: &Server) -> serde_json::Value {
    let (code, body) = s.get("/debug/hosts");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// Host → its addresses of source `vip`, from a `/debug/hosts` document: every host listed, or
/// only the served ones.
pub fn host_vips(doc: &serde_json::Value, served_only: bool) -> BTreeMap<String, Vec<IpAddr>> {
    let hosts = doc["hosts"]
        .as_object()
        .unwrap_or_else(|| panic!("/debug/hosts without a hosts object: {doc}"));
    hosts
        .iter()
        .filter(|(_, r)| !served_only || r["served"] == true)
        .map(|(h, r)| {
            let vips = r["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["source"] == "vip")
                .map(|a| {
                    a["address"]
                        .as_str()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or_else(|| panic!("{h}: address {a} is not an IP"))
                })
                .collect();
            (h.clone(), vips)
        })
        .collect()
}

/// Served hosts with their VIPs; None while `/debug/hosts` does not answer (for polling).
pub fn served_vips(s: &Server) -> Option<BTreeMap<String, Vec<IpAddr>>> {
    Some(host_vips(&try_debug_hosts(s)?, true))
}

/// A metric's value, 0 while the metric has not been written yet.
pub fn metric0(s: &Server, name: &str) -> f64 {
    s.metric(name).unwrap_or(0.0)
}
