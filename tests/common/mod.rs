//! Test harness: runs the real `globaldns` binary on free loopback ports, and talks to it with real
//! clients (hickory's client, `dig`, plain HTTP for the admin port).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_globaldns");

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` consecutive loopback ports free for UDP and TCP, below Linux's ephemeral range
/// (`net.ipv4.ip_local_port_range`, usually from 32768), never handed out twice by one test
/// process.
///
/// Not port 0: the server's UDP sockets share their port with SO_REUSEPORT, and so do dig's. A
/// dig socket (same user, wildcard address) whose ephemeral port lands on the server's port joins
/// it and, being connected, reads its own query back (flags `ad`, no `qr`). The tests' other
/// clients take ports from the ephemeral range too (hickory's with OS port selection, dnsmasq with
/// `min-port`); a port can still be taken between this check and the server's bind by anything
/// else, and [`Server::spawn`] then starts again on others.
pub fn free_ports(n: u16) -> u16 {
    const LOW: u32 = 20000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let high = (ephemeral - 1).min(32000);
    let n32 = u32::from(n);
    assert!(
        high >= LOW + 100 * n32,
        "the ephemeral port range starts at {ephemeral}: no room below it for test servers \
         (set net.ipv4.ip_local_port_range to start above 32000)"
    );
    static NEXT: Mutex<u32> = Mutex::new(0);
    let mut next = NEXT.lock().unwrap();
    if *next == 0 {
        // Test binaries run at once (nextest) start far apart.
        *next = LOW + (std::process::id() * 12) % (high - LOW - n32);
    }
    let span = high - LOW;
    for _ in 0..span {
        let p = *next;
        *next = if p + 2 * n32 > high { LOW } else { p + n32 };
        // A plain bind fails while any socket holds the port, SO_REUSEPORT or not.
        let free = |q: u32| {
            let q = q as u16;
            UdpSocket::bind(("127.0.0.1", q)).is_ok() && TcpListener::bind(("127.0.0.1", q)).is_ok()
        };
        if (p..p + n32).all(free) {
            return p as u16;
        }
    }
    panic!("no {n} free consecutive loopback ports in {LOW}–{high}");
}

/// A `--listen`/`--admin` pair from [`free_ports`].
pub fn free_listen() -> (String, String) {
    let p = free_ports(2);
    (format!("127.0.0.1:{p}"), format!("127.0.0.1:{}", p + 1))
}

/// `globaldns serve` on `zones`/`state`, free loopback ports, text logs on a piped stderr.
pub fn serve_command(zones: &Path, state: &Path, extra: &[&str]) -> Command {
    let (dns, admin) = free_listen();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--zones")
        .arg(zones)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &dns, "--admin", &admin])
        .args(extra)
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// One query with hickory's client over a fresh connection.
pub fn query(server: SocketAddr, transport: Transport, name: &str, rtype: RecordType) -> Message {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = match transport {
            Transport::Udp => {
                let conn = UdpClientStream::builder(server, TokioRuntimeProvider::default())
                    // From the ephemeral range, apart from the servers' ports (free_ports).
                    .with_os_port_selection(true)
                    .build();
                let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
                tokio::spawn(bg);
                client
            }
            Transport::Tcp => {
                let (fut, sender) =
                    TcpClientStream::new(server, None, None, TokioRuntimeProvider::new());
                let (client, bg) =
                    Client::<TokioRuntimeProvider>::new(fut.await.expect("tcp connect"), sender);
                tokio::spawn(bg);
                client
            }
        };
        let resp = client
            .query(Name::from_str(name).unwrap(), DNSClass::IN, rtype)
            .await
            .unwrap_or_else(|e| panic!("{transport:?} query {name} {rtype}: {e}"));
        resp.into_message()
    })
}

/// `dig` output, parsed.
#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub question: Vec<String>,
    pub answer: Vec<Vec<String>>,
    pub authority: Vec<Vec<String>>,
    pub additional: Vec<Vec<String>>,
    pub edns_udp: Option<u16>,
    pub raw: String,
}

impl Dig {
    /// RDATA fields (after name, ttl, class, type) of answer records.
    pub fn answer_data(&self) -> Vec<String> {
        self.answer.iter().map(|r| r[4..].join(" ")).collect()
    }
}

/// Runs `dig @server -p port ARGS +norec` and parses its sections.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+norec",
            "+time=3",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig is installed (the test command installs bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if let Some(rest) = line.split("udp: ").nth(1) {
            d.edns_udp = rest.trim().parse().ok();
        }
        match line {
            l if l.starts_with(";; QUESTION SECTION") => section = "q",
            l if l.starts_with(";; ANSWER SECTION") => section = "an",
            l if l.starts_with(";; AUTHORITY SECTION") => section = "au",
            l if l.starts_with(";; ADDITIONAL SECTION") => section = "ad",
            "" => section = "",
            l if l.starts_with(";;") => {}
            l => {
                let fields: Vec<String> = l.split_whitespace().map(String::from).collect();
                match section {
                    "q" => d.question.push(l.trim_start_matches(';').to_string()),
                    "an" => d.answer.push(fields),
                    "au" => d.authority.push(fields),
                    "ad" => d.additional.push(fields),
                    _ => {}
                }
            }
        }
    }
    d
}

/// A fresh pair of directories for one test.
pub fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let zones = t.path().join("zones");
    let state = t.path().join("state");
    std::fs::create_dir_all(&zones).unwrap();
    (t, zones, state)
}

/// A ServiceEntry document.
pub fn se(name: &str, ns: &str, hosts: &[&str], addresses: &[&str], extra_spec: &str) -> String {
    let q = |v: &[&str]| {
        v.iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [{}]\n  addresses: [{}]\n  location: MESH_INTERNAL\n  resolution: DNS\n{extra_spec}",
        q(hosts),
        q(addresses)
    )
}

/// Writes a file atomically (write + rename), as `kubectl cp` or a config-management tool would.
pub fn write_file(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Reads a data file the tests ship.
pub fn testdata(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

/// The A addresses in a response's answer section, sorted.
pub fn a_addresses(m: &Message) -> Vec<std::net::IpAddr> {
    let mut v: Vec<std::net::IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The A addresses of `host` from a response: None on NXDOMAIN, Some(sorted) on NOERROR; any
/// other rcode fails the test.
pub fn a_answer(m: &Message, host: &str) -> Option<Vec<std::net::IpAddr>> {
    use hickory_proto::op::ResponseCode;
    match m.metadata.response_code {
        ResponseCode::NXDomain => None,
        ResponseCode::NoError => Some(a_addresses(m)),
        rc => panic!("{host}: unexpected rcode {rc:?}"),
    }
}

/// One A question for `host` over a plain UDP socket, as a stub resolver asks it: short timeout,
/// retried. See [`a_answer`].
pub fn udp_a(server: SocketAddr, host: &str) -> Option<Vec<std::net::IpAddr>> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut q = Message::query();
    q.add_query(hickory_proto::op::Query::query(
        Name::from_str(&format!("{host}.")).unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        sock.send_to(&bytes, server).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if m.metadata.id == q.metadata.id {
                return a_answer(&m, host);
            }
        }
    }
    panic!("no DNS answer from {server} for {host}");
}

/// Starts a server on a copy of the answers fixture (`tests/data/answers`: `main.yaml` for cluster
/// local, `c1/` and `c2/`), plus `extra_files` as (path relative to the zones dir, body).
pub fn start_fixture(
    extra_flags: &[&str],
    extra_files: &[(&str, String)],
) -> (tempfile::TempDir, Server) {
    let (t, zones, state) = dirs();
    write_file(&zones.join("main.yaml"), &testdata("answers/main.yaml"));
    for c in ["c1", "c2"] {
        std::fs::create_dir_all(zones.join(c)).unwrap();
        write_file(
            &zones.join(c).join("clusters.yaml"),
            &testdata(&format!("answers/{c}/clusters.yaml")),
        );
    }
    for (rel, body) in extra_files {
        let p = zones.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_file(&p, body);
    }
    let s = Server::start(&zones, &state, extra_flags);
    (t, s)
}

/// The allocation table in `state`, read per the documented format: the rows of
/// `allocations.json` (the base), then each complete line of `allocations.log` in order, a host's
/// whole new row (or, with `"removed": true`, its removal). A cut last line (no newline: an
/// append a crash interrupted) is not part of the table. Panics on anything that does not parse.
pub fn store_rows(state: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut rows = std::collections::BTreeMap::new();
    let base = state.join("allocations.json");
    match std::fs::read_to_string(&base) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{text}", base.display()));
            assert_eq!(v["format"], "globaldns-allocations/v1", "{text}");
            for row in v["allocations"].as_array().expect("allocations array") {
                let host = row["host"].as_str().expect("host").to_string();
                assert!(
                    rows.insert(host.clone(), row.clone()).is_none(),
                    "{host} listed twice:\n{text}"
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", base.display()),
    }
    let log = state.join("allocations.log");
    let text = match std::fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return rows,
        Err(e) => panic!("{}: {e}", log.display()),
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text[..complete].lines().filter(|l| !l.is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: line {line:?} does not parse: {e}", log.display()));
        let host = row["host"].as_str().expect("host").to_string();
        if row.get("removed").and_then(|r| r.as_bool()) == Some(true) {
            rows.remove(&host);
        } else {
            rows.insert(host, row);
        }
    }
    rows
}
