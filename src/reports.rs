//! Every host's report (`report::HostReport`: what is served for it and why) as of one pass. The
//! pipeline keeps it beside the zone, which takes only what becomes records (`zone::ZoneHost`),
//! and publishes it with each zone snapshot; `/debug/hosts`, `check`, write-back and the host
//! metrics read it. A secondary has no reports of its own: [`Reports::transferred`] says what its
//! zone holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fnv::FnvBuildHasher;

use crate::report::HostReport;
use crate::zone::key::{self, Key};
use crate::zone::Snapshot;

/// How many shards the reports are spread over: a change copies its shard (the published
/// reports hold the old one), a few dozen pointers at 100,000 hosts.
const SHARDS: usize = 4_096;

/// Keyed by the host's name key, the allocation its zone node shares. Behind an `Arc`: copying
/// a shard copies pointers, not the reports with their addresses and objects.
type Shard = HashMap<Key, Arc<HostReport>, FnvBuildHasher>;

#[derive(Clone, Debug)]
pub struct Reports {
    shards: Vec<Arc<Shard>>,
    count: usize,
    served: usize,
    /// Hosts with TCP ports the home cluster's default sidecars cannot route by address.
    tcp_unroutable: usize,
    /// The zone snapshot these reports were published with.
    pub serial: u32,
    pub generation: u64,
}

impl Default for Reports {
    fn default() -> Reports {
        Reports {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            count: 0,
            served: 0,
            tcp_unroutable: 0,
            serial: 0,
            generation: 0,
        }
    }
}

fn shard_index(k: &[u8]) -> usize {
    (key::hash(k) as usize) & (SHARDS - 1)
}

impl Reports {
    /// What a secondary's zone says of its hosts, as reports: addresses from the primary, ports,
    /// nothing else (a secondary knows no sources).
    pub fn transferred(snap: &Snapshot) -> Reports {
        let mut out = Reports {
            serial: snap.serial,
            generation: snap.generation,
            ..Reports::default()
        };
        for (host, h) in snap.hosts() {
            if let Some(k) = key::of_host(&host) {
                out.set(k, Some(HostReport::transferred(&host, &h)));
            }
        }
        out
    }

    pub fn get(&self, host: &str) -> Option<&HostReport> {
        self.get_at(&key::of_host(host)?)
    }

    /// The report of the host whose name key is `k`.
    pub fn get_at(&self, k: &[u8]) -> Option<&HostReport> {
        self.shards[shard_index(k)].get(k).map(|r| &**r)
    }

    /// Sets (with None: removes) the report of the host whose name key is `k`.
    pub fn set(&mut self, k: Key, report: Option<HostReport>) {
        let shard = Arc::make_mut(&mut self.shards[shard_index(&k)]);
        let old = match report {
            Some(r) => {
                self.count += 1;
                self.served += usize::from(r.served);
                self.tcp_unroutable += usize::from(r.tcp_unroutable.is_some());
                match shard.get_mut(&k[..]) {
                    Some(slot) => Some(std::mem::replace(slot, Arc::new(r))),
                    None => shard.insert(k, Arc::new(r)),
                }
            }
            None => shard.remove(&k[..]),
        };
        if let Some(old) = old {
            self.count -= 1;
            self.served -= usize::from(old.served);
            self.tcp_unroutable -= usize::from(old.tcp_unroutable.is_some());
        }
    }

    /// Every host's report, sorted by host name.
    pub fn hosts(&self) -> BTreeMap<String, &HostReport> {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|(k, r)| (key::to_host(k), &**r))
            .collect()
    }

    /// Every host the sources list, served or not.
    pub fn host_count(&self) -> usize {
        self.count
    }

    pub fn served_hosts(&self) -> usize {
        self.served
    }

    pub fn tcp_unroutable_hosts(&self) -> usize {
        self.tcp_unroutable
    }

    /// Makes room for `hosts` more hosts (a first load).
    pub fn reserve(&mut self, hosts: usize) {
        let per = hosts.div_ceil(SHARDS);
        for s in &mut self.shards {
            Arc::make_mut(s).reserve(per);
        }
    }

    /// Gives back the growth slack of every shard (after a large load).
    pub fn compact(&mut self) {
        for s in &mut self.shards {
            Arc::make_mut(s).shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AddressReport, AddressSource};

    fn report(served: bool, unroutable: bool) -> HostReport {
        let mut r = HostReport::transferred("h.global", &crate::zone::ZoneHost::default());
        r.served = served;
        if served {
            r.addresses = vec![AddressReport {
                address: "240.10.0.1".parse().unwrap(),
                source: AddressSource::Vip,
                objects: vec![],
            }];
        }
        r.tcp_unroutable = unroutable.then(|| Box::new(crate::routing::Unroutable::NotAtHome));
        r
    }

    /// The counts follow every replacement and removal, and a published copy keeps what it had.
    #[test]
    fn counts_follow_replacements_and_copies_keep_theirs() {
        let mut r = Reports::default();
        let k = |h: &str| key::of_host(h).unwrap();
        r.set(k("a.global"), Some(report(true, true)));
        r.set(k("b.global"), Some(report(false, false)));
        let published = r.clone();
        r.set(k("a.global"), Some(report(false, false)));
        r.set(k("b.global"), None);
        r.set(k("c.global"), None);
        let counts = |r: &Reports| (r.host_count(), r.served_hosts(), r.tcp_unroutable_hosts());
        assert_eq!(counts(&published), (2, 1, 1));
        assert_eq!(counts(&r), (1, 0, 0));
        assert!(published.get("b.global").is_some());
        assert!(r.get("b.global").is_none());
        assert!(!r.get("a.global").unwrap().served);
        assert_eq!(r.hosts().into_keys().collect::<Vec<_>>(), ["a.global"]);
    }
}
