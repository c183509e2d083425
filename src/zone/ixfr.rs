//! Incremental zone transfer (RFC 1995) from the snapshot's journal: one condensed difference
//! from the client's serial to ours, in the message layout of RFC 1995 §4, rendered as it is
//! sent (the journal's items are kept, not their records).

use hickory_proto::rr::{LowerName, RData, Record};
use smallvec::SmallVec;

use super::digest::{self, Digest};
use super::journal::{self, Item};
use super::key;
use super::{Apex, Snapshot};

/// RFC 1982 serial arithmetic: `a` is older than `b`.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

/// The labels of the name a journal item is owned by, rightmost first (see
/// [`key::labels_rev`]): an IXFR sorts its items by them before rendering any.
fn owner_labels((wild, k, data): &Item) -> SmallVec<[&[u8]; 12]> {
    let mut prefix: SmallVec<[&[u8]; 3]> = data.labels_below().into_iter().flatten().collect();
    if *wild {
        prefix.push(b"*");
    }
    key::labels_rev(&prefix, k)
}

/// An IXFR's records in order, rendered as they are read.
pub type Records<'s> = Box<dyn Iterator<Item = Record> + Send + 's>;

impl Snapshot {
    /// The IXFR of `zone` for a client at serial `client`: its records (split into messages by
    /// the caller), or None when the journal does not reach back that far (the caller sends a
    /// full transfer). A client at our serial or newer gets our SOA alone (RFC 1995 §2).
    pub fn ixfr(&self, zone: &LowerName, client: u32) -> Option<Records<'_>> {
        let apex = self.apexes.iter().find(|a| a.name == *zone)?;
        if !serial_lt(client, self.serial) {
            return Some(Box::new(std::iter::once(apex.soa.clone())));
        }
        let (removed, added) = self.journal.since(client)?;
        // This zone's items only, by owner name (equal names keep the journal's order).
        let sorted = |mut items: Vec<Item>| {
            items.retain(|(_, k, _)| self.zone_of_key(k).is_some_and(|a| a.name == *zone));
            items.sort_by(|a, b| owner_labels(a).cmp(&owner_labels(b)));
            items
        };
        let (removed, added) = (sorted(removed), sorted(added));
        let mut old_soa = apex.soa.clone();
        if let RData::SOA(soa) = &mut old_soa.data {
            soa.serial = client;
        }
        let render = move |items: Vec<Item>| {
            items
                .into_iter()
                .filter_map(move |item| self.item_record(&item))
        };
        let soa = || std::iter::once(apex.soa.clone());
        Some(Box::new(
            soa()
                .chain(std::iter::once(old_soa))
                .chain(render(removed))
                .chain(soa())
                .chain(render(added))
                .chain(soa()),
        ))
    }

    /// The record one journal item stands for.
    fn item_record(&self, item: &Item) -> Option<Record> {
        journal::render(item, self.ttl)
    }

    /// The serial of the newest journal version of `zone` whose content has `digest` (a
    /// client's copy, whatever its serial, from whichever primary), and the digest of the
    /// content an IXFR from it leads to. None when no version reaches back to that content.
    pub fn version_of_content(&self, zone: &LowerName, digest: Digest) -> Option<(u32, Digest)> {
        let (i, apex) = self
            .apexes
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == *zone)?;
        let ns = ns_digest(apex);
        let mut items = digest;
        items.remove(ns);
        let serial = self.journal.version_of(i, items)?;
        let mut now = *self.journal.head()?.1.get(i)?;
        now.add(ns);
        Some((serial, now))
    }

    /// The oldest serial an IXFR can start from (for logs and tests).
    pub fn journal_oldest(&self) -> Option<u32> {
        self.journal.oldest()
    }
}

/// The apex NS records' part of a zone's digest (the journal's digests leave them out).
fn ns_digest(apex: &Apex) -> Digest {
    let mut d = Digest::default();
    for r in &apex.ns {
        d.add(digest::record(&r.name, r.ttl, &r.data));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_lt(1, 2));
        assert!(!serial_lt(2, 2));
        assert!(!serial_lt(3, 2));
        assert!(serial_lt(u32::MAX, 5), "wrapped around");
        assert!(!serial_lt(5, u32::MAX));
    }

    /// The streamed IXFR is the one rendered whole and sorted by name as it was, on zones whose
    /// names sort around each other's SRV names (see the transfer tests).
    #[test]
    fn the_streamed_ixfr_is_the_gathered_one() {
        use crate::zone::transfer::tests::{builder, pool, random_host};
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let pool = pool();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = builder();
            b.keep_journal();
            let mut snaps = vec![b.snapshot()];
            for _ in 0..3 {
                for (i, host) in pool.iter().enumerate() {
                    if rng.random_bool(0.3) {
                        let r = rng.random_bool(0.7).then(|| random_host(&mut rng, i));
                        b.set_host(host, r);
                    }
                }
                snaps.push(b.snapshot());
            }
            let last = snaps.last().unwrap();
            for zone in last.apex_names() {
                for old in &snaps[..snaps.len() - 1] {
                    let streamed: Vec<Record> = last.ixfr(&zone, old.serial).unwrap().collect();
                    let (removed, added) = last.journal.since(old.serial).unwrap();
                    let gathered = |items: Vec<Item>| {
                        let mut out: Vec<Record> = items
                            .iter()
                            .filter_map(|i| last.item_record(i))
                            .filter(|r| last.zone_of(&r.name).is_some_and(|a| a.name == zone))
                            .collect();
                        out.sort_by(|a, b| a.name.cmp(&b.name));
                        out
                    };
                    let (removed, added) = (gathered(removed), gathered(added));
                    let soa = last.soa(&zone).unwrap();
                    assert_eq!(streamed[0], *soa);
                    let n = removed.len();
                    assert_eq!(streamed[2..2 + n], removed[..], "seed {seed}");
                    assert_eq!(streamed[2 + n], *soa);
                    assert_eq!(
                        streamed[3 + n..streamed.len() - 1],
                        added[..],
                        "seed {seed}"
                    );
                    assert_eq!(streamed.last(), Some(soa));
                }
            }
        }
    }
}
