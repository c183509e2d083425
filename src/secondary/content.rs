//! The content digest of a secondary's copy of a zone (`zone::digest`: an order-independent
//! hash of its records but the SOA), kept up to date per transfer, and the rules of an IXFR
//! asked by content: the request carries our digest; a globaldns primary whose journal had that
//! content answers the difference from there and echoes our digest with the digest of the
//! content the transfer leads to. Its old SOA carries the primary's serial for our content,
//! which is ours in its lineage ([`rebase`]); the result is checked against the announced
//! digest before it is served ([`after`]).
//!
//! A secondary holds each record once, as the snapshot's hosts, without its TTL; an IXFR
//! deletes a record by owner and data alone. The TTL a deleted record had, which its digest
//! needs, is the one the zone's records share ([`SharedTtl`]): a globaldns primary gives them
//! all its `--ttl`. When they do not share one (another primary's zone), the digest is unknown
//! and is not sent: IXFRs are then asked by serial alone.

use hickory_proto::rr::{Name, RData};

use super::convert::Assembler;
use super::wire::Exchanged;
use super::zone_data::{self, FullZone, Messages, Received, RecordKey, TransferDelta, ZoneData};
use crate::zone::digest::{self, Digest};

/// The digest of one zone as this secondary holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneDigest(Digest);

impl ZoneDigest {
    /// The digest of a whole zone's records (with their TTLs).
    #[cfg(test)]
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

/// The TTL a zone's records share, but its SOA and apex NS records (the NS are kept whole,
/// TTL included: see `convert`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SharedTtl {
    /// No such record came yet.
    #[default]
    NoneYet,
    One(u32),
    /// Some differ: which TTL a deleted record had is not known.
    Mixed,
}

impl SharedTtl {
    /// With one more record of TTL `ttl`.
    fn with(self, ttl: u32) -> SharedTtl {
        match self {
            SharedTtl::NoneYet => SharedTtl::One(ttl),
            SharedTtl::One(t) if t == ttl => self,
            _ => SharedTtl::Mixed,
        }
    }
}

/// Whether a record is one the zone keeps whole, with its TTL: an apex NS.
fn kept_whole(apex: &Name, owner: &Name, data: &RData) -> bool {
    matches!(data, RData::NS(_)) && owner == apex
}

/// What a secondary knows of the content of its copy of a zone: its digest, while its records
/// share one TTL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Content {
    digest: ZoneDigest,
    ttl: SharedTtl,
}

impl Content {
    /// The content of a whole zone (as transferred: a record the primary sent twice would be
    /// counted twice; a globaldns primary sends each once).
    pub fn of(apex: &Name, zone: &FullZone) -> Content {
        let mut c = Content::default();
        for r in zone.records() {
            c.digest.0.add(digest::record(&r.name, r.ttl, &r.data));
            if !kept_whole(apex, &r.name, &r.data) {
                c.ttl = c.ttl.with(r.ttl);
            }
        }
        c
    }

    /// The digest to send with an IXFR request: None when the records do not share one TTL.
    pub fn digest(&self) -> Option<ZoneDigest> {
        (self.ttl != SharedTtl::Mixed).then_some(self.digest)
    }

    /// The TTL of every record held but the SOA and apex NS, when they share one.
    pub fn shared_ttl(&self) -> Option<u32> {
        match self.ttl {
            SharedTtl::One(t) => Some(t),
            _ => None,
        }
    }

    /// The content after `delta` (checked against the zone); `held` is the zone before it (for
    /// the TTL of the records the delta deletes or replaces).
    pub fn after(&self, apex: &Name, delta: &TransferDelta, held: &Assembler) -> Content {
        let mut ttl = self.ttl;
        for ((owner, data), t) in &delta.added {
            if !kept_whole(apex, owner, data) {
                ttl = ttl.with(*t);
            }
        }
        let digest = match self.digest() {
            Some(d) => after(d, delta, |k| held.ttl_of(apex, k, self.shared_ttl())),
            None => ZoneDigest::default(),
        };
        Content { digest, ttl }
    }
}

/// The digest after `delta` (checked against the zone, see `zone_data::receive`); `ttl_of`
/// gives the TTL a record has now (a record re-added with another TTL replaces it).
pub fn after(
    mut d: ZoneDigest,
    delta: &TransferDelta,
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
pub fn rebase(messages: &mut Messages, ours: u32) {
    let mut records = messages.iter_mut().flatten();
    if let (Some(_), Some(old), Some(_)) = (records.next(), records.next(), records.next()) {
        if let RData::SOA(soa) = &mut old.data {
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

/// Checks the answer to an IXFR asked with our content `ours` (its digest sent when known;
/// `same`: of the primary our zone came from; `held`: our zone as served, what the deletions
/// are checked against). Deltas matched by content start at our content whatever the serials
/// say and must lead to the content announced; without a match only our own primary's deltas
/// fit our serial (another primary's serials may name other content).
pub fn receive_ixfr(
    zone: &Name,
    cur: &ZoneData,
    ours: &Content,
    same: bool,
    mut got: Exchanged,
    held: &Assembler,
) -> Result<Received, Refused> {
    let digest = ours.digest();
    let announced = digest
        .zip(got.echo.as_deref())
        .and_then(|(d, e)| matched(e, d.value()));
    if announced.is_some() {
        rebase(&mut got.records, cur.serial());
    }
    let alone = {
        let mut records = got.records.iter().flatten();
        records.next().filter(|_| records.next().is_none()).cloned()
    };
    let received = match (announced, alone) {
        // Our content is the primary's newest: only its SOA is new to us.
        (Some(_), Some(soa)) => Received::Incremental {
            soa,
            delta: TransferDelta::default(),
        },
        _ => {
            let holds = |owner: &Name, data: &RData| held.holds(zone, owner, data);
            zone_data::receive(zone, got.records, Some((cur.serial(), &holds)))
                .map_err(Refused::Invalid)?
        }
    };
    if let Received::Incremental { delta, .. } = &received {
        match announced.zip(digest) {
            None if !same => {
                return Err(Refused::Invalid(
                    "deltas from another primary's serial, not matched by content".into(),
                ))
            }
            Some((want, d))
                if after(d, delta, |k| held.ttl_of(zone, k, ours.shared_ttl())).value() != want =>
            {
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
    use hickory_proto::rr::{LowerName, Name, Record};

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
        let delta = TransferDelta {
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

    /// A zone whose records share one TTL keeps its digest exact through IXFRs (deletions of
    /// host records counted out with the shared TTL, of apex NS records with their own); a
    /// record with another TTL makes it unknown, and then it is not sent.
    #[test]
    fn the_digest_is_kept_while_the_records_share_one_ttl() {
        use crate::zone::ZoneConfig;
        use hickory_proto::rr::rdata::{NS, SOA};
        let apex = Name::from_ascii("global.").unwrap();
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let record =
            |(owner, data): &RecordKey, ttl| Record::from_rdata(owner.into(), ttl, data.clone());
        let ns = |n: &str| {
            let data = RData::NS(NS(Name::from_ascii(n).unwrap()));
            (LowerName::new(&apex), data)
        };
        let (h, i, j) = (
            key("h.global.", [240, 10, 0, 1]),
            key("i.global.", [240, 10, 0, 2]),
            key("j.global.", [240, 10, 0, 3]),
        );
        let zone = |records: &[(&RecordKey, u32)]| FullZone {
            soa: Record::from_rdata(
                apex.clone(),
                30,
                RData::SOA(SOA::new(apex.clone(), apex.clone(), 1, 1, 1, 1, 30)),
            ),
            records: vec![records.iter().map(|(k, ttl)| record(k, *ttl)).collect()],
        };
        let (ns1, ns2) = (ns("ns1.example."), ns("ns2.example."));
        let first = zone(&[(&ns1, 3600), (&h, 30), (&i, 30)]);
        let content = Content::of(&apex, &first);
        assert_eq!(content.shared_ttl(), Some(30));
        assert_eq!(
            content.digest(),
            Some(ZoneDigest::of([(&ns1, 3600), (&h, 30), (&i, 30)]))
        );
        let mut held = Assembler::new(&cfg, &[]);
        held.replace(&apex, first);

        // h and the NS go, j and another NS come, i is sent again: as a whole zone of them.
        let delta = TransferDelta {
            removed: vec![h.clone(), ns1.clone()],
            added: vec![(j.clone(), 30), (ns2.clone(), 7200), (i.clone(), 30)],
        };
        let next = content.after(&apex, &delta, &held);
        let whole = zone(&[(&ns2, 7200), (&i, 30), (&j, 30)]);
        assert_eq!(next, Content::of(&apex, &whole));
        assert!(next.digest().is_some());

        // i again with another TTL: the TTLs differ, what a deletion had is not known.
        let mixed = TransferDelta {
            removed: vec![],
            added: vec![(i.clone(), 60)],
        };
        assert_eq!(content.after(&apex, &mixed, &held).digest(), None);
        assert_eq!(
            Content::of(&apex, &zone(&[(&h, 30), (&i, 60)])).digest(),
            None
        );
        // The apex NS keep their own TTLs: they do not mix the others'.
        assert_eq!(
            Content::of(&apex, &zone(&[(&ns1, 3600), (&h, 30)])).shared_ttl(),
            Some(30)
        );
    }
}
