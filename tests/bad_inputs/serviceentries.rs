//! Bad ServiceEntry files. Expected: the bad part skipped with a warning naming file and object
//! (`globaldns_invalid_objects_total`), or a file that does not parse keeping its last good
//! content (`globaldns_source_parse_errors_total`); everything else served as before.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::*;

const INVALID: &str = "globaldns_invalid_objects_total{source=\"files\"}";
const PARSE_ERRORS: &str = "globaldns_source_parse_errors_total{source=\"files\"}";

/// Waits until `host` answers (Some) or is NXDOMAIN (None) over UDP.
fn answers(s: &Server, host: &str, want: Option<Vec<std::net::IpAddr>>) {
    eventually(
        Duration::from_secs(10),
        &format!("{host} → {want:?}"),
        || (udp_a(s.dns, host) == want).then_some(()),
    );
}

fn entry(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: x}}\nspec:\n{spec}"
    )
}

#[test]
fn invalid_hosts_are_skipped_one_by_one_with_a_warning() {
    let (_t, s) = fixture(&[]);
    let hosts = [
        "ok.x.global",
        "bad_host!.x.global",
        "-lead.x.global",
        "a..b.x.global",
        "",
        "*.*.x.global",
        &format!("{}.x.global", "a".repeat(64)),
    ];
    let list = hosts.map(|h| format!("\"{h}\"")).join(", ");
    let body = entry("hosts", &format!("  hosts: [{list}]\n  resolution: DNS\n"));
    write_file(&s.zones.join("bad.yaml"), &body);
    // ok.x.global gets a VIP; the six bad hosts are each named.
    eventually(Duration::from_secs(10), "ok.x.global served", || {
        udp_a(s.dns, "ok.x.global").filter(|a| a.len() == 1)
    });
    for bad in [
        "bad_host!.x.global",
        "-lead.x.global",
        "a..b.x.global",
        "*.*.x.global",
    ] {
        logged(
            &s,
            &["invalid ServiceEntry skipped", "bad.yaml", "x/hosts", bad],
        );
    }
    logged(&s, &["x/hosts", "empty host"]);
    metric_reaches(&s, INVALID, 6.0);
    still_serves(&s);
}

#[test]
fn ten_thousand_hosts_in_one_entry_are_all_served() {
    let (_t, s) = fixture(&[]);
    let hosts: Vec<String> = (0..10_000)
        .map(|i| format!("\"h{i}.big.global\""))
        .collect();
    let body = entry(
        "big",
        &format!("  hosts: [{}]\n  resolution: DNS\n", hosts.join(", ")),
    );
    let before = metric0(&s, "globaldns_hosts_served");
    let written = Instant::now();
    write_file(&s.zones.join("big.yaml"), &body);
    metric_reaches(&s, "globaldns_hosts_served", before + 10_000.0);
    eprintln!(
        "10,000 hosts in one entry served {:?} after the write",
        written.elapsed()
    );
    for i in [0, 4_999, 9_999] {
        let a = udp_a(s.dns, &format!("h{i}.big.global")).expect("served");
        assert_eq!(a.len(), 1, "h{i}: one VIP");
    }
    still_serves(&s);
}

#[test]
fn duplicate_hosts_and_entries_give_one_answer() {
    let (_t, s) = fixture(&[]);
    // Twice in one entry (spelled two ways), and again in a second entry of the same name.
    let body = [
        entry(
            "dup",
            "  hosts: [dup.x.global, dup.x.global, DUP.X.GLOBAL.]\n  resolution: DNS\n",
        ),
        entry("dup", "  hosts: [dup.x.global]\n  resolution: DNS\n"),
    ]
    .join("---\n");
    write_file(&s.zones.join("dup.yaml"), &body);
    let a = eventually(Duration::from_secs(10), "dup.x.global served", || {
        udp_a(s.dns, "dup.x.global")
    });
    assert_eq!(a.len(), 1, "one VIP for one host: {a:?}");
    let doc = debug_hosts(&s);
    assert_eq!(doc["hosts"]["dup.x.global"]["served"], true, "{doc}");
    still_serves(&s);
}

#[test]
fn cidr_garbage_is_skipped_address_by_address() {
    let (_t, s) = fixture(&[]);
    let body = entry(
        "cidr",
        "  hosts: [cidr.x.global]\n  addresses: [\"10.0.0.300\", \"not-an-ip\", \"10.0.0.0/33\", \"10.0.0.1/32x\", \"::g\", \"10.0.0.7\"]\n  resolution: STATIC\n",
    );
    write_file(&s.zones.join("cidr.yaml"), &body);
    answers(&s, "cidr.x.global", Some(ips(&["10.0.0.7"])));
    for bad in [
        "10.0.0.300",
        "not-an-ip",
        "10.0.0.0/33",
        "10.0.0.1/32x",
        "::g",
    ] {
        logged(
            &s,
            &["cidr.yaml", "x/cidr", bad, "not an IP address or CIDR"],
        );
    }
    metric_reaches(&s, INVALID, 5.0);
    still_serves(&s);
}

#[test]
fn wrong_field_types_skip_the_object_not_the_file() {
    let (_t, s) = fixture(&[]);
    let body = [
        entry("hoststring", "  hosts: hs.x.global\n  resolution: DNS\n"),
        entry(
            "portword",
            "  hosts: [pw.x.global]\n  ports: [{name: http, number: eighty, protocol: HTTP}]\n",
        ),
        entry("addrnum", "  hosts: [an.x.global]\n  addresses: 5\n"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: [1, 2]\nspec: {hosts: [meta.x.global]}\n".to_string(),
        entry("fine", "  hosts: [fine.x.global]\n  addresses: [10.0.0.8]\n"),
    ]
    .join("---\n");
    write_file(&s.zones.join("types.yaml"), &body);
    answers(&s, "fine.x.global", Some(ips(&["10.0.0.8"])));
    for h in ["hs.x.global", "pw.x.global", "an.x.global", "meta.x.global"] {
        assert_eq!(udp_a(s.dns, h), None, "{h} is in a skipped object");
    }
    for what in ["hoststring", "portword", "addrnum", "<unnamed>"] {
        logged(
            &s,
            &["types.yaml", what, "does not fit the ServiceEntry schema"],
        );
    }
    metric_reaches(&s, INVALID, 4.0);
    still_serves(&s);
}

/// YAML is Unicode: a file with a byte that is not UTF-8 is refused whole (as `globaldns check`
/// refuses it) and keeps its last good content, rather than read with replacement characters.
#[test]
fn non_utf8_bytes_fail_the_file_which_keeps_its_last_good_content() {
    let (_t, s) = fixture(&[]);
    let path = s.zones.join("nu.yaml");
    let good = entry(
        "nu",
        "  hosts: [\"nu.x.global\"]\n  addresses: [10.0.0.9]\n",
    );
    write_file(&path, &good);
    answers(&s, "nu.x.global", Some(ips(&["10.0.0.9"])));
    let mut bad = good.replace("10.0.0.9", "10.0.0.19").into_bytes();
    let at = bad.iter().position(|&b| b == b'"').unwrap() + 3;
    bad.insert(at, 0xFF);
    std::fs::write(&path, &bad).unwrap();
    metric_reaches(&s, PARSE_ERRORS, 1.0);
    logged(
        &s,
        &["nu.yaml", "not UTF-8", "keeping its last good content"],
    );
    assert_eq!(udp_a(s.dns, "nu.x.global"), Some(ips(&["10.0.0.9"])));
    still_serves(&s);
}

/// Binary garbage is refused and the file keeps its last good content. With a NUL first and a
/// `&` (which sends a file to the bounded YAML parser), it used to load as an empty file: that
/// parser reads a NUL as the end of the text, and the file's hosts were withdrawn.
#[test]
fn binary_garbage_fails_the_file_which_keeps_its_last_good_content() {
    let (_t, s) = fixture(&[]);
    let path = s.zones.join("garbage.yaml");
    write_file(
        &path,
        &entry("g", "  hosts: [g.x.global]\n  addresses: [10.0.0.12]\n"),
    );
    answers(&s, "g.x.global", Some(ips(&["10.0.0.12"])));
    let garbage: [Vec<u8>; 2] = [
        // UTF-8 with control characters.
        b"\0&junk\x01\x02: [\n".to_vec(),
        // Not UTF-8.
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ];
    for (i, g) in garbage.iter().enumerate() {
        std::fs::write(&path, g).unwrap();
        metric_reaches(&s, PARSE_ERRORS, (i + 1) as f64);
    }
    logged(&s, &["garbage.yaml", "control character 0x00 at byte 0"]);
    logged(&s, &["garbage.yaml", "not UTF-8"]);
    assert_eq!(udp_a(s.dns, "g.x.global"), Some(ips(&["10.0.0.12"])));
    still_serves(&s);
}

#[test]
fn a_file_that_stops_parsing_keeps_its_last_good_content() {
    let (_t, s) = fixture(&[]);
    let path = s.zones.join("edit.yaml");
    let good = entry(
        "edit",
        "  hosts: [edit.x.global]\n  addresses: [10.0.0.10]\n",
    );
    write_file(&path, &good);
    answers(&s, "edit.x.global", Some(ips(&["10.0.0.10"])));
    // Cut in the middle of a flow sequence, as an editor saving half a file.
    write_file(&path, &good[..good.len() - 7]);
    metric_reaches(&s, PARSE_ERRORS, 1.0);
    logged(
        &s,
        &[
            "edit.yaml",
            "does not parse",
            "keeping its last good content",
        ],
    );
    assert_eq!(udp_a(s.dns, "edit.x.global"), Some(ips(&["10.0.0.10"])));
    still_serves(&s);
}

#[test]
fn a_file_over_the_size_limit_is_refused_unread_and_keeps_its_last_good_content() {
    let (_t, s) = fixture(&[]);
    let path = s.zones.join("huge.yaml");
    write_file(
        &path,
        &entry(
            "huge",
            "  hosts: [\"huge.x.global\"]\n  addresses: [10.0.0.8]\n",
        ),
    );
    answers(&s, "huge.x.global", Some(ips(&["10.0.0.8"])));
    // 129 MiB without writing them: a sparse file, refused from its size alone.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(129 << 20).unwrap();
    drop(f);
    metric_reaches(&s, PARSE_ERRORS, 1.0);
    logged(
        &s,
        &[
            "huge.yaml",
            "over the limit of 128 MiB",
            "keeping its last good content",
        ],
    );
    assert_eq!(udp_a(s.dns, "huge.x.global"), Some(ips(&["10.0.0.8"])));
    still_serves(&s);
}
