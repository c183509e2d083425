//! The journal of recent changes, for incremental zone transfer (IXFR, RFC 1995). The builder
//! knows exactly which (owner, data) pairs each host change took out and put in; a publish turns
//! them into one [`SerialDelta`] between two serials. A snapshot carries the recent deltas, bounded,
//! and answers an IXFR from any serial they cover with one condensed difference; from an older
//! serial, a full transfer. Each version also carries the digest of each zone's content then
//! (`digest`), so that a client from another lineage holding the same content is recognised.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use super::digest::{Canon, Digest};
use super::key::{self, Key};
use super::records::Data;

/// One (owner, data) pair: `wild` for data kept under a wildcard's parent.
pub(super) type Item = (bool, Key, Data);

/// Deltas kept at most: a secondary further behind transfers the whole zone.
const MAX_DELTAS: usize = 256;
/// Items kept at most over all deltas (a first load or a re-list is better sent as AXFR).
const MAX_ITEMS: usize = 200_000;

/// The digest of each zone's records at one version (by the zone's index among the apexes),
/// without the apex NS records (which come from flags, the same at every version).
pub(super) type Digests = Arc<[Digest]>;

/// The change from one serial to the next.
#[derive(Debug)]
pub(super) struct SerialDelta {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<Item>,
    pub added: Vec<Item>,
    /// The content's digests at `from`.
    pub from_digests: Digests,
}

impl SerialDelta {
    fn size(&self) -> usize {
        self.removed.len() + self.added.len()
    }
}

/// The recent deltas, oldest first, each `to` the next one's `from`.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    deltas: VecDeque<Arc<SerialDelta>>,
    items: usize,
    /// The newest version: its serial and digests.
    head: Option<(u32, Digests)>,
}

impl Journal {
    /// Appends a delta; forgets the oldest beyond the bounds. A delta that does not follow the
    /// last one (a gap) starts the journal anew.
    pub(super) fn push(&mut self, delta: SerialDelta) {
        if self.deltas.back().is_some_and(|d| d.to != delta.from) {
            self.deltas.clear();
            self.items = 0;
        }
        if delta.size() > MAX_ITEMS {
            self.deltas.clear();
            self.items = 0;
            return;
        }
        self.items += delta.size();
        self.deltas.push_back(Arc::new(delta));
        while self.deltas.len() > MAX_DELTAS || self.items > MAX_ITEMS {
            let old = self.deltas.pop_front().expect("non-empty");
            self.items -= old.size();
        }
    }

    /// The net change from serial `from` to the newest serial, if the journal covers it:
    /// (removed, added), with pairs taken out and put back again cancelled.
    pub(super) fn since(&self, from: u32) -> Option<(Vec<Item>, Vec<Item>)> {
        let start = self.deltas.iter().position(|d| d.from == from)?;
        let mut net: BTreeMap<&Item, i32> = BTreeMap::new();
        for d in self.deltas.iter().skip(start) {
            for i in &d.removed {
                *net.entry(i).or_default() -= 1;
            }
            for i in &d.added {
                *net.entry(i).or_default() += 1;
            }
        }
        let removed = net
            .iter()
            .filter(|(_, n)| **n < 0)
            .map(|(i, _)| (*i).clone())
            .collect();
        let added = net
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| (*i).clone())
            .collect();
        Some((removed, added))
    }

    /// The oldest serial an IXFR can start from, if any.
    pub fn oldest(&self) -> Option<u32> {
        self.deltas.front().map(|d| d.from)
    }

    /// The newest version: serial and digests.
    pub(super) fn set_head(&mut self, serial: u32, digests: Digests) {
        self.head = Some((serial, digests));
    }

    pub(super) fn head(&self) -> Option<&(u32, Digests)> {
        self.head.as_ref()
    }

    pub(super) fn deltas(&self) -> impl Iterator<Item = &SerialDelta> {
        self.deltas.iter().map(|d| &**d)
    }

    /// The serial of the newest version whose zone `zone` (an apex index) held content of
    /// `digest`, if the journal reaches back to one.
    pub(super) fn version_of(&self, zone: usize, digest: Digest) -> Option<u32> {
        let head = self
            .head
            .as_ref()
            .filter(|(_, d)| d.get(zone) == Some(&digest));
        if let Some((serial, _)) = head {
            return Some(*serial);
        }
        self.deltas
            .iter()
            .rev()
            .find(|d| d.from_digests.get(zone) == Some(&digest))
            .map(|d| d.from)
    }
}

/// The digest of the record `item` stands for, with `ttl`: the canonical form of
/// [`super::digest::record`], written from the keys without making the record.
pub(super) fn item_digest(c: &mut Canon, (wild, k, data): &Item, ttl: u32) -> Digest {
    c.start();
    if let Data::Srv {
        transport, label, ..
    } = data
    {
        c.label(label).label(transport.label());
    }
    if *wild {
        c.label(b"*");
    }
    c.key(k);
    let rtype = match data {
        Data::A(_) => RecordType::A,
        Data::Aaaa(_) => RecordType::AAAA,
        Data::Ptr(_) => RecordType::PTR,
        Data::Srv { .. } => RecordType::SRV,
    };
    c.bytes(&u16::from(rtype).to_be_bytes())
        .bytes(&ttl.to_be_bytes());
    match data {
        Data::A(a) => c.bytes(&a.octets()),
        Data::Aaaa(a) => c.bytes(&a.octets()),
        Data::Ptr(target) => c.key(target),
        Data::Srv { port, .. } => c
            .bytes(&0u16.to_be_bytes())
            .bytes(&100u16.to_be_bytes())
            .bytes(&port.to_be_bytes())
            .key(k),
    };
    c.digest()
}

/// The record one journal item stands for.
pub(super) fn render((wild, k, data): &Item, ttl: u32) -> Option<hickory_proto::rr::Record> {
    let node = if *wild {
        Name::from_labels([&b"*"[..]])
            .and_then(|w| w.append_domain(&key::to_name(k)))
            .ok()?
    } else {
        key::to_name(k)
    };
    let owner = data.owner_below(&node).unwrap_or_else(|| node.clone());
    Some(data.record(&owner, ttl, k))
}

/// Collects a pass's (owner, data) changes in the builder until the next snapshot.
#[derive(Debug, Default)]
pub(super) struct Pending {
    changes: Vec<(i8, Item)>,
}

impl Pending {
    pub fn removed(&mut self, item: Item) {
        self.changes.push((-1, item));
    }

    pub fn added(&mut self, item: Item) {
        self.changes.push((1, item));
    }

    /// The net change (a host re-rendered with the same data changes nothing).
    pub fn take(&mut self, from: u32, to: u32, from_digests: Digests) -> SerialDelta {
        let mut net: BTreeMap<Item, i32> = BTreeMap::new();
        for (n, item) in self.changes.drain(..) {
            *net.entry(item).or_default() += i32::from(n);
        }
        let mut delta = SerialDelta {
            from,
            to,
            removed: vec![],
            added: vec![],
            from_digests,
        };
        for (item, n) in net {
            match n.cmp(&0) {
                std::cmp::Ordering::Less => delta.removed.push(item),
                std::cmp::Ordering::Greater => delta.added.push(item),
                std::cmp::Ordering::Equal => {}
            }
        }
        delta
    }

    pub fn clear(&mut self) {
        self.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Item {
        (
            false,
            Key::from(&[1, b'a' + n, 0][..]),
            Data::A([240, 10, 0, n].into()),
        )
    }

    fn delta(from: u32, removed: &[u8], added: &[u8]) -> SerialDelta {
        SerialDelta {
            from,
            to: from + 1,
            removed: removed.iter().map(|n| item(*n)).collect(),
            added: added.iter().map(|n| item(*n)).collect(),
            from_digests: Arc::new([Digest(u128::from(from))]),
        }
    }

    #[test]
    fn since_condenses_and_cancels() {
        let mut j = Journal::default();
        j.push(delta(10, &[], &[1, 2]));
        j.push(delta(11, &[2], &[3]));
        j.push(delta(12, &[3], &[2]));
        assert_eq!(j.since(10), Some((vec![], vec![item(1), item(2)])));
        assert_eq!(j.since(11), Some((vec![], vec![])), "2 went and came back");
        assert_eq!(j.since(12), Some((vec![item(3)], vec![item(2)])));
        assert_eq!(j.since(9), None, "older than the journal");
        assert_eq!(
            j.since(13),
            None,
            "the newest serial has no delta of its own"
        );
        assert_eq!(j.oldest(), Some(10));
        // Versions by content: the oldest delta's, or the head's (newest first).
        assert_eq!(j.version_of(0, Digest(11)), Some(11));
        assert_eq!(j.version_of(0, Digest(9)), None);
        assert_eq!(j.version_of(1, Digest(11)), None, "another zone");
        j.set_head(13, Arc::new([Digest(11)]));
        assert_eq!(j.version_of(0, Digest(11)), Some(13), "the head is newest");
    }

    #[test]
    fn item_digests_are_the_rendered_records_digests() {
        let host = Key::from(&b"\x01h\x03bar\x06global"[..]);
        let items: Vec<Item> = vec![
            (false, host.clone(), Data::A([240, 10, 0, 1].into())),
            (false, host.clone(), Data::Aaaa("fd00::1".parse().unwrap())),
            (true, host.clone(), Data::A([240, 10, 0, 2].into())),
            (
                false,
                key::reverse([240, 10, 0, 1].into()),
                Data::Ptr(host.clone()),
            ),
            (
                false,
                host.clone(),
                Data::Srv {
                    transport: crate::serviceentry::Transport::Udp,
                    label: b"_dns"[..].into(),
                    port: 53,
                },
            ),
        ];
        let mut c = Canon::default();
        for item in &items {
            let r = render(item, 30).unwrap();
            assert_eq!(
                item_digest(&mut c, item, 30),
                super::super::digest::record(&r.name, r.ttl, &r.data),
                "{r}"
            );
        }
    }

    #[test]
    fn a_gap_or_a_huge_delta_restarts_the_journal() {
        let mut j = Journal::default();
        j.push(delta(10, &[], &[1]));
        j.push(delta(20, &[], &[2]));
        assert_eq!(j.oldest(), Some(20));
        let mut huge = delta(21, &[], &[]);
        huge.added = vec![item(3); MAX_ITEMS + 1];
        j.push(huge);
        assert_eq!(j.oldest(), None);
    }

    #[test]
    fn pending_nets_out_rerendered_hosts() {
        let mut p = Pending::default();
        p.removed(item(1));
        p.added(item(1));
        p.added(item(2));
        p.removed(item(3));
        let d = p.take(5, 6, Arc::new([]));
        assert_eq!(d.added, vec![item(2)]);
        assert_eq!(d.removed, vec![item(3)]);
    }
}
