//! Where the allocation table lives. One trait, one implementation per place: the file store
//! (`alloc/file_store.rs`), the Kubernetes store shared by many instances (`kube/store.rs`), and
//! an in-memory one for `check` and tests. Loading and validating happen here, once, for all.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use ipnet::IpNet;

use super::{Allocator, Change, Table};

/// What a store says about a commit.
#[derive(Debug)]
pub enum Commit {
    /// The new table is durable (and, for a shared store, every new claim is ours).
    Done,
    /// Another instance claimed first: this is the store's table now. The pipeline adopts it and
    /// reconciles again; it never overwrites the other claim.
    Conflict(Table),
}

/// What a shared store tells the engine without being asked.
#[derive(Debug)]
pub enum StoreEvent {
    /// Another instance changed the store: its table is read with [`Store::shared_table`] when
    /// the engine gets to it (a table captured when the change was seen may be older than a
    /// commit the engine made meanwhile, and adopting it would undo that commit).
    Changed,
    /// [`Store::claim_defer`] may answer differently now (this instance became, or stopped
    /// being, the one that claims first): hosts waiting for a claim are looked at again.
    DeferChanged,
}

/// Called when a shared store has news for the engine.
pub type Listener = Arc<dyn Fn(StoreEvent) + Send + Sync>;

pub trait Store: Send {
    /// Names the store in messages (`state/allocations.json`, `VipClaims in …`).
    fn describe(&self) -> String;
    /// The table as it is now; called once, before anything is served.
    fn load(&mut self) -> Result<Table>;
    /// Makes `changes` durable (each host's allocation before and after; `table` is the whole
    /// table after them). Returns only once they would survive a crash.
    fn commit(&mut self, changes: &[Change], table: &Table) -> Result<Commit>;
    /// Starts reporting tables that other instances write. A store nobody else writes never
    /// calls `listener`.
    fn subscribe(&mut self, listener: Listener) {
        let _ = listener;
    }
    /// A shared store's whole table as it knows it now (None: nobody else writes it).
    fn shared_table(&mut self) -> Option<Table> {
        None
    }
    /// How long to wait before claiming an address for a host that has none, so that the
    /// instance designated to claim first (another one) does it and this one adopts its claim;
    /// None: claim at once. Only a shared store ever defers.
    fn claim_defer(&self) -> Option<Duration> {
        None
    }
}

/// Loads a store's table and checks it against the ranges: a table that breaks the allocation
/// rules (two hosts on one address, an address outside the ranges) is refused, never repaired.
pub fn open(store: &mut dyn Store, ranges: &[IpNet], hold_secs: u64) -> Result<Allocator> {
    check_ranges(ranges)?;
    let table = store.load()?;
    let allocator = Allocator::new(ranges, hold_secs, table.clone());
    if let Err(errors) = allocator.validate(&table) {
        bail!(
            "allocation store {} fails validation (refusing to start; it is never repaired \
             automatically):\n  {}",
            store.describe(),
            errors.join("\n  ")
        );
    }
    Ok(allocator)
}

/// Refuses overlapping `--vip-range` values (one address must belong to one range), an empty
/// set, a range with no address to hand out, and IPv4-mapped IPv6 (its VIPs would be AAAA
/// records of IPv4 addresses: an IPv4 range is written a.b.c.d/n).
pub fn check_ranges(ranges: &[IpNet]) -> Result<()> {
    for r in ranges {
        if let IpNet::V6(v6) = r {
            if v6.network().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 {
                bail!("--vip-range {r} is IPv4-mapped IPv6: write an IPv4 range as a.b.c.d/n");
            }
        }
        if super::pool::Pool::new(vec![*r]).is_none_or(|p| p.capacity() == 0) {
            bail!(
                "--vip-range {r} holds no usable VIP (.0 and .255 of every /24 and the first \
                 address of an IPv6 range are never handed out)"
            );
        }
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                bail!("--vip-range {a} and {b} overlap");
            }
        }
    }
    if ranges.is_empty() {
        bail!("at least one --vip-range is needed");
    }
    Ok(())
}

/// A table kept in memory only: `check` (which never writes) and tests.
#[derive(Default)]
pub struct MemoryStore {
    pub table: Table,
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "in memory".into()
    }
    fn load(&mut self) -> Result<Table> {
        Ok(self.table.clone())
    }
    fn commit(&mut self, changes: &[Change], _table: &Table) -> Result<Commit> {
        // Per change, as the file store's log: a commit costs what it changes.
        for c in changes {
            match c.after {
                Some(a) => self.table.insert(c.host.clone(), a),
                None => self.table.remove(&c.host),
            };
        }
        Ok(Commit::Done)
    }
}
