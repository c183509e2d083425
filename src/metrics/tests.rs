//! The exposed families stay what operators scrape and what the README names: a family with no
//! sample is not encoded at all, so each test fills one sample of every labelled family first.

use super::*;
use crate::alloc::metrics::FamilyLabels;
use crate::dns::metrics::{ActionLabels, QueryLabels};
use crate::kube::writeback::metrics::WriteLabels;
use crate::secondary::metrics::ZoneLabels;
use crate::source::metrics::{ClusterLabels, ListLabels, SourceLabels};

/// The HELP and TYPE lines of every family, captured from `/metrics` before the metrics moved
/// into their subsystems, ordered by family name.
const FAMILIES: &str = include_str!("families.txt");

/// A registry in which every family has a sample (label values as the code sets them).
fn sampled() -> Metrics {
    let m = Metrics::new();
    let kind = |kind| KindLabels { kind };
    let transfer = |kind, result| TransferLabels { kind, result };
    let d = &m.dns;
    d.queries
        .get_or_create(&QueryLabels {
            qtype: "A",
            rcode: "NOERROR",
            transport: "udp",
        })
        .inc();
    let action = ActionLabels { action: "dropped" };
    d.rate_limited.get_or_create(&action).inc();
    d.dropped.get_or_create(&kind("short")).inc();
    d.tcp_closed.get_or_create(&kind("idle")).inc();
    m.grpc.closed.get_or_create(&kind("idle")).inc();
    m.grpc.errors.get_or_create(&kind("unimplemented")).inc();
    let t = &m.transfer;
    t.served.get_or_create(&transfer("axfr", "served")).inc();
    let matched = ResultLabels { result: "matched" };
    t.ixfr_content.get_or_create(&matched).inc();
    t.notifies
        .get_or_create(&transfer("notify-out", "sent"))
        .inc();
    m.zone.host_conflicts.get_or_create(&kind("spec")).set(1);
    let ipv4 = FamilyLabels { family: "ipv4" };
    m.alloc.vips_allocated.get_or_create(&ipv4).set(1);
    let created = ResultLabels { result: "created" };
    m.store.claim_creates.get_or_create(&created).inc();
    let s = &m.source;
    let file = SourceLabels {
        source: "file/a.yaml".into(),
    };
    for f in [&s.parse_errors, &s.invalid_objects, &s.reloads] {
        f.get_or_create(&file).inc();
    }
    let cluster = ClusterLabels {
        cluster: "east".into(),
    };
    for f in [&s.up, &s.last_sync, &s.objects] {
        f.get_or_create(&cluster).set(1);
    }
    s.watch_restarts.get_or_create(&cluster).inc();
    s.list_seconds.get_or_create(&cluster).set(1.0);
    let listed = ListLabels {
        cluster: "east".into(),
        list: "cache",
        result: "ok",
    };
    s.lists.get_or_create(&listed).inc();
    let written = WriteLabels {
        cluster: "east".into(),
        result: "written",
    };
    m.writeback.status_writes.get_or_create(&written).inc();
    m.writeback.spec_writes.get_or_create(&written).inc();
    let sec = &m.secondary;
    sec.transfers.get_or_create(&transfer("ixfr", "ok")).inc();
    let zone = ZoneLabels {
        zone: "global.".into(),
    };
    sec.serial.get_or_create(&zone).set(1);
    sec.stale.get_or_create(&zone).set(1);
    sec.lag.get_or_create(&zone).set(1.0);
    sec.retry.get_or_create(&zone).set(1.0);
    m
}

/// `(family name, line)` of each HELP/TYPE/UNIT line of the encoded registry.
fn descriptor_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| {
            l.starts_with("# HELP ") || l.starts_with("# TYPE ") || l.starts_with("# UNIT ")
        })
        .map(|l| (l.split(' ').nth(2).unwrap_or_default(), l))
        .collect()
}

#[test]
fn every_registered_family_is_sampled() {
    let m = sampled();
    // prometheus-client has no list of what a registry holds; its Debug prints one
    // `Descriptor { name, help, unit }` per registered metric.
    let registered = format!("{:?}", m.registry).matches("Descriptor {").count();
    let encoded = m
        .encode()
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .count();
    assert_eq!(
        encoded, registered,
        "a family registered without a sample in sampled() is not encoded, so not checked"
    );
}

#[test]
fn families_keep_their_names_types_and_help() {
    let text = sampled().encode();
    let mut lines = descriptor_lines(&text);
    // Stable: HELP before TYPE within a family, as encoded.
    lines.sort_by_key(|(name, _)| *name);
    let got: Vec<&str> = lines.into_iter().map(|(_, l)| l).collect();
    let want: Vec<&str> = FAMILIES.lines().collect();
    let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
    let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "exposed, not in families.txt: {extra:#?}\nin families.txt, not exposed: {missing:#?}"
    );
    assert_eq!(got, want, "each family once, HELP before TYPE");
}

#[test]
fn every_family_is_in_the_readme_and_every_readme_metric_exists() {
    let text = sampled().encode();
    // As scraped: a counter's samples are `<name>_total`.
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_string(),
            None => l.to_string(),
        })
        .collect();
    let readme = include_str!("../../README.md");
    let documented: std::collections::BTreeSet<String> = readme
        .match_indices("globaldns_")
        .map(|(at, _)| {
            let rest = &readme[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        undocumented.is_empty(),
        "not in README.md: {undocumented:?}"
    );
    assert!(missing.is_empty(), "in README.md, not exposed: {missing:?}");
}
