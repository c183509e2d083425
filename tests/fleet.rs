//! The fleet topology on one machine: a globaldns primary, three globaldns secondaries and a
//! Knot secondary, all TSIG-signed. Changes reach every secondary; with the primary killed they
//! keep answering and say they are stale; the primary back on its address, they catch up; a
//! restarted secondary transfers the zone again; wrong keys and ACLs are refused; a secondary of
//! two primaries converges on one answer set.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "fleet:hmac-sha256:ZmxlZXQtZmxlZXQtZmxlZXQtZmxlZXQtZmxlZXQ=";

const QUESTIONS: [(&str, &str); 6] = [
    ("httpbin.bar.global", "A"),
    ("static.bar.global", "A"),
    ("_http._tcp.httpbin.bar.global", "SRV"),
    ("nope.bar.global", "A"),
    ("bar.global", "A"),
    ("added.bar.global", "A"),
];

/// knotd as a TSIG secondary of `primary` on `port`.
fn knot(dir: &Path, primary: SocketAddr, port: u16) -> Child {
    for d in ["run", "db"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let k: Vec<&str> = KEY.splitn(3, ':').collect();
    let conf = format!(
        "key:\n  - id: {}\n    algorithm: {}\n    secret: {}\n\
         server:\n    rundir: \"{d}/run\"\n    listen: 127.0.0.1@{port}\n    automatic-acl: on\n\
         database:\n    storage: \"{d}/db\"\n\
         remote:\n  - id: primary\n    address: {}@{}\n    key: {}\n\
         zone:\n  - domain: global\n    master: primary\n    file: \"{d}/global.zone\"\n    zonefile-sync: -1\n    journal-content: changes\n",
        k[0],
        k[1],
        k[2],
        primary.ip(),
        primary.port(),
        k[0],
        d = dir.display(),
    );
    std::fs::write(dir.join("knot.conf"), conf).unwrap();
    Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("knotd is installed (the test command installs knot)")
}

fn secondary(t: &Path, name: &str, primaries: &[&str], key: &str) -> Result<Server, String> {
    let state = t.join(name);
    let mut flags = vec!["--tsig-key", key, "--refresh", "1s"];
    for p in primaries {
        flags.extend(["--primary", p]);
    }
    let s = Server::spawn(&t.join("unused-zones"), &state, &flags)?;
    Ok(s)
}

/// A primary on `dns`/`admin` that allows transfers to loopback, signs with KEY and NOTIFYs
/// `notify`.
fn primary_flags<'a>(dns: &'a str, admin: &'a str, notify: &'a str) -> [&'a str; 10] {
    [
        "--listen",
        dns,
        "--admin",
        admin,
        "--allow-transfer",
        "127.0.0.0/8",
        "--tsig-key",
        KEY,
        "--notify",
        notify,
    ]
}

/// Gives `added.bar.global` the address `ip` and waits until the primary answers it; returns
/// the primary's answers then.
fn readdress(dir: &Path, primary: &Server, ip: &str) -> Vec<String> {
    write_file(
        &dir.join("b.yaml"),
        &se("added", "bar", &["added.bar.global"], &[ip], ""),
    );
    eventually(Duration::from_secs(5), "the primary has the change", || {
        let a = answers(primary.dns, &QUESTIONS);
        a[5].contains(ip).then_some(a)
    })
}

fn metric0(s: &Server, name: &str) -> f64 {
    s.metric(name).unwrap_or(0.0)
}

/// What a secondary's `/debug/hosts` lists of a primary's: each served host with its addresses
/// (in address order, from the primary) and ports (sorted); nothing of the sources.
fn as_transferred(primary: &serde_json::Value) -> serde_json::Value {
    let key = |p: &serde_json::Value| {
        (
            p["name"].to_string(),
            p["transport"].to_string(),
            p["number"].as_u64(),
        )
    };
    let mut out = serde_json::Map::new();
    for (host, r) in primary["hosts"].as_object().unwrap() {
        if r["served"] != true {
            continue;
        }
        let mut addresses: Vec<std::net::IpAddr> = r["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["address"].as_str().unwrap().parse().unwrap())
            .collect();
        addresses.sort();
        let addresses: Vec<serde_json::Value> = addresses
            .iter()
            .map(|a| serde_json::json!({"address": a.to_string(), "source": "primary", "objects": []}))
            .collect();
        let mut ports = r["ports"].as_array().unwrap().clone();
        ports.sort_by_key(key);
        let h = serde_json::json!({"served": true, "wildcard": r["wildcard"], "addresses": addresses, "ports": ports, "objects": []});
        out.insert(host.clone(), h);
    }
    assert!(out.len() >= 3, "{primary}");
    serde_json::Value::Object(out)
}

#[test]
fn primary_secondaries_and_knot_stay_in_step() {
    let (t, dir, state) = dirs();
    std::fs::create_dir_all(t.path().join("unused-zones")).unwrap();
    small_mesh(&dir);
    let ports = free_ports(3);
    let (pdns, padmin) = (
        format!("127.0.0.1:{ports}"),
        format!("127.0.0.1:{}", ports + 1),
    );
    let knot_addr = format!("127.0.0.1:{}", ports + 2);
    let pflags = primary_flags(&pdns, &padmin, &knot_addr);
    let primary = Server::start(&dir, &state, &pflags);
    let mut knotd = knot(&t.path().join("knot"), primary.dns, ports + 2);
    let knot: SocketAddr = knot_addr.parse().unwrap();
    let mut secs: Vec<Server> = (0..3)
        .map(|i| {
            let s = secondary(t.path(), &format!("s{i}"), &[&pdns], KEY).unwrap();
            s.wait_ready();
            s
        })
        .collect();
    let want = answers(primary.dns, &QUESTIONS);
    // A secondary's /debug/hosts says what its zone holds: the primary's served hosts with
    // their addresses and ports, from the primary.
    let transferred = as_transferred(&debug_hosts(&primary));
    for s in &secs {
        assert_eq!(answers(s.dns, &QUESTIONS), want, "secondary {}", s.dns);
        let mut listed = debug_hosts(s)["hosts"].clone();
        // The primary's name server's address (its glue) is an address record of the zone too.
        let ns = listed.as_object_mut().unwrap().remove("ns.global");
        assert_eq!(ns.unwrap()["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(listed, transferred, "secondary {}", s.dns);
        // Every host it lists has an address: served.
        let listed = debug_hosts(s)["hosts"].as_object().unwrap().len();
        assert_eq!(s.metric("globaldns_hosts_served"), Some(listed as f64));
    }
    eventually(Duration::from_secs(20), "knot loaded", || {
        (answers(knot, &QUESTIONS) == want).then_some(())
    });

    // A ServiceEntry change is answered by all.
    let want = readdress(&dir, &primary, "10.9.9.1");
    for s in &secs {
        eventually(Duration::from_secs(10), "secondary has it", || {
            (answers(s.dns, &QUESTIONS) == want).then_some(())
        });
        assert!(
            metric0(s, "globaldns_transfers_total{kind=\"ixfr\",result=\"ok\"}") >= 1.0,
            "by IXFR"
        );
    }
    eventually(Duration::from_secs(10), "knot has it", || {
        (answers(knot, &QUESTIONS) == want).then_some(())
    });

    // The primary killed: secondaries keep answering, and say they are stale.
    primary.kill9();
    for s in &secs {
        assert_eq!(answers(s.dns, &QUESTIONS), want);
        eventually(Duration::from_secs(10), "stale in /readyz", || {
            let (_, body) = s.get("/readyz");
            body.contains("stale").then_some(())
        });
    }

    // Back on its address: a new change reaches everyone, staleness clears.
    let primary = Server::start(&dir, &state, &pflags);
    let want = readdress(&dir, &primary, "10.9.9.2");
    for s in &secs {
        eventually(Duration::from_secs(15), "secondary caught up", || {
            let (_, body) = s.get("/readyz");
            (answers(s.dns, &QUESTIONS) == want && !body.contains("stale")).then_some(())
        });
    }
    eventually(Duration::from_secs(15), "knot caught up", || {
        (answers(knot, &QUESTIONS) == want).then_some(())
    });

    // A restarted secondary transfers the whole zone again (this time naming its primary by a
    // host name, resolved at every refresh).
    let s0 = secs.remove(0);
    s0.kill9();
    let by_name = format!("localhost:{ports}");
    let s0 = secondary(t.path(), "s0-again", &[&by_name], KEY).unwrap();
    s0.wait_ready();
    assert_eq!(answers(s0.dns, &QUESTIONS), want);
    assert!(
        metric0(
            &s0,
            "globaldns_transfers_total{kind=\"axfr\",result=\"ok\"}"
        ) >= 1.0
    );

    // A wrong key: refused by the primary, never ready, nothing served.
    let bad = secondary(
        t.path(),
        "bad",
        &[&pdns],
        "fleet:hmac-sha256:d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=",
    )
    .unwrap();
    eventually(Duration::from_secs(10), "refused", || {
        (metric0(
            &bad,
            "globaldns_transfers_total{kind=\"axfr\",result=\"refused\"}",
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(bad.get("/readyz").0, 503);
    assert!(
        metric0(
            &primary,
            "globaldns_transfers_served_total{kind=\"axfr\",result=\"refused\"}"
        ) >= 1.0
    );

    // A primary that allows no one here: refused too.
    let (_t2, dir2, state2) = dirs();
    small_mesh(&dir2);
    let closed = Server::start(
        &dir2,
        &state2,
        &["--allow-transfer", "192.0.2.0/24", "--tsig-key", KEY],
    );
    let outside = secondary(t.path(), "outside", &[&closed.dns.to_string()], KEY).unwrap();
    eventually(Duration::from_secs(10), "ACL refusal", || {
        (metric0(
            &outside,
            "globaldns_transfers_total{kind=\"axfr\",result=\"refused\"}",
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(outside.get("/readyz").0, 503);

    // Two primaries (their serials differ): one answer set.
    let (_t3, dir3, state3) = dirs();
    small_mesh(&dir3);
    write_file(
        &dir3.join("b.yaml"),
        &se("added", "bar", &["added.bar.global"], &["10.9.9.2"], ""),
    );
    let second = Server::start(
        &dir3,
        &state3,
        &["--allow-transfer", "127.0.0.0/8", "--tsig-key", KEY],
    );
    let both = secondary(t.path(), "both", &[&pdns, &second.dns.to_string()], KEY).unwrap();
    both.wait_ready();
    assert_eq!(answers(both.dns, &QUESTIONS), want);
    assert_eq!(
        answers(second.dns, &QUESTIONS),
        want,
        "the two primaries serve the same data"
    );
    let _ = knotd.kill();
    let _ = knotd.wait();
}

/// A globaldns secondary moved by NOTIFY alone (`--refresh 1h`): a change at the primary is
/// answered by it, accepted as NOTIFY from its primary, and followed by IXFR straight away — the
/// NOTIFY carries the primary's new SOA, so the secondary does not ask for it again.
#[test]
fn notify_moves_a_secondary_by_ixfr_without_a_soa_query() {
    let (t, dir, state) = dirs();
    small_mesh(&dir);
    let ports = free_ports(4);
    let addr = |i: u16| format!("127.0.0.1:{}", ports + i);
    let (pdns, padmin, sdns, sadmin) = (addr(0), addr(1), addr(2), addr(3));
    let primary = Server::start(&dir, &state, &primary_flags(&pdns, &padmin, &sdns));
    let s = Server::start_secondary(
        t.path(),
        "s",
        &[
            "--listen",
            &sdns,
            "--admin",
            &sadmin,
            "--primary",
            &pdns,
            "--tsig-key",
            KEY,
            "--refresh",
            "1h",
        ],
    );
    s.wait_ready();
    assert_eq!(answers(s.dns, &QUESTIONS), answers(primary.dns, &QUESTIONS));
    let soa_queries = |p: &Server| {
        metric0(
            p,
            "globaldns_dns_queries_total{qtype=\"SOA\",rcode=\"NOERROR\",transport=\"tcp\"}",
        )
    };
    let soa_before = soa_queries(&primary);
    assert!(
        soa_before >= 1.0,
        "the first load asked the primary for its SOA"
    );

    let want = readdress(&dir, &primary, "10.9.9.1");
    eventually(
        Duration::from_secs(10),
        "the secondary has it by NOTIFY",
        || (answers(s.dns, &QUESTIONS) == want).then_some(()),
    );
    assert!(
        metric0(
            &s,
            "globaldns_notifies_total{kind=\"notify-in\",result=\"accepted\"}"
        ) >= 1.0
    );
    assert!(metric0(&s, "globaldns_transfers_total{kind=\"ixfr\",result=\"ok\"}") >= 1.0);
    assert_eq!(
        soa_queries(&primary),
        soa_before,
        "the secondary asked for the SOA the NOTIFY carried"
    );
}
