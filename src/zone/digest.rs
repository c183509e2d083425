//! A zone's content digest: an order-independent hash of its records (all but the SOA), so that
//! two servers holding the same records hold the same digest whatever path brought them there.
//! It is what makes serials of different primaries (replicas, or one primary before and after a
//! restart that lost its journal) comparable: a secondary sends the digest of what it holds with
//! its IXFR request (EDNS option [`EDNS_OPTION`]) and a primary that held the same content at
//! some version of its journal answers the difference from there (see `Journal::version_of`).
//!
//! The digest is the sum (mod 2^128) of a SHA-256 prefix of each record's canonical form
//! (lower-case owner, type, TTL, data with lower-case names): adding or removing one record
//! costs one hash, so a primary and a secondary keep it up to date per change.

use hickory_proto::rr::{Name, RData, RecordType};

/// The EDNS option (local/experimental range, RFC 6891 §9) carrying content digests: in an
/// IXFR request, the digest of the client's copy of the zone (16 bytes); in the answer, when a
/// version of the journal had that content, the same digest then the digest of the content the
/// transfer leads to (32 bytes). Other servers ignore it (RFC 6891 §6.1.2).
pub const EDNS_OPTION: u16 = 65_310;

/// The digest of a set of records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest(pub u128);

impl Digest {
    pub fn add(&mut self, record: Digest) {
        self.0 = self.0.wrapping_add(record.0);
    }

    pub fn remove(&mut self, record: Digest) {
        self.0 = self.0.wrapping_sub(record.0);
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        Some(Digest(u128::from_be_bytes(b.try_into().ok()?)))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The canonical bytes of one record, written label by label: what is hashed.
#[derive(Default)]
pub(crate) struct Canon(Vec<u8>);

impl Canon {
    /// Starts a record: clears the buffer.
    pub fn start(&mut self) -> &mut Canon {
        self.0.clear();
        self
    }

    /// One label, lower-cased.
    pub fn label(&mut self, l: &[u8]) -> &mut Canon {
        self.0.push(l.len() as u8);
        self.0.extend(l.iter().map(u8::to_ascii_lowercase));
        self
    }

    /// Labels already in key form (length-prefixed, lower-cased when the key was made), then
    /// the root.
    pub fn key(&mut self, k: &[u8]) -> &mut Canon {
        self.0.extend_from_slice(k);
        self.0.push(0);
        self
    }

    pub fn name(&mut self, n: &Name) -> &mut Canon {
        for l in n.iter() {
            self.label(l);
        }
        self.0.push(0);
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Canon {
        self.0.extend_from_slice(b);
        self
    }

    pub fn digest(&self) -> Digest {
        let h = ring::digest::digest(&ring::digest::SHA256, &self.0);
        Digest::from_bytes(&h.as_ref()[..16]).expect("16 bytes")
    }
}

/// The type, TTL and data of a record, after its owner.
pub(crate) fn rdata(c: &mut Canon, ttl: u32, data: &RData) {
    let rtype = data.record_type();
    c.bytes(&u16::from(rtype).to_be_bytes())
        .bytes(&ttl.to_be_bytes());
    match data {
        RData::A(a) => c.bytes(&a.0.octets()),
        RData::AAAA(a) => c.bytes(&a.0.octets()),
        RData::PTR(n) => c.name(&n.0),
        RData::NS(n) => c.name(&n.0),
        RData::CNAME(n) => c.name(&n.0),
        RData::SRV(s) => c
            .bytes(&s.priority.to_be_bytes())
            .bytes(&s.weight.to_be_bytes())
            .bytes(&s.port.to_be_bytes())
            .name(&s.target),
        // Types globaldns never serves (a secondary of another primary may hold them).
        other => c.bytes(other.to_string().as_bytes()),
    };
}

/// The digest of one record.
pub fn record(owner: &Name, ttl: u32, data: &RData) -> Digest {
    let mut c = Canon::default();
    c.start().name(owner);
    rdata(&mut c, ttl, data);
    c.digest()
}

/// Whether `data` is counted in a zone's digest (every record but the SOA).
pub fn counted(rtype: RecordType) -> bool {
    rtype != RecordType::SOA
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, PTR};

    #[test]
    fn order_independent_case_insensitive_and_reversible() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let a = record(&n("h.bar.global."), 30, &RData::A(A::new(240, 10, 0, 1)));
        let b = record(
            &n("1.0.10.240.in-addr.arpa."),
            30,
            &RData::PTR(PTR(n("h.bar.global."))),
        );
        let (mut x, mut y) = (Digest::default(), Digest::default());
        x.add(a);
        x.add(b);
        y.add(b);
        y.add(a);
        assert_eq!(x, y);
        assert_eq!(
            record(&n("H.Bar.GLOBAL."), 30, &RData::A(A::new(240, 10, 0, 1))),
            a
        );
        assert_ne!(
            record(&n("h.bar.global."), 31, &RData::A(A::new(240, 10, 0, 1))),
            a
        );
        x.remove(b);
        assert_eq!(x.0, a.0);
        assert_eq!(Digest::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Digest::from_bytes(&[0; 3]), None);
    }
}
