//! Micro-benchmarks: answering from wire bytes to wire bytes (positive, NODATA, NXDOMAIN; through
//! the fast path's cache and through the general path), rebuilding the snapshot at 100k hosts, and
//! allocating 100k hosts. Run: `cargo bench --bench micro`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use globaldns::alloc::{Allocator, Table};
use globaldns::dns::Handler;
use globaldns::fastpath::{general, Responder};
use globaldns::metrics::Metrics;
use globaldns::registry::{Merged, Registry, SourceKey};
use globaldns::serviceentry::{Entry, ObjectRef, Resolution};
use globaldns::zone::{Snapshot, ZoneConfig};
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
        })
        .collect()
}

fn merged(n: usize) -> Merged {
    let mut r = Registry::default();
    r.set(
        SourceKey {
            cluster: "c".into(),
            unit: "all".into(),
        },
        entries(n),
    );
    r.merge(true)
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

fn allocated(m: &Merged) -> Allocator {
    let mut a = Allocator::new(&ranges(), 60, Table::new());
    a.reconcile(&Snapshot::wanted_vips(m), &m.reserved, 1);
    a
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
    let m = merged(10_000);
    let a = allocated(&m);
    let snap = Snapshot::build(&cfg(), &ranges(), &m, Some(&a), None);
    let handler = Arc::new(Handler {
        snapshot: Arc::new(ArcSwap::from_pointee(snap)),
        metrics: Arc::new(Metrics::new()),
        allow_transfer: vec![],
    });
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
            b.iter(|| general(&handler, std::hint::black_box(q), src, true))
        });
    }
}

fn rebuild(c: &mut Criterion) {
    let m = merged(100_000);
    let a = allocated(&m);
    let prev = Snapshot::build(&cfg(), &ranges(), &m, Some(&a), None);
    let mut g = c.benchmark_group("scale_100k");
    g.sample_size(10);
    g.bench_function("snapshot_rebuild", |b| {
        b.iter(|| Snapshot::build(&cfg(), &ranges(), &m, Some(&a), Some(&prev)))
    });
    g.bench_function("merge_registry", |b| b.iter(|| merged(100_000)));
    let wanted: BTreeSet<String> = Snapshot::wanted_vips(&m);
    g.bench_function("allocate", |b| {
        b.iter_batched(
            || Allocator::new(&ranges(), 60, Table::new()),
            |mut a| a.reconcile(&wanted, &m.reserved, 1),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, answering, rebuild);
criterion_main!(benches);
