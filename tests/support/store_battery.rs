//! One battery of checks run against every `Store` implementation (file, memory, Kubernetes):
//! what is committed is what a fresh store over the same place loads back, change by change.

use std::net::{Ipv4Addr, Ipv6Addr};

use globaldns::alloc::store::{Commit, Store};
use globaldns::alloc::{Allocation, Change, Table};

fn alloc(v4: [u8; 4], v6: Option<u16>, released_at: Option<u64>) -> Allocation {
    Allocation {
        ipv4: Some(Ipv4Addr::from(v4)),
        ipv6: v6.map(|n| Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, n)),
        released_at,
    }
}

/// Applies `changes` to `table` as a pass would, commits them, and checks a store opened anew
/// (`reopen`) loads exactly the table.
fn step(
    what: &str,
    store: &mut dyn Store,
    table: &mut Table,
    changes: Vec<Change>,
    reopen: &mut dyn FnMut() -> Box<dyn Store>,
) {
    for c in &changes {
        assert_eq!(table.get(&c.host), c.before.as_ref(), "{what}: test bug");
        match c.after {
            Some(a) => table.insert(c.host.clone(), a),
            None => table.remove(&c.host),
        };
    }
    match store.commit(&changes, table) {
        Ok(Commit::Done) => {}
        other => panic!("{what} ({}): commit gave {other:?}", store.describe()),
    }
    let mut fresh = reopen();
    let loaded = fresh
        .load()
        .unwrap_or_else(|e| panic!("{what}: load: {e:#}"));
    assert_eq!(&loaded, table, "{what} ({}): loaded back", fresh.describe());
}

/// Runs the battery. `reopen` opens the store over the same place as `store` (for a store that
/// locks its place, `store` must be dropped first: `reopen` is only called between commits, on a
/// separate handle, so a locking store is given a `reopen` that reads without locking).
pub fn run(mut store: Box<dyn Store>, mut reopen: impl FnMut() -> Box<dyn Store>) {
    let mut table = store.load().expect("first load");
    assert!(table.is_empty(), "the battery starts from an empty store");
    let change = |host: &str, before: Option<Allocation>, after: Option<Allocation>| Change {
        host: host.to_string(),
        before,
        after,
    };
    let a = alloc([240, 10, 0, 1], None, None);
    let b = alloc([240, 10, 0, 2], Some(2), None);
    let r = &mut reopen;
    step(
        "two new hosts, one dual-stack",
        store.as_mut(),
        &mut table,
        vec![
            change("a.ns.global", None, Some(a)),
            change("b.ns.global", None, Some(b)),
        ],
        r,
    );
    let held = Allocation {
        released_at: Some(1_800_000_000),
        ..a
    };
    step(
        "a host put on hold",
        store.as_mut(),
        &mut table,
        vec![change("a.ns.global", Some(a), Some(held))],
        r,
    );
    step(
        "a host back within its hold",
        store.as_mut(),
        &mut table,
        vec![change("a.ns.global", Some(held), Some(a))],
        r,
    );
    let moved = alloc([240, 10, 0, 3], Some(2), None);
    step(
        "a VIP moved (displaced) and a hold expired in one commit",
        store.as_mut(),
        &mut table,
        vec![
            change("a.ns.global", Some(a), None),
            change("b.ns.global", Some(b), Some(moved)),
            change("c.ns.global", None, Some(a)),
        ],
        r,
    );
    step("an empty commit", store.as_mut(), &mut table, vec![], r);
}
