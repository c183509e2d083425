//! Test harness: runs the real `globaldns` binary on free loopback ports, and talks to it with real
//! clients (hickory's client, `dig`, plain HTTP for the admin port).
//!
//! Every test binary compiles this tree on its own and uses part of it: hence `dead_code` allowed.
#![allow(dead_code)]

mod dig;
mod dns;
mod knot;
mod server;
mod store;

// A suite that uses nothing of a submodule would warn about its re-export.
#[allow(unused_imports)]
pub use {dig::*, dns::*, knot::*, server::*, store::*};

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

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

/// One ServiceEntry per host (`svc.ns.global` → name `svc`, namespace `ns`), multi-document.
pub fn entries_yaml<'a>(hosts: impl IntoIterator<Item = &'a String>) -> String {
    hosts
        .into_iter()
        .map(|h| {
            let mut parts = h.split('.');
            let name = parts.next().unwrap();
            let ns = parts.next().unwrap();
            se(name, ns, &[h.as_str()], &[], "")
        })
        .collect::<Vec<_>>()
        .join("---\n")
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

/// [`start_fixture`] without extra files.
pub fn fixture(extra_flags: &[&str]) -> (tempfile::TempDir, Server) {
    start_fixture(extra_flags, &[])
}

/// The default VIP range (`--vip-range` unset).
pub fn vip_range() -> IpNet {
    "240.10.0.0/16".parse().unwrap()
}

/// Parsed addresses, sorted (to compare with an answer's).
pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    v.sort();
    v
}

/// FNV-1a 64, written out here so that the tests check the documented hash, not the crate's.
pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A small zone for the transfer suites: a VIP host with a port, a dual-stack host with user
/// addresses, a DYNAMIC_DNS wildcard.
pub fn small_mesh(dir: &Path) {
    write_file(
        &dir.join("a.yaml"),
        &[
            se(
                "httpbin",
                "bar",
                &["httpbin.bar.global"],
                &[],
                "  ports:\n  - {number: 8000, name: http, protocol: HTTP}\n",
            ),
            se(
                "static",
                "bar",
                &["static.bar.global"],
                &["10.1.2.3", "fd00::5"],
                "",
            ),
            // Wildcards get a VIP only with DYNAMIC_DNS (se() writes resolution DNS).
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: wild, namespace: wild}\nspec:\n  hosts: [\"*.wild.global\"]\n  location: MESH_INTERNAL\n  resolution: DYNAMIC_DNS\n".to_string(),
        ]
        .join("---\n"),
    );
}

/// `n` single-host ServiceEntries (`s<i>.big.global`) with `ports` ports each (an SRV record
/// each), 1,000 to a file.
pub fn big_hosts(dir: &Path, n: usize, ports: usize) {
    let mut spec = String::from("  ports:\n");
    for p in 0..ports {
        spec += &format!("  - {{number: {}, name: p{p}, protocol: TCP}}\n", 8000 + p);
    }
    let spec = if ports == 0 { String::new() } else { spec };
    for f in 0..n.div_ceil(1000) {
        let docs: Vec<String> = (f * 1000..((f + 1) * 1000).min(n))
            .map(|i| {
                se(
                    &format!("s{i}"),
                    "big",
                    &[&format!("s{i}.big.global")],
                    &[],
                    &spec,
                )
            })
            .collect();
        write_file(&dir.join(format!("f{f}.yaml")), &docs.join("---\n"));
    }
}
