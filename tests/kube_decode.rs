//! The typed decode of ServiceEntries (src/kube/object.rs) against a REAL kube-apiserver (v1.20.2
//! and etcd on 127.0.0.1, from scripts/kube/cluster.sh, as tests/kube_e2e/ uses): bad objects in
//! the list and in watch events are skipped one by one, each with a log line naming it and
//! counted in `globaldns_invalid_objects_total`, while every other object is served and the
//! watch goes on (no restart).
//!
//! Istio's own CRD types `spec`, so the API server refuses such objects; older Istio CRDs (and
//! any CRD whose schema preserves unknown fields) let them in. The cluster here serves the
//! ServiceEntry CRD with such a schema.

mod common;
#[path = "support/kube_cluster.rs"]
mod kube_cluster;

use std::path::Path;
use std::time::Duration;

use common::{eventually, query_a, Server, Transport};
use kube_cluster::{serial, start, Cluster, Listed, ROOT};

/// Istio's ServiceEntry CRD (tests/kube/serviceentry-crd.yaml) with every version's schema
/// replaced by one that keeps whatever `spec` it is given, and does not require one.
fn permissive_crd() -> serde_json::Value {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/kube/serviceentry-crd.yaml")).unwrap();
    let mut crd: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    for v in crd["spec"]["versions"].as_array_mut().unwrap() {
        v["schema"]["openAPIV3Schema"] = serde_json::json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            "x-kubernetes-preserve-unknown-fields": true,
        });
    }
    crd
}

fn se(name: &str, spec: Option<serde_json::Value>) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "bar"},
    });
    if let Some(spec) = spec {
        doc["spec"] = spec;
    }
    doc
}

/// A valid spec: one host, one port, a VIP from globaldns.
fn good(host: &str) -> serde_json::Value {
    serde_json::json!({"hosts": [host], "resolution": "DNS",
                       "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]})
}

fn answers(gd: &Server, host: &str) -> bool {
    query_a(gd.dns, Transport::Udp, host).is_some_and(|a| !a.is_empty())
}

fn skipped(gd: &Server, object: &str, error: &str) -> bool {
    gd.log_contains(&format!(
        "ServiceEntry does not fit the model; skipped cluster=c1 object=bar/{object} error={error}"
    ))
}

const INVALID: &str = "globaldns_invalid_objects_total{source=\"cluster/c1\"}";
const RESTARTS: &str = "globaldns_watch_restarts_total{cluster=\"c1\"}";

/// The whole list from the apiserver's watch cache (the default `--kube-list cache`).
#[test]
fn bad_objects_in_the_cache_list_and_the_watch_are_skipped_one_by_one() {
    bad_objects_are_skipped_one_by_one("cache", Listed::cache_list);
}

/// Pages from etcd (`--kube-list paged`).
#[test]
fn bad_objects_in_the_paged_list_and_the_watch_are_skipped_one_by_one() {
    bad_objects_are_skipped_one_by_one("paged", Listed::paged);
}

fn bad_objects_are_skipped_one_by_one(list: &str, asked: fn(&Listed) -> bool) {
    let _g = serial();
    let c = Cluster::up_with_crd("c1", &permissive_crd().to_string());
    c.ensure_namespace("bar");
    let mut unknown = good("unknown.bar.global");
    unknown["someFutureField"] = serde_json::json!({"nested": [1, {"x": null}]});
    unknown["workloadSelector"] = serde_json::json!({"labels": {"app": "u"}});
    let mut bad_port = good("badport.bar.global");
    bad_port["ports"][0]["number"] = serde_json::json!("http");
    // One list page holds them all: the bad ones must not take the good ones down with them.
    let objects = [
        se("a", Some(good("a.bar.global"))),
        se(
            "wrong-type",
            Some(serde_json::json!({"hosts": "wrong.bar.global"})),
        ),
        se("no-spec", None),
        se("unknown", Some(unknown)),
        se("bad-port", Some(bad_port)),
        se("c", Some(good("c.bar.global"))),
    ];
    for o in &objects {
        c.apply(&o.to_string());
    }

    let (_t, gd) = start(&["--cluster", &c.flag(), "--kube-list", list]);
    for host in ["a.bar.global", "c.bar.global", "unknown.bar.global"] {
        eventually(Duration::from_secs(10), host, || {
            answers(&gd, host).then_some(())
        });
    }
    // The apiserver was asked for the list of that kind, once, and answered it.
    let lists = c.lists();
    assert!(
        lists.len() == 1 && asked(&lists[0]) && lists[0].code == 200,
        "one {list} list: {lists:?}"
    );
    assert!(gd.log_contains(&format!(
        "listed ServiceEntries cluster=c1 list={list} objects=6"
    )));
    assert!(
        !answers(&gd, "badport.bar.global"),
        "the object with a bad port is skipped whole"
    );
    assert!(!answers(&gd, "wrong.bar.global"));
    assert!(skipped(
        &gd,
        "wrong-type",
        "spec.hosts: invalid type: string \"wrong.bar.global\", expected a sequence"
    ));
    assert!(skipped(&gd, "no-spec", "missing field `spec`"));
    assert!(skipped(
        &gd,
        "bad-port",
        "spec.ports[0].number: invalid value: string \"http\""
    ));
    assert!(
        !gd.log_contains("object=bar/unknown"),
        "unknown fields are read past"
    );
    assert_eq!(gd.metric(INVALID), Some(3.0));

    // In a watch event: `c` turns bad (skipped: its host goes), then a new good object comes,
    // through the same watch.
    c.apply(&se("c", Some(serde_json::json!({"hosts": [{"not": "a name"}]}))).to_string());
    eventually(Duration::from_secs(10), "c withdrawn", || {
        (!answers(&gd, "c.bar.global")).then_some(())
    });
    assert!(skipped(&gd, "c", "spec.hosts[0]: invalid type: map"));
    c.apply(&se("d", Some(good("d.bar.global"))).to_string());
    eventually(Duration::from_secs(10), "d.bar.global", || {
        answers(&gd, "d.bar.global").then_some(())
    });
    assert!(answers(&gd, "a.bar.global"));
    assert_eq!(gd.metric(INVALID), Some(4.0));
    assert_eq!(
        gd.metric(RESTARTS).unwrap_or(0.0),
        0.0,
        "the watch never failed"
    );
}
