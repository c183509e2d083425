//! The VIP ranges of one family as one index space, and the documented preferred slot of a host:
//! FNV-1a of its name, then a fixed probe sequence.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

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

    /// How many addresses may be handed out.
    pub fn capacity(&self) -> u128 {
        self.usable
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
    /// `used` is how many usable addresses of this pool are taken (kept by the caller, so that
    /// a full pool is known without probing it).
    pub fn choose(
        &self,
        host: &str,
        taken: impl Fn(&IpAddr) -> bool,
        used: u128,
    ) -> Option<IpAddr> {
        if used >= self.usable {
            return None;
        }
        let start = u128::from(host_hash(host)) % self.total;
        (0..self.total.min(MAX_PROBES))
            .map(|i| self.addr_at((start + i) % self.total))
            .find(|ip| self.usable(*ip) && !taken(ip))
    }
}
