//! The store: corrupt tables and a second server are refused, and nothing is answered that is not
//! durable.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// Runs `globaldns serve` expecting it to refuse to start: (exit status, stderr).
fn serve_must_fail(zones: &Path, state: &Path, extra: &[&str]) -> (ExitStatus, String) {
    let mut child = serve_command(zones, state, extra).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, reader.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "globaldns serve kept running (it should have refused to start):\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn corrupt_stores_are_refused_and_left_untouched() {
    let row = |h: &str, ip: &str| {
        format!("    {{\n      \"host\": \"{h}\",\n      \"ipv4\": \"{ip}\"\n    }}")
    };
    let doc = |rows: &[String]| {
        format!(
            "{{\n  \"format\": \"globaldns-allocations/v1\",\n  \"allocations\": [\n{}\n  ]\n}}\n",
            rows.join(",\n")
        )
    };
    let good = doc(&[
        row("a.ns.global", "240.10.1.1"),
        row("b.ns.global", "240.10.1.2"),
    ]);
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "same IP for two hosts",
            doc(&[
                row("a.ns.global", "240.10.1.1"),
                row("b.ns.global", "240.10.1.1"),
            ]),
            vec![],
            vec!["a.ns.global", "b.ns.global", "240.10.1.1"],
        ),
        (
            "IP outside the range",
            doc(&[
                row("a.ns.global", "240.10.1.1"),
                row("c.ns.global", "10.0.0.1"),
            ]),
            vec![],
            vec!["c.ns.global", "10.0.0.1"],
        ),
        (
            "network address of a /24",
            doc(&[row("a.ns.global", "240.10.3.0")]),
            vec![],
            vec!["a.ns.global", "240.10.3.0"],
        ),
        (
            "range changed under an existing table",
            good.clone(),
            vec!["--vip-range", "240.20.0.0/16"],
            vec!["a.ns.global", "240.10.1.1"],
        ),
        (
            "truncated JSON",
            good[..good.len() / 2].to_string(),
            vec![],
            vec!["allocations.json"],
        ),
        (
            "empty file",
            String::new(),
            vec![],
            vec!["allocations.json"],
        ),
    ];
    for (what, body, flags, named) in cases {
        let (_t, zones, state) = dirs();
        write_file(
            &zones.join("x.yaml"),
            &entries_yaml(&[
                "a.ns.global".to_string(),
                "b.ns.global".to_string(),
                "new.ns.global".to_string(),
            ]),
        );
        std::fs::create_dir_all(&state).unwrap();
        let path = state.join("allocations.json");
        std::fs::write(&path, &body).unwrap();
        let (status, log) = serve_must_fail(&zones, &state, &flags);
        assert!(!status.success(), "{what}: exit status {status}");
        for n in named {
            assert!(log.contains(n), "{what}: the error must name {n:?}:\n{log}");
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            body,
            "{what}: allocations.json must be left byte-for-byte unchanged"
        );
    }
}

#[test]
fn a_second_server_on_the_same_state_dir_is_refused() {
    let (_t, zones, state) = dirs();
    write_file(
        &zones.join("x.yaml"),
        &se("x", "lock", &["x.lock.global"], &[], ""),
    );
    let s1 = Server::start(&zones, &state, &[]);
    let x = eventually(Duration::from_secs(5), "first server answers", || {
        a_of(s1.dns, "x.lock.global")
    });
    let before = std::fs::read(state.join("allocations.json")).unwrap();

    let (status, log) = serve_must_fail(&zones, &state, &[]);
    assert!(!status.success(), "second server exit status {status}");
    assert!(
        log.contains(&state.display().to_string()) || log.contains("lock"),
        "the refusal names the state directory or its lock:\n{log}"
    );
    assert_eq!(
        a_of(s1.dns, "x.lock.global"),
        Some(x),
        "first server still answers"
    );
    assert_eq!(
        std::fs::read(state.join("allocations.json")).unwrap(),
        before
    );

    // The lock dies with its holder, even on SIGKILL.
    s1.kill9();
    let s3 = Server::start(&zones, &state, &[]);
    assert_eq!(a_of(s3.dns, "x.lock.global"), Some(x));
}

#[test]
fn a_store_that_cannot_write_publishes_nothing_new_until_it_can() {
    // Persist before answering: while the allocation log cannot be written, a new host gets no
    // answer (its VIP was never durable), hosts already served keep theirs, and the pass is
    // retried until the store takes it.
    let (_t, zones, state) = dirs();
    let old = "kept.durable.global".to_string();
    let new = "waits.durable.global".to_string();
    write_file(&zones.join("a.yaml"), &entries_yaml([&old]));
    let s = Server::start(&zones, &state, &[]);
    let old_vip = eventually(Duration::from_secs(5), "first host served", || {
        a_of(s.dns, &old)
    });
    // A directory where the log must be appended: every append fails.
    let log = state.join("allocations.log");
    std::fs::create_dir(&log).unwrap();
    write_file(&zones.join("b.yaml"), &entries_yaml([&new]));
    eventually(Duration::from_secs(10), "the failed commit counted", || {
        (metric0(&s, "globaldns_store_errors_total") >= 1.0).then_some(())
    });
    assert_eq!(
        a_of(s.dns, &new),
        None,
        "a VIP that is not durable must not be answered"
    );
    assert_eq!(
        a_of(s.dns, &old),
        Some(old_vip),
        "what was served stays served"
    );
    assert!(
        !read_store_dir_has(&state, &new),
        "nothing about the new host is on disk"
    );
    std::fs::remove_dir(&log).unwrap();
    // Retried on the engine's beat (every 5 s), without any further source event.
    let new_vip = eventually(
        Duration::from_secs(15),
        "new host served once the store works",
        || a_of(s.dns, &new),
    );
    assert_eq!(
        read_store(&state)[&new].ipv4,
        Some(new_vip),
        "served VIP is the stored one"
    );
    assert_eq!(a_of(s.dns, &old), Some(old_vip));
}

fn read_store_dir_has(state: &Path, host: &str) -> bool {
    std::fs::read_to_string(state.join("allocations.json")).is_ok_and(|t| t.contains(host))
}
