//! The allocator's rules, on tables built in memory.

use super::*;

fn set(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| h.to_string()).collect()
}

fn alloc(ranges: &[&str]) -> Allocator {
    let ranges: Vec<IpNet> = ranges.iter().map(|r| r.parse().unwrap()).collect();
    Allocator::new(&ranges, 100, Table::new())
}

#[test]
fn hash_is_the_documented_fnv1a() {
    // FNV-1a 64 test vectors.
    assert_eq!(host_hash(""), 0xcbf29ce484222325);
    assert_eq!(host_hash("a"), 0xaf63dc4c8601ec8c);
}

#[test]
fn never_network_or_broadcast_and_exhausts_cleanly() {
    let mut a = alloc(&["240.10.0.0/30"]);
    let hosts: Vec<String> = (0..5).map(|i| format!("h{i}.ns.global")).collect();
    let wanted: BTreeSet<String> = hosts.iter().cloned().collect();
    let out = a.reconcile(&wanted, &BTreeSet::new(), 0);
    // /30 = .0 .1 .2 .3: .0 excluded, 3 usable.
    assert_eq!(out.allocated.len(), 3);
    assert_eq!(out.exhausted.len(), 2);
    for (_, ip) in &out.allocated {
        assert!(a.v4.as_ref().unwrap().usable(*ip), "{ip}");
        assert_ne!(*ip, "240.10.0.0".parse::<IpAddr>().unwrap());
    }
}

#[test]
fn same_hosts_same_table_and_hold_returns_vip() {
    let hosts = set(&["a.x.global", "b.x.global", "c.x.global"]);
    let mut a = alloc(&["240.10.0.0/16", "fd00:10::/64"]);
    let mut b = alloc(&["240.10.0.0/16", "fd00:10::/64"]);
    a.reconcile(&hosts, &BTreeSet::new(), 0);
    b.reconcile(&hosts, &BTreeSet::new(), 5);
    assert_eq!(a.table(), b.table());
    let vip: Vec<IpAddr> = a.vips("a.x.global").collect();
    assert_eq!(vip.len(), 2);

    // Gone: held, not served, not reusable; back within the hold: same VIPs.
    let out = a.reconcile(&set(&["b.x.global"]), &BTreeSet::new(), 10);
    assert_eq!(out.released.len(), 2);
    assert_eq!(a.vips("a.x.global").count(), 0);
    a.reconcile(&set(&["a.x.global", "b.x.global"]), &BTreeSet::new(), 50);
    assert_eq!(a.vips("a.x.global").collect::<Vec<_>>(), vip);
    // c expires after 100 s of hold.
    let out = a.reconcile(&set(&["a.x.global", "b.x.global"]), &BTreeSet::new(), 111);
    assert_eq!(out.expired, vec!["c.x.global".to_string()]);
}

/// The census counted the slow way.
fn recount(a: &Allocator) -> Census {
    let t = a.table();
    Census {
        ipv4: t.values().filter(|x| x.ipv4.is_some()).count(),
        ipv6: t.values().filter(|x| x.ipv6.is_some()).count(),
        held: t.values().filter(|x| x.released_at.is_some()).count(),
    }
}

#[test]
fn census_and_holds_follow_every_change() {
    let mut a = alloc(&["240.10.0.0/16", "fd00:10::/64"]);
    let all = set(&["a.x.global", "b.x.global", "c.x.global"]);
    a.reconcile(&all, &BTreeSet::new(), 0);
    a.take_changes();
    assert_eq!(
        a.census(),
        Census {
            ipv4: 3,
            ipv6: 3,
            held: 0
        }
    );
    // b and c go at different times: two holds, due one after the other.
    a.reconcile(&set(&["a.x.global", "c.x.global"]), &BTreeSet::new(), 10);
    a.reconcile(&set(&["a.x.global"]), &BTreeSet::new(), 20);
    assert_eq!(a.census(), recount(&a));
    assert_eq!(a.census().held, 2);
    assert!(!a.holds_due(109));
    assert!(a.holds_due(110));
    let out = a.reconcile(&set(&["a.x.global"]), &BTreeSet::new(), 115);
    assert_eq!(out.expired, vec!["b.x.global".to_string()]);
    assert_eq!(
        a.census(),
        Census {
            ipv4: 2,
            ipv6: 2,
            held: 1
        }
    );
    // A user address displaces a's IPv4 VIP (a new one is allocated); undone by rollback.
    let old = a.table()["a.x.global"].ipv4.unwrap();
    a.reserve(IpAddr::V4(old));
    a.reconcile_host(
        "a.x.global",
        Want::Vip,
        Claim::Now,
        116,
        &mut AllocReport::default(),
    );
    assert_ne!(a.table()["a.x.global"].ipv4, Some(old));
    let changes = a.take_changes();
    assert_eq!(changes.len(), 1);
    a.rollback(&changes);
    a.unreserve(IpAddr::V4(old));
    assert_eq!(a.table()["a.x.global"].ipv4, Some(old));
    assert_eq!(a.census(), recount(&a));
    // c comes back within its hold: no longer held, nothing due.
    a.reconcile(&set(&["a.x.global", "c.x.global"]), &BTreeSet::new(), 117);
    assert_eq!(
        a.census(),
        Census {
            ipv4: 2,
            ipv6: 2,
            held: 0
        }
    );
    assert!(!a.holds_due(u64::MAX));
    // A table from a store replaces the counts.
    let mut b = alloc(&["240.10.0.0/16"]);
    b.replace_table(a.table().clone());
    assert_eq!(b.census(), recount(&a));
}

#[test]
fn user_address_displaces_auto_vip() {
    let mut a = alloc(&["240.10.0.0/16"]);
    let hosts = set(&["a.x.global"]);
    a.reconcile(&hosts, &BTreeSet::new(), 0);
    let old = a.vips("a.x.global").next().unwrap();
    let reserved: BTreeSet<IpAddr> = [old].into();
    let out = a.reconcile(&hosts, &reserved, 1);
    let new = a.vips("a.x.global").next().unwrap();
    assert_ne!(old, new);
    assert_eq!(out.displaced, vec![("a.x.global".into(), old, Some(new))]);
}

#[test]
fn validation_names_bad_entries() {
    let a = alloc(&["240.10.0.0/16"]);
    let mut t = Table::new();
    let ip = Some("240.10.1.1".parse().unwrap());
    t.insert(
        "a.x.global".into(),
        Allocation {
            ipv4: ip,
            ..Default::default()
        },
    );
    t.insert(
        "b.x.global".into(),
        Allocation {
            ipv4: ip,
            ..Default::default()
        },
    );
    t.insert(
        "c.x.global".into(),
        Allocation {
            ipv4: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        },
    );
    let errs = a.validate(&t).unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("a.x.global and b.x.global")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("c.x.global: 10.0.0.1")),
        "{errs:?}"
    );
}
