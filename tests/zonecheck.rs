//! The zones as other servers see them: `globaldns zonefile` prints the records a zone transfer
//! sends (both come from `Snapshot::zone_records`), and every zone of a realistic tree must load
//! in Knot's `kzonecheck` and BIND's `named-checkzone` without an error or a warning, as a Knot
//! or BIND secondary of a globaldns primary would load it. Then the name servers' glue over DNS,
//! and the start refused when an in-zone name server has no address.
//!
//! The checkers come from knot-dnssecutils and bind9-utils (scripts/test.sh installs them). Every
//! name they check is inside the zone checked, so neither resolves anything.

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;

/// Clusters `local` (top level) and `west`, with what zones hold in practice: VIPs and spec
/// addresses, dual-stack, wildcards at two depths with an exact name below one, TCP and UDP
/// ports (SRV), a host listed by two clusters, a name below another host.
fn realistic_tree(zones: &Path) {
    std::fs::create_dir_all(zones.join("west")).unwrap();
    let ports = "  ports:\n  - {name: http, number: 8000, protocol: HTTP}\n  - {name: grpc, number: 9000, protocol: GRPC}\n  - {name: udp-dns, number: 53, protocol: UDP}\n";
    let local = [
        se("httpbin", "bar", &["httpbin.bar.global"], &[], ports),
        se(
            "echo",
            "dual",
            &["echo.dual.global"],
            &["240.0.1.5", "fd00:20::5"],
            ports,
        ),
        // Wildcards get a VIP only with DYNAMIC_DNS (README): these have spec addresses.
        se(
            "wild",
            "wild",
            &["*.wild.global"],
            &["240.0.1.20", "fd00:20::20"],
            ports,
        ),
        se(
            "deep",
            "wild",
            &["*.deep.wild.global"],
            &["fd00:20::21"],
            "",
        ),
        se("exact", "wild", &["exact.wild.global"], &[], ""),
        se(
            "multi",
            "apps",
            &["a.apps.global", "b.apps.global"],
            &[],
            ports,
        ),
        se("sub", "apps", &["x.a.apps.global"], &["240.0.1.9"], ""),
    ];
    write_file(&zones.join("local.yaml"), &local.join("---\n"));
    let west = [
        se("httpbin", "bar", &["httpbin.bar.global"], &[], ports),
        se(
            "reviews",
            "default",
            &["reviews.default.global"],
            &[],
            ports,
        ),
        se("mesh", "ext", &["api.ext.mesh.internal"], &[], ports),
    ];
    write_file(&zones.join("west/west.yaml"), &west.join("---\n"));
}

/// `globaldns zonefile` on the realistic tree with `ns_flags`, split per zone: (origin, text).
fn zonefiles(ns_flags: &[&str]) -> Vec<(String, String)> {
    let (_t, zones, state) = dirs();
    realistic_tree(&zones);
    let out = Command::new(BIN)
        .arg("zonefile")
        .arg("--zones")
        .arg(&zones)
        .arg("--state-dir")
        .arg(&state)
        .args(["--zone", "global", "--zone", "mesh.internal"])
        .args([
            "--vip-range",
            "240.10.0.0/16",
            "--vip-range",
            "fd00:10::/48",
        ])
        .args(["--reverse-zone", "1.0.240.in-addr.arpa"])
        .args(ns_flags)
        .env_remove("GLOBALDNS_NS")
        .env_remove("GLOBALDNS_LISTEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zonefile {ns_flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(origin) = line.strip_prefix("$ORIGIN ") {
            files.push((origin.to_string(), String::new()));
        }
        let (_, body) = files.last_mut().expect("$ORIGIN first");
        body.push_str(line);
        body.push('\n');
    }
    files
}

fn run_checker(cmd: &mut Command, what: &str) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{what}: {e} (scripts/test.sh installs knot-dnssecutils and bind9-utils)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Both checkers on every zone: success, and nothing said beyond named-checkzone's two lines.
fn assert_clean(files: &[(String, String)], case: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (origin, body) in files {
        let path = dir.path().join(format!("{origin}zone"));
        std::fs::write(&path, body).unwrap();
        let zone = origin.trim_end_matches('.');
        let (ok, said) = run_checker(
            Command::new("kzonecheck").arg("-o").arg(origin).arg(&path),
            "kzonecheck",
        );
        assert!(
            ok && said.trim().is_empty(),
            "{case}: kzonecheck {zone}:\n{said}\n{body}"
        );
        let (ok, said) = run_checker(
            Command::new("named-checkzone").arg(zone).arg(&path),
            "named-checkzone",
        );
        let lines: Vec<&str> = said.lines().collect();
        assert!(
            ok && lines.len() == 2
                && lines[0].starts_with(&format!("zone {zone}/IN: loaded serial "))
                && lines[1] == "OK",
            "{case}: named-checkzone {zone}:\n{said}\n{body}"
        );
    }
}

#[test]
fn every_zone_loads_clean_in_knot_and_bind() {
    let files = zonefiles(&[]);
    let origins: Vec<&str> = files.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        origins,
        [
            "1.0.240.in-addr.arpa.",
            "10.240.in-addr.arpa.",
            "0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
            "global.",
            "mesh.internal.",
        ]
    );
    let global = &files[3].1;
    for needle in [
        "global. 30 IN NS ns.global.",
        // The default name server's glue: zonefile prints what serve on its default --listen
        // (127.0.0.1:5353) serves.
        "ns.global. 30 IN A 127.0.0.1",
        "*.deep.wild.global. 30 IN AAAA fd00:20::21",
        "_udp-dns._udp.echo.dual.global. 30 IN SRV 0 100 53 echo.dual.global.",
    ] {
        assert!(global.contains(needle), "{needle} in\n{global}");
    }
    assert!(files[0]
        .1
        .contains("5.1.0.240.in-addr.arpa. 30 IN PTR echo.dual.global."));
    assert_clean(&files, "default name server");

    // Two in-zone name servers (one per forward zone, one dual-stack) and one outside.
    let files = zonefiles(&[
        "--ns",
        "ns1.global=10.0.0.53",
        "--ns",
        "ns1.global=fd00::53",
        "--ns",
        "ns2.mesh.internal=10.0.0.54",
        "--ns",
        "ns3.example.net",
    ]);
    let (global, mesh) = (&files[3].1, &files[4].1);
    for needle in [
        "global. 30 IN SOA ns1.global. hostmaster.global.",
        "global. 30 IN NS ns3.example.net.",
        "ns1.global. 30 IN A 10.0.0.53",
        "ns1.global. 30 IN AAAA fd00::53",
    ] {
        assert!(global.contains(needle), "{needle} in\n{global}");
    }
    assert!(
        mesh.contains("ns2.mesh.internal. 30 IN A 10.0.0.54"),
        "{mesh}"
    );
    assert!(
        !mesh.contains("ns1.global. 30 IN A"),
        "glue only in its zone"
    );
    assert_clean(&files, "--ns NAME=ADDRESS");
}

#[test]
fn glue_is_answered_and_transferred() {
    let (_t, zones, state) = dirs();
    realistic_tree(&zones);
    let s = Server::start(
        &zones,
        &state,
        &[
            "--ns",
            "ns1.global=10.0.0.53",
            "--ns",
            "ns1.global=fd00::53",
            "--allow-transfer",
            "127.0.0.1/32",
        ],
    );
    for t in [Transport::Udp, Transport::Tcp] {
        let m = query(s.dns, t, "ns1.global.", RecordType::A);
        assert_eq!(
            answer_addrs(&m),
            [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53))],
            "{t:?}"
        );
        let m = query(s.dns, t, "ns1.global.", RecordType::AAAA);
        assert_eq!(answer_addrs(&m), ["fd00::53".parse::<IpAddr>().unwrap()]);
    }
    let axfr = dig(s.dns, &["+tcp", "global.", "AXFR"]);
    assert!(
        axfr.raw.contains("ns1.global.\t\t30\tIN\tA\t10.0.0.53")
            || axfr
                .raw
                .lines()
                .any(|l| l.starts_with("ns1.global.") && l.ends_with("10.0.0.53")),
        "glue in AXFR:\n{}",
        axfr.raw
    );
}

#[test]
fn an_in_zone_name_server_without_an_address_is_refused_at_start() {
    let (_t, zones, state) = dirs();
    for (flags, needle) in [
        // 0.0.0.0 gives the default name server no address.
        (
            &["--listen", "0.0.0.0:0"][..],
            "name server ns.global. is inside zone global. but has no address",
        ),
        (
            &["--listen", "127.0.0.1:0", "--ns", "ns1.global"][..],
            "--ns ns1.global=ADDRESS",
        ),
    ] {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--zones")
            .arg(&zones)
            .arg("--state-dir")
            .arg(&state)
            .args(["--admin", "127.0.0.1:0"])
            .args(flags)
            .env_remove("GLOBALDNS_NS")
            .env_remove("GLOBALDNS_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = eventually(Duration::from_secs(20), "serve exits", || {
            child.try_wait().unwrap()
        });
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!err.contains("listening"), "{flags:?} never serves: {err}");
    }
}
