//! Incremental passes against full builds, holds, and the parallel stages.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::serviceentry::{ObjectRef, Resolution, SrvPort, Transport};
use crate::zone::Snapshot;

const HOLD: u64 = 50;

fn cfg() -> ZoneConfig {
    ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    }
}

fn ranges() -> Vec<IpNet> {
    vec![
        "240.10.0.0/16".parse().unwrap(),
        "fd00:10::/64".parse().unwrap(),
    ]
}

/// Host names that overlap on purpose: parents of other hosts, wildcards above hosts and
/// above each other, names under the name servers' parent.
fn host_pool() -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..12 {
        v.push(format!("s{i}.ns{}.global", i % 3));
        v.push(format!("a.s{i}.ns{}.global", i % 3));
        v.push(format!("*.s{i}.ns{}.global", i % 3));
    }
    v.extend(
        [
            "*.ns0.global",
            "ns1.global",
            "*.global",
            "x.y.z.global",
            "ns.global",
        ]
        .map(String::from),
    );
    v
}

fn random_entry(rng: &mut StdRng, unit: usize, n: usize, pool: &[String]) -> Entry {
    let hosts: Vec<String> = (0..rng.random_range(1..=3))
        .map(|_| pool[rng.random_range(0..pool.len())].clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let addresses: Vec<IpAddr> = match rng.random_range(0..6) {
        // An address inside the VIP range: reserved, displaces whoever holds it.
        0 => vec![format!(
            "240.10.{}.{}",
            rng.random_range(0..2),
            rng.random_range(1..40)
        )
        .parse()
        .unwrap()],
        1 => vec!["10.0.0.1".parse().unwrap(), "fd00:99::1".parse().unwrap()],
        _ => vec![],
    };
    let ports = (0..rng.random_range(0..3))
        .map(|p| SrvPort {
            name: format!("p{p}"),
            transport: if rng.random_bool(0.8) {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            number: rng.random_range(80..90),
        })
        .collect();
    Entry {
        object: ObjectRef {
            cluster: format!("c{}", unit % 2),
            namespace: "ns".into(),
            name: format!("u{unit}-e{n}"),
        },
        hosts,
        addresses,
        status_addresses: if rng.random_bool(0.1) {
            vec![("240.240.0.7".parse().unwrap(), None)]
        } else {
            vec![]
        },
        ports,
        resolution: match rng.random_range(0..5) {
            0 => Resolution::None,
            1 => Resolution::DynamicDns,
            _ => Resolution::Dns,
        },
        autoallocate: rng.random_bool(0.9),
        routing: Default::default(),
    }
}

fn key(unit: usize) -> SourceKey {
    SourceKey {
        cluster: format!("c{}", unit % 2),
        unit: format!("u{unit}.yaml"),
    }
}

/// Everything a client can see: every record of every zone but the SOA (whose serial
/// differs), and the answer to each type of question for many names.
fn observable(snap: &Snapshot, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for apex in snap.apex_names() {
        out.extend(
            snap.zone_records(&apex)
                .iter()
                .skip(1)
                .map(|r| r.to_string()),
        );
    }
    for n in names {
        let name = LowerName::new(&Name::from_ascii(n).unwrap());
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::PTR,
        ] {
            let a = snap.lookup(&name, t);
            out.push(format!(
                "{n} {t}: {:?} {:?} +{} {:?}",
                a.rcode,
                a.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                a.authority.len(),
                a.additional
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>(),
            ));
        }
    }
    out
}

fn query_names(snap: &Snapshot, pool: &[String]) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for h in pool {
        let h = h.replace('*', "q");
        let mut parts: Vec<&str> = h.split('.').collect();
        names.insert(format!("deeper.{h}"));
        names.insert(format!("_p0._tcp.{h}"));
        names.insert(format!("_tcp.{h}"));
        while parts.len() > 1 {
            names.insert(parts.join("."));
            parts.remove(0);
        }
    }
    for h in snap.hosts().values() {
        for a in h.addresses() {
            let mut rev = Name::from(*a);
            rev.set_fqdn(true);
            names.insert(rev.to_ascii());
            names.insert(rev.base_name().to_ascii());
        }
    }
    names.into_iter().collect()
}

#[test]
fn incremental_passes_serve_what_a_full_build_serves() {
    let pool = host_pool();
    // (displaced, released, reclaimed, expired) over all runs: the rules were exercised.
    let mut seen = [0usize; 4];
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = Pipeline::new(
            &cfg(),
            &ranges(),
            true,
            Allocator::new(&ranges(), HOLD, Table::new()),
        );
        let mut units: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
        let mut now = 1_000;
        let mut snap = p.publish().0;
        for _ in 0..80 {
            let u = rng.random_range(0..8);
            if rng.random_bool(0.2) {
                units.remove(&u);
                p.remove_unit(&key(u));
            } else {
                let mut entries: Vec<Entry> = (0..rng.random_range(1..5))
                    .map(|n| random_entry(&mut rng, u, n, &pool))
                    .collect();
                // Now and then a user writes an address that is someone's VIP.
                let vips: Vec<IpAddr> = p
                    .allocator
                    .table()
                    .values()
                    .filter_map(|a| a.ipv4.map(IpAddr::V4))
                    .collect();
                if !vips.is_empty() && rng.random_bool(0.3) {
                    entries[0].addresses = vec![vips[rng.random_range(0..vips.len())]];
                }
                units.insert(u, entries.clone());
                p.set_unit(key(u), entries);
            }
            if rng.random_bool(0.5) {
                now += rng.random_range(0..30);
                let out = p.reconcile(now, Instant::now());
                for (n, v) in seen.iter_mut().zip([
                    out.displaced.len(),
                    out.released.len(),
                    out.reclaimed.len(),
                    out.expired.len(),
                ]) {
                    *n += v;
                }
                p.allocator.take_changes();
                snap = p.publish().0;
            }
        }
        p.reconcile(now, Instant::now());
        p.allocator.take_changes();
        snap = std::mem::replace(&mut snap, p.publish().0);
        drop(snap);
        let (incremental, incremental_reports) = p.publish();

        // The same sources and table from scratch: nothing to change, the same answers.
        let mut full = Pipeline::new(
            &cfg(),
            &ranges(),
            true,
            Allocator::new(&ranges(), HOLD, p.allocator.table().clone()),
        );
        for (u, entries) in &units {
            full.set_unit(key(*u), entries.clone());
        }
        full.reconcile(now, Instant::now());
        assert_eq!(
            full.allocator.take_changes(),
            vec![],
            "seed {seed}: the incremental table is not what a full pass keeps"
        );
        let (fresh, fresh_reports) = full.publish();
        assert_eq!(
            incremental_reports.hosts(),
            fresh_reports.hosts(),
            "seed {seed}: host reports"
        );
        assert_eq!(
            incremental.hosts(),
            fresh.hosts(),
            "seed {seed}: zone hosts"
        );
        assert_eq!(
            incremental_reports.served_hosts(),
            fresh_reports.served_hosts(),
            "seed {seed}"
        );
        assert_eq!(fresh.served_hosts(), fresh_reports.served_hosts());
        let names = query_names(&fresh, &pool);
        let (a, b) = (observable(&incremental, &names), observable(&fresh, &names));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "seed {seed}");
        }
        assert_eq!(a.len(), b.len(), "seed {seed}");
        assert!(
            fresh.served_hosts() > 5,
            "seed {seed}: too little served to compare"
        );
    }
    assert!(
        seen.iter().all(|n| *n > 0),
        "(displaced, released, reclaimed, expired): {seen:?}"
    );
}

#[test]
fn a_host_waiting_for_a_vip_gets_one_when_a_hold_expires() {
    let ranges: Vec<IpNet> = vec!["240.10.0.0/30".parse().unwrap()]; // 3 usable
    let mut p = Pipeline::new(
        &cfg(),
        &ranges,
        true,
        Allocator::new(&ranges, 10, Table::new()),
    );
    p.set_unit(key(0), ["h0", "h1", "h2", "h3"].map(named_entry).to_vec());
    let out = p.reconcile(100, Instant::now());
    assert_eq!(out.exhausted, vec![("h3.ns.global".to_string(), "IPv4")]);
    p.allocator.take_changes();
    let (_, reports) = p.publish();
    assert!(!reports.get("h3.ns.global").unwrap().served);
    // h0 goes: held for 10 s, so h3 still waits.
    p.set_unit(key(0), ["h1", "h2", "h3"].map(named_entry).to_vec());
    let out = p.reconcile(105, Instant::now());
    assert_eq!(out.released, vec!["h0.ns.global".to_string()]);
    assert!(out.allocated.is_empty());
    p.allocator.take_changes();
    p.publish();
    // The hold runs out on a pass without any source change: h3 gets the freed VIP.
    assert!(p.holds_due(115));
    let out = p.reconcile(115, Instant::now());
    assert_eq!(out.expired, vec!["h0.ns.global".to_string()]);
    assert_eq!(out.allocated.len(), 1, "{out:?}");
    assert!(out.exhausted.is_empty(), "{out:?}");
    p.allocator.take_changes();
    let (snap, reports) = p.publish();
    assert!(reports.get("h3.ns.global").unwrap().served);
    assert!(snap.host("h3.ns.global").is_some());
    assert!(reports.get("h0.ns.global").is_none());
    assert!(snap.host("h0.ns.global").is_none());
}

#[test]
fn parallel_stages_keep_the_order() {
    let n = PARALLEL_FROM * 2 + 7;
    let mut items: Vec<usize> = (0..n).collect();
    let expected: Vec<usize> = items.iter().map(|i| i * 3).collect();
    assert_eq!(par_map(&mut items, |i| *i * 3), expected);
    let views: Vec<(String, Option<HostView>)> = (0..n)
        .map(|i| {
            (
                format!("h{i}.ns.global"),
                (i % 3 != 0).then(HostView::default),
            )
        })
        .collect();
    let alloc = Allocator::new(&ranges(), HOLD, Table::new());
    let reports = make_reports(views, &alloc);
    assert_eq!(reports.len(), n);
    for (i, (host, r)) in reports.iter().enumerate() {
        assert_eq!(*host, format!("h{i}.ns.global"));
        assert_eq!(r.is_some(), i % 3 != 0, "{host}");
    }
}

/// A store that lets new claims wait (as an instance that is not the claimer does), counting
/// the commits that reach it.
struct Deferring {
    grace: Option<Duration>,
    commits: usize,
    inner: crate::alloc::store::MemoryStore,
}

impl Store for Deferring {
    fn describe(&self) -> String {
        "deferring".into()
    }
    fn load(&mut self) -> Result<Table> {
        self.inner.load()
    }
    fn commit(&mut self, changes: &[crate::alloc::Change], table: &Table) -> Result<Commit> {
        self.commits += 1;
        self.inner.commit(changes, table)
    }
    fn claim_defer(&self) -> Option<Duration> {
        self.grace
    }
}

/// One ServiceEntry of one host, `h.ns.global`, that wants a VIP.
fn h_entry() -> Entry {
    named_entry("h")
}

/// ServiceEntry `c/ns/NAME` of one host, `NAME.ns.global`, that wants a VIP.
fn named_entry(name: &str) -> Entry {
    Entry {
        object: ObjectRef {
            cluster: "c".into(),
            namespace: "ns".into(),
            name: name.into(),
        },
        hosts: vec![format!("{name}.ns.global")],
        addresses: vec![],
        status_addresses: vec![],
        ports: vec![],
        resolution: Resolution::Dns,
        autoallocate: true,
        routing: Default::default(),
    }
}

/// A pipeline with one IPv4 range, 240.10.0.0/16, and nothing in it.
fn v4_pipeline() -> Pipeline {
    let ranges: Vec<IpNet> = vec!["240.10.0.0/16".parse().unwrap()];
    Pipeline::new(
        &cfg(),
        &ranges,
        true,
        Allocator::new(&ranges, HOLD, Table::new()),
    )
}

fn deferring(grace: Option<Duration>) -> (Pipeline, Deferring) {
    let mut p = v4_pipeline();
    p.set_unit(key(0), vec![h_entry()]);
    let store = Deferring {
        grace,
        commits: 0,
        inner: Default::default(),
    };
    (p, store)
}

#[test]
fn a_deferred_host_waits_unserved_then_serves_the_claimers_vip() {
    let (mut p, mut store) = deferring(Some(Duration::from_secs(3600)));
    let pass = p.pass(100, &mut store).unwrap();
    // Not rendered at all while it waits: no VIP the store does not hold, and no new serial.
    assert!(pass.reports.get("h.ns.global").is_none());
    let serial = pass.snapshot.serial;
    assert_eq!(pass.claims.deferred, 1);
    assert_eq!(pass.outcome.deferred, vec!["h.ns.global".to_string()]);
    assert_eq!(store.commits, 0, "nothing claimed");
    assert!(p.next_deferral_due().is_some());
    // Looked at again before the claim came: still waiting, counted once.
    p.pending.push("h.ns.global".into());
    let pass = p.pass(101, &mut store).unwrap();
    assert_eq!(pass.claims, ClaimCounts::default());
    assert_eq!(pass.snapshot.serial, serial);
    // The claimer's claim arrives through the store (an address other than ours would be).
    let theirs: std::net::Ipv4Addr = "240.10.7.7".parse().unwrap();
    let table: Table = [(
        "h.ns.global".to_string(),
        crate::alloc::Allocation {
            ipv4: Some(theirs),
            ..Default::default()
        },
    )]
    .into();
    assert_eq!(p.adopt(table), Ok(true));
    let pass = p.pass(102, &mut store).unwrap();
    let h = pass.reports.get("h.ns.global").unwrap();
    assert!(h.served);
    assert_eq!(h.addresses[0].address, IpAddr::V4(theirs));
    assert_eq!(pass.claims.adopted, 1);
    assert_eq!(store.commits, 0, "adopted without a request");
    assert_eq!(p.deferred(), 0);
    assert_eq!(p.next_deferral_due(), None);
}

#[test]
fn a_deferred_host_claims_itself_once_its_grace_ran_out() {
    let (mut p, mut store) = deferring(Some(Duration::ZERO));
    let pass = p.pass(100, &mut store).unwrap();
    assert!(pass.reports.get("h.ns.global").is_none());
    let due = p.next_deferral_due().expect("a grace to wait for");
    assert!(p.wake_deferred(due, false));
    // Handed out once: not due again until a pass settled it.
    assert!(!p.wake_deferred(due, false));
    let pass = p.pass(101, &mut store).unwrap();
    assert!(pass.reports.get("h.ns.global").unwrap().served);
    assert_eq!(pass.claims.claimed_after_grace, 1);
    assert_eq!(store.commits, 1);
    assert_eq!(p.deferred(), 0);
}

#[test]
fn becoming_the_claimer_claims_every_waiting_host_at_once() {
    let (mut p, mut store) = deferring(Some(Duration::from_secs(3600)));
    p.pass(100, &mut store).unwrap();
    assert_eq!(p.deferred(), 1);
    store.grace = None;
    assert!(p.wake_deferred(Instant::now(), true));
    let pass = p.pass(101, &mut store).unwrap();
    assert!(pass.reports.get("h.ns.global").unwrap().served);
    assert_eq!(pass.claims.claimed_after_grace, 1);
    assert_eq!(store.commits, 1);
}

#[test]
fn a_rendered_host_that_waits_says_why() {
    // Served from a user address first; the address goes, so it needs a VIP: it waits, and the
    // zone says why it is not served.
    let (mut p, mut store) = deferring(Some(Duration::from_secs(3600)));
    let mut entry = h_entry();
    entry.addresses = vec!["10.0.0.9".parse().unwrap()];
    entry.autoallocate = false;
    p.set_unit(key(0), vec![entry.clone()]);
    let pass = p.pass(100, &mut store).unwrap();
    assert!(pass.reports.get("h.ns.global").unwrap().served);
    entry.addresses.clear();
    entry.autoallocate = true;
    p.set_unit(key(0), vec![entry]);
    let pass = p.pass(101, &mut store).unwrap();
    let h = pass.reports.get("h.ns.global").unwrap();
    assert!(!h.served);
    assert_eq!(h.reason, Some(DEFERRED_REASON));
    assert_eq!(pass.claims.deferred, 1);
}

#[test]
fn without_a_grace_nothing_waits() {
    let (mut p, mut store) = deferring(None);
    let pass = p.pass(100, &mut store).unwrap();
    assert!(pass.reports.get("h.ns.global").unwrap().served);
    assert_eq!(pass.claims, ClaimCounts::default());
    assert_eq!(p.next_deferral_due(), None);
}

/// The zone takes only what becomes records; the reports beside it say the rest. A second
/// object listing a host with the same address changes its report (its objects), not its
/// records: the reports show it, and the serial moves as it always has for a changed report.
#[test]
fn reports_change_beside_the_zone_and_move_its_serial() {
    let mut p = v4_pipeline();
    let mut store = crate::alloc::store::MemoryStore::default();
    let mut entry = h_entry();
    entry.addresses = vec!["10.0.0.9".parse().unwrap()];
    entry.autoallocate = false;
    p.set_unit(key(0), vec![entry.clone()]);
    let first = p.pass(100, &mut store).unwrap();
    let h = first.reports.get("h.ns.global").unwrap();
    assert_eq!(h.objects, ["c/ns/h"]);
    let zone_host = first.snapshot.host("h.ns.global").unwrap().into_owned();
    assert_eq!(Some(zone_host.clone()), h.zone_host());
    assert_eq!(
        (first.reports.serial, first.reports.generation),
        (first.snapshot.serial, first.snapshot.generation)
    );

    entry.object.name = "h2".into();
    p.set_unit(key(1), vec![entry]);
    let second = p.pass(101, &mut store).unwrap();
    let h = second.reports.get("h.ns.global").unwrap();
    assert_eq!(h.objects, ["c/ns/h", "c/ns/h2"]);
    assert_eq!(*second.snapshot.host("h.ns.global").unwrap(), zone_host);
    assert!(second.snapshot.serial > first.snapshot.serial);
    assert_eq!(second.reports.serial, second.snapshot.serial);
    // Nothing changed: no new serial.
    p.pending.push("h.ns.global".into());
    let third = p.pass(102, &mut store).unwrap();
    assert_eq!(third.snapshot.serial, second.snapshot.serial);
    assert_eq!(
        (third.reports.host_count(), third.reports.served_hosts()),
        (1, 1)
    );
}
