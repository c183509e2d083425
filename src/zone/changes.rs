//! Which names a snapshot changed, so that a cache of answers keeps what did not change.
//!
//! The builder notes the key of every node whose data it changes. Each snapshot carries the
//! links between the last few snapshots of its builder: (from generation, to generation, the
//! names changed in between, or None when there were too many to list). A cache made for
//! generation G that meets generation H forgets the names on the links from G to H, or
//! everything when the chain does not reach back to G (a snapshot of another builder, a cache
//! too many publishes behind, or a large change such as a first load).
//!
//! Only nodes are noted: wildcards, empty non-terminals and the apex change answers that a
//! cache must treat as valid for one snapshot only (see `Snapshot::answered_by_node`).

use std::collections::VecDeque;
use std::sync::Arc;

use super::key::Key;

/// Links a snapshot carries: a cache further behind than this forgets everything.
const LINKS: usize = 16;
/// Names a link lists at most; past this the link lists none. One rewritten file of 500 hosts
/// notes about 2,000 (each host's node and its old and new reverse names).
const MAX_NAMES: usize = 16_384;

#[derive(Clone, Debug)]
struct Link {
    from: u64,
    to: u64,
    names: Option<Arc<[Key]>>,
}

/// The recent links of a snapshot's builder, ending at the snapshot itself.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    links: Arc<[Link]>,
}

impl Changes {
    /// The keys of the nodes changed since the snapshot of generation `since` (with repeats),
    /// or None when that is not known.
    pub fn since(&self, since: u64) -> Option<impl Iterator<Item = &[u8]>> {
        let start = self.links.iter().position(|l| l.from == since)?;
        let chain = &self.links[start..];
        let linked = chain.windows(2).all(|w| w[0].to == w[1].from);
        if !linked || chain.iter().any(|l| l.names.is_none()) {
            return None;
        }
        Some(
            chain
                .iter()
                .flat_map(|l| l.names.iter().flat_map(|n| n.iter().map(|k| &k[..]))),
        )
    }
}

/// The builder's side: names noted since the last snapshot, and the links so far.
#[derive(Default)]
pub(super) struct ChangeTracker {
    touched: Vec<Key>,
    overflow: bool,
    /// The generation of the builder's last snapshot.
    last: Option<u64>,
    links: VecDeque<Link>,
}

impl ChangeTracker {
    /// Notes that the node `key` changed (was made, lost or gained data, or went away).
    pub(super) fn touch(&mut self, key: &Key) {
        if self.overflow {
            return;
        }
        if self.touched.len() >= MAX_NAMES {
            self.overflow = true;
            self.touched = Vec::new();
        } else {
            self.touched.push(key.clone());
        }
    }

    /// Closes the link to a new snapshot of generation `to`; returns the changes it carries.
    pub(super) fn link(&mut self, to: u64) -> Changes {
        let touched = std::mem::take(&mut self.touched);
        let names = (!std::mem::take(&mut self.overflow)).then(|| Arc::from(touched));
        if let Some(from) = self.last {
            if self.links.len() == LINKS {
                self.links.pop_front();
            }
            self.links.push_back(Link { from, to, names });
        }
        self.last = Some(to);
        Changes {
            links: self.links.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(c: &Changes, since: u64) -> Option<Vec<Vec<u8>>> {
        c.since(since).map(|it| it.map(<[u8]>::to_vec).collect())
    }

    #[test]
    fn a_chain_lists_every_name_back_to_the_cache_or_nothing() {
        let mut t = ChangeTracker::default();
        let first = t.link(10);
        assert_eq!(keys(&first, 0), None, "nothing before the first snapshot");
        t.touch(&Key::from(&b"\x01a"[..]));
        let second = t.link(11);
        t.touch(&Key::from(&b"\x01b"[..]));
        let third = t.link(12);
        assert_eq!(keys(&third, 11), Some(vec![b"\x01b".to_vec()]));
        assert_eq!(
            keys(&third, 10),
            Some(vec![b"\x01a".to_vec(), b"\x01b".to_vec()])
        );
        assert_eq!(keys(&second, 10), Some(vec![b"\x01a".to_vec()]));
        assert_eq!(keys(&third, 9), None, "another builder's snapshot");
        // Too many names: the link lists none, and no chain through it is known.
        for i in 0..=MAX_NAMES {
            t.touch(&Key::from(format!("\x05{i:05}").as_bytes()));
        }
        let fourth = t.link(13);
        assert_eq!(keys(&fourth, 12), None);
        assert_eq!(keys(&fourth, 11), None);
        let fifth = t.link(14);
        assert_eq!(keys(&fifth, 13), Some(vec![]));
        // Only the last LINKS links are kept.
        let mut last = fifth;
        for g in 15..15 + LINKS as u64 {
            last = t.link(g);
        }
        assert_eq!(keys(&last, 13), None);
        assert_eq!(keys(&last, 14), Some(vec![]));
    }
}
