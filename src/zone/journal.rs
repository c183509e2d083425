//! The journal of recent changes, for incremental zone transfer (IXFR, RFC 1995). The builder
//! knows exactly which (owner, data) pairs each host change took out and put in; a publish turns
//! them into one [`Delta`] between two serials. A snapshot carries the recent deltas, bounded,
//! and answers an IXFR from any serial they cover with one condensed difference; from an older
//! serial, a full transfer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::key::Key;
use super::records::Data;

/// One (owner, data) pair: `wild` for data kept under a wildcard's parent.
pub(super) type Item = (bool, Key, Data);

/// Deltas kept at most: a secondary further behind transfers the whole zone.
const MAX_DELTAS: usize = 256;
/// Items kept at most over all deltas (a first load or a re-list is better sent as AXFR).
const MAX_ITEMS: usize = 200_000;

/// The change from one serial to the next.
#[derive(Debug)]
pub(super) struct Delta {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<Item>,
    pub added: Vec<Item>,
}

impl Delta {
    fn size(&self) -> usize {
        self.removed.len() + self.added.len()
    }
}

/// The recent deltas, oldest first, each `to` the next one's `from`.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    deltas: VecDeque<Arc<Delta>>,
    items: usize,
}

impl Journal {
    /// Appends a delta; forgets the oldest beyond the bounds. A delta that does not follow the
    /// last one (a gap) starts the journal anew.
    pub(super) fn push(&mut self, delta: Delta) {
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
    pub fn take(&mut self, from: u32, to: u32) -> Delta {
        let mut net: BTreeMap<Item, i32> = BTreeMap::new();
        for (n, item) in self.changes.drain(..) {
            *net.entry(item).or_default() += i32::from(n);
        }
        let mut delta = Delta {
            from,
            to,
            removed: vec![],
            added: vec![],
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

    fn delta(from: u32, removed: &[u8], added: &[u8]) -> Delta {
        Delta {
            from,
            to: from + 1,
            removed: removed.iter().map(|n| item(*n)).collect(),
            added: added.iter().map(|n| item(*n)).collect(),
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
        let d = p.take(5, 6);
        assert_eq!(d.added, vec![item(2)]);
        assert_eq!(d.removed, vec![item(3)]);
    }
}
