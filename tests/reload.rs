//! Live reload of the zones directory: add, edit, delete, break and repair files, new cluster
//! directories, invalid objects next to valid ones. Every change must show within one second.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// The A addresses of `host` over UDP: None on NXDOMAIN, Some(sorted addresses) on NOERROR.
fn addrs(server: SocketAddr, host: &str) -> Option<Vec<IpAddr>> {
    common::udp_a(server, host)
}

fn ipv(list: &[&str]) -> Option<Vec<IpAddr>> {
    Some(ips(list))
}

/// Runs `change`, then polls `check` with a 1 s deadline; asserts and returns the latency.
fn within_a_second<T>(
    what: &str,
    change: impl FnOnce(),
    check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let t0 = Instant::now();
    change();
    let v = eventually(SECOND, what, check);
    let took = t0.elapsed();
    assert!(took < SECOND, "{what}: took {took:?} (contract: < 1 s)");
    eprintln!("{what}: {took:?}");
    (v, took)
}

fn log_lines_with(s: &Server, needles: &[&str]) -> Vec<String> {
    s.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .cloned()
        .collect()
}

fn in_vip_range(ips: &[IpAddr]) -> bool {
    ips.len() == 1 && vip_range().contains(&ips[0])
}

#[test]
fn add_edit_delete_follow_within_a_second() {
    let (_t, zones, state) = dirs();
    let s = Server::start(&zones, &state, &[]);
    let shop = zones.join("shop.yaml");
    let web = "web.shop.global";
    let api = "api.shop.global";
    assert_eq!(addrs(s.dns, web), None, "nothing served yet");

    let (_, _) = within_a_second(
        "added file is served",
        || write_file(&shop, &se("web", "shop", &[web], &["10.1.0.1"], "")),
        || (addrs(s.dns, web) == ipv(&["10.1.0.1"])).then_some(()),
    );

    // Edit: new address, a second host (auto VIP), a second document.
    let body = format!(
        "{}---\n{}",
        se("web", "shop", &[web], &["10.1.0.2"], ""),
        se("api", "shop", &[api], &[], "")
    );
    let (vip, _) = within_a_second(
        "edited file (address changed, host added) is served",
        || write_file(&shop, &body),
        || {
            let w = addrs(s.dns, web)?;
            let a = addrs(s.dns, api)?;
            (w == ipv(&["10.1.0.2"]).unwrap() && in_vip_range(&a)).then_some(a)
        },
    );

    // Edit in place (truncate + write, as `echo > file` does), two addresses now.
    let body = format!(
        "{}---\n{}",
        se("web", "shop", &[web], &["10.1.0.3", "10.1.0.4"], ""),
        se("api", "shop", &[api], &[], "")
    );
    within_a_second(
        "file edited in place is served",
        || std::fs::write(&shop, &body).unwrap(),
        || (addrs(s.dns, web) == ipv(&["10.1.0.3", "10.1.0.4"])).then_some(()),
    );
    assert_eq!(addrs(s.dns, api), Some(vip.clone()), "api keeps its VIP");

    // A host moves to another file (delete from one, add to another in one go).
    let other = zones.join("other.yaml");
    within_a_second(
        "host moved between files",
        || {
            write_file(&other, &se("api", "shop", &[api], &[], ""));
            write_file(&shop, &se("web", "shop", &[web], &["10.1.0.3"], ""));
        },
        || (addrs(s.dns, web) == ipv(&["10.1.0.3"])).then_some(()),
    );
    assert_eq!(
        addrs(s.dns, api),
        Some(vip),
        "api keeps its VIP across files"
    );

    within_a_second(
        "deleted file is withdrawn",
        || std::fs::remove_file(&shop).unwrap(),
        || addrs(s.dns, web).is_none().then_some(()),
    );
    assert!(
        addrs(s.dns, api).is_some(),
        "the other file still serves api"
    );
    within_a_second(
        "second file deleted",
        || std::fs::remove_file(&other).unwrap(),
        || addrs(s.dns, api).is_none().then_some(()),
    );
    assert_eq!(debug_hosts(&s)["hosts"], serde_json::json!({}));
}

#[test]
fn broken_file_keeps_last_good_content_until_repaired() {
    let (_t, zones, state) = dirs();
    let good = zones.join("good.yaml");
    let neighbour = zones.join("neighbour.yaml");
    let web = "web.brk.global";
    let nb = "nb.brk.global";
    write_file(&good, &se("web", "brk", &[web], &["10.2.0.1"], ""));
    write_file(&neighbour, &se("nb", "brk", &[nb], &["10.2.0.9"], ""));
    // A file broken from the start does not keep the server from becoming ready.
    write_file(&zones.join("born-broken.yaml"), "kind: [unclosed\n");
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(addrs(s.dns, web), ipv(&["10.2.0.1"]));
    assert!(
        !log_lines_with(&s, &["file does not parse", "born-broken.yaml"]).is_empty(),
        "a file broken at start is logged"
    );
    let errors0 = metric0(&s, "globaldns_source_parse_errors_total");
    assert!(errors0 >= 1.0, "parse error at start counted: {errors0}");

    // Break the good file: error log naming it, metric, last good answers kept.
    let broken = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web\nspec:\n  hosts: [web.brk.global\n";
    within_a_second(
        "parse error of the broken file logged and counted",
        || write_file(&good, broken),
        || {
            (metric0(&s, "globaldns_source_parse_errors_total") > errors0
                && !log_lines_with(&s, &["file does not parse", "good.yaml"]).is_empty())
            .then_some(())
        },
    );
    assert_eq!(
        addrs(s.dns, web),
        ipv(&["10.2.0.1"]),
        "a file that stops parsing keeps serving its last good content"
    );
    // Force another change through the pipeline: by the time it shows, anything the broken file
    // might (wrongly) have withdrawn would have been applied too.
    within_a_second(
        "neighbour edit while the other file is broken",
        || write_file(&neighbour, &se("nb", "brk", &[nb], &["10.2.0.10"], "")),
        || (addrs(s.dns, nb) == ipv(&["10.2.0.10"])).then_some(()),
    );
    assert_eq!(
        addrs(s.dns, web),
        ipv(&["10.2.0.1"]),
        "still the last good content after other reloads"
    );
    assert_eq!(debug_hosts(&s)["hosts"][web]["served"], true);

    // Broken differently (valid YAML, not a mapping where one is expected) — still kept.
    let errors1 = metric0(&s, "globaldns_source_parse_errors_total");
    within_a_second(
        "second kind of breakage counted",
        || write_file(&good, "\t- not: yaml: at all\n  ]]\n"),
        || (metric0(&s, "globaldns_source_parse_errors_total") > errors1).then_some(()),
    );
    assert_eq!(addrs(s.dns, web), ipv(&["10.2.0.1"]));

    // Repair with new content.
    within_a_second(
        "repaired file is served",
        || write_file(&good, &se("web", "brk", &[web], &["10.2.0.2"], "")),
        || (addrs(s.dns, web) == ipv(&["10.2.0.2"])).then_some(()),
    );
    // And the born-broken file, once repaired, is picked up too.
    within_a_second(
        "file broken since start, repaired",
        || {
            write_file(
                &zones.join("born-broken.yaml"),
                &se("late", "brk", &["late.brk.global"], &["10.2.0.3"], ""),
            )
        },
        || (addrs(s.dns, "late.brk.global") == ipv(&["10.2.0.3"])).then_some(()),
    );
}

#[test]
fn cluster_directories_created_at_runtime_are_picked_up() {
    let (t, zones, state) = dirs();
    let shared = "shared.mc.global";
    write_file(
        &zones.join("top.yaml"),
        &se("shared", "mc", &[shared], &["10.3.0.10"], ""),
    );
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(addrs(s.dns, shared), ipv(&["10.3.0.10"]));

    // mkdir + file right away.
    let west = zones.join("west");
    within_a_second(
        "new cluster directory west",
        || {
            std::fs::create_dir(&west).unwrap();
            write_file(
                &west.join("ratings.yaml"),
                &format!(
                    "{}---\n{}",
                    se("ratings", "mc", &["ratings.mc.global"], &["10.3.0.1"], ""),
                    se("shared", "mc", &[shared], &["10.3.0.11"], "")
                ),
            );
        },
        || (addrs(s.dns, "ratings.mc.global") == ipv(&["10.3.0.1"])).then_some(()),
    );
    let h = debug_hosts(&s);
    assert_eq!(
        h["hosts"]["ratings.mc.global"]["objects"],
        serde_json::json!(["west/mc/ratings"]),
        "files under zones/west/ belong to cluster west"
    );
    assert_eq!(
        h["hosts"][shared]["objects"],
        serde_json::json!(["local/mc/shared", "west/mc/shared"]),
        "top-level files belong to cluster local"
    );
    // Home (local) addresses are served; west's different ones make a visible conflict.
    assert_eq!(addrs(s.dns, shared), ipv(&["10.3.0.10"]));
    assert_eq!(
        h["hosts"][shared]["conflict"]["clusters"]["west"]["spec"],
        serde_json::json!(["10.3.0.11"])
    );

    // A nested directory tree in one go: cluster = first level.
    within_a_second(
        "nested directory east/apps/v1",
        || {
            let deep = zones.join("east").join("apps").join("v1");
            std::fs::create_dir_all(&deep).unwrap();
            write_file(
                &deep.join("deep.yaml"),
                &se("deep", "mc", &["deep.mc.global"], &["10.3.0.2"], ""),
            );
        },
        || (addrs(s.dns, "deep.mc.global") == ipv(&["10.3.0.2"])).then_some(()),
    );
    assert_eq!(
        debug_hosts(&s)["hosts"]["deep.mc.global"]["objects"],
        serde_json::json!(["east/mc/deep"])
    );

    // A directory prepared elsewhere and renamed in (how config tools deliver a whole tree).
    let prep = t.path().join("prep");
    std::fs::create_dir_all(&prep).unwrap();
    write_file(
        &prep.join("n.yaml"),
        &se("north", "mc", &["north.mc.global"], &["10.3.0.3"], ""),
    );
    within_a_second(
        "directory renamed into zones",
        || std::fs::rename(&prep, zones.join("north")).unwrap(),
        || (addrs(s.dns, "north.mc.global") == ipv(&["10.3.0.3"])).then_some(()),
    );
    assert_eq!(
        debug_hosts(&s)["hosts"]["north.mc.global"]["objects"],
        serde_json::json!(["north/mc/north"])
    );

    // Removing a cluster directory withdraws its hosts (and the conflict it made).
    within_a_second(
        "cluster directory removed",
        || std::fs::remove_dir_all(&west).unwrap(),
        || {
            (addrs(s.dns, "ratings.mc.global").is_none()
                && addrs(s.dns, shared) == ipv(&["10.3.0.10"]))
            .then_some(())
        },
    );
    assert!(debug_hosts(&s)["hosts"][shared]["conflict"].is_null());
    assert_eq!(addrs(s.dns, "deep.mc.global"), ipv(&["10.3.0.2"]));
    assert_eq!(addrs(s.dns, "north.mc.global"), ipv(&["10.3.0.3"]));
}

#[test]
fn invalid_objects_are_skipped_and_named_next_to_valid_ones() {
    let (_t, zones, state) = dirs();
    let file = zones.join("mixed.yaml");
    let body = format!(
        "{}---\n{}---\n{}---\n{}",
        se("first", "mix", &["first.mix.global"], &["10.4.0.1"], ""),
        // Schema error: hosts is not a list.
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: wrong-shape\n  namespace: mix\nspec:\n  hosts: \"not-a-list\"\n",
        se("last", "mix", &["last.mix.global"], &[], ""),
        // kind: List with an invalid host next to a valid item.
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {name: bad-host, namespace: mix}\n  spec: {hosts: [a_b.global], resolution: DNS}\n- apiVersion: networking.istio.io/v1\n  kind: ServiceEntry\n  metadata: {name: listed, namespace: mix}\n  spec: {hosts: [listed.mix.global], addresses: [10.4.0.2], resolution: STATIC}\n",
    );
    write_file(&file, &body);
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(addrs(s.dns, "first.mix.global"), ipv(&["10.4.0.1"]));
    assert_eq!(addrs(s.dns, "listed.mix.global"), ipv(&["10.4.0.2"]));
    let last = addrs(s.dns, "last.mix.global").expect("last.mix.global served");
    assert!(in_vip_range(&last), "{last:?}");
    assert_eq!(addrs(s.dns, "a_b.global"), None);

    for object in ["wrong-shape", "bad-host"] {
        let lines = log_lines_with(&s, &["invalid ServiceEntry skipped", object]);
        assert!(
            !lines.is_empty(),
            "a warning names the object {object}: {:#?}",
            log_lines_with(&s, &["WARN"])
        );
        assert!(
            lines.iter().all(|l| l.contains("mixed.yaml")),
            "the warning for {object} names the file: {lines:#?}"
        );
    }
    assert_eq!(
        metric0(&s, "globaldns_invalid_objects_total"),
        2.0,
        "two invalid objects (schema error, invalid host) counted"
    );

    // Another invalid object added at runtime: counted, valid neighbours unaffected.
    let body2 = format!(
        "{body}---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: star, namespace: mix}}\nspec: {{hosts: [\"*\"], resolution: DNS}}\n"
    );
    within_a_second(
        "invalid object added at runtime is reported",
        || write_file(&file, &body2),
        || (metric0(&s, "globaldns_invalid_objects_total") > 2.0).then_some(()),
    );
    assert!(
        !log_lines_with(&s, &["invalid ServiceEntry skipped", "star", "mixed.yaml"]).is_empty(),
        "warning names the object star"
    );
    assert_eq!(addrs(s.dns, "first.mix.global"), ipv(&["10.4.0.1"]));
    assert_eq!(addrs(s.dns, "last.mix.global"), Some(last));
    let served: BTreeSet<String> = debug_hosts(&s)["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        served,
        ["first.mix.global", "last.mix.global", "listed.mix.global"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        "only the valid hosts are known"
    );
}

#[test]
fn configmap_style_symlink_swap_is_picked_up() {
    // How kubelet updates a mounted ConfigMap: files are symlinks through `..data`, which is
    // atomically re-pointed at a new timestamped directory.
    use std::os::unix::fs::symlink;
    let (_t, zones, state) = dirs();
    let web = "web.cm.global";
    let v1 = zones.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("web.yaml"),
        se("web", "cm", &[web], &["10.5.0.1"], ""),
    )
    .unwrap();
    symlink(v1.file_name().unwrap(), zones.join("..data")).unwrap();
    symlink("..data/web.yaml", zones.join("web.yaml")).unwrap();
    let s = Server::start(&zones, &state, &[]);
    assert_eq!(addrs(s.dns, web), ipv(&["10.5.0.1"]));
    assert_eq!(
        debug_hosts(&s)["hosts"][web]["objects"],
        serde_json::json!(["local/cm/web"]),
        "loaded once, through the top-level symlink only (hidden paths are not units)"
    );

    let v2 = zones.join("..2026_01_01_00_00_01.000000002");
    within_a_second(
        "ConfigMap update (..data swapped)",
        || {
            std::fs::create_dir(&v2).unwrap();
            std::fs::write(
                v2.join("web.yaml"),
                se("web", "cm", &[web], &["10.5.0.2"], ""),
            )
            .unwrap();
            symlink(v2.file_name().unwrap(), zones.join("..data_tmp")).unwrap();
            std::fs::rename(zones.join("..data_tmp"), zones.join("..data")).unwrap();
            std::fs::remove_dir_all(&v1).unwrap();
        },
        || (addrs(s.dns, web) == ipv(&["10.5.0.2"])).then_some(()),
    );
}

/// A over TCP with the harness's hickory client (TCP answers never come from a UDP cache).
fn addrs_tcp(server: SocketAddr, host: &str) -> Option<Vec<IpAddr>> {
    query_a(server, Transport::Tcp, host)
}

#[test]
fn rapid_successive_edits_always_end_on_the_last_content() {
    // Edits that publish several snapshots while no UDP query comes in must never leave UDP
    // answering from an older snapshot.
    let (_t, zones, state) = dirs();
    let file = zones.join("fast.yaml");
    let host = "fast.edit.global";
    let body = |a: &str| se("fast", "edit", &[host], &[a], "");
    write_file(&file, &body("10.7.0.1"));
    let s = Server::start(&zones, &state, &[]);
    let debug_addr = |want: &str| {
        let h = debug_hosts(&s);
        h["hosts"][host]["addresses"][0]["address"] == want
    };
    for i in 0..30u8 {
        let (a, b, c) = (
            format!("10.7.{i}.1"),
            format!("10.7.{i}.2"),
            format!("10.7.{i}.3"),
        );
        within_a_second(
            &format!("round {i}: first edit seen over UDP"),
            || write_file(&file, &body(&a)),
            || (addrs(s.dns, host) == ipv(&[&a])).then_some(()),
        );
        // Second edit, observed only through /debug/hosts (no DNS query in between).
        write_file(&file, &body(&b));
        eventually(SECOND, "second edit published", || {
            debug_addr(&b).then_some(())
        });
        let t0 = Instant::now();
        write_file(&file, &body(&c));
        let mut last = None;
        while t0.elapsed() < SECOND {
            last = addrs(s.dns, host);
            if last == ipv(&[&c]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if last != ipv(&[&c]) {
            panic!(
                "round {i}: 1 s after the third edit UDP still answers {last:?} (want {c}); \
                 /debug/hosts shows {c}: {}; TCP answers {:?}. UDP is replaying an answer \
                 from an older snapshot.",
                debug_addr(&c),
                addrs_tcp(s.dns, host)
            );
        }
    }
}

/// The zone's SOA serial, over UDP.
fn serial(server: SocketAddr) -> u32 {
    let m = udp_ask(server, "global.", hickory_proto::rr::RecordType::SOA);
    match m.answers.first().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA in the answer: {other:?}"),
    }
}

/// The UDP fast path keeps answers across publishes that do not change their name: a changed
/// name must answer its new data from the first query after the publish that changed it (the
/// serial is how a client sees that publish), and an unchanged one its old data.
#[test]
fn the_first_answer_after_a_publish_has_the_new_data_of_a_changed_name() {
    let (_t, zones, state) = dirs();
    let s = Server::start(&zones, &state, &[]);
    let (web, db) = ("web.shop.global", "db.data.global");
    let shop = zones.join("shop.yaml");
    write_file(
        &zones.join("data.yaml"),
        &se("db", "data", &[db], &["10.2.0.1"], ""),
    );
    write_file(&shop, &se("web", "shop", &[web], &["10.1.0.1"], ""));
    eventually(5 * SECOND, "both hosts served", || {
        (addrs(s.dns, web) == ipv(&["10.1.0.1"]) && addrs(s.dns, db) == ipv(&["10.2.0.1"]))
            .then_some(())
    });
    for round in 2..=6 {
        // Answered (and so cached) more than once before the change.
        for _ in 0..3 {
            assert_eq!(addrs(s.dns, web), ipv(&[&format!("10.1.0.{}", round - 1)]));
            assert_eq!(addrs(s.dns, db), ipv(&["10.2.0.1"]));
        }
        let before = serial(s.dns);
        let ip = format!("10.1.0.{round}");
        write_file(&shop, &se("web", "shop", &[web], &[&ip], ""));
        eventually(5 * SECOND, "a publish", || {
            (serial(s.dns) != before).then_some(())
        });
        assert_eq!(
            addrs(s.dns, web),
            ipv(&[&ip]),
            "round {round}: first answer after the publish"
        );
        assert_eq!(
            addrs(s.dns, db),
            ipv(&["10.2.0.1"]),
            "round {round}: unchanged name"
        );
    }
}
