//! What the allocation tests share: the contract's model of an allocation, and the table read
//! back from the state directory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

/// The contract's allocation model for one IPv4 range, hosts taken in sorted order: preferred slot
/// = hash mod size, then linear probing, never `.0`/`.255`, never a taken address.
pub fn model_v4(
    range: &str,
    hosts: &BTreeSet<String>,
    reserved: &[Ipv4Addr],
) -> BTreeMap<String, Ipv4Addr> {
    let net: ipnet::Ipv4Net = range.parse().unwrap();
    let base = u32::from(net.network());
    let size = 1u64 << (32 - net.prefix_len());
    let mut taken: BTreeSet<Ipv4Addr> = reserved.iter().copied().collect();
    let mut out = BTreeMap::new();
    for h in hosts {
        let mut idx = fnv1a64(h) % size;
        for _ in 0..size {
            let ip = Ipv4Addr::from(base + idx as u32);
            let last = ip.octets()[3];
            if last != 0 && last != 255 && !taken.contains(&ip) {
                taken.insert(ip);
                out.insert(h.clone(), ip);
                break;
            }
            idx = (idx + 1) % size;
        }
    }
    out
}

/// Waits until the served hosts are exactly `want`; returns host → IPv4 VIP.
pub fn wait_served(
    s: &Server,
    want: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, Ipv4Addr> {
    let mut last = BTreeMap::new();
    let started = Instant::now();
    loop {
        if let Some(v) = served_vips(s) {
            if v.keys().eq(want.iter()) {
                return v
                    .into_iter()
                    .map(|(h, ips)| {
                        let ip = v4_of(&ips).unwrap_or_else(|| panic!("{h}: no IPv4 VIP: {ips:?}"));
                        (h, ip)
                    })
                    .collect();
            }
            last = v;
        }
        if started.elapsed() > timeout {
            let have: BTreeSet<&String> = last.keys().collect();
            let missing: Vec<_> = want.iter().filter(|h| !have.contains(h)).take(10).collect();
            let extra: Vec<_> = have
                .iter()
                .filter(|h| !want.contains(**h))
                .take(10)
                .collect();
            panic!(
                "served hosts did not become the expected {} within {timeout:?}: have {}, \
                 missing (first 10) {missing:?}, extra (first 10) {extra:?}",
                want.len(),
                have.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub released: bool,
}

/// The allocation table of `STATE`, parsed per the documented format (base + log).
pub fn read_store(state: &Path) -> BTreeMap<String, Row> {
    store_rows(state)
        .into_iter()
        .map(|(host, row)| {
            let r = Row {
                ipv4: row
                    .get("ipv4")
                    .and_then(|x| x.as_str())
                    .map(|x| x.parse().unwrap()),
                ipv6: row
                    .get("ipv6")
                    .and_then(|x| x.as_str())
                    .map(|x| x.parse().unwrap()),
                released: row.get("releasedAt").is_some_and(|x| !x.is_null()),
            };
            (host, r)
        })
        .collect()
}

pub fn v4_range_contains(range: &str, ip: Ipv4Addr) -> bool {
    range.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip)
}
