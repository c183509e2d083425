//! VIP allocation: a deterministic preferred slot per host, a fixed probe sequence on collision,
//! stability while any entry lists the host, a hold period after it disappears, and user addresses
//! that displace auto VIPs. The table is the only state globaldns keeps; stores persist it.

pub mod file_store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One host's VIPs. `released_at` (unix seconds) is set while the host is gone and its VIPs held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// The preferred-slot hash: 64-bit FNV-1a over the lower-cased host name without trailing dot.
/// Fixed by definition (not std's SipHash, whose keys and algorithm may change between releases).
pub fn host_hash(host: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(host.as_bytes());
    h.finish()
}

/// The VIP ranges of one address family, seen as one index space: the ranges concatenated in the
/// order given.
#[derive(Clone, Debug)]
pub struct Pool {
    ranges: Vec<IpNet>,
    sizes: Vec<u128>,
    total: u128,
    usable: u128,
}

/// Bound on probing in huge (IPv6) ranges, where a run of this many taken slots cannot happen
/// in practice but the index space is too large to walk.
const MAX_PROBES: u128 = 1 << 22;

impl Pool {
    pub fn new(ranges: Vec<IpNet>) -> Option<Pool> {
        if ranges.is_empty() {
            return None;
        }
        let ranges: Vec<IpNet> = ranges.into_iter().map(|r| r.trunc()).collect();
        let sizes: Vec<u128> = ranges
            .iter()
            .map(|r| {
                let host_bits = u32::from(r.max_prefix_len() - r.prefix_len());
                1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
            })
            .collect();
        let total = sizes.iter().fold(0u128, |a, s| a.saturating_add(*s));
        let usable = ranges
            .iter()
            .zip(&sizes)
            .map(|(r, s)| match r {
                // .0 and .255 of every /24 the range touches.
                IpNet::V4(n) if n.prefix_len() >= 24 => {
                    let o = |ip: Ipv4Addr| ip.octets()[3];
                    s - u128::from(o(n.network()) == 0) - u128::from(o(n.broadcast()) == 255)
                }
                IpNet::V4(_) => s - 2 * (s / 256),
                // The subnet-router anycast address (the range's first).
                IpNet::V6(_) => s - 1,
            })
            .fold(0u128, |a, s| a.saturating_add(s));
        Some(Pool {
            ranges,
            sizes,
            total,
            usable,
        })
    }

    pub fn ranges(&self) -> &[IpNet] {
        &self.ranges
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(&ip))
    }

    /// Whether `ip` may be handed out at all (inside the pool, not network/broadcast-like).
    pub fn usable(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let last = v4.octets()[3];
                last != 0 && last != 255 && self.contains(ip)
            }
            IpAddr::V6(_) => self
                .ranges
                .iter()
                .any(|r| r.contains(&ip) && r.network() != ip),
        }
    }

    fn addr_at(&self, mut index: u128) -> IpAddr {
        for (range, size) in self.ranges.iter().zip(&self.sizes) {
            if index < *size {
                return match range {
                    IpNet::V4(n) => {
                        IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + index as u32))
                    }
                    IpNet::V6(n) => {
                        IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(index)))
                    }
                };
            }
            index -= size;
        }
        unreachable!("index below the pool total")
    }

    /// The deterministic choice: the hash's slot, then the following slots in order (wrapping),
    /// skipping unusable and taken addresses. None when the pool is full.
    /// `used` is how many usable addresses of this pool `taken` holds (kept by the caller, so
    /// that allocating n hosts stays O(n)).
    pub fn choose(&self, host: &str, taken: &HashSet<IpAddr>, used: u128) -> Option<IpAddr> {
        if used >= self.usable {
            return None;
        }
        let start = u128::from(host_hash(host)) % self.total;
        (0..self.total.min(MAX_PROBES))
            .map(|i| self.addr_at((start + i) % self.total))
            .find(|ip| self.usable(*ip) && !taken.contains(ip))
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
}

pub struct Allocator {
    pub v4: Option<Pool>,
    pub v6: Option<Pool>,
    pub hold_secs: u64,
    table: Table,
}

impl Allocator {
    pub fn new(ranges: &[IpNet], hold_secs: u64, table: Table) -> Allocator {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            ranges.iter().partition(|r| matches!(r, IpNet::V4(_)));
        Allocator {
            v4: Pool::new(v4),
            v6: Pool::new(v6),
            hold_secs,
            table,
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Replaces the table (with one a store holds); the next reconcile works from it.
    pub fn replace_table(&mut self, table: Table) {
        self.table = table;
    }

    fn pool_for(&self, ip: IpAddr) -> Option<&Pool> {
        match ip {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
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

    /// Brings the table in line with the hosts that want a VIP now. `reserved` are addresses users
    /// (or Istio) wrote anywhere; inside a pool they are never handed out and displace auto VIPs.
    pub fn reconcile(
        &mut self,
        wanted: &BTreeSet<String>,
        reserved: &BTreeSet<IpAddr>,
        now: u64,
    ) -> Outcome {
        let mut out = Outcome::default();
        let mut displaced_hosts = Vec::new();

        // 1. User addresses win: drop auto VIPs that collide with one.
        for (host, a) in self.table.iter_mut() {
            if a.ipv4.is_some_and(|ip| reserved.contains(&IpAddr::V4(ip))) {
                displaced_hosts.push((host.clone(), IpAddr::V4(a.ipv4.take().unwrap())));
            }
            if a.ipv6.is_some_and(|ip| reserved.contains(&IpAddr::V6(ip))) {
                displaced_hosts.push((host.clone(), IpAddr::V6(a.ipv6.take().unwrap())));
            }
        }
        out.changed |= !displaced_hosts.is_empty();

        // 2. Hold what disappeared, give back what returned, forget what was held long enough.
        let hold = self.hold_secs;
        self.table.retain(|host, a| {
            let want = wanted.contains(host);
            match a.released_at {
                None if !want => {
                    a.released_at = Some(now);
                    out.released.push(host.clone());
                }
                Some(_) if want => {
                    a.released_at = None;
                    out.reclaimed.push(host.clone());
                }
                Some(at) if at.saturating_add(hold) <= now => {
                    out.expired.push(host.clone());
                    return false;
                }
                _ => {}
            }
            // An entry with nothing left (all displaced) and no longer wanted is dropped.
            want || a.ipv4.is_some() || a.ipv6.is_some()
        });
        out.changed |=
            !(out.released.is_empty() && out.reclaimed.is_empty() && out.expired.is_empty());

        // 3. Allocate, in host order, so that instances seeing the same hosts agree.
        let mut taken: HashSet<IpAddr> = self.table.values().flat_map(Allocation::ips).collect();
        taken.extend(reserved.iter().copied());
        let used_in = |pool: &Option<Pool>| {
            pool.as_ref().map_or(0, |p| {
                taken.iter().filter(|ip| p.usable(**ip)).count() as u128
            })
        };
        let (mut used4, mut used6) = (used_in(&self.v4), used_in(&self.v6));
        for host in wanted {
            let entry = self.table.entry(host.clone()).or_default();
            if entry.ipv4.is_none() {
                if let Some(pool) = &self.v4 {
                    match pool.choose(host, &taken, used4) {
                        Some(IpAddr::V4(ip)) => {
                            used4 += 1;
                            entry.ipv4 = Some(ip);
                            taken.insert(IpAddr::V4(ip));
                            out.allocated.push((host.clone(), IpAddr::V4(ip)));
                        }
                        _ => out.exhausted.push((host.clone(), "IPv4")),
                    }
                }
            }
            if entry.ipv6.is_none() {
                if let Some(pool) = &self.v6 {
                    match pool.choose(host, &taken, used6) {
                        Some(IpAddr::V6(ip)) => {
                            used6 += 1;
                            entry.ipv6 = Some(ip);
                            taken.insert(IpAddr::V6(ip));
                            out.allocated.push((host.clone(), IpAddr::V6(ip)));
                        }
                        _ => out.exhausted.push((host.clone(), "IPv6")),
                    }
                }
            }
            if entry.ipv4.is_none() && entry.ipv6.is_none() {
                self.table.remove(host);
            }
        }
        out.changed |= !out.allocated.is_empty();

        for (host, old) in displaced_hosts {
            let new = self.table.get(&host).and_then(|a| match old {
                IpAddr::V4(_) => a.ipv4.map(IpAddr::V4),
                IpAddr::V6(_) => a.ipv6.map(IpAddr::V6),
            });
            out.displaced.push((host, old, new));
        }
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
