//! globaldns behind a real caching resolver, standing in for CoreDNS's stub domain: dnsmasq on
//! loopback forwards `global` and `10.240.in-addr.arpa` to the server. What the resolver hands to
//! clients must be what the server meant: same positive data, NODATA kept NODATA, NXDOMAIN kept
//! NXDOMAIN, and negative answers cached exactly for the SOA minimum (= `--ttl`).

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dnsmasq instance of our own on a free loopback port. Killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn dnsmasq_installed() {
    if Command::new("dnsmasq")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "dnsmasq is not installed: these tests need it as the resolver in front of globaldns. \
             The test command (scripts/test.sh) installs it; by hand: \
             `apt-get install -y dnsmasq-base` (the binary only, no system service)."
        );
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Starts dnsmasq forwarding the zone and the VIP reverse zone to `upstream`, and waits until it
/// answers.
fn start_dnsmasq(upstream: SocketAddr) -> Dnsmasq {
    dnsmasq_installed();
    let dir = tempfile::tempdir().unwrap();
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let port = free_ports(1);
        let conf = dir.path().join("dnsmasq.conf");
        let log = dir.path().join("dnsmasq.log");
        let mut text = format!(
            "no-resolv\n\
             server=/global/{ip}#{up}\n\
             server=/10.240.in-addr.arpa/{ip}#{up}\n\
             port={port}\n\
             min-port=32768\n\
             listen-address=127.0.0.1\n\
             bind-interfaces\n\
             no-hosts\n\
             log-queries\n\
             log-facility=-\n\
             cache-size=1000\n\
             pid-file=\n",
            ip = upstream.ip(),
            up = upstream.port(),
        );
        if running_as_root() {
            // Stay root instead of switching to a `dnsmasq`/`nobody` user that may not exist.
            text.push_str("user=root\n");
        }
        std::fs::write(&conf, text).unwrap();
        let mut child = Command::new("dnsmasq")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--keep-in-foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn dnsmasq");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        let up = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break false; // e.g. the port was taken in the meantime: try another.
            }
            // dnsmasq answers for its own sake once listening: a name it has no server for.
            let d = dig(addr, &["+time=1", "+tries=1", "dnsmasq-probe.invalid"]);
            if !d.status.is_empty() {
                break true;
            }
            if started.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        last_log = std::fs::read_to_string(&log).unwrap_or_default();
        if up {
            return Dnsmasq {
                child,
                addr,
                log,
                _dir: dir,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("dnsmasq did not come up:\n{last_log}");
}

/// A recursive query (RD set) to the resolver.
fn via(r: &Dnsmasq, args: &[&str]) -> Dig {
    let mut all = vec!["+rec"];
    all.extend_from_slice(args);
    let d = dig(r.addr, &all);
    assert!(
        !d.status.is_empty(),
        "no answer from dnsmasq to {args:?}:\n{}\n--- dnsmasq log ---\n{}",
        d.raw,
        r.log()
    );
    d
}

#[test]
fn resolver_passes_positive_answers_through() {
    let (_t, s) = fixture(&[]);
    let r = start_dnsmasq(s.dns);
    let vip = dig(s.dns, &["httpbin.bar.global"]).answer_data();
    assert_eq!(vip.len(), 1);
    let args: Vec<Vec<&str>> = vec![
        vec!["httpbin.bar.global", "A"],
        vec!["static.bar.global", "A"],
        vec!["static.bar.global", "AAAA"],
        vec!["multi.bar.global", "A"],
        vec!["vipboth.bar.global", "A"],
        vec!["x.wild.global", "A"],
        vec!["foo.a.mix.global", "A"],
        vec!["exact.mix.global", "A"],
        vec!["_http._tcp.httpbin.bar.global", "SRV"],
        vec!["-x", &vip[0]],
        // Not 240.10.8.8 (two PTR): dnsmasq's cache hands back only one name of a PTR RRset.
    ];
    for a in &args {
        let direct = dig(s.dns, a);
        assert_eq!(direct.status, "NOERROR", "{a:?} direct:\n{}", direct.raw);
        assert!(!direct.answer.is_empty(), "{a:?} direct:\n{}", direct.raw);
        // Twice: forwarded, then from the resolver's cache.
        for round in ["forwarded", "cached"] {
            let d = via(&r, a);
            assert_eq!(
                d.status, "NOERROR",
                "{a:?} via dnsmasq ({round}):\n{}",
                d.raw
            );
            assert_eq!(
                sorted_data(&d),
                sorted_data(&direct),
                "{a:?} via dnsmasq ({round}): same data as direct"
            );
            for rec in &d.answer {
                let ttl: u32 = rec[1].parse().unwrap();
                assert!(ttl <= 30, "{a:?}: TTL {ttl} beyond ours");
            }
        }
    }
    let log = r.log();
    assert!(
        log.contains("forwarded httpbin.bar.global to 127.0.0.1"),
        "dnsmasq forwarded to globaldns:\n{log}"
    );
    assert!(
        log.contains("cached httpbin.bar.global is"),
        "the second query came from dnsmasq's cache:\n{log}"
    );
}

#[test]
fn resolver_keeps_nodata_and_nxdomain_apart() {
    let (_t, s) = fixture(&[]);
    let r = start_dnsmasq(s.dns);
    for (qname, rtype, status) in [
        ("only4.bar.global", "AAAA", "NOERROR"),
        ("httpbin.bar.global", "AAAA", "NOERROR"),
        ("bar.global", "A", "NOERROR"),
        ("wild.global", "A", "NOERROR"),
        ("nope.bar.global", "A", "NXDOMAIN"),
        ("none.bar.global", "A", "NXDOMAIN"),
        ("deep.nope.global", "AAAA", "NXDOMAIN"),
    ] {
        let direct = dig(s.dns, &[qname, rtype]);
        assert_eq!(
            direct.status, status,
            "{qname} {rtype} direct:\n{}",
            direct.raw
        );
        assert!(direct.answer.is_empty());
        for round in ["forwarded", "cached"] {
            let d = via(&r, &[qname, rtype]);
            assert_eq!(
                d.status, status,
                "{qname} {rtype} via dnsmasq ({round}): the resolver must keep {status}:\n{}",
                d.raw
            );
            assert!(
                d.answer.is_empty(),
                "{qname} {rtype} via dnsmasq ({round}): no answer:\n{}",
                d.raw
            );
            assert!(
                d.authority
                    .iter()
                    .any(|f| f[3] == "SOA" && f[0] == "global."),
                "{qname} {rtype} via dnsmasq ({round}): the SOA (negative TTL) is passed on:\n{}",
                d.raw
            );
        }
        let log = r.log();
        assert!(
            log.contains(&format!("cached {qname} is")),
            "{qname}: the negative answer was cached by dnsmasq:\n{log}"
        );
    }
    // An ENT stays NODATA for every type a client asks, also after NXDOMAIN-looking siblings.
    let d = via(&r, &["bar.global", "AAAA"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
}

#[test]
fn resolver_caches_nxdomain_for_the_soa_minimum() {
    let (_t, s) = fixture(&["--ttl", "2"]);
    let r = start_dnsmasq(s.dns);
    let host = "late.bar.global";

    // The server says the SOA minimum is 2 s.
    let d = dig(s.dns, &[host]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(
        d.authority[0].last().map(String::as_str),
        Some("2"),
        "SOA minimum = --ttl 2:\n{}",
        d.raw
    );

    // The resolver learns the NXDOMAIN.
    let first = Instant::now();
    let d = via(&r, &[host]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);

    // The name appears; the server answers it directly at once.
    write_file(
        &s.zones.join("late.yaml"),
        &se("late", "bar", &[host], &["10.77.0.1"], ""),
    );
    eventually(
        Duration::from_secs(5),
        "server answers the new name",
        || {
            let d = dig(s.dns, &[host]);
            (d.status == "NOERROR" && d.answer_data() == vec!["10.77.0.1"]).then_some(())
        },
    );
    let direct_after = first.elapsed();
    assert!(
        direct_after < Duration::from_millis(1500),
        "the server took {direct_after:?} to pick up the file; too close to the 2 s negative TTL \
         to observe the cached NXDOMAIN"
    );

    // ...but the resolver still holds the NXDOMAIN it cached.
    let d = via(&r, &[host]);
    assert_eq!(
        d.status,
        "NXDOMAIN",
        "dnsmasq must serve the cached NXDOMAIN within its 2 s negative TTL ({:?} after the \
         first query):\n{}",
        first.elapsed(),
        d.raw
    );
    let log = r.log();
    assert!(
        log.contains(&format!("cached {host} is NXDOMAIN")),
        "the NXDOMAIN came from dnsmasq's cache:\n{log}"
    );

    // Once the negative TTL ran out, the resolver asks again and gets the address.
    eventually(
        Duration::from_secs(6),
        "resolver answers the new name after the negative TTL",
        || {
            let d = via(&r, &[host]);
            (d.status == "NOERROR").then_some(d)
        },
    );
    let expired_after = first.elapsed();
    let d = via(&r, &[host]);
    assert_eq!(d.answer_data(), vec!["10.77.0.1"], "{}", d.raw);
    assert!(
        expired_after >= Duration::from_millis(900),
        "the NXDOMAIN was cached only {expired_after:?}: the SOA minimum is 2 s"
    );
    assert!(
        expired_after <= Duration::from_millis(3500),
        "the NXDOMAIN was cached {expired_after:?}: longer than the 2 s SOA minimum"
    );
}

#[test]
fn resolver_caches_nodata_for_the_soa_minimum() {
    let (_t, s) = fixture(&["--ttl", "2"]);
    let r = start_dnsmasq(s.dns);
    let host = "only4.bar.global";

    let first = Instant::now();
    let d = via(&r, &[host, "AAAA"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert!(d.answer.is_empty(), "{}", d.raw);

    // Give the host an IPv6 address.
    let main = s.zones.join("main.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    write_file(
        &main,
        &text.replace("[10.1.2.5]", "[10.1.2.5, \"fd00:4::4\"]"),
    );
    eventually(Duration::from_secs(5), "server answers the AAAA", || {
        (dig(s.dns, &[host, "AAAA"]).answer_data() == vec!["fd00:4::4"]).then_some(())
    });
    if first.elapsed() < Duration::from_millis(1500) {
        let d = via(&r, &[host, "AAAA"]);
        assert!(
            d.status == "NOERROR" && d.answer.is_empty(),
            "dnsmasq must still serve the cached NODATA within the 2 s negative TTL:\n{}",
            d.raw
        );
    }
    eventually(
        Duration::from_secs(6),
        "resolver answers the AAAA after the negative TTL",
        || (via(&r, &[host, "AAAA"]).answer_data() == vec!["fd00:4::4"]).then_some(()),
    );
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "the NODATA was cached only {:?}",
        first.elapsed()
    );
}

/// Two clusters' resolvers, each forwarding to its own cluster's instance: the same name resolves
/// to each cluster's own Istio allocation, as CoreDNS would hand it to that cluster's pods.
#[test]
fn each_clusters_resolver_gets_its_home_clusters_answer() {
    let status = |host: &str, ip: &str| {
        format!("status:\n  addresses:\n  - {{value: \"{ip}\", host: \"{host}\"}}\n")
    };
    let host = "istio.bar.global";
    let files = [
        (
            "home.yaml",
            se("istio", "bar", &[host], &[], &status(host, "240.240.0.5")),
        ),
        (
            "west/home.yaml",
            se("istio", "bar", &[host], &[], &status(host, "240.240.0.9")),
        ),
    ];
    let (_tl, local) = start_fixture(&[], &files);
    let (_tw, west) = start_fixture(&["--cluster-name", "west"], &files);
    for (server, want) in [(&local, "240.240.0.5"), (&west, "240.240.0.9")] {
        let r = start_dnsmasq(server.dns);
        for round in ["forwarded", "cached"] {
            let d = via(&r, &[host, "A"]);
            assert_eq!(d.status, "NOERROR", "{round}:\n{}", d.raw);
            assert_eq!(
                sorted_data(&d),
                vec![want.to_string()],
                "{round}:\n{}",
                d.raw
            );
        }
    }
}
