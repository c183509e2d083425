//! Micro-benchmarks: answering from wire bytes to wire bytes (positive, NODATA, NXDOMAIN; through
//! the fast path's cache and through the general path); at 100k hosts: the first full pass
//! (merge, allocate, build), one change (a file of 500 entries rewritten with one host more or
//! less: merge, reconcile, re-render, publish), merging every host, and allocating 100k hosts;
//! decoding one list page of 500 ServiceEntries as the API server sends it (typed, against kube's
//! `DynamicObject` then a typed parse, the path before it).
//! Run: `cargo bench --bench micro`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use globaldns::alloc::store::MemoryStore;
use globaldns::alloc::{Allocator, Table};
use globaldns::dns::{Handler, Transport};
use globaldns::fastpath::{general, Responder};
use globaldns::host_view::Rules;
use globaldns::metrics::Metrics;
use globaldns::pipeline::{Pass, Pipeline};
use globaldns::published::Published;
use globaldns::registry::{Merged, Registry, SourceKey};
use globaldns::serviceentry::{Entry, ObjectRef, Resolution};
use globaldns::zone::ZoneConfig;

/// Entries per unit (file), as in benches/gen-serviceentries.py.
const PER_UNIT: usize = 500;
use ipnet::IpNet;

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            object: ObjectRef {
                cluster: format!("c{}", i % 10),
                namespace: format!("ns-{}", i % 100),
                name: format!("svc-{i}"),
            },
            hosts: vec![format!("svc-{i}.ns-{}.global", i % 100)],
            addresses: vec![],
            status_addresses: vec![],
            ports: vec![],
            resolution: Resolution::Dns,
            autoallocate: true,
            routing: Default::default(),
        })
        .collect()
}

fn unit(i: usize) -> SourceKey {
    SourceKey {
        cluster: format!("c{}", i % 10),
        unit: format!("file-{i}.yaml"),
    }
}

fn registry(n: usize) -> Registry {
    let mut r = Registry::default();
    for (i, chunk) in entries(n).chunks(PER_UNIT).enumerate() {
        r.set(unit(i), chunk.to_vec());
    }
    r
}

/// A pipeline with `n` hosts loaded and published.
/// A pipeline with `n` hosts passed once, and what it published (the snapshot and the reports).
fn loaded(n: usize) -> (Pipeline, Pass) {
    let mut p = Pipeline::new(
        &cfg(),
        &ranges(),
        true,
        Allocator::new(&ranges(), 60, Table::new()),
    );
    for (i, chunk) in entries(n).chunks(PER_UNIT).enumerate() {
        p.set_unit(unit(i), chunk.to_vec());
    }
    let pass = p.pass(1, &mut MemoryStore::default()).unwrap();
    (p, pass)
}

fn ranges() -> Vec<IpNet> {
    vec!["240.0.0.0/12".parse().unwrap()]
}

fn cfg() -> ZoneConfig {
    ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    }
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in name.split('.') {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    // OPT: payload 1232, version 0, no options.
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    p
}

fn answering(c: &mut Criterion) {
    let (_, snap) = loaded(10_000);
    let handler = Arc::new(Handler::plain(
        Arc::new(Published::new(snap.snapshot)),
        Arc::new(Metrics::new()),
    ));
    let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let cases = [
        ("positive", query("svc-42.ns-42.global", 1)),
        ("nodata", query("svc-42.ns-42.global", 28)),
        ("nxdomain", query("nope-42.ns-42.global", 1)),
    ];
    let mut responder = Responder::new(handler.clone());
    responder.begin_batch();
    let mut out = Vec::with_capacity(512);
    for (label, q) in &cases {
        c.bench_function(&format!("fast_path/{label}"), |b| {
            b.iter(|| responder.answer(std::hint::black_box(q), src, &mut out))
        });
        c.bench_function(&format!("general_path/{label}"), |b| {
            b.iter(|| general(&handler, std::hint::black_box(q), src, Transport::Udp))
        });
    }
}

fn scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale_100k");
    g.sample_size(10);
    g.bench_function("first_pass", |b| b.iter(|| loaded(100_000)));
    let (mut p, mut snap) = loaded(100_000);
    let mut store = MemoryStore {
        table: p.table().clone(),
    };
    let base = entries(100_000);
    let mut extra = false;
    g.bench_function("one_change", |b| {
        b.iter(|| {
            // File 7 with one host more, then as it was: the server's cost of one edit.
            let mut unit7 = base[7 * PER_UNIT..8 * PER_UNIT].to_vec();
            extra = !extra;
            if extra {
                let mut e = unit7[0].clone();
                e.hosts = vec!["added.ns-1.global".into()];
                e.object.name = "added".into();
                unit7.push(e);
            }
            p.set_unit(unit(7), unit7);
            // The previous snapshot and reports stay alive until the new ones are in, as in
            // the server.
            snap = p.pass(1, &mut store).unwrap();
        })
    });
    assert!(snap.snapshot.served_hosts() >= 100_000);
    assert!(snap.reports.served_hosts() >= 100_000);
    let r = registry(100_000);
    g.bench_function("merge_registry", |b| b.iter(|| r.merge(&Rules::default())));
    let m: Merged = r.merge(&Rules::default());
    let wanted: BTreeSet<String> = m
        .hosts
        .iter()
        .filter(|(_, v)| v.wants_vip)
        .map(|(h, _)| h.clone())
        .collect();
    g.bench_function("allocate", |b| {
        b.iter_batched(
            || Allocator::new(&ranges(), 60, Table::new()),
            |mut a| a.reconcile(&wanted, &m.reserved, 1),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// One list page of `n` single-host ServiceEntries as kube-apiserver 1.20 sends them
/// (benches/lib/kube_mesh.py's objects).
fn list_page(n: usize) -> String {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                "metadata": {
                    "name": format!("se-{i:05}"), "namespace": "bench",
                    "uid": "6f1c1f0e-3b7e-4a0e-9d53-0c1f7f0a5b2e", "generation": 1,
                    "resourceVersion": format!("{}", 1000 + i),
                    "creationTimestamp": "2026-12-07T09:00:00Z",
                    "managedFields": [{
                        "manager": "python-urllib", "operation": "Update",
                        "apiVersion": "networking.istio.io/v1", "time": "2026-12-07T09:00:00Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {".": {}, "f:endpoints": {}, "f:hosts": {},
                                                "f:location": {}, "f:ports": {}, "f:resolution": {}}}
                    }]
                },
                "spec": {
                    "hosts": [format!("svc-{i}.ns-{}.global", i / 50)],
                    "location": "MESH_INTERNAL", "resolution": "DNS",
                    "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                    "endpoints": [{"address": "192.0.2.10"}]
                }
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntryList",
        "metadata": {"resourceVersion": "99999", "continue": "token"},
        "items": items,
    })
    .to_string()
}

fn kube_decode(c: &mut Criterion) {
    use globaldns::kube::object::ServiceEntryObject;
    use globaldns::serviceentry::{ServiceEntrySpec, ServiceEntryStatus};
    use kube::api::DynamicObject;
    use kube::core::{Object, ObjectList};
    let page = list_page(500);
    let mut g = c.benchmark_group("kube_list_page_500");
    g.bench_function("typed", |b| {
        b.iter(|| {
            let list: ObjectList<ServiceEntryObject> = serde_json::from_str(&page).unwrap();
            let models = list.items.into_iter().map(|o| o.into_model().unwrap());
            assert_eq!(models.count(), 500);
        })
    });
    g.bench_function("dynamic_then_parse", |b| {
        b.iter(|| {
            let list: ObjectList<DynamicObject> = serde_json::from_str(&page).unwrap();
            let parsed = list.items.iter().map(|o| {
                o.clone()
                    .try_parse::<Object<ServiceEntrySpec, ServiceEntryStatus>>()
                    .unwrap()
            });
            assert_eq!(parsed.count(), 500);
        })
    });
    g.finish();
}

criterion_group!(benches, answering, scale, kube_decode);
criterion_main!(benches);
