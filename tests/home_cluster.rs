//! Each instance answers its home cluster's view (`--cluster-name`): the real binary over real
//! sockets, with `dig` and hickory's client, `/debug/hosts`, `/metrics`, `check` and `zonefile`.

mod common;
use common::*;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use hickory_proto::rr::RecordType;

const HOST: &str = "httpbin.bar.global";

/// A ServiceEntry whose Istio status carries `status` (as Istio's allocator writes it).
fn with_status(name: &str, host: &str, status: &str) -> String {
    se(
        name,
        "bar",
        &[host],
        &[],
        &format!("status:\n  addresses:\n  - {{value: \"{status}\", host: \"{host}\"}}\n"),
    )
}

/// The two-cluster example: each cluster's Istio allocated its own address for one host; a host
/// only `west` defines; a host with hand-written addresses in `west` only; hand-written addresses
/// that disagree.
fn mesh(zones: &Path) {
    std::fs::create_dir_all(zones.join("west")).unwrap();
    let local = [
        with_status("httpbin", HOST, "240.240.0.5"),
        se("plain", "bar", &["plain.bar.global"], &[], ""),
        se("typo", "bar", &["typo.bar.global"], &["10.1.0.1"], ""),
    ];
    let west = [
        with_status("httpbin", HOST, "240.240.0.9"),
        se("only-west", "bar", &["onlywest.bar.global"], &[], ""),
        se("plain", "bar", &["plain.bar.global"], &["10.2.0.7"], ""),
        se("typo", "bar", &["typo.bar.global"], &["10.1.0.2"], ""),
    ];
    write_file(&zones.join("a.yaml"), &local.join("---\n"));
    write_file(&zones.join("west/a.yaml"), &west.join("---\n"));
}

/// The A answer of `host` over UDP and TCP with hickory's client, and with dig; all must agree.
fn answer(s: &Server, host: &str) -> Vec<IpAddr> {
    let udp = a_addresses(&query(s.dns, Transport::Udp, host, RecordType::A));
    let tcp = a_addresses(&query(s.dns, Transport::Tcp, host, RecordType::A));
    assert_eq!(udp, tcp, "{host}: UDP and TCP differ");
    let d = dig(s.dns, &[host, "A"]);
    assert_eq!(d.status, "NOERROR", "{host}:\n{}", d.raw);
    let mut from_dig: Vec<IpAddr> = d.answer_data().iter().map(|a| a.parse().unwrap()).collect();
    from_dig.sort();
    assert_eq!(from_dig, udp, "{host}: dig differs");
    udp
}

/// One host's report from /debug/hosts.
fn debug_host(s: &Server, host: &str) -> serde_json::Value {
    debug_hosts(s)["hosts"][host].clone()
}

fn vip_of(s: &Server, host: &str) -> IpAddr {
    let h = debug_host(s, host);
    let vip = h["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["source"] == "vip")
        .unwrap_or_else(|| panic!("{host} has no VIP: {h}"));
    vip["address"].as_str().unwrap().parse().unwrap()
}

#[test]
fn each_instance_answers_its_home_clusters_addresses() {
    let (_t, zones, state) = dirs();
    mesh(&zones);
    let local = Server::start(&zones, &state, &[]);
    let west_state = zones.parent().unwrap().join("state-west");
    let west = Server::start(&zones, &west_state, &["--cluster-name", "west"]);

    // Each cluster's own Istio allocation, and only that.
    assert_eq!(answer(&local, HOST), ips(&["240.240.0.5"]));
    assert_eq!(answer(&west, HOST), ips(&["240.240.0.9"]));
    assert_eq!(debug_host(&local, HOST)["rule"], "home-istio-status");
    assert_eq!(debug_host(&west, HOST)["rule"], "home-istio-status");

    // Defined only in west: the local instance answers its VIP (never west's status); west,
    // whose entry has no address, answers the same VIP.
    let only = "onlywest.bar.global";
    let vip = vip_of(&local, only);
    assert_eq!(answer(&local, only), vec![vip]);
    assert_eq!(answer(&west, only), vec![vip]);
    assert_eq!(debug_host(&local, only)["rule"], "vip");

    // Hand-written addresses in west only: west answers them, local (no address) its VIP.
    let plain = "plain.bar.global";
    assert_eq!(answer(&west, plain), ips(&["10.2.0.7"]));
    assert_eq!(debug_host(&west, plain)["rule"], "home-spec");
    assert_eq!(answer(&local, plain), vec![vip_of(&local, plain)]);

    // Two instances, two homes: one VIP table.
    let table = |state: &Path| {
        store_rows(state)
            .into_iter()
            .map(|(h, row)| (h, row["ipv4"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&state), table(&west_state));
    assert!(
        table(&state).iter().any(|(h, _)| h == HOST),
        "a host with Istio addresses everywhere still has the shared VIP for other clusters"
    );
}

#[test]
fn conflicts_show_in_debug_metrics_log_and_check() {
    let (_t, zones, state) = dirs();
    mesh(&zones);
    let s = Server::start(&zones, &state, &[]);

    let h = debug_host(&s, "typo.bar.global");
    assert_eq!(h["conflict"]["spec"], true, "{h}");
    assert_eq!(
        h["conflict"]["clusters"]["west"]["spec"][0], "10.1.0.2",
        "{h}"
    );
    assert_eq!(h["rule"], "home-spec");
    let h = debug_host(&s, HOST);
    assert_eq!(h["conflict"]["istio_status"], true, "{h}");
    assert_eq!(h["conflict"]["spec"], false, "{h}");
    assert!(debug_host(&s, "plain.bar.global")["conflict"].is_null());

    eventually(std::time::Duration::from_secs(5), "conflict gauges", || {
        let spec = s.metric("globaldns_host_conflicts{kind=\"spec\"}")?;
        let status = s.metric("globaldns_host_conflicts{kind=\"istio-status\"}")?;
        ((spec, status) == (1.0, 1.0)).then_some(())
    });
    // A spec conflict is logged once, naming the clusters; Istio's differing allocations never.
    eventually(
        std::time::Duration::from_secs(5),
        "spec conflict log",
        || s.log_contains("typo.bar.global").then_some(()),
    );
    let status_logged = s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("conflict") && l.contains(HOST));
    assert!(!status_logged, "differing Istio allocations are not logged");

    // Fixing the typo ends the conflict: the gauge drops and the end is logged.
    let west = std::fs::read_to_string(zones.join("west/a.yaml")).unwrap();
    write_file(
        &zones.join("west/a.yaml"),
        &west.replace("10.1.0.2", "10.1.0.1"),
    );
    eventually(
        std::time::Duration::from_secs(5),
        "spec conflict gone",
        || (s.metric("globaldns_host_conflicts{kind=\"spec\"}")? == 0.0).then_some(()),
    );
    assert!(s.log_contains("spec.addresses conflict resolved"));
    drop(s);

    mesh(&zones);
    let out = Command::new(env!("CARGO_BIN_EXE_globaldns"))
        .args(["check"])
        .arg(&zones)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conflicts are not problems:\n{stdout}"
    );
    assert!(
        stdout.contains(
            "# conflict typo.bar.global: spec: local=[spec 10.1.0.1] west=[spec 10.1.0.2]"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "# conflict {HOST}: istio-status: local=[istio-status 240.240.0.5] west=[istio-status 240.240.0.9]"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("# 2 hosts listed with different addresses"),
        "{stdout}"
    );
}

#[test]
fn ptr_and_zonefile_follow_the_home_view() {
    let (_t, zones, state) = dirs();
    mesh(&zones);
    let rev = ["--reverse-zone", "240.240.in-addr.arpa"];
    let s = Server::start(&zones, &state, &rev);
    let ptr = |ip: &str| dig(s.dns, &["-x", ip]);
    let own = ptr("240.240.0.5");
    assert_eq!(own.status, "NOERROR", "{}", own.raw);
    assert_eq!(own.answer_data(), vec![format!("{HOST}.")]);
    // West's allocation is not served here, so it has no PTR either.
    assert_eq!(ptr("240.240.0.9").status, "NXDOMAIN");
    drop(s);

    let zonefile = |home: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_globaldns"))
            .args(["zonefile", "--cluster-name", home, "--zones"])
            .arg(&zones)
            .arg("--state-dir")
            .arg(&state)
            .args(rev)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a_lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() == 5 && f[0] == format!("{HOST}.") && f[3] == "A")
            .map(|f| f[4].to_string())
            .collect()
    };
    assert_eq!(a_lines(&zonefile("local")), ["240.240.0.5"]);
    assert_eq!(a_lines(&zonefile("west")), ["240.240.0.9"]);
}
