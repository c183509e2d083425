//! Secondary mode (`serve --primary`) against a real primary: Knot DNS serving the zone files
//! `globaldns zonefile` writes. The secondary must answer what Knot answers, follow changes by
//! IXFR, refuse to load with a wrong TSIG key, and keep serving (stale) while Knot is down.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const KEY: &str = "xfr:hmac-sha256:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
const WRONG_KEY: &str = "xfr:hmac-sha256:d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=";
const WAIT: Duration = Duration::from_secs(30);

/// knotd as a throw-away primary on a loopback port (as benches/lib/knot.sh runs it), with a
/// journal so that it serves IXFR for every zone-file change it reloads.
struct Knot {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Knot {
    /// Writes the config for `zones` ((apex, file)) and starts knotd.
    fn start(dir: &Path, zones: &[(String, PathBuf)], key: Option<&str>) -> Knot {
        for d in ["run", "db"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let port = free_ports(1);
        let (key_conf, acl_key) = match key {
            Some(k) => {
                let mut parts = k.splitn(3, ':');
                let (name, alg, secret) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                (
                    format!("key:\n  - id: {name}.\n    algorithm: {alg}\n    secret: {secret}\n"),
                    format!("    key: {name}.\n"),
                )
            }
            None => (String::new(), String::new()),
        };
        let mut conf = format!(
            "server:\n    rundir: \"{run}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    \
             tcp-workers: 1\n    background-workers: 1\nlog:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{db}\"\n{key_conf}acl:\n  - id: xfr\n    address: 127.0.0.0/8\n\
             {acl_key}    action: transfer\ntemplate:\n  - id: default\n    zonefile-sync: -1\n    \
             zonefile-load: difference-no-serial\n    journal-content: all\n    \
             semantic-checks: off\n    acl: xfr\nzone:\n",
            run = dir.join("run").display(),
            db = dir.join("db").display(),
        );
        for (apex, file) in zones {
            conf += &format!("  - domain: \"{apex}\"\n    file: \"{}\"\n", file.display());
        }
        std::fs::write(dir.join("knot.conf"), conf).unwrap();
        let mut k = Knot {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        k.run(zones);
        k
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts knotd on the written config and waits until it answers every zone's SOA.
    fn run(&mut self, zones: &[(String, PathBuf)]) {
        let log = std::fs::File::create(self.dir.join("knotd.log")).unwrap();
        self.child = Some(
            Command::new("knotd")
                .arg("-c")
                .arg(self.dir.join("knot.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("knotd is installed (Debian package knot)"),
        );
        for (apex, _) in zones {
            eventually(WAIT, &format!("knotd answers {apex} SOA"), || {
                (dig(self.addr(), &[apex, "SOA"]).status == "NOERROR").then_some(())
            });
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `knotc zone-reload`: Knot loads the changed files as a difference (an IXFR step).
    fn reload(&self) {
        let out = Command::new("knotc")
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .arg("zone-reload")
            .output()
            .unwrap();
        assert!(out.status.success(), "knotc zone-reload: {out:?}");
    }

    fn serial(&self, zone: &str) -> u32 {
        soa_serial(self.addr(), zone).expect("knotd answers its SOA")
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- knotd log (last 40 lines):");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
}

fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let d = dig(server, &[zone, "SOA"]);
    d.answer
        .first()
        .and_then(|r| r.get(6))
        .and_then(|s| s.parse().ok())
}

/// The test's ServiceEntries: the shipped zones/ (wildcard, dual-stack, SRV, two clusters).
fn service_entries(zones: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    for rel in ["examples.yaml", "httpbin.yaml", "west/reviews.yaml"] {
        let to = zones.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(shipped.join(rel), to).unwrap();
    }
}

/// `globaldns zonefile` on `zones`/`state`, split into one file per zone in `out`.
fn write_zone_files(zones: &Path, state: &Path, out: &Path) -> Vec<(String, PathBuf)> {
    let o = Command::new(BIN)
        .args(["zonefile", "--zones"])
        .arg(zones)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert!(o.status.success(), "zonefile: {o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(apex) = line.strip_prefix("$ORIGIN ") {
            files.push((apex.to_string(), String::new()));
        }
        let (_, body) = files.last_mut().expect("$ORIGIN first");
        body.push_str(line);
        body.push('\n');
    }
    std::fs::create_dir_all(out).unwrap();
    files
        .into_iter()
        .map(|(apex, body)| {
            let path = out.join(format!("{apex}zone"));
            write_file(&path, &body);
            (apex, path)
        })
        .collect()
}

/// (status, sorted answer data) of a question, as one server answers it.
fn answer(server: SocketAddr, q: &[&str]) -> (String, Vec<String>) {
    let d = dig(server, q);
    (d.status.clone(), sorted_data(&d))
}

/// Questions whose answers must be the same at Knot and at the secondary.
const QUESTIONS: &[&[&str]] = &[
    &["global", "SOA"],
    &["global", "NS"],
    &["httpbin.bar.global", "A"],
    &["httpbin.bar.global", "AAAA"],
    &["echo.dual.global", "AAAA"],
    &["x.y.wild.global", "A"],
    &["_http._tcp.httpbin.bar.global", "SRV"],
    &["_udp-echo._udp.echo.dual.global", "SRV"],
    &["nope.bar.global", "A"],
    &["bar.global", "A"],
    &["-x", "240.10.169.218"],
    &["10.240.in-addr.arpa", "SOA"],
];

fn secondary(t: &Path, knot: &Knot, extra: &[&str]) -> Result<Server, String> {
    let primary = knot.addr().to_string();
    let mut flags = vec!["--primary", &primary, "--refresh", "200ms"];
    flags.extend_from_slice(extra);
    Server::spawn(&t.join("unused-zones"), &t.join("unused-state"), &flags)
}

fn transfers(s: &Server, kind: &str, result: &str) -> f64 {
    metric0(
        s,
        &format!("globaldns_transfers_total{{kind=\"{kind}\",result=\"{result}\"}}"),
    )
}

fn sorted_axfr(server: SocketAddr, zone: &str) -> Vec<String> {
    let d = dig(server, &[zone, "AXFR"]);
    let mut v: Vec<String> = d
        .raw
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn knot_primary_axfr_then_ixfr() {
    let (t, zones, state) = dirs();
    service_entries(&zones);
    let files = write_zone_files(&zones, &state, &t.path().join("knot-zones"));
    let knot = Knot::start(&t.path().join("knot"), &files, None);
    let s = secondary(t.path(), &knot, &["--allow-transfer", "127.0.0.1/32"]).unwrap();
    s.wait_ready();
    assert_eq!(transfers(&s, "axfr", "ok"), files.len() as f64);

    for q in QUESTIONS {
        assert_eq!(answer(s.dns, q), answer(knot.addr(), q), "{q:?}");
    }
    // The whole zones, record for record (the reverse zone's PTRs derived, not copied).
    for (apex, _) in &files {
        let theirs = sorted_axfr(knot.addr(), apex);
        assert!(theirs.len() > 2, "{apex}: {theirs:?}");
        assert_eq!(sorted_axfr(s.dns, apex), theirs, "{apex}");
    }

    // A new host at the primary: Knot serves it as a delta, the secondary takes it by IXFR.
    write_file(
        &zones.join("new.yaml"),
        &se("fresh", "new", &["fresh.new.global"], &["240.10.200.7"], ""),
    );
    let before = knot.serial("global");
    write_zone_files(&zones, &state, &t.path().join("knot-zones"));
    knot.reload();
    eventually(WAIT, "knot serves the new serial", || {
        (knot.serial("global") != before).then_some(())
    });
    let q: &[&str] = &["fresh.new.global", "A"];
    eventually(WAIT, "the secondary answers the new host", || {
        (answer(s.dns, q).1 == ["240.10.200.7"]).then_some(())
    });
    assert!(
        transfers(&s, "ixfr", "ok") >= 1.0,
        "{}",
        s.get("/metrics").1
    );
    assert_eq!(soa_serial(s.dns, "global"), Some(knot.serial("global")));
    eventually(WAIT, "the PTR of the new host", || {
        (answer(s.dns, &["-x", "240.10.200.7"]).1 == ["fresh.new.global."]).then_some(())
    });
    // The reverse zone's SOA follows on its own loop.
    eventually(WAIT, "every answer Knot's", || {
        QUESTIONS
            .iter()
            .all(|q| answer(s.dns, q) == answer(knot.addr(), q))
            .then_some(())
    });
    assert_eq!(
        metric0(&s, "globaldns_secondary_serial{zone=\"global.\"}"),
        f64::from(knot.serial("global"))
    );
    assert!(metric0(&s, "globaldns_propagation_seconds_count") >= 1.0);
}

/// Sets the SOA serial of zone files `write_zone_files` wrote (whose serial is the time they were
/// written): Knot starts from the file's serial, then steps it by one per reload that changes.
fn set_serial(files: &[(String, PathBuf)], serial: u32) {
    for (_, path) in files {
        let text = std::fs::read_to_string(path).unwrap();
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split_whitespace().collect();
                let s = serial.to_string();
                if f.get(3) == Some(&"SOA") {
                    f[6] = &s;
                    f.join(" ")
                } else {
                    l.to_string()
                }
            })
            .collect();
        write_file(path, &(out.join("\n") + "\n"));
    }
}

#[test]
fn two_primaries_the_newest_serial_is_followed() {
    let (t, zones, state) = dirs();
    service_entries(&zones);
    let dir_a = t.path().join("a-zones");
    let dir_b = t.path().join("b-zones");
    let files_a = write_zone_files(&zones, &state, &dir_a);
    let files_b = write_zone_files(&zones, &state, &dir_b);
    set_serial(&files_a, 1000);
    set_serial(&files_b, 1000);
    let a = Knot::start(&t.path().join("knot-a"), &files_a, None);
    let b = Knot::start(&t.path().join("knot-b"), &files_b, None);
    // B moves ahead (1001) with a host A does not have.
    write_file(
        &zones.join("new.yaml"),
        &se("only", "b", &["only.b.global"], &["240.10.202.1"], ""),
    );
    write_zone_files(&zones, &state, &dir_b);
    b.reload();
    eventually(WAIT, "B at 1001", || {
        (b.serial("global") == 1001).then_some(())
    });

    let pb = b.addr().to_string();
    let s = secondary(t.path(), &a, &["--primary", &pb]).unwrap();
    s.wait_ready();
    let q: &[&str] = &["only.b.global", "A"];
    assert_eq!(answer(s.dns, q).1, ["240.10.202.1"], "B's zone, the newest");
    assert_eq!(soa_serial(s.dns, "global"), Some(1001));
    eventually(WAIT, "A's older serial logged as ignored", || {
        s.log_contains("primary is behind us").then_some(())
    });
    assert_eq!(answer(s.dns, q).1, ["240.10.202.1"], "never back to A's");

    // A at 1001 too, with other contents: not newer, nothing changes.
    write_file(
        &zones.join("new2.yaml"),
        &se("later", "a", &["later.a.global"], &["240.10.203.1"], ""),
    );
    write_zone_files(&zones, &state, &dir_a);
    a.reload();
    eventually(WAIT, "A at 1001", || {
        (a.serial("global") == 1001).then_some(())
    });
    // A at 1002: followed, by AXFR (A's serials are not B's: an IXFR from 1001 would apply A's
    // delta to B's zone).
    std::fs::remove_file(zones.join("new.yaml")).unwrap();
    write_zone_files(&zones, &state, &dir_a);
    a.reload();
    eventually(WAIT, "the secondary follows A to 1002", || {
        (soa_serial(s.dns, "global") == Some(1002)).then_some(())
    });
    assert_eq!(answer(s.dns, &["later.a.global", "A"]).1, ["240.10.203.1"]);
    assert_eq!(answer(s.dns, q).0, "NXDOMAIN", "A's answer set, whole");
    // The reverse zone follows on its own loop.
    eventually(WAIT, "every answer A's", || {
        QUESTIONS
            .iter()
            .all(|q| answer(s.dns, q) == answer(a.addr(), q))
            .then_some(())
    });
}

/// A secondary stays with the primary its zone came from while another replica's serial runs
/// ahead (the replicas count serials on their own; a switch costs a whole zone): its own
/// primary's next serials are followed by IXFR, the other's contents never served.
#[test]
fn a_secondary_stays_with_its_primary_while_another_is_briefly_ahead() {
    let (t, zones, state) = dirs();
    service_entries(&zones);
    let (dir_a, dir_b) = (t.path().join("a-zones"), t.path().join("b-zones"));
    let files_a = write_zone_files(&zones, &state, &dir_a);
    let files_b = write_zone_files(&zones, &state, &dir_b);
    set_serial(&files_a, 1000);
    set_serial(&files_b, 1001);
    let a = Knot::start(&t.path().join("knot-a"), &files_a, None);
    let b = Knot::start(&t.path().join("knot-b"), &files_b, None);
    let (pa, pb) = (a.addr().to_string(), b.addr().to_string());
    let s = Server::spawn(
        &t.path().join("unused-zones"),
        &t.path().join("unused-state"),
        // Stays up to 3 refreshes (6 s) with B while A is ahead.
        &["--primary", &pa, "--primary", &pb, "--refresh", "2s"],
    )
    .unwrap();
    s.wait_ready();
    assert_eq!(soa_serial(s.dns, "global"), Some(1001), "B's, the newest");
    let axfrs = transfers(&s, "axfr", "ok");

    // A runs three serials ahead with its own hosts; then B moves on twice with others.
    let step = |knot: &Knot, dir: &Path, file: &str, host: &str, ip: &str, serial: u32| {
        write_file(
            &zones.join(file),
            &se(host, "x", &[&format!("{host}.x.global")], &[ip], ""),
        );
        write_zone_files(&zones, &state, dir);
        std::fs::remove_file(zones.join(file)).unwrap();
        knot.reload();
        eventually(WAIT, "the primary's serial moved", || {
            (knot.serial("global") == serial).then_some(())
        });
    };
    for (i, serial) in [1001, 1002, 1003].into_iter().enumerate() {
        step(
            &a,
            &dir_a,
            "a.yaml",
            &format!("a{i}"),
            &format!("240.10.204.{}", i + 1),
            serial,
        );
    }
    step(&b, &dir_b, "b.yaml", "b0", "240.10.205.1", 1002);
    step(&b, &dir_b, "b.yaml", "b1", "240.10.205.2", 1003);

    eventually(WAIT, "B's 1003 followed", || {
        (soa_serial(s.dns, "global") == Some(1003)).then_some(())
    });
    assert_eq!(answer(s.dns, &["b1.x.global", "A"]).1, ["240.10.205.2"]);
    for i in 0..3 {
        assert_eq!(
            answer(s.dns, &[&format!("a{i}.x.global"), "A"]).0,
            "NXDOMAIN",
            "A's hosts"
        );
    }
    assert_eq!(
        transfers(&s, "axfr", "ok"),
        axfrs,
        "no switch to A, no whole zone"
    );
    assert!(transfers(&s, "ixfr", "ok") >= 1.0);
}

#[test]
fn tsig_signed_transfers_and_a_wrong_key_refused() {
    let (t, zones, state) = dirs();
    service_entries(&zones);
    let files = write_zone_files(&zones, &state, &t.path().join("knot-zones"));
    let knot = Knot::start(&t.path().join("knot"), &files, Some(KEY));

    let good = secondary(t.path(), &knot, &["--tsig-key", KEY]).unwrap();
    good.wait_ready();
    let q: &[&str] = &["httpbin.bar.global", "A"];
    assert_eq!(answer(good.dns, q), answer(knot.addr(), q));

    let bad = secondary(t.path(), &knot, &["--tsig-key", WRONG_KEY]).unwrap();
    eventually(WAIT, "the wrong key's transfers counted as refused", || {
        (transfers(&bad, "axfr", "refused") >= 2.0).then_some(())
    });
    let (code, body) = bad.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("pending: primary global."), "{body}");
    assert_eq!(dig(bad.dns, q).status, "SERVFAIL");
    assert_eq!(transfers(&bad, "axfr", "ok"), 0.0);
}

#[test]
fn primary_down_serves_stale_then_catches_up() {
    let (t, zones, state) = dirs();
    service_entries(&zones);
    let files = write_zone_files(&zones, &state, &t.path().join("knot-zones"));
    let mut knot = Knot::start(&t.path().join("knot"), &files, None);
    let s = secondary(t.path(), &knot, &[]).unwrap();
    s.wait_ready();
    let q: &[&str] = &["httpbin.bar.global", "A"];
    let served = answer(s.dns, q);
    assert_eq!(served.0, "NOERROR");

    knot.kill9();
    let body = eventually(WAIT, "/readyz names the zone stale", || {
        let (code, body) = s.get("/readyz");
        (code == 200 && body.contains("stale: primary global.")).then_some(body)
    });
    assert!(body.starts_with("ready"), "{body}");
    assert_eq!(answer(s.dns, q), served, "the last zone is still served");
    assert_eq!(
        metric0(&s, "globaldns_secondary_stale{zone=\"global.\"}"),
        1.0
    );

    // Back, with a change made meanwhile.
    write_file(
        &zones.join("new.yaml"),
        &se("late", "new", &["late.new.global"], &["240.10.201.9"], ""),
    );
    write_zone_files(&zones, &state, &t.path().join("knot-zones"));
    knot.run(&files);
    eventually(WAIT, "the secondary catches up", || {
        (answer(s.dns, &["late.new.global", "A"]).1 == ["240.10.201.9"]).then_some(())
    });
    eventually(WAIT, "no longer stale", || {
        (!s.get("/readyz").1.contains("stale")).then_some(())
    });
    assert_eq!(
        metric0(&s, "globaldns_secondary_stale{zone=\"global.\"}"),
        0.0
    );
}

#[test]
fn primary_with_kubernetes_flags_is_refused() {
    let (t, zones, state) = dirs();
    let _ = t;
    let err = Server::spawn(
        &zones,
        &state,
        &["--primary", "127.0.0.1:53", "--store", "kube"],
    )
    .err()
    .expect("refused at start");
    assert!(
        err.contains("cannot be combined with Kubernetes flags"),
        "{err}"
    );
}

/// What the scripted primary serves for `global.`: (serial, A records as (host, address)), and
/// how it spoils its transfers.
#[derive(Clone, Default)]
struct Script {
    serial: u32,
    hosts: Vec<(&'static str, &'static str)>,
    /// IXFR: a delta that deletes a record the secondary does not have (an address of a host it
    /// has), after one it has.
    bad_ixfr: bool,
    /// AXFR: a record outside the zone.
    bad_axfr: bool,
    /// The last host's records with TTL 60, the others' 30.
    mixed_ttl: bool,
    /// Per IXFR request for `global.` received: whether it carried a content digest (EDNS
    /// option 65310).
    ixfr_digests: Vec<bool>,
}

/// A primary made of a few lines, for transfers Knot would never send: answers SOA, AXFR and
/// IXFR for any zone asked (only `global.` has records), one TCP message per answer.
fn scripted_primary(script: std::sync::Arc<std::sync::Mutex<Script>>) -> SocketAddr {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::opt::EdnsCode;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut len = [0u8; 2];
            if conn.read_exact(&mut len).is_err() {
                continue;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if conn.read_exact(&mut buf).is_err() {
                continue;
            }
            let q = Message::from_vec(&buf).unwrap();
            let query = q.queries[0].clone();
            let zone = query.name().clone();
            if query.query_type() == RecordType::IXFR
                && zone == Name::from_ascii("global.").unwrap()
            {
                let digest = q
                    .edns
                    .as_ref()
                    .and_then(|e| e.option(EdnsCode::Unknown(65_310)));
                script.lock().unwrap().ixfr_digests.push(digest.is_some());
            }
            let s = script.lock().unwrap().clone();
            let n = |x: &str| Name::from_ascii(x).unwrap();
            let soa = |serial: u32| {
                Record::from_rdata(
                    zone.clone(),
                    30,
                    RData::SOA(SOA::new(
                        n("ns.global."),
                        n("h.global."),
                        serial,
                        1,
                        1,
                        1,
                        30,
                    )),
                )
            };
            let a_ttl = |host: &str, ip: &str, ttl| {
                Record::from_rdata(n(host), ttl, RData::A(A(ip.parse().unwrap())))
            };
            let a = |host: &str, ip: &str| a_ttl(host, ip, 30);
            let global = zone == n("global.");
            let mut full: Vec<Record> = vec![soa(s.serial)];
            if global {
                let last = s.hosts.len().saturating_sub(1);
                full.extend(s.hosts.iter().enumerate().map(|(i, (h, ip))| {
                    a_ttl(h, ip, if s.mixed_ttl && i == last { 60 } else { 30 })
                }));
                if s.bad_axfr {
                    full.push(a("outside.example.", "240.10.9.9"));
                }
            }
            full.push(soa(s.serial));
            let answers = match query.query_type() {
                RecordType::SOA => vec![soa(s.serial)],
                RecordType::IXFR if global && s.bad_ixfr => {
                    let old = match &q.authorities[0].data {
                        RData::SOA(o) => o.serial,
                        _ => unreachable!(),
                    };
                    vec![
                        soa(s.serial),
                        soa(old),
                        a("a.global.", "240.10.0.1"),
                        a("a.global.", "240.10.9.8"),
                        soa(s.serial),
                        soa(s.serial),
                    ]
                }
                _ => full,
            };
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.authoritative = true;
            m.add_query(query);
            for r in answers {
                m.add_answer(r);
            }
            let out = m.to_vec().unwrap();
            let _ = conn.write_all(&(out.len() as u16).to_be_bytes());
            let _ = conn.write_all(&out);
        }
    });
    addr
}

/// A secondary (refresh 100 ms) of a scripted primary serving a.global at serial 10, loaded.
fn secondary_of_script() -> (
    tempfile::TempDir,
    std::sync::Arc<std::sync::Mutex<Script>>,
    Server,
) {
    let (t, _zones, _state) = dirs();
    let script = std::sync::Arc::new(std::sync::Mutex::new(Script {
        serial: 10,
        hosts: vec![("a.global.", "240.10.0.1")],
        ..Default::default()
    }));
    let primary = scripted_primary(script.clone()).to_string();
    let s = Server::spawn(
        &t.path().join("z"),
        &t.path().join("s"),
        &["--primary", &primary, "--refresh", "100ms"],
    )
    .unwrap();
    s.wait_ready();
    (t, script, s)
}

#[test]
fn invalid_transfers_fall_back_or_keep_the_last_good_zone() {
    let (_t, script, s) = secondary_of_script();
    assert_eq!(answer(s.dns, &["a.global", "A"]).1, ["240.10.0.1"]);

    // A delta deleting what we do not have: the IXFR is refused, an AXFR brings the zone.
    {
        let mut sc = script.lock().unwrap();
        sc.serial = 11;
        sc.hosts.push(("b.global.", "240.10.0.2"));
        sc.bad_ixfr = true;
    }
    eventually(WAIT, "b.global by AXFR after the bad IXFR", || {
        (answer(s.dns, &["b.global", "A"]).1 == ["240.10.0.2"]).then_some(())
    });
    assert!(transfers(&s, "ixfr", "invalid") >= 1.0);
    assert_eq!(soa_serial(s.dns, "global"), Some(11));

    // Both spoiled: the last good zone stays, counted as invalid.
    {
        let mut sc = script.lock().unwrap();
        sc.serial = 12;
        sc.hosts.push(("c.global.", "240.10.0.3"));
        sc.bad_axfr = true;
    }
    eventually(WAIT, "the invalid AXFR counted", || {
        (transfers(&s, "axfr", "invalid") >= 2.0).then_some(())
    });
    assert_eq!(soa_serial(s.dns, "global"), Some(11));
    assert_eq!(answer(s.dns, &["c.global", "A"]).0, "NXDOMAIN");
    assert_eq!(answer(s.dns, &["b.global", "A"]).1, ["240.10.0.2"]);
    assert_eq!(answer(s.dns, &["outside.example", "A"]).0, "REFUSED");
    assert!(metric0(&s, "globaldns_secondary_lag_seconds{zone=\"global.\"}") > 0.0);
    assert_eq!(s.get("/readyz").0, 200);
}

/// The secondary holds no TTL per record: it sends its content digest with an IXFR while its
/// zone's records share one TTL, and none while they do not (it could not count a deleted
/// record out of the digest), asking by serial alone until a whole zone shares one again.
#[test]
fn the_content_digest_is_sent_only_while_the_records_share_one_ttl() {
    let (_t, script, s) = secondary_of_script();
    let hosts = ["b.global.", "c.global.", "d.global.", "e.global."];
    // (mixed TTLs from this serial on, whether the IXFR asking for it carries a digest)
    let steps = [
        (false, true),
        (true, true),
        (true, false),
        (false, false),
        (false, true),
    ];
    for (i, (mixed, digest)) in steps.into_iter().enumerate() {
        let serial = 11 + i as u32;
        {
            let mut sc = script.lock().unwrap();
            sc.serial = serial;
            sc.mixed_ttl = mixed;
            if let Some(h) = hosts.get(i) {
                sc.hosts.push((h, "240.10.0.9"));
            }
        }
        eventually(WAIT, &format!("serial {serial} served"), || {
            (soa_serial(s.dns, "global") == Some(serial)).then_some(())
        });
        let asked = script.lock().unwrap().ixfr_digests.last().copied();
        assert_eq!(asked, Some(digest), "the IXFR for serial {serial}");
    }
}
