//! Spec write-back (`--write-back spec`) against a real apiserver: globaldns owns only the
//! `spec.addresses` it applied (field manager `globaldns`), keeps them through other managers'
//! server-side applies of the original manifest, never takes back what a person forced, withdraws
//! what it wrote when an entry stops being eligible, writes nothing on a restart, and
//! `globaldns write-back withdraw` gives everything back.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::claimer::the_claimer;
use crate::common::{debug_hosts, eventually, Server, BIN};
use crate::kube_cluster::{one_vip, serial, start, wait_answer, writeback_settled, Cluster};

/// A v1 ServiceEntry with a TCP port and no `addresses` key (as most manifests are written).
fn manifest(name: &str, hosts: &[&str], addresses: &[&str]) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let addresses = if addresses.is_empty() {
        String::new()
    } else {
        format!("  addresses: [{}]\n", list(addresses))
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: sw\nspec:\n  hosts: [{}]\n{addresses}  ports:\n  - {{number: 9000, name: tcp, protocol: TCP}}\n  location: MESH_INTERNAL\n  resolution: DNS\n",
        list(hosts)
    )
}

/// `kubectl apply --server-side` as field manager `manager` (`force`: `--force-conflicts`).
fn apply_as(c: &Cluster, manager: &str, yaml: &str, force: bool) {
    let flag = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", flag.as_str(), "-f", "-"];
    if force {
        args.push("--force-conflicts");
    }
    let out = c.kubectl_output(&args, Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn object(c: &Cluster, name: &str) -> Value {
    c.get_json(&["serviceentry", "-n", "sw", name])
}

fn spec_addresses(c: &Cluster, name: &str) -> Vec<String> {
    object(c, name)["spec"]["addresses"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The field managers that own `spec.addresses`.
fn owners(c: &Cluster, name: &str) -> Vec<String> {
    object(c, name)["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["fieldsV1"]["f:spec"]["f:addresses"].is_null())
        .map(|m| m["manager"].as_str().unwrap().to_string())
        .collect()
}

/// `serve` flags: one cluster c1 (`cluster` = its `--cluster` value) holding the kube store, spec
/// write-back on.
fn spec_flags(cluster: &str) -> Vec<&str> {
    vec![
        "--cluster",
        cluster,
        "--store",
        "kube",
        "--store-cluster",
        "c1",
        "--cluster-name",
        "c1",
        "--write-back",
        "spec",
    ]
}

fn written(gd: &Server, result: &str) -> f64 {
    gd.metric(&format!(
        "globaldns_spec_writes_total{{cluster=\"c1\",result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

fn wait_spec(c: &Cluster, name: &str, want: &[String]) {
    eventually(
        Duration::from_secs(15),
        &format!("spec.addresses of {name} = {want:?}"),
        || (spec_addresses(c, name) == want).then_some(()),
    );
}

#[test]
fn spec_write_back_owns_only_what_it_applied() {
    let _g = serial();
    let c = Cluster::up("c1");
    c.ensure_namespace("sw");
    c.ensure_namespace("globaldns");
    // As a GitOps tool applying server-side would: the manifests, without addresses.
    apply_as(&c, "gitops", &manifest("db", &["db.sw.global"], &[]), false);
    apply_as(
        &c,
        "gitops",
        &manifest("grow", &["grow.sw.global"], &[]),
        false,
    );
    apply_as(
        &c,
        "gitops",
        &manifest("pair", &["p1.sw.global", "p2.sw.global"], &[]),
        false,
    );
    apply_as(
        &c,
        "gitops",
        &manifest("mine", &["mine.sw.global"], &["10.1.0.1"]),
        false,
    );
    // A person's malformed address: skipped with a log line, never overwritten.
    apply_as(
        &c,
        "person",
        &manifest("bad", &["bad.sw.global"], &["not-an-ip"]),
        false,
    );
    let cluster = c.flag();
    let flags = spec_flags(&cluster);
    let (_t, gd) = start(&flags);
    let vip = one_vip(&gd, "db.sw.global");
    wait_spec(&c, "db", &[vip.to_string()]);
    assert_eq!(owners(&c, "db"), ["globaldns"]);
    let grow_vip = one_vip(&gd, "grow.sw.global");
    wait_spec(&c, "grow", &[grow_vip.to_string()]);
    writeback_settled(&gd);
    // The written VIP is read back as the VIP (not a user's address): same answer, routable.
    let d = debug_hosts(&gd);
    let db = &d["hosts"]["db.sw.global"];
    assert_eq!(db["addresses"][0]["source"], "vip", "{db}");
    assert!(db["tcp_unroutable"].is_null(), "{db}");
    // Several hosts: never written, reported.
    assert!(spec_addresses(&c, "pair").is_empty());
    assert!(
        d["hosts"]["p1.sw.global"]["tcp_unroutable"]
            .as_str()
            .is_some_and(|r| r.contains("several hosts")),
        "{d}"
    );
    // User addresses stay theirs and are answered.
    assert_eq!(spec_addresses(&c, "mine"), ["10.1.0.1"]);
    assert_eq!(owners(&c, "mine"), ["gitops"]);
    assert_eq!(
        one_vip(&gd, "mine.sw.global"),
        "10.1.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(spec_addresses(&c, "bad"), ["not-an-ip"]);
    assert!(gd.log_contains("address \"not-an-ip\" skipped"));
    assert!(gd.metric("globaldns_invalid_objects_total").unwrap_or(0.0) >= 1.0);
    assert!(
        d["hosts"]["bad.sw.global"]["tcp_unroutable"]
            .as_str()
            .is_some_and(|r| r.contains("another field manager")),
        "{d}"
    );
    let applies = written(&gd, "written");
    assert_eq!(applies, 2.0, "one apply per eligible entry");

    // The GitOps tool applies its manifest again (no addresses): the VIP stays globaldns's.
    apply_as(&c, "gitops", &manifest("db", &["db.sw.global"], &[]), false);
    writeback_settled(&gd);
    assert_eq!(spec_addresses(&c, "db"), [vip.to_string()]);
    assert_eq!(owners(&c, "db"), ["globaldns"]);

    // A person forces other addresses: theirs from now on, answered, never taken back.
    apply_as(
        &c,
        "person",
        &manifest("db", &["db.sw.global"], &["10.2.0.2"]),
        true,
    );
    wait_answer(&gd, "db.sw.global", Duration::from_secs(10), |a| {
        a.as_deref() == Some(&["10.2.0.2".parse().unwrap()][..])
    });
    writeback_settled(&gd);
    assert_eq!(spec_addresses(&c, "db"), ["10.2.0.2"]);
    assert_eq!(owners(&c, "db"), ["person"]);

    // An entry gains a second host: what globaldns wrote is withdrawn.
    apply_as(
        &c,
        "gitops",
        &manifest("grow", &["grow.sw.global", "grow2.sw.global"], &[]),
        false,
    );
    wait_spec(&c, "grow", &[]);
    assert!(owners(&c, "grow").is_empty());
    eventually(Duration::from_secs(10), "the withdrawal counted", || {
        (written(&gd, "withdrawn") >= 1.0).then_some(())
    });

    // A restart writes nothing that is already right.
    apply_as(
        &c,
        "gitops",
        &manifest("again", &["again.sw.global"], &[]),
        false,
    );
    let again = one_vip(&gd, "again.sw.global");
    wait_spec(&c, "again", &[again.to_string()]);
    gd.stop(); // gracefully: the claimer lease is released for the next instance
    let (_t2, gd2) = start(&flags);
    assert_eq!(one_vip(&gd2, "again.sw.global"), again);
    // It is the writer and has looked at every entry.
    eventually(
        Duration::from_secs(30),
        "the restarted instance writes",
        || (gd2.metric("globaldns_writeback_writer")? == 1.0).then_some(()),
    );
    writeback_settled(&gd2);
    assert_eq!(
        written(&gd2, "written"),
        0.0,
        "nothing rewritten on restart"
    );
    assert_eq!(written(&gd2, "withdrawn"), 0.0);
    gd2.stop();

    // Turning it off: `globaldns write-back withdraw` gives back every field globaldns owns.
    let out = Command::new(BIN)
        .args(["write-back", "withdraw", "--cluster", &c.flag()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sw/again\twithdrew"), "{stdout}");
    assert!(spec_addresses(&c, "again").is_empty());
    assert_eq!(spec_addresses(&c, "db"), ["10.2.0.2"], "the person's stays");
    assert_eq!(spec_addresses(&c, "mine"), ["10.1.0.1"]);
    let out = Command::new(BIN)
        .args(["write-back", "withdraw", "--cluster", &c.flag()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 withdrew"), "nothing left: {stdout}");
}

/// The claimer is killed (SIGKILL: its lease is not released) just before an entry is created:
/// the survivor claims the host after --claim-defer and publishes it while it still follows the
/// dead lease; when it takes the lease over, nothing else happens, and it must still write the
/// entry on its own (found by benches/writeback.sh: the role change went unnoticed).
#[test]
fn a_successor_writes_what_a_killed_claimer_left() {
    let _g = serial();
    let c = Cluster::up("c1");
    c.ensure_namespace("sw");
    c.ensure_namespace("globaldns");
    let cluster = c.flag();
    let mut flags = spec_flags(&cluster);
    // A short lease: the successor takes over soon after the kill.
    flags.extend(["--claim-lease", "6s"]);
    let mut pair = [Some(start(&flags)), Some(start(&flags))];
    let holder = {
        let servers: Vec<&Server> = pair.iter().map(|p| &p.as_ref().unwrap().1).collect();
        the_claimer(&servers)
    };
    let (_dir, dead) = pair[holder].take().unwrap();
    dead.kill9();
    let (_t, successor) = pair[1 - holder].take().unwrap();
    apply_as(
        &c,
        "gitops",
        &manifest("late", &["late.sw.global"], &[]),
        false,
    );
    // Served before the takeover (claimed after the defer), written after it.
    let vip = one_vip(&successor, "late.sw.global");
    the_claimer(&[&successor]);
    eventually(
        Duration::from_secs(30),
        "the successor writes the VIP",
        || (spec_addresses(&c, "late") == [vip.to_string()]).then_some(()),
    );
    assert_eq!(owners(&c, "late"), ["globaldns"]);
    assert_eq!(written(&successor, "written"), 1.0);
}
