//! VIP allocation: a deterministic preferred slot per host, a fixed probe sequence on collision,
//! stability while any entry lists the host, a hold period after it disappears, and user addresses
//! that displace auto VIPs. The table is the only state globaldns keeps; stores persist it.

pub mod file_store;
mod pool;
pub mod store;

pub use pool::{host_hash, Pool};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fnv::FnvBuildHasher;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One host's VIPs. `released_at` (unix seconds) is set while the host is gone and its VIPs held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
}

impl Allocation {
    fn ips(&self) -> impl Iterator<Item = IpAddr> {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

/// The allocation table: host (normalised) → its VIPs.
pub type Table = BTreeMap<String, Allocation>;

/// Counts over the table, kept as it changes: metrics read them at every publish, which must
/// not cost a walk over 100,000 entries when one host changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub ipv4: usize,
    pub ipv6: usize,
    pub held: usize,
}

fn tally(
    census: &mut Census,
    holds: &mut BTreeSet<(u64, String)>,
    host: &str,
    a: &Allocation,
    enters: bool,
) {
    for (has, n) in [
        (a.ipv4.is_some(), &mut census.ipv4),
        (a.ipv6.is_some(), &mut census.ipv6),
        (a.released_at.is_some(), &mut census.held),
    ] {
        if has {
            *n = if enters { *n + 1 } else { *n - 1 };
        }
    }
    if let Some(t) = a.released_at {
        if enters {
            holds.insert((t, host.to_string()));
        } else {
            holds.remove(&(t, host.to_string()));
        }
    }
}

/// What one reconciliation did, for logs and metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
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
    /// what it lacks — unless `claim` is false: then it is left without the VIPs it lacks and
    /// listed in `out.deferred`. Callers reconcile hosts in sorted order, so that instances
    /// seeing the same hosts agree.
    pub fn reconcile_host(
        &mut self,
        host: &str,
        wants: bool,
        claim: bool,
        now: u64,
        out: &mut Outcome,
    ) {
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
        if wants && lacks && !claim {
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
    fn allocate(&mut self, host: &str, v6: bool, out: &mut Outcome) -> Option<IpAddr> {
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
    pub fn expire_holds(&mut self, now: u64, out: &mut Outcome) {
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
    pub fn settle(&self, out: &mut Outcome) {
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
    ) -> Outcome {
        let mut out = Outcome::default();
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
            self.reconcile_host(host, wanted.contains(host), true, now, &mut out);
        }
        self.expire_holds(now, &mut out);
        for host in self.take_retry() {
            self.reconcile_host(&host, wanted.contains(&host), true, now, &mut out);
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
mod tests {
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
        a.reconcile_host("a.x.global", true, true, 116, &mut Outcome::default());
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
}
