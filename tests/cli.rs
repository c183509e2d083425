//! The command line: `check`, `allocations`, `zonefile`, configuration through `GLOBALDNS_*`
//! environment variables, and `--help`.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cli")
        .join(name)
}

/// Variables that would change the outcome if the caller's environment happened to set them.
const ENV_VARS: [&str; 8] = [
    "GLOBALDNS_TTL",
    "GLOBALDNS_VIP_RANGE",
    "GLOBALDNS_STATE_DIR",
    "GLOBALDNS_ZONES",
    "GLOBALDNS_ZONE",
    "GLOBALDNS_VIP_HOLD",
    "GLOBALDNS_LOG_FORMAT",
    "GLOBALDNS_NS",
];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(files: &[&Path], extra: &[&str]) -> Out {
    let mut args: Vec<String> = vec!["check".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, &[])
}

/// `check` host lines: host → (addresses-or-NOT SERVED, ports, from).
fn check_lines(stdout: &str) -> BTreeMap<String, (String, String, String)> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "check line has 4 tab-separated fields: {l:?}");
            let ports = f[2]
                .strip_prefix("ports: ")
                .unwrap_or_else(|| panic!("{l:?}"));
            let from = f[3]
                .strip_prefix("from: ")
                .unwrap_or_else(|| panic!("{l:?}"));
            (
                f[0].to_string(),
                (f[1].to_string(), ports.to_string(), from.to_string()),
            )
        })
        .collect()
}

fn summary(stdout: &str) -> String {
    stdout
        .lines()
        .rfind(|l| l.starts_with("# "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
        .to_string()
}

/// The VIP in a `check` address field like `240.10.1.2 (vip)`.
fn vip_in(field: &str) -> Ipv4Addr {
    field
        .split(", ")
        .find_map(|a| a.strip_suffix(" (vip)"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 VIP in {field:?}"))
}

fn copy_into(zones: &Path, file: &str) {
    std::fs::copy(data(file), zones.join(file)).unwrap();
}

// ---------------------------------------------------------------------------------------------

#[test]
fn check_valid_file_prints_every_host_and_exits_0() {
    let out = check(&[&data("valid.yaml")], &[]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        !out.stderr.contains("error:") && !out.stderr.contains("warning:"),
        "no problems reported for a valid file: {}",
        out.stderr
    );
    let lines = check_lines(&out.stdout);
    assert_eq!(
        lines.keys().collect::<Vec<_>>(),
        [
            "httpbin.bar.global",
            "legacy.bar.global",
            "passthrough.infra.global",
            "resolver.infra.global"
        ],
        "{}",
        out.stdout
    );
    let range: ipnet::Ipv4Net = "240.10.0.0/16".parse().unwrap();

    let (addrs, ports, from) = &lines["httpbin.bar.global"];
    assert!(range.contains(&vip_in(addrs)), "{addrs}");
    assert!(
        ports.contains("_http._tcp:8000") && ports.contains("_grpc._tcp:9000"),
        "{ports}"
    );
    assert_eq!(from, "local/bar/httpbin-bar");

    let (addrs, ports, from) = &lines["legacy.bar.global"];
    assert_eq!(addrs, "10.20.0.7 (spec)");
    assert_eq!(ports, "_tcp-app._tcp:7070");
    assert_eq!(from, "local/bar/legacy");

    let (addrs, ports, _) = &lines["resolver.infra.global"];
    assert!(range.contains(&vip_in(addrs)), "{addrs}");
    assert_eq!(ports, "_dns._udp:53", "UDP protocol gives an _udp SRV port");

    let (addrs, _, from) = &lines["passthrough.infra.global"];
    assert!(
        addrs.starts_with("NOT SERVED: ") && addrs.len() > "NOT SERVED: ".len(),
        "a known host that is not served says why: {addrs}"
    );
    assert_eq!(from, "local/infra/passthrough");
    assert_eq!(
        summary(&out.stdout),
        "# 1 files, 4 hosts (3 served), 0 problems"
    );
}

#[test]
fn check_invalid_files_exit_1_and_name_file_and_object() {
    // YAML syntax error: the file (and where in it).
    let out = check(&[&data("syntax-error.yaml")], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert!(
        err.iter().any(|l| l.contains("syntax-error.yaml")),
        "stderr names the file: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("line 9"),
        "the syntax error says where: {}",
        out.stderr
    );
    assert!(
        summary(&out.stdout).ends_with(" 1 problems"),
        "{}",
        out.stdout
    );

    // Schema error: file and object; the valid neighbour is still listed.
    let out = check(&[&data("schema-error.yaml")], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.lines().any(|l| l.starts_with("error:")
            && l.contains("schema-error.yaml")
            && l.contains("wrong-shape")),
        "stderr names file and object: {}",
        out.stderr
    );
    let lines = check_lines(&out.stdout);
    assert_eq!(lines["fine.bar.global"].0, "10.20.0.8 (spec)");

    // Invalid hosts: `*` alone and `a_b.global`.
    let out = check(&[&data("bad-hosts.yaml")], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for (object, host) in [("star", "\"*\""), ("underscore", "a_b.global")] {
        assert!(
            out.stderr
                .lines()
                .any(|l| (l.starts_with("error:") || l.starts_with("warning:"))
                    && l.contains("bad-hosts.yaml")
                    && l.contains(object)
                    && l.contains(host)),
            "stderr names file, object {object} and host {host}: {}",
            out.stderr
        );
    }
    let lines = check_lines(&out.stdout);
    assert!(
        lines.contains_key("ok-too.bar.global") && !lines.contains_key("a_b.global"),
        "{}",
        out.stdout
    );
    assert!(
        summary(&out.stdout).ends_with(" 2 problems"),
        "{}",
        out.stdout
    );

    // A missing file is a problem too, and valid files next to bad ones are still reported.
    let missing = data("does-not-exist.yaml");
    let out = check(
        &[&data("valid.yaml"), &missing, &data("schema-error.yaml")],
        &[],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does-not-exist.yaml"), "{}", out.stderr);
    let lines = check_lines(&out.stdout);
    assert!(lines.contains_key("httpbin.bar.global") && lines.contains_key("fine.bar.global"));
}

#[test]
fn check_directory_with_cluster_subdirectories() {
    let out = check(&[&data("tree")], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let lines = check_lines(&out.stdout);
    let (addrs, ports, from) = &lines["shared.mesh.global"];
    assert_eq!(
        addrs, "10.30.0.1 (spec)",
        "a host the home cluster lists: its addresses only"
    );
    assert_eq!(ports, "_http._tcp:80");
    assert_eq!(from, "local/mesh/shared west/mesh/shared");
    assert_eq!(lines["west-only.mesh.global"].2, "west/mesh/west-only");
    assert!(lines["west-only.mesh.global"].0.ends_with(" (vip)"));
    assert_eq!(
        lines["east-only.mesh.global"].2, "east/mesh/east-only",
        "a nested directory belongs to its first-level cluster"
    );
    assert_eq!(
        summary(&out.stdout),
        "# 3 files, 3 hosts (3 served), 0 problems",
        "README.txt is not a YAML file"
    );
    // Seen from a cluster that does not list it: the union of the others' addresses.
    let out = check(&[&data("tree")], &["--cluster-name", "east"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        check_lines(&out.stdout)["shared.mesh.global"].0,
        "10.30.0.1 (spec), 10.30.0.2 (spec)",
        "addresses are the union over the other clusters"
    );
}

#[test]
fn check_shows_the_servers_vips_with_state_dir_and_never_writes_it() {
    let (_t, zones, state) = dirs();
    // A host that takes httpbin's preferred slot first, so that httpbin's VIP depends on history.
    let want = fnv1a64("httpbin.bar.global") % (1 << 16);
    let squatter = (0..10_000_000u64)
        .map(|i| format!("squat-{i}.bar.global"))
        .find(|h| fnv1a64(h) % (1 << 16) == want)
        .unwrap();
    write_file(
        &zones.join("squat.yaml"),
        &se("squat", "bar", &[&squatter], &[], ""),
    );
    let s = Server::start(&zones, &state, &[]);
    let x = eventually(Duration::from_secs(5), "squatter served", || {
        a_of(s.dns, &squatter)
    });
    copy_into(&zones, "valid.yaml");
    let httpbin = eventually(Duration::from_secs(5), "httpbin served", || {
        a_of(s.dns, "httpbin.bar.global")
    });
    assert_ne!(httpbin, x);
    std::fs::remove_file(zones.join("squat.yaml")).unwrap();
    eventually(Duration::from_secs(5), "squatter gone", || {
        a_of(s.dns, &squatter).is_none().then_some(())
    });
    let resolver = a_of(s.dns, "resolver.infra.global").unwrap();
    let before = std::fs::read(state.join("allocations.json")).unwrap();

    // Without the state: a fresh allocation (httpbin on its preferred slot, the squatter's).
    let fresh = check(&[&data("valid.yaml")], &[]);
    assert_eq!(
        vip_in(&check_lines(&fresh.stdout)["httpbin.bar.global"].0),
        x
    );
    // With the state (while the server runs): exactly what the server answers.
    let st = state.display().to_string();
    let out = check(&[&data("valid.yaml")], &["--state-dir", &st]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = check_lines(&out.stdout);
    assert_eq!(
        vip_in(&lines["httpbin.bar.global"].0),
        httpbin,
        "check --state-dir shows the server's VIP"
    );
    assert_eq!(vip_in(&lines["resolver.infra.global"].0), resolver);
    // A host only in the state (held) but not in the files is not listed, and nothing is written.
    assert!(!lines.contains_key(&squatter));
    s.stop();
    assert_eq!(
        std::fs::read(state.join("allocations.json")).unwrap(),
        before,
        "check must never write the state"
    );
}

#[test]
fn allocations_prints_the_table_and_json_after_a_server_ran() {
    let (_t, zones, state) = dirs();
    let hosts = ["a.tbl.global", "b.tbl.global", "gone.tbl.global"];
    write_file(
        &zones.join("ab.yaml"),
        &[
            se("a", "tbl", &[hosts[0]], &[], ""),
            se("b", "tbl", &[hosts[1]], &[], ""),
        ]
        .join("---\n"),
    );
    write_file(
        &zones.join("gone.yaml"),
        &se("gone", "tbl", &[hosts[2]], &[], ""),
    );
    let s = Server::start(&zones, &state, &[]);
    let mut vips = BTreeMap::new();
    for h in hosts {
        let ip = eventually(Duration::from_secs(5), "served", || a_of(s.dns, h));
        vips.insert(h, ip);
    }
    std::fs::remove_file(zones.join("gone.yaml")).unwrap();
    eventually(Duration::from_secs(5), "gone withdrawn", || {
        a_of(s.dns, hosts[2]).is_none().then_some(())
    });
    let st = state.display().to_string();

    // While the server runs (reading does not need the lock).
    let live = run(&["allocations", "--state-dir", &st], &[]);
    assert_eq!(live.code, 0, "{}", live.stderr);
    s.stop();
    let out = run(&["allocations", "--state-dir", &st], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(live.stdout, out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("IPV4") && lines[0].contains("STATE"),
        "header: {}",
        lines[0]
    );
    for h in hosts {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(h))
            .unwrap_or_else(|| panic!("no row for {h}:\n{}", out.stdout));
        let f: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(f[1], vips[h].to_string(), "{row}");
        if h == hosts[2] {
            assert!(row.contains("held since"), "{row}");
        } else {
            assert!(row.ends_with("active"), "{row}");
        }
    }
    assert_eq!(*lines.last().unwrap(), "# 3 hosts, 1 held");

    let json = run(&["allocations", "--json", "--state-dir", &st], &[]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("--json output does not parse: {e}\n{}", json.stdout));
    // Accept either a host-keyed object or the on-disk row list.
    let rows: BTreeMap<String, serde_json::Value> = match &v {
        serde_json::Value::Object(m) if m.contains_key("allocations") => v["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["host"].as_str().unwrap().to_string(), r.clone()))
            .collect(),
        serde_json::Value::Object(m) => m.clone().into_iter().collect(),
        other => panic!("unexpected JSON: {other}"),
    };
    assert_eq!(rows.len(), 3, "{v}");
    for h in hosts {
        assert_eq!(rows[h]["ipv4"], vips[h].to_string(), "{h}: {v}");
        let held = rows[h].get("releasedAt").is_some_and(|x| !x.is_null());
        assert_eq!(held, h == hosts[2], "{h}: releasedAt: {v}");
    }

    // Piped into a reader that stops early (`| head`): a quiet success, not an error message.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["allocations", "--state-dir", &st])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "closed stdout: {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "closed stdout: no error"
    );

    // An unreadable store is an error, never an empty table.
    std::fs::write(state.join("allocations.json"), "{\"format\": \"globald").unwrap();
    let bad = run(&["allocations", "--state-dir", &st], &[]);
    assert_ne!(bad.code, 0, "{}", bad.stdout);
    assert!(bad.stderr.contains("allocations.json"), "{}", bad.stderr);
}

/// Records of a master file: (owner, ttl, type, rdata).
fn zone_records(text: &str) -> Vec<(String, u32, String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('$') && !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 5 && f[2] == "IN", "record line: {l:?}");
            (
                f[0].to_string(),
                f[1].parse().unwrap_or_else(|_| panic!("ttl in {l:?}")),
                f[3].to_string(),
                f[4..].join(" "),
            )
        })
        .collect()
}

#[test]
fn zonefile_matches_what_the_server_answers() {
    let (_t, zones, state) = dirs();
    copy_into(&zones, "valid.yaml");
    std::fs::create_dir_all(zones.join("west")).unwrap();
    std::fs::copy(data("tree/west/west.yaml"), zones.join("west/west.yaml")).unwrap();
    let s = Server::start(&zones, &state, &[]);
    let served = [
        "httpbin.bar.global",
        "legacy.bar.global",
        "resolver.infra.global",
        "shared.mesh.global",
        "west-only.mesh.global",
    ];
    let mut answers: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for h in served {
        let a = eventually(Duration::from_secs(5), "served", || {
            udp_a(s.dns, h).filter(|a| !a.is_empty())
        });
        answers.insert(h, a);
    }
    let soa = dig(s.dns, &["global", "SOA"]);
    assert_eq!(soa.status, "NOERROR");
    s.stop();

    let out = run(
        &[
            "zonefile",
            "--zones",
            &zones.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = &out.stdout;
    assert!(text.lines().any(|l| l == "$ORIGIN global."), "{text}");
    let global = text
        .split("$ORIGIN ")
        .find(|z| z.starts_with("global.\n"))
        .unwrap_or_else(|| panic!("no global. zone:\n{text}"));
    let recs = zone_records(global.split_once('\n').unwrap().1);
    assert_eq!(
        (recs[0].0.as_str(), recs[0].2.as_str()),
        ("global.", "SOA"),
        "the zone starts with its SOA:\n{global}"
    );
    assert!(
        recs.iter().any(|r| r.0 == "global." && r.2 == "NS"),
        "{global}"
    );
    // SOA: same name servers and timers as the server answers (the serial may differ).
    let soa_fields: Vec<&str> = recs[0].3.split_whitespace().collect();
    let live_soa = &soa.answer[0];
    assert_eq!(soa_fields[0], live_soa[4], "SOA mname");
    assert_eq!(soa_fields[1], live_soa[5], "SOA rname");
    assert_eq!(soa_fields[3..], live_soa[7..], "SOA timers");

    for (h, ips) in &answers {
        let mut z: Vec<IpAddr> = recs
            .iter()
            .filter(|r| r.0 == format!("{h}.") && r.2 == "A")
            .map(|r| r.3.parse().unwrap())
            .collect();
        z.sort();
        assert_eq!(&z, ips, "{h}: zonefile A records vs DNS answers\n{global}");
    }
    assert!(
        recs.iter().all(|r| r.1 == 30),
        "default TTL 30 everywhere:\n{global}"
    );
    assert!(
        !recs.iter().any(|r| r.0.starts_with("passthrough.")),
        "a host that is not served has no records"
    );
    assert!(
        recs.iter().any(|r| r.0 == "_http._tcp.httpbin.bar.global."
            && r.2 == "SRV"
            && r.3 == "0 100 8000 httpbin.bar.global."),
        "{global}"
    );
    // The VIP's PTR is in the reverse zone of the range.
    let vip = v4_of(&answers["httpbin.bar.global"]).unwrap().octets();
    let ptr_owner = format!("{}.{}.10.240.in-addr.arpa.", vip[3], vip[2]);
    assert!(
        text.lines().any(|l| l.starts_with(&ptr_owner)
            && l.contains("PTR")
            && l.ends_with("httpbin.bar.global.")),
        "PTR for the VIP:\n{text}"
    );
}

/// `globaldns serve` configured only through the environment.
struct EnvServer {
    child: Child,
    dns: SocketAddr,
}

impl Drop for EnvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_from_env(env: &[(&str, &str)]) -> EnvServer {
    let mut cmd = Command::new(BIN);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    let (dns, admin) = free_listen();
    let mut child = cmd
        .arg("serve")
        .envs(env.iter().copied())
        .env("GLOBALDNS_LISTEN", dns)
        .env("GLOBALDNS_ADMIN", admin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening dns=").nth(1) {
                    let addr = rest
                        .split([' ', ','])
                        .next()
                        .and_then(|a| a.parse().ok())
                        .expect("dns address in the listening line");
                    return EnvServer { child, dns: addr };
                }
                log.push(line);
            }
            Err(_) if Instant::now() > deadline => {
                let _ = child.kill();
                panic!("server from env did not start:\n{}", log.join("\n"));
            }
            Err(_) => {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("server from env exited ({st}):\n{}", log.join("\n"));
                }
            }
        }
    }
}

#[test]
fn environment_variables_configure_the_cli() {
    let (_t, zones, state) = dirs();
    copy_into(&zones, "valid.yaml");
    let z = zones.display().to_string();
    let st = state.display().to_string();
    let s = serve_from_env(&[
        ("GLOBALDNS_ZONES", &z),
        ("GLOBALDNS_STATE_DIR", &st),
        ("GLOBALDNS_TTL", "7"),
        ("GLOBALDNS_VIP_RANGE", "240.77.0.0/24,fd00:77::/64"),
    ]);
    let m = eventually(Duration::from_secs(10), "httpbin answered", || {
        let m = query(s.dns, Transport::Udp, "httpbin.bar.global.", RecordType::A);
        (!m.answers.is_empty()).then_some(m)
    });
    let range: ipnet::Ipv4Net = "240.77.0.0/24".parse().unwrap();
    for r in &m.answers {
        assert_eq!(r.ttl, 7, "GLOBALDNS_TTL=7 sets the answer TTL: {r:?}");
        match &r.data {
            RData::A(a) => assert!(range.contains(&a.0), "VIP from GLOBALDNS_VIP_RANGE: {a}"),
            other => panic!("{other:?}"),
        }
    }
    let m = query(
        s.dns,
        Transport::Tcp,
        "httpbin.bar.global.",
        RecordType::AAAA,
    );
    let v6: ipnet::Ipv6Net = "fd00:77::/64".parse().unwrap();
    assert!(
        m.answers
            .iter()
            .any(|r| matches!(&r.data, RData::AAAA(a) if v6.contains(&a.0)) && r.ttl == 7),
        "the second, comma-separated range gives an AAAA: {m:?}"
    );
    // Negative answers: SOA minimum is the TTL too.
    let d = dig(s.dns, &["nope.bar.global", "A"]);
    assert_eq!(d.status, "NXDOMAIN");
    let soa = d.authority.iter().find(|r| r[3] == "SOA").expect("SOA");
    assert_eq!(soa.last().unwrap(), "7", "SOA minimum: {soa:?}");
    drop(s);

    // `check` reads the same variables.
    let out = run(
        &["check", &data("valid.yaml").display().to_string()],
        &[("GLOBALDNS_VIP_RANGE", "240.77.0.0/24")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = check_lines(&out.stdout);
    assert!(range.contains(&vip_in(&lines["httpbin.bar.global"].0)));

    // A flag beats the environment.
    let zf = |extra: &[&str]| {
        let mut args = vec!["zonefile", "--zones", &z, "--state-dir", &st];
        args.extend_from_slice(extra);
        let out = run(
            &args,
            &[
                ("GLOBALDNS_TTL", "7"),
                ("GLOBALDNS_VIP_RANGE", "240.77.0.0/24,fd00:77::/64"),
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let ttls = |text: &str| -> Vec<u32> {
        text.lines()
            .filter(|l| l.starts_with("httpbin.bar.global."))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(
        ttls(&zf(&[])),
        vec![7, 7],
        "env TTL in zonefile (A and AAAA)"
    );
    assert_eq!(
        ttls(&zf(&["--ttl", "9"])),
        vec![9, 9],
        "--ttl beats GLOBALDNS_TTL"
    );
}

#[test]
fn help_lists_the_flags() {
    let top = run(&["--help"], &[]);
    assert_eq!(top.code, 0);
    for sub in ["serve", "check", "allocations", "zonefile"] {
        assert!(
            top.stdout.contains(sub),
            "--help lists {sub}:\n{}",
            top.stdout
        );
    }
    let out = run(&["serve", "--help"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for flag in [
        "--zones",
        "--state-dir",
        "--listen",
        "--admin",
        "--zone",
        "--vip-range",
        "--ttl",
        "--vip-hold",
    ] {
        assert!(
            out.stdout
                .split(|c: char| c.is_whitespace() || c == ',')
                .any(|w| w == flag),
            "serve --help lists {flag}:\n{}",
            out.stdout
        );
    }
    for env in [
        "GLOBALDNS_TTL",
        "GLOBALDNS_VIP_RANGE",
        "GLOBALDNS_STATE_DIR",
    ] {
        assert!(out.stdout.contains(env), "serve --help names {env}");
    }
}

/// Linux's ephemeral port range as the server reads it.
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let v: Vec<u16> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    (v[0], v[1])
}

#[test]
fn serve_warns_when_its_dns_port_is_in_the_ephemeral_range() {
    let (low, high) = ephemeral_range();
    let (_t, zones, state) = dirs();
    write_file(
        &zones.join("a.yaml"),
        &se("a", "eph", &["a.eph.global"], &[], ""),
    );
    const WARNING: &str = "the DNS port is in the ephemeral port range";

    // The harness's own port is below the range: no warning.
    let quiet = Server::start(&zones, &state, &[]);
    assert!(quiet.dns.port() < low, "harness port {}", quiet.dns);
    assert!(!quiet.log_contains(WARNING), "{:?}", quiet.log);
    drop(quiet);

    // A second listener on port 0 gets one from the range, and the log names it.
    let s = Server::start(&zones, &state, &["--listen", "127.0.0.1:0"]);
    let log = s.log.lock().unwrap().join("\n");
    let line = log
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning for the port-0 listener:\n{log}"));
    let port: u16 = line
        .split("port=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("port in {line}"));
    assert!((low..=high).contains(&port), "{line}");
    assert_ne!(port, s.dns.port());
    assert!(line.contains(&format!("range={low}-{high}")), "{line}");
}

#[test]
fn serve_runs_without_transparent_huge_pages() {
    // Huge pages kept freed memory resident around live data (see `no_transparent_huge_pages`).
    let (_t, zones, state) = dirs();
    write_file(
        &zones.join("a.yaml"),
        &se("a", "thp", &["a.thp.global"], &[], ""),
    );
    let s = Server::start(&zones, &state, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("THP_enabled in /proc/PID/status (Linux ≥ 5.0)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// `check` says which hosts default sidecars cannot route by address, why and what to do; with
/// `--write-back spec` the single-host entry no longer counts. The server says the same in
/// /debug/hosts and its metric.
#[test]
fn check_and_the_server_report_tcp_hosts_no_default_sidecar_can_route() {
    let file = data("tcp-routing.yaml");
    let out = check(&[&file], &[]);
    assert_eq!(out.code, 0, "not a problem of the files: {}", out.stderr);
    let flagged: BTreeMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# tcp-unroutable "))
        .filter_map(|l| l.split_once(": "))
        .collect();
    assert_eq!(
        flagged.keys().copied().collect::<Vec<_>>(),
        [
            "db.data.global",
            "redis-a.data.global",
            "redis-b.data.global"
        ],
        "{}",
        out.stdout
    );
    assert!(
        flagged["db.data.global"].contains("--write-back spec"),
        "{}",
        out.stdout
    );
    assert!(
        flagged["redis-a.data.global"].contains("split the entry"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("# 3 hosts with TCP ports"),
        "{}",
        out.stdout
    );

    let out = check(&[&file], &["--write-back", "spec"]);
    assert!(
        !out.stdout.contains("# tcp-unroutable db.data.global"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("# tcp-unroutable redis-a.data.global"));

    let (_t, zones, state) = dirs();
    std::fs::copy(&file, zones.join("tcp-routing.yaml")).unwrap();
    let s = Server::start(&zones, &state, &[]);
    s.wait_ready();
    let d = debug_hosts(&s);
    let db = d["hosts"]["db.data.global"]["tcp_unroutable"]
        .as_str()
        .unwrap_or_default();
    assert!(db.contains("write-back off"), "{d}");
    assert!(d["hosts"]["pinned.data.global"]["tcp_unroutable"].is_null());
    assert!(d["hosts"]["web.data.global"]["tcp_unroutable"].is_null());
    assert_eq!(s.metric("globaldns_hosts_tcp_unroutable"), Some(3.0));
    // The host counts are the reports' (those /debug/hosts lists), served or not.
    let hosts = d["hosts"].as_object().unwrap();
    let served = hosts.values().filter(|h| h["served"] == true).count();
    assert_eq!(s.metric("globaldns_hosts_served"), Some(served as f64));
    assert_eq!(
        s.metric("globaldns_hosts_unserved"),
        Some((hosts.len() - served) as f64)
    );
}

/// A malformed `--zone` (or `--reverse-zone`) is refused when the arguments are read, with the
/// reason: it once panicked building the zone (no name server could be named in it), and an
/// empty one served the root zone.
#[test]
fn malformed_zones_are_refused_at_start_with_the_reason() {
    let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/answers");
    for (zone, why) in [
        ("a..b", "must be 1 to 63 characters"),
        ("bad name", "not a DNS-1123 label"),
        ("", "root zone"),
        (".", "root zone"),
        ("*.global", "wildcard"),
    ] {
        for (cmd, flag) in [
            (["zonefile", "--zones", zones], "--zone"),
            (["serve", "--zones", zones], "--zone"),
            (["zonefile", "--zones", zones], "--reverse-zone"),
        ] {
            let mut args = cmd.to_vec();
            args.extend([
                flag,
                zone,
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ]);
            if cmd[0] == "zonefile" {
                args.truncate(args.len() - 4);
            }
            let out = run(&args, &[]);
            assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
            assert!(
                out.stderr.contains(flag) && out.stderr.contains(why),
                "{args:?}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        }
    }
    // A well-formed one is normalised: the zone file's apex is `global.` for `Global.`.
    let out = run(&["zonefile", "--zones", zones, "--zone", "Global."], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("global. 30 IN SOA"), "{}", out.stdout);
}
