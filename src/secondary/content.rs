//! The content digest of a secondary's copy of a zone (`zone::digest`: an order-independent
//! hash of its records but the SOA), kept up to date per transfer, and the rules of an IXFR
//! asked by content: the request carries our digest; a globaldns primary whose journal had that
//! content answers the difference from there and echoes our digest with the digest of the
//! content the transfer leads to. Its old SOA carries the primary's serial for our content,
//! which is ours in its lineage ([`rebase`]); the result is checked against the announced
//! digest before it is served ([`after`]).

use hickory_proto::rr::{Name, RData, Record};

use super::wire::Exchanged;
use super::zone_data::{self, Delta, Received, RecordKey, ZoneData};
use crate::zone::digest::{self, Digest};

/// The digest of one zone as this secondary holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneDigest(Digest);

impl ZoneDigest {
    /// The digest of a whole zone's records (with their TTLs).
    pub fn of<'a>(records: impl IntoIterator<Item = (&'a RecordKey, u32)>) -> ZoneDigest {
        let mut d = ZoneDigest::default();
        d.apply(std::iter::empty(), records);
        d
    }

    /// Takes `removed` records out and puts `added` ones in.
    pub fn apply<'a>(
        &mut self,
        removed: impl IntoIterator<Item = (&'a RecordKey, u32)>,
        added: impl IntoIterator<Item = (&'a RecordKey, u32)>,
    ) {
        for ((owner, data), ttl) in removed {
            self.0.remove(digest::record(owner, ttl, data));
        }
        for ((owner, data), ttl) in added {
            self.0.add(digest::record(owner, ttl, data));
        }
    }

    pub fn value(self) -> Digest {
        self.0
    }
}

/// The digest after `delta` (checked against the zone, see `zone_data::receive`); `ttl_of`
/// gives the TTL a record has now (a record re-added with another TTL replaces it).
pub fn after(
    mut d: ZoneDigest,
    delta: &Delta,
    ttl_of: impl Fn(&RecordKey) -> Option<u32>,
) -> ZoneDigest {
    let removed = delta
        .removed
        .iter()
        .chain(delta.added.iter().map(|(k, _)| k))
        .filter_map(|k| Some((k, ttl_of(k)?)));
    d.apply(removed, delta.added.iter().map(|(k, ttl)| (k, *ttl)));
    d
}

/// The option of the primary's answer: when it echoes `ours`, the digest of the content the
/// transfer leads to.
pub fn matched(echo: &[u8], ours: Digest) -> Option<Digest> {
    if echo.len() != 32 || Digest::from_bytes(&echo[..16]) != Some(ours) {
        return None;
    }
    Digest::from_bytes(&echo[16..])
}

/// A content-matched IXFR's old SOA is the primary's serial for our content: ours, read in its
/// lineage. Sets it to `ours` so the usual checks of the deltas apply.
pub fn rebase(records: &mut [Record], ours: u32) {
    if records.len() > 2 {
        if let RData::SOA(soa) = &mut records[1].data {
            soa.serial = ours;
        }
    }
}

/// Why an IXFR's answer is not taken.
#[derive(Debug)]
pub enum Refused {
    /// Matched by content, but the deltas lead elsewhere than announced.
    Mismatch(String),
    /// Fails the checks of a transfer, or deltas from another primary not matched by content.
    Invalid(String),
}

/// Checks the answer to an IXFR asked with our content's digest `ours` (`same`: of the primary
/// our zone came from; `ttl_of`: a record's TTL in our zone). Deltas matched by content start
/// at our content whatever the serials say and must lead to the content announced; without a
/// match only our own primary's deltas fit our serial (another primary's serials may name
/// other content).
pub fn receive_ixfr(
    zone: &Name,
    cur: &ZoneData,
    ours: ZoneDigest,
    same: bool,
    mut got: Exchanged,
    ttl_of: impl Fn(&RecordKey) -> Option<u32>,
) -> Result<Received, Refused> {
    let announced = got.echo.as_deref().and_then(|e| matched(e, ours.value()));
    if announced.is_some() {
        rebase(&mut got.records, cur.serial());
    }
    let received = match (announced, got.records.as_slice()) {
        // Our content is the primary's newest: only its SOA is new to us.
        (Some(_), [soa]) => Received::Incremental {
            soa: soa.clone(),
            delta: Delta::default(),
        },
        _ => zone_data::receive(zone, got.records, Some(cur)).map_err(Refused::Invalid)?,
    };
    if let Received::Incremental { delta, .. } = &received {
        match announced {
            None if !same => {
                return Err(Refused::Invalid(
                    "deltas from another primary's serial, not matched by content".into(),
                ))
            }
            Some(want) if after(ours, delta, ttl_of).value() != want => {
                return Err(Refused::Mismatch(format!(
                    "the deltas do not lead to the content announced ({want})"
                )))
            }
            _ => {}
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{LowerName, Name};

    fn key(owner: &str, ip: [u8; 4]) -> RecordKey {
        (
            LowerName::new(&Name::from_ascii(owner).unwrap()),
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    #[test]
    fn a_delta_moves_the_digest_to_that_of_the_new_zone() {
        let (a, b, c) = (
            key("a.global.", [240, 0, 0, 1]),
            key("b.global.", [240, 0, 0, 2]),
            key("c.global.", [240, 0, 0, 3]),
        );
        let old = ZoneDigest::of([(&a, 30), (&b, 30)]);
        // b goes, c comes, a's TTL changes.
        let delta = Delta {
            removed: vec![b.clone()],
            added: vec![(c.clone(), 30), (a.clone(), 60)],
        };
        let ttl = |k: &RecordKey| {
            [(&a, 30), (&b, 30)]
                .iter()
                .find(|(x, _)| *x == k)
                .map(|(_, t)| *t)
        };
        let new = after(old, &delta, ttl);
        assert_eq!(new, ZoneDigest::of([(&c, 30), (&a, 60)]));
        assert_ne!(new, old);

        let mut echo = old.value().to_bytes().to_vec();
        echo.extend(new.value().to_bytes());
        assert_eq!(matched(&echo, old.value()), Some(new.value()));
        assert_eq!(matched(&echo, new.value()), None, "not our content");
        assert_eq!(matched(&echo[..16], old.value()), None);
    }
}
