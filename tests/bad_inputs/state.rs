//! Corrupt, truncated and unwritable state. Expected: a store that does not read back refuses the
//! start with an error naming the file (never rewritten: the bytes stay as they were); a cut
//! last log line (an append a crash interrupted) is ignored with a warning; a store that cannot
//! be written at run time publishes nothing new (persist before answer), says so, counts it in
//! `globaldns_store_errors_total`, and catches up once writable.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::*;

/// A state directory written by a real server on the fixture (three VIPs), stopped cleanly.
fn real_state() -> (tempfile::TempDir, Server) {
    let (t, s) = fixture(&[]);
    assert_eq!(store_rows(&s.state).len(), 3, "the fixture's VIP hosts");
    (t, s)
}

/// Waits for a process to exit by itself (within 20 s) and returns its stderr.
fn exits_with_error(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!status.success(), "exited 0");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on bad state");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts on `state` and expects a refusal naming `needles`; the state files are unchanged.
fn refused(zones: &Path, state: &Path, needles: &[&str]) {
    let before = snapshot(state);
    let err = exits_with_error(serve_command(zones, state, &[]).spawn().unwrap());
    for n in needles {
        assert!(err.contains(n), "error should name {n:?}:\n{err}");
    }
    assert_eq!(
        snapshot(state),
        before,
        "state files changed by a refused start"
    );
}

/// Every file of a directory (but the lock) with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_name() != "lock" && e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn stopped() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (t, s) = real_state();
    let (zones, state) = (s.zones.clone(), s.state.clone());
    s.stop();
    (t, zones, state)
}

#[test]
fn corrupt_allocations_json_refuses_the_start() {
    let (_t, zones, state) = stopped();
    std::fs::write(state.join("allocations.json"), "garbage{").unwrap();
    refused(
        &zones,
        &state,
        &["allocations.json is not valid", "refusing to start"],
    );
}

#[test]
fn truncated_allocations_json_refuses_the_start() {
    let (_t, zones, state) = stopped();
    let text = std::fs::read(state.join("allocations.json")).unwrap();
    std::fs::write(state.join("allocations.json"), &text[..text.len() / 2]).unwrap();
    refused(
        &zones,
        &state,
        &["allocations.json is not valid", "EOF while parsing"],
    );
}

#[test]
fn non_utf8_allocations_json_refuses_the_start() {
    let (_t, zones, state) = stopped();
    std::fs::write(state.join("allocations.json"), b"\xff\xfe\x00{").unwrap();
    refused(&zones, &state, &["allocations.json is not valid"]);
}

#[test]
fn allocations_json_with_one_vip_twice_fails_validation() {
    let (_t, zones, state) = stopped();
    let path = state.join("allocations.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let first = doc["allocations"][0]["ipv4"].clone();
    doc["allocations"][1]["ipv4"] = first.clone();
    std::fs::write(&path, doc.to_string()).unwrap();
    refused(
        &zones,
        &state,
        &[
            "fails validation",
            "is held by two hosts",
            first.as_str().unwrap(),
        ],
    );
}

#[test]
fn allocations_outside_the_vip_range_fail_validation() {
    let (_t, zones, state) = stopped();
    let before = snapshot(&state);
    let child = serve_command(&zones, &state, &["--vip-range", "240.20.0.0/16"])
        .spawn()
        .unwrap();
    let err = exits_with_error(child);
    assert!(
        err.contains("is outside the configured VIP ranges"),
        "{err}"
    );
    assert_eq!(snapshot(&state), before);
}

#[test]
fn cut_last_log_line_is_ignored_and_the_rest_kept() {
    let (_t, s) = real_state();
    let (zones, state) = (s.zones.clone(), s.state.clone());
    // One more host through the log, then a half-written append.
    write_file(
        &zones.join("more.yaml"),
        &se("more", "x", &["more.x.global"], &[], ""),
    );
    let vip = eventually(Duration::from_secs(10), "more.x.global served", || {
        a_of(s.dns, "more.x.global")
    });
    s.stop();
    let rows = store_rows(&state);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("allocations.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"{\"host\":\"cut.x.glo").unwrap();
    let s = Server::start(&zones, &state, &[]);
    logged(
        &s,
        &["allocation log ends in a cut line", "allocations.log"],
    );
    assert_eq!(a_of(s.dns, "more.x.global"), Some(vip));
    assert_eq!(store_rows(&state), rows, "nothing lost, nothing added");
    still_serves(&s);
}

#[test]
fn garbage_line_inside_the_log_refuses_the_start() {
    let (_t, zones, state) = stopped();
    let log = state.join("allocations.log");
    std::fs::write(
        &log,
        "garbage\n{\"host\":\"x.global\",\"ipv4\":\"240.10.0.9\"}\n",
    )
    .unwrap();
    refused(&zones, &state, &["allocations.log is not valid", "line 1"]);
}

#[test]
fn serial_file_that_is_not_a_number_refuses_the_start() {
    for body in ["notanumber\n", ""] {
        let (_t, zones, state) = stopped();
        std::fs::write(state.join("serial"), body).unwrap();
        refused(&zones, &state, &["serial does not hold a serial number"]);
    }
}

/// A serial file cut to fewer digits is a smaller number: the serial follows the clock anyway,
/// so it does not go back.
#[test]
fn truncated_serial_file_does_not_take_the_serial_back() {
    let (_t, s) = real_state();
    let serial = metric0(&s, "globaldns_zone_serial");
    let (zones, state) = (s.zones.clone(), s.state.clone());
    s.stop();
    let text = std::fs::read_to_string(state.join("serial")).unwrap();
    std::fs::write(state.join("serial"), &text[..4]).unwrap();
    let s = Server::start(&zones, &state, &[]);
    assert!(
        metric0(&s, "globaldns_zone_serial") >= serial,
        "serial went back"
    );
    still_serves(&s);
}

#[test]
fn state_dir_that_is_a_file_refuses_the_start() {
    let (t, zones, _state) = dirs();
    let file = t.path().join("state-file");
    std::fs::write(&file, "x").unwrap();
    let err = exits_with_error(serve_command(&zones, &file, &[]).spawn().unwrap());
    assert!(
        err.contains("cannot create state directory") && err.contains("state-file"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// The log cannot be appended to (a directory in its place: root ignores permissions): a new host
/// is not answered until its VIP is durable; known names keep answering; once the log can be
/// written again, the retry publishes it and the store has it.
#[test]
fn unwritable_log_at_run_time_delays_new_vips_loses_nothing() {
    let (_t, s) = real_state();
    let log = s.state.join("allocations.log");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir(&log).unwrap();
    write_file(
        &s.zones.join("late.yaml"),
        &se("late", "x", &["late.x.global"], &[], ""),
    );
    metric_reaches(&s, "globaldns_store_errors_total", 1.0);
    logged(&s, &["cannot persist allocations", "allocations.log"]);
    assert_eq!(
        a_of(s.dns, "late.x.global"),
        None,
        "answered before it was durable"
    );
    still_serves(&s);
    std::fs::remove_dir(&log).unwrap();
    let vip = eventually(
        Duration::from_secs(20),
        "late.x.global after the retry",
        || a_of(s.dns, "late.x.global"),
    );
    assert_eq!(
        store_rows(&s.state)["late.x.global"]["ipv4"],
        vip.to_string()
    );
    assert_eq!(store_rows(&s.state).len(), 4);
}
