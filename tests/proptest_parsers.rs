//! Bounded property tests of every parser of outside input, with the fuzz targets' own checks
//! (fuzz/src/checks.rs) on mutations of their seed corpora (fuzz/seeds/): what the fuzzers ran
//! for minutes, CI runs for a few hundred cases on every run.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::cell::RefCell;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// The seed files of one fuzz target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Inputs as a mutation fuzzer makes them: a seed with a few bytes set, a cut, an insertion of
/// random bytes; or random bytes alone.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    let n = seeds.len();
    let mutated = (
        0..n,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
        prop::option::of((
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8),
        )),
    )
        .prop_map(move |(i, sets, cut, insert)| {
            let mut v = seeds[i].clone();
            if v.is_empty() {
                return v;
            }
            for (at, b) in sets {
                let at = at.index(v.len());
                v[at] = b;
            }
            if let Some((at, bytes)) = insert {
                let at = at.index(v.len());
                v.splice(at..at, bytes);
            }
            if let Some(cut) = cut {
                v.truncate(cut.index(v.len() + 1));
            }
            v
        });
    prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..96)]
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn dns_request_path() {
    // The cache of the fast path carries over from case to case, as in a server.
    let target = RefCell::new(checks::DnsTarget::new());
    proptest!(config(), |(packet in inputs("dns_wire"))| target.borrow_mut().check(&packet));
}

#[test]
fn serviceentry_yaml() {
    proptest!(config(), |(text in inputs("yaml"))| checks::check_yaml(&text));
}

#[test]
fn allocation_store_files() {
    let target = RefCell::new(checks::AllocTarget::new());
    proptest!(config(), |(data in inputs("alloc_store"))| target.borrow_mut().check(&data));
}

#[test]
fn remote_secret_kubeconfig() {
    let target = checks::KubeconfigTarget::new();
    proptest!(config(), |(text in inputs("kubeconfig"))| target.check(&text));
}

#[test]
fn zone_transfer_answers() {
    proptest!(config(), |(data in inputs("transfer"))| checks::check_transfer(&data));
}

/// The seeds themselves are what they claim: the properties hold and the paths are reached
/// (answers from the zone, a transfer applied), so the mutations start from valid inputs.
#[test]
fn seeds_reach_the_parsers() {
    let mut dns = checks::DnsTarget::new();
    for s in seeds("dns_wire") {
        dns.check(&s);
    }
    for name in ["axfr", "axfr-ixfr", "reverse"] {
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/seeds/transfer")
                .join(name),
        )
        .unwrap();
        let snaps = globaldns::secondary::replay_transfers(&data[1..], data[0] == 1)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            snaps.len(),
            if name == "axfr-ixfr" { 2 } else { 1 },
            "{name}"
        );
    }
    let yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/yaml/list"))
            .unwrap();
    let (entries, problems) =
        globaldns::source::files::parse_text(&yaml, "list", "local", &checks::zones()).unwrap();
    assert_eq!((entries.len(), problems.len()), (1, 0), "{problems:?}");
}

/// Every input a fuzz target crashed on (fuzz/crashes/TARGET/), through the same check.
#[test]
fn fuzz_crashes_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashes");
    let mut dns = checks::DnsTarget::new();
    let mut alloc = checks::AllocTarget::new();
    let kube = checks::KubeconfigTarget::new();
    let mut n = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = std::fs::read(input.unwrap().path()).unwrap();
            match target.file_name().unwrap().to_str().unwrap() {
                "dns_wire" => dns.check(&input),
                "yaml" => checks::check_yaml(&input),
                "alloc_store" => alloc.check(&input),
                "kubeconfig" => kube.check(&input),
                "transfer" => checks::check_transfer(&input),
                other => panic!("no fuzz target {other}"),
            }
            n += 1;
        }
    }
    assert!(n > 0);
}
