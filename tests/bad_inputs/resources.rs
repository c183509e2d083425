//! Bounded resources: idle TCP connections are capped and cut, a UDP flood starves neither the
//! admin port nor file changes (latencies printed, not asserted), and the time queries waited
//! in the socket is reported.

use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::*;

/// `n` TCP connections to `addr` that send nothing, opened from 8 threads.
fn open_idle(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..n / 8 + usize::from(t < n % 8))
                    .map(|i| {
                        TcpStream::connect(addr)
                            .unwrap_or_else(|e| panic!("idle connection {t}/{i}: {e}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// 2,000 idle TCP connections against a cap of 500 (idle timeout out of the way): the server
/// holds at most 500, closing the one idle longest for each new one (none refused), and UDP and
/// a new TCP client are answered while all 2,000 are open on the client side.
#[test]
fn two_thousand_idle_tcp_connections_are_capped() {
    let (_t, s) = fixture(&["--tcp-max-connections", "500", "--tcp-idle-timeout", "10m"]);
    let idle = open_idle(s.dns, 2_000);
    metric_reaches(&s, "globaldns_tcp_closed_total{kind=\"evicted\"}", 1_500.0);
    let open = metric0(&s, "globaldns_tcp_connections");
    assert!(open <= 500.0, "{open} connections open, cap 500");
    still_serves(&s);
    assert_eq!(
        metric0(&s, "globaldns_tcp_closed_total{kind=\"refused\"}"),
        0.0
    );
    assert_eq!(
        metric0(&s, "globaldns_tcp_closed_total{kind=\"idle\"}"),
        0.0
    );
    drop(idle);
}

/// 1,000 idle TCP connections under the default cap are all cut by the idle timeout while the
/// clients keep them open; a new TCP client is answered afterwards.
#[test]
fn idle_tcp_connections_are_cut_at_the_idle_timeout() {
    let (_t, s) = fixture(&["--tcp-idle-timeout", "2s"]);
    let idle = open_idle(s.dns, 1_000);
    still_serves(&s);
    metric_reaches(&s, "globaldns_tcp_closed_total{kind=\"idle\"}", 1_000.0);
    assert_eq!(metric0(&s, "globaldns_tcp_connections"), 0.0);
    still_serves(&s);
    drop(idle);
}

/// Two threads send queries as fast as they can for 3 s. Meanwhile /healthz is asked again and
/// again (each must answer 200) and a new file is written; its host must be answered. Prints
/// /healthz latencies and how long after the write the change was answered.
#[test]
fn udp_flood_starves_neither_healthz_nor_file_changes() {
    let (_t, s) = fixture(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..2)
        .map(|t| {
            let (stop, sent, dns) = (stop.clone(), sent.clone(), s.dns);
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_nonblocking(true).unwrap();
                let mut packets: Vec<Vec<u8>> = (0..64u16)
                    .map(|i| good_query(&format!("{KNOWN}."), t * 1000 + i))
                    .collect();
                // Misses too: names the answer cache has not seen.
                packets.extend((0..64u16).map(|i| good_query(&format!("n{t}-{i}.bar.global."), i)));
                let mut buf = [0u8; 1500];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for p in &packets {
                        if sock.send_to(p, dns).is_ok() {
                            n += 1;
                        }
                    }
                    while sock.recv_from(&mut buf).is_ok() {}
                }
                sent.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let flood_start = Instant::now();
    let mut healthz = vec![];
    let mut change_seen: Option<Duration> = None;
    let mut written: Option<Instant> = None;
    while flood_start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let (code, _) = s.get("/healthz");
        healthz.push(t.elapsed());
        assert_eq!(code, 200, "/healthz during the flood");
        if written.is_none() && flood_start.elapsed() > Duration::from_millis(500) {
            write_file(
                &s.zones.join("flood.yaml"),
                &se("flood", "x", &["flood.x.global"], &["10.0.0.11"], ""),
            );
            written = Some(Instant::now());
        }
        if let (Some(w), None) = (written, change_seen) {
            // Over TCP: the flood is on UDP.
            if query_a(s.dns, Transport::Tcp, "flood.x.global").is_some() {
                change_seen = Some(w.elapsed());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    // Not seen during the flood: how long after it (a bound printed, not a speed goal).
    let written = written.expect("written during the flood");
    let change_seen = change_seen.unwrap_or_else(|| {
        eventually(Duration::from_secs(20), "flood.x.global answered", || {
            query_a(s.dns, Transport::Tcp, "flood.x.global").map(|_| written.elapsed())
        })
    });
    let queries = sent.load(Ordering::Relaxed);
    healthz.sort();
    let median = healthz[healthz.len() / 2];
    let max = *healthz.last().unwrap();
    eprintln!(
        "UDP flood: {queries} queries sent in 3 s ({:.0}/s); /healthz asked {} times: median {median:?}, max {max:?}; \
         a file written during the flood answered after {change_seen:?}",
        queries as f64 / 3.0,
        healthz.len()
    );
    still_serves(&s);
}

/// Whether every thread of process `pid` is stopped (state `T` in /proc/PID/task/*/stat).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            // The state follows the command name, which is in parentheses.
            .is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
    })
}

/// Queries that arrive while the server cannot run (stopped with SIGSTOP, as a worker starved
/// of CPU would be) are answered once it runs again, and `globaldns_dns_udp_wait_seconds` shows
/// how long each waited in the socket: at least as long as the server was stopped.
#[test]
fn time_queries_waited_in_the_socket_is_reported() {
    let (_t, s) = fixture(&[]);
    let count = "globaldns_dns_udp_wait_seconds_count";
    let sum = "globaldns_dns_udp_wait_seconds_sum";
    let (count0, sum0) = (metric0(&s, count), metric0(&s, sum));
    let pid = s.child.id().to_string();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // kill(1) returns once the signal is sent; a thread running on the other core stops a
    // moment later, and could answer the first query meanwhile.
    eventually(
        Duration::from_secs(10),
        "every server thread stopped",
        || all_threads_stopped(&pid).then_some(()),
    );
    // On loopback a datagram is in the server's socket when send_to returns.
    for id in 0..5u16 {
        sock.send_to(&good_query(&format!("{KNOWN}."), 0x4000 + id), s.dns)
            .unwrap();
    }
    let stopped = Instant::now();
    // The wait under test, not a synchronisation: the server cannot run meanwhile.
    std::thread::sleep(Duration::from_millis(200));
    let held = stopped.elapsed();
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        let (n, _) = sock.recv_from(&mut buf).expect("answer after SIGCONT");
        assert!(
            n >= 12 && buf[0] == 0x40 && buf[3] & 0xF == 0,
            "{:?}",
            &buf[..n.min(12)]
        );
    }
    metric_reaches(&s, count, count0 + 5.0);
    let waited = metric0(&s, sum) - sum0;
    assert!(
        waited >= 5.0 * held.as_secs_f64(),
        "5 queries held {held:?} each reported {waited} s of wait in all"
    );
}
