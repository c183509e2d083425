//! VIP allocation: a deterministic preferred slot per host, a fixed probe sequence on collision,
//! stability while any entry lists the host, a hold period after it disappears, and user addresses
//! that displace auto VIPs. The table is the only state globaldns keeps; stores persist it.

pub mod file_store;
pub mod metrics;
mod pool;
pub mod store;
mod table;

pub use pool::{host_hash, Pool};
use table::tally;
pub use table::{Allocation, Census, Table};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use fnv::FnvBuildHasher;
use ipnet::IpNet;

/// What one reconciliation did, for logs and metrics.
#[derive(Debug, Default, PartialEq)]
pub struct AllocReport {
    pub changed: bool,
    pub allocated: Vec<(String, IpAddr)>,
    /// Auto VIPs moved because a user address took their slot: (host, old, new or None).
    pub displaced: Vec<(String, IpAddr, Option<IpAddr>)>,
    pub released: Vec<String>,
    pub reclaimed: Vec<String>,
    pub expired: Vec<String>,
    /// Hosts that could not get a VIP of a family because its pool is full.
    pub exhausted: Vec<(String, &'static str)>,
    /// Hosts that need a new VIP and were not allowed to claim one yet (another instance claims
    /// first: see `pipeline/defer.rs`).
    pub deferred: Vec<String>,
}

/// Whether the mesh needs a VIP for a host (`HostView::wants_vip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Vip,
    NoVip,
}

impl From<bool> for Want {
    fn from(wants: bool) -> Want {
        if wants {
            Want::Vip
        } else {
            Want::NoVip
        }
    }
}

/// Whether this instance may claim a VIP the host lacks now, or leaves it to the claimer
/// instance for a while (`pipeline/defer.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Now,
    Defer,
}

/// One host's allocation before and after a pass, for the stores (None: no entry).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub host: String,
    pub before: Option<Allocation>,
    pub after: Option<Allocation>,
}

pub struct Allocator {
    pub v4: Option<Pool>,
    pub v6: Option<Pool>,
    pub hold_secs: u64,
    table: Table,
    /// Every VIP of the table (who holds one is looked up in the table, which is rarely
    /// needed: a host name per VIP here would be megabytes at 100,000 hosts).
    vips: HashSet<IpAddr, FnvBuildHasher>,
    /// Addresses written in ServiceEntries: never handed out, and they displace an auto VIP.
    reserved: HashSet<IpAddr, FnvBuildHasher>,
    /// Usable addresses of each pool that are taken (a VIP or reserved).
    used4: u128,
    used6: u128,
    census: Census,
    /// The held hosts by release time, so that expiry looks at the due ones only.
    holds: BTreeSet<(u64, String)>,
    /// Every host changed since the last `take_changes`: its allocation before, and now.
    dirty: HashMap<String, (Option<Allocation>, Option<Allocation>)>,
    /// The table was empty when the changes began: every entry is new, nothing to remember
    /// one by one (a first load of 100,000 hosts).
    from_empty: bool,
    /// Hosts that want a VIP of some family and could not get one (pool full).
    starved: BTreeSet<String>,
    /// Whether addresses were freed since the starved hosts were last retried.
    freed: bool,
}

impl Allocator {
    pub fn new(ranges: &[IpNet], hold_secs: u64, table: Table) -> Allocator {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            ranges.iter().partition(|r| matches!(r, IpNet::V4(_)));
        let mut a = Allocator {
            v4: Pool::new(v4),
            v6: Pool::new(v6),
            hold_secs,
            table: Table::new(),
            vips: HashSet::default(),
            reserved: HashSet::default(),
            used4: 0,
            used6: 0,
            census: Census::default(),
            holds: BTreeSet::new(),
            dirty: HashMap::new(),
            from_empty: false,
            starved: BTreeSet::new(),
            freed: false,
        };
        a.replace_table(table);
        a
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn census(&self) -> Census {
        self.census
    }

    /// Counts `a` in (or out of) the census and the holds: called for every entry that enters
    /// or leaves the table.
    fn tally(&mut self, host: &str, a: &Allocation, enters: bool) {
        tally(&mut self.census, &mut self.holds, host, a, enters);
    }

    /// Replaces the table (with one a store holds); the next passes work from it.
    pub fn replace_table(&mut self, table: Table) {
        for ip in std::mem::take(&mut self.vips) {
            self.count(ip, -1, true);
        }
        self.table = table;
        self.census = Census::default();
        self.holds.clear();
        for (h, a) in &self.table {
            tally(&mut self.census, &mut self.holds, h, a, true);
        }
        let ips: Vec<IpAddr> = self.table.values().flat_map(Allocation::ips).collect();
        for ip in ips {
            self.occupy(ip);
        }
        self.dirty.clear();
        self.from_empty = false;
        self.freed = true;
    }

    fn pool_for(&self, ip: IpAddr) -> Option<&Pool> {
        match ip {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Keeps `used4`/`used6` right when `ip` becomes (or stops being) a VIP (`vip`) or reserved.
    fn count(&mut self, ip: IpAddr, by: i8, vip: bool) {
        // Taken already (or still) by the other kind: the count does not move.
        let other = if vip {
            self.reserved.contains(&ip)
        } else {
            self.vips.contains(&ip)
        };
        if other || !self.pool_for(ip).is_some_and(|p| p.usable(ip)) {
            return;
        }
        let used = match ip {
            IpAddr::V4(_) => &mut self.used4,
            IpAddr::V6(_) => &mut self.used6,
        };
        if by > 0 {
            *used += 1;
        } else {
            *used -= 1;
        }
    }

    fn occupy(&mut self, ip: IpAddr) {
        if !self.vips.contains(&ip) {
            self.count(ip, 1, true);
            self.vips.insert(ip);
        }
    }

    fn vacate(&mut self, ip: IpAddr) {
        if self.vips.remove(&ip) {
            self.count(ip, -1, true);
            self.freed = true;
        }
    }

    fn taken(&self, ip: &IpAddr) -> bool {
        self.vips.contains(ip) || self.reserved.contains(ip)
    }

    /// An address is now written in some ServiceEntry. Returns the host whose VIP it is, which
    /// must be reconciled (its VIP is displaced).
    pub fn reserve(&mut self, ip: IpAddr) -> Option<String> {
        if self.reserved.contains(&ip) {
            return None;
        }
        self.count(ip, 1, false);
        self.reserved.insert(ip);
        if !self.vips.contains(&ip) {
            return None;
        }
        self.table
            .iter()
            .find(|(_, a)| a.ips().any(|x| x == ip))
            .map(|(h, _)| h.clone())
    }

    /// An address is no longer written anywhere: it may be handed out again.
    pub fn unreserve(&mut self, ip: IpAddr) {
        if self.reserved.remove(&ip) {
            self.count(ip, -1, false);
            self.freed = true;
        }
    }

    /// Records a host's new entry, remembering how it was before this pass changed it.
    fn remember(&mut self, host: &str, before: Option<Allocation>, after: Option<Allocation>) {
        if self.from_empty {
            return;
        }
        match self.dirty.get_mut(host) {
            Some(d) => d.1 = after,
            None => {
                self.dirty.insert(host.to_string(), (before, after));
            }
        }
    }

    /// Makes room for a pass over `hosts` hosts (a first load touches every one).
    pub fn expect(&mut self, hosts: usize) {
        if self.table.is_empty() && self.dirty.is_empty() {
            self.from_empty = true;
        } else if !self.from_empty {
            self.dirty.reserve(hosts);
        }
        if self.vips.is_empty() {
            self.vips.reserve(hosts);
        }
    }

    /// Checks a loaded table against the configured ranges; names every bad entry.
    pub fn validate(&self, table: &Table) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (host, a) in table {
            if crate::serviceentry::validate_host(host).is_err() {
                errors.push(format!("{host:?}: not a valid host name"));
            }
            for ip in a.ips() {
                match self.pool_for(ip) {
                    Some(p) if p.usable(ip) => {}
                    _ => errors.push(format!("{host}: {ip} is outside the configured VIP ranges")),
                }
                if let Some(other) = owners.insert(ip, host) {
                    errors.push(format!("{ip} is held by two hosts: {other} and {host}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Brings one host in line: user addresses displace its auto VIPs, it is held when it no
    /// longer wants a VIP, given its VIP back when it returns within the hold, and allocated
    /// what it lacks — unless `claim` is `Defer`: then it is left without the VIPs it lacks and
    /// listed in `out.deferred`. Callers reconcile hosts in sorted order, so that instances
    /// seeing the same hosts agree.
    pub fn reconcile_host(
        &mut self,
        host: &str,
        want: Want,
        claim: Claim,
        now: u64,
        out: &mut AllocReport,
    ) {
        let wants = want == Want::Vip;
        // Worked on a copy, written back once: the table is a B-tree keyed by strings, and
        // this runs for every host of a first load.
        let before = self.table.get(host).copied();
        let mut a = before.unwrap_or_default();
        // 1. User addresses win.
        let displaced: Vec<IpAddr> = a.ips().filter(|ip| self.reserved.contains(ip)).collect();
        for ip in &displaced {
            match ip {
                IpAddr::V4(_) => a.ipv4 = None,
                IpAddr::V6(_) => a.ipv6 = None,
            }
            self.vacate(*ip);
        }
        // 2. Hold what disappeared, give back what returned.
        if before.is_some() {
            match (a.released_at.is_some(), wants) {
                (false, false) => {
                    a.released_at = Some(now);
                    out.released.push(host.to_string());
                }
                (true, true) => {
                    a.released_at = None;
                    out.reclaimed.push(host.to_string());
                }
                _ => {}
            }
        }
        // 3. Allocate what a wanted host lacks.
        let mut starved = false;
        let lacks =
            (a.ipv4.is_none() && self.v4.is_some()) || (a.ipv6.is_none() && self.v6.is_some());
        if wants && lacks && claim == Claim::Defer {
            out.deferred.push(host.to_string());
        } else if wants {
            if a.ipv4.is_none() && self.v4.is_some() {
                match self.allocate(host, false, out) {
                    Some(IpAddr::V4(v4)) => a.ipv4 = Some(v4),
                    _ => starved = true,
                }
            }
            if a.ipv6.is_none() && self.v6.is_some() {
                match self.allocate(host, true, out) {
                    Some(IpAddr::V6(v6)) => a.ipv6 = Some(v6),
                    _ => starved = true,
                }
            }
        }
        if starved {
            self.starved.insert(host.to_string());
        } else if !self.starved.is_empty() {
            self.starved.remove(host);
        }
        // An entry with no address left is dropped (a held one too: nothing to hold).
        let after = (a.ipv4.is_some() || a.ipv6.is_some()).then_some(a);
        if after != before {
            self.remember(host, before, after);
            if let Some(b) = &before {
                self.tally(host, b, false);
            }
            if let Some(a) = &after {
                self.tally(host, a, true);
            }
            match (after, self.table.get_mut(host)) {
                (Some(a), Some(slot)) => *slot = a,
                (Some(a), None) => {
                    self.table.insert(host.to_string(), a);
                }
                (None, _) => {
                    self.table.remove(host);
                }
            }
        }
        for old in displaced {
            let new = after.and_then(|a| match old {
                IpAddr::V4(_) => a.ipv4.map(IpAddr::V4),
                IpAddr::V6(_) => a.ipv6.map(IpAddr::V6),
            });
            out.displaced.push((host.to_string(), old, new));
        }
    }

    /// Takes the host's deterministic choice in the IPv4 (or IPv6) pool; None when it is full.
    fn allocate(&mut self, host: &str, v6: bool, out: &mut AllocReport) -> Option<IpAddr> {
        let (pool, used, family) = if v6 {
            (self.v6.as_ref(), self.used6, "IPv6")
        } else {
            (self.v4.as_ref(), self.used4, "IPv4")
        };
        match pool.and_then(|p| p.choose(host, |ip| self.taken(ip), used)) {
            Some(ip) => {
                self.occupy(ip);
                out.allocated.push((host.to_string(), ip));
                Some(ip)
            }
            None => {
                out.exhausted.push((host.to_string(), family));
                None
            }
        }
    }

    /// Whether some hold has run out.
    pub fn holds_due(&self, now: u64) -> bool {
        self.holds
            .first()
            .is_some_and(|(t, _)| t.saturating_add(self.hold_secs) <= now)
    }

    /// Forgets the hosts held long enough; their VIPs may be handed out again.
    pub fn expire_holds(&mut self, now: u64, out: &mut AllocReport) {
        let hold = self.hold_secs;
        let due: Vec<String> = self
            .holds
            .iter()
            .take_while(|(t, _)| t.saturating_add(hold) <= now)
            .map(|(_, h)| h.clone())
            .collect();
        for host in due {
            if let Some(a) = self.table.remove(&host) {
                self.tally(&host, &a, false);
                self.remember(&host, Some(a), None);
                a.ips().for_each(|ip| self.vacate(ip));
            }
            out.expired.push(host);
        }
    }

    /// The hosts to retry because addresses were freed since they last could not get a VIP.
    pub fn take_retry(&mut self) -> Vec<String> {
        if std::mem::take(&mut self.freed) {
            self.starved.iter().cloned().collect()
        } else {
            vec![]
        }
    }

    /// Reports each exhausted (host, family) once, and only if it is still unallocated (a retry
    /// in the same pass may have found room).
    pub fn settle(&self, out: &mut AllocReport) {
        out.exhausted.sort();
        out.exhausted.dedup();
        out.exhausted.retain(|(h, _)| self.starved.contains(h));
    }

    /// What changed since the last call (in no particular order); the caller makes it durable.
    pub fn take_changes(&mut self) -> Vec<Change> {
        if std::mem::take(&mut self.from_empty) {
            return self
                .table
                .iter()
                .map(|(host, a)| Change {
                    host: host.clone(),
                    before: None,
                    after: Some(*a),
                })
                .collect();
        }
        let changes: Vec<Change> = self
            .dirty
            .drain()
            .filter_map(|(host, (before, after))| {
                (before != after).then_some(Change {
                    host,
                    before,
                    after,
                })
            })
            .collect();
        if self.dirty.capacity() > 4096 {
            // A first load's worth of room, not needed again.
            self.dirty = HashMap::new();
        }
        changes
    }

    /// Undoes changes the store did not take: memory must not run ahead of the store.
    pub fn rollback(&mut self, changes: &[Change]) {
        for c in changes {
            if let Some(a) = self.table.remove(&c.host) {
                self.tally(&c.host, &a, false);
                a.ips().for_each(|ip| self.vacate(ip));
            }
            if let Some(b) = &c.before {
                b.ips().for_each(|ip| self.occupy(ip));
                self.tally(&c.host, b, true);
                self.table.insert(c.host.clone(), *b);
            }
        }
        self.dirty.clear();
        self.from_empty = false;
    }

    /// One pass over every host: `wanted` are the hosts that want a VIP now, `reserved` every
    /// address written anywhere. (The server reconciles only the hosts a change touches; this
    /// is the same rules over everything, for tests and benchmarks.)
    pub fn reconcile(
        &mut self,
        wanted: &BTreeSet<String>,
        reserved: &BTreeSet<IpAddr>,
        now: u64,
    ) -> AllocReport {
        let mut out = AllocReport::default();
        let gone: Vec<IpAddr> = self
            .reserved
            .iter()
            .filter(|ip| !reserved.contains(ip))
            .copied()
            .collect();
        gone.into_iter().for_each(|ip| self.unreserve(ip));
        for ip in reserved {
            self.reserve(*ip);
        }
        let hosts: BTreeSet<String> = self.table.keys().chain(wanted).cloned().collect();
        self.take_retry(); // every host is reconciled below anyway
        for host in &hosts {
            self.reconcile_host(
                host,
                wanted.contains(host).into(),
                Claim::Now,
                now,
                &mut out,
            );
        }
        self.expire_holds(now, &mut out);
        for host in self.take_retry() {
            self.reconcile_host(
                &host,
                wanted.contains(&host).into(),
                Claim::Now,
                now,
                &mut out,
            );
        }
        self.settle(&mut out);
        out.changed = !self.take_changes().is_empty();
        out
    }

    /// The VIPs a host is served with right now (none while only held).
    pub fn vips(&self, host: &str) -> impl Iterator<Item = IpAddr> + '_ {
        self.table
            .get(host)
            .filter(|a| a.released_at.is_none())
            .into_iter()
            .flat_map(Allocation::ips)
    }
}

#[cfg(test)]
mod tests;
