//! Incremental zone transfer (RFC 1995) from the snapshot's journal: one condensed difference
//! from the client's serial to ours, in the message layout of RFC 1995 §4.

use hickory_proto::rr::{LowerName, RData, Record};

use super::digest::{self, Digest};
use super::journal::{self, Item};
use super::transfer::AXFR_CHUNK;
use super::{Apex, Snapshot};

/// RFC 1982 serial arithmetic: `a` is older than `b`.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

impl Snapshot {
    /// The IXFR of `zone` for a client at serial `client`: the messages' records, or None when
    /// the journal does not reach back that far (the caller sends a full transfer). A client at
    /// our serial or newer gets our SOA alone (RFC 1995 §2).
    pub fn ixfr(&self, zone: &LowerName, client: u32) -> Option<Vec<Vec<Record>>> {
        let apex = self.apexes.iter().find(|a| a.name == *zone)?;
        if !serial_lt(client, self.serial) {
            return Some(vec![vec![apex.soa.clone()]]);
        }
        let (removed, added) = self.journal.since(client)?;
        let render = |items: &[Item]| -> Vec<Record> {
            let mut out: Vec<Record> = items
                .iter()
                .filter_map(|item| journal::render(item, self.ttl))
                .filter(|r| self.zone_of(&r.name).is_some_and(|a| a.name == *zone))
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out
        };
        let mut old_soa = apex.soa.clone();
        if let RData::SOA(soa) = &mut old_soa.data {
            soa.serial = client;
        }
        let mut all = vec![apex.soa.clone(), old_soa];
        all.extend(render(&removed));
        all.push(apex.soa.clone());
        all.extend(render(&added));
        all.push(apex.soa.clone());
        Some(all.chunks(AXFR_CHUNK).map(<[Record]>::to_vec).collect())
    }

    /// The IXFR of `zone` for a client whose copy of it has content `digest` (whatever its
    /// serial, whichever primary it came from): the difference from the newest version of the
    /// journal that had that content, the old SOA carrying our serial for it; with the digest
    /// of the content it leads to. None when no version reaches back to that content.
    pub fn ixfr_from_content(
        &self,
        zone: &LowerName,
        digest: Digest,
    ) -> Option<(Vec<Vec<Record>>, Digest)> {
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
        Some((self.ixfr(zone, serial)?, now))
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
}
