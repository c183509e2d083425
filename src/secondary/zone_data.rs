//! One zone as transferred: its SOA and its other records, and the checks a transfer must pass
//! before it replaces what we serve (RFC 5936 §2.2, RFC 1995 §4, serial arithmetic RFC 1982).

use std::collections::HashMap;
use std::net::SocketAddr;

use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

/// A zone as the primary serves it.
#[derive(Clone, Debug)]
pub struct ZoneData {
    pub apex: Name,
    /// The primary it came from: IXFR only from that one, since two primaries can give the same
    /// serial to different contents (the replicas of a primary count serials on their own).
    pub from: Option<SocketAddr>,
    pub soa: Record,
    /// Every record but the SOA, by owner and data (a delete matches whatever the TTL); the
    /// value is the TTL.
    pub records: HashMap<(LowerName, RData), u32>,
}

impl ZoneData {
    pub fn serial(&self) -> u32 {
        serial_of(&self.soa).unwrap_or(0)
    }
}

/// A record of a zone as the zone's map keys it: owner and data (a delete matches whatever the TTL).
pub type RecordKey = (LowerName, RData);

/// The net difference between two versions of a zone: what a secondary applies, record by
/// record, instead of rebuilding everything from the whole zone.
#[derive(Debug, Default)]
pub struct Delta {
    pub removed: Vec<RecordKey>,
    /// New records, and records whose TTL changed (with the new TTL).
    pub added: Vec<(RecordKey, u32)>,
}

impl Delta {
    /// From `old` (None: nothing) to `new`: the difference of two whole zones (an AXFR).
    pub fn between(old: Option<&ZoneData>, new: &ZoneData) -> Delta {
        let mut d = Delta::default();
        if let Some(old) = old {
            d.removed = old
                .records
                .keys()
                .filter(|k| !new.records.contains_key(*k))
                .cloned()
                .collect();
        }
        d.added = new
            .records
            .iter()
            .filter(|(k, ttl)| old.and_then(|o| o.records.get(*k)) != Some(*ttl))
            .map(|(k, ttl)| (k.clone(), *ttl))
            .collect();
        d
    }
}

/// What a transfer brought.
#[derive(Debug)]
pub enum Received {
    /// The primary has nothing newer (an IXFR answered with its SOA alone).
    UpToDate,
    /// A whole zone (an AXFR, or an IXFR the primary answered in full).
    Full(ZoneData),
    /// The IXFR's deltas, checked against our zone and netted: apply with [`ZoneData::apply`].
    Incremental { soa: Record, delta: Delta },
}

impl ZoneData {
    /// Applies a checked delta (from [`receive`] against this zone) and the new SOA.
    pub fn apply(&mut self, soa: Record, delta: &Delta) {
        for k in &delta.removed {
            self.records.remove(k);
        }
        for (k, ttl) in &delta.added {
            self.records.insert(k.clone(), *ttl);
        }
        self.soa = soa;
    }
}

pub fn serial_of(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    }
}

/// RFC 1982: whether serial `a` is newer than `b` (undefined pairs, 2^31 apart, are not).
pub fn newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 31
}

/// Checks the answer records of a transfer of `zone` (`current`: what we serve, for an IXFR).
pub fn receive(
    zone: &Name,
    records: Vec<Record>,
    current: Option<&ZoneData>,
) -> Result<Received, String> {
    let apex_soa = |r: &Record| r.record_type() == RecordType::SOA && r.name == *zone;
    let Some(first) = records.first() else {
        return Err("empty transfer".into());
    };
    if !apex_soa(first) {
        return Err(format!(
            "the transfer starts with {} {}, not the zone's SOA",
            first.name,
            first.record_type()
        ));
    }
    let serial = serial_of(first).unwrap_or(0);
    if records.len() == 1 {
        return Ok(Received::UpToDate);
    }
    let last = &records[records.len() - 1];
    if !apex_soa(last) || serial_of(last) != Some(serial) {
        return Err("the transfer does not end with the SOA it started with".into());
    }
    for r in &records {
        if !zone.zone_of(&r.name) {
            return Err(format!("owner {} is outside the zone", r.name));
        }
        if r.dns_class != DNSClass::IN {
            return Err(format!("record {} of class {}", r.name, r.dns_class));
        }
    }
    let body = &records[1..records.len() - 1];
    let incremental = records.len() > 2
        && body
            .first()
            .is_some_and(|r| r.record_type() == RecordType::SOA);
    match (incremental, current) {
        (true, Some(cur)) => deltas(cur, first, body).map(|delta| Received::Incremental {
            soa: first.clone(),
            delta,
        }),
        (true, None) => Err("deltas without a zone to apply them to".into()),
        (false, _) => full(zone, first, body).map(Received::Full),
    }
}

fn full(zone: &Name, soa: &Record, body: &[Record]) -> Result<ZoneData, String> {
    let mut records = HashMap::with_capacity(body.len());
    for r in body {
        if r.record_type() == RecordType::SOA {
            return Err(format!("a second SOA at {} inside a full transfer", r.name));
        }
        records.insert((LowerName::new(&r.name), r.data.clone()), r.ttl);
    }
    Ok(ZoneData {
        apex: zone.clone(),
        from: None,
        soa: soa.clone(),
        records,
    })
}

/// Checks the deltas of an IXFR (`[old SOA, deletions…, new SOA, additions…]…`) against `cur`
/// and nets them into one [`Delta`], without copying the zone: the changes so far are an overlay
/// on it. A deletion of a record we do not have, or a chain that does not start at our serial
/// and step forward delta by delta to `new_soa`, makes the whole answer invalid.
fn deltas(cur: &ZoneData, new_soa: &Record, body: &[Record]) -> Result<Delta, String> {
    // Key → Some(TTL) present, None deleted; keys absent here are as in `cur`.
    let mut overlay: HashMap<RecordKey, Option<u32>> = HashMap::new();
    let mut at = cur.serial();
    let mut i = 0;
    while i < body.len() {
        let old = serial_of(&body[i]).ok_or("a delta does not start with a SOA")?;
        if old != at {
            return Err(format!("a delta from serial {old}, expected {at}"));
        }
        i += 1;
        while i < body.len() && body[i].record_type() != RecordType::SOA {
            let r = &body[i];
            let k = (LowerName::new(&r.name), r.data.clone());
            let present = match overlay.get(&k) {
                Some(state) => state.is_some(),
                None => cur.records.contains_key(&k),
            };
            if !present {
                return Err(format!(
                    "a delta deletes {} {} which we do not have",
                    r.name,
                    r.record_type()
                ));
            }
            overlay.insert(k, None);
            i += 1;
        }
        let Some(new) = body.get(i).and_then(serial_of) else {
            return Err("a delta without its new SOA".into());
        };
        if !newer(new, at) {
            return Err(format!("a delta from serial {at} to {new}, not forward"));
        }
        at = new;
        i += 1;
        while i < body.len() && body[i].record_type() != RecordType::SOA {
            let r = &body[i];
            overlay.insert((LowerName::new(&r.name), r.data.clone()), Some(r.ttl));
            i += 1;
        }
    }
    if Some(at) != serial_of(new_soa) {
        return Err(format!(
            "the deltas end at serial {at}, not at the transfer's"
        ));
    }
    let mut delta = Delta::default();
    for (k, state) in overlay {
        match (state, cur.records.get(&k)) {
            (None, Some(_)) => delta.removed.push(k),
            (Some(ttl), old) if old != Some(&ttl) => delta.added.push((k, ttl)),
            _ => {}
        }
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn soa(serial: u32) -> Record {
        let z = name("global.");
        Record::from_rdata(
            z.clone(),
            30,
            RData::SOA(SOA::new(
                name("ns.global."),
                name("h.global."),
                serial,
                1,
                1,
                1,
                30,
            )),
        )
    }
    fn a(owner: &str, ip: &str) -> Record {
        Record::from_rdata(name(owner), 30, RData::A(A(ip.parse().unwrap())))
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(newer(2, 1));
        assert!(!newer(1, 2));
        assert!(!newer(5, 5));
        assert!(newer(3, u32::MAX - 2), "wraps around");
        assert!(!newer(1 << 31, 0), "2^31 apart is undefined: not newer");
    }

    #[test]
    fn full_transfers_are_checked() {
        let z = name("global.");
        let ok = receive(&z, vec![soa(5), a("h.global.", "240.0.0.1"), soa(5)], None).unwrap();
        let Received::Full(zd) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!((zd.serial(), zd.records.len()), (5, 1));
        for bad in [
            vec![a("h.global.", "240.0.0.1"), soa(5)],
            vec![soa(5), a("h.global.", "240.0.0.1")],
            vec![soa(5), a("h.global.", "240.0.0.1"), soa(6)],
            vec![soa(5), a("h.example.", "240.0.0.1"), soa(5)],
            vec![soa(5), a("h.global.", "240.0.0.1"), soa(5), soa(5)],
        ] {
            assert!(receive(&z, bad.clone(), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deltas_apply_or_fail_whole() {
        let z = name("global.");
        let Ok(Received::Full(cur)) =
            receive(&z, vec![soa(5), a("h.global.", "240.0.0.1"), soa(5)], None)
        else {
            panic!()
        };
        let ixfr = vec![
            soa(7),
            soa(5),
            a("h.global.", "240.0.0.1"),
            soa(6),
            a("i.global.", "240.0.0.2"),
            soa(6),
            soa(7),
            a("j.global.", "240.0.0.3"),
            soa(7),
        ];
        let Ok(Received::Incremental {
            soa: new_soa,
            delta,
        }) = receive(&z, ixfr, Some(&cur))
        else {
            panic!()
        };
        // Netted: h removed; i and j added.
        assert_eq!((delta.removed.len(), delta.added.len()), (1, 2));
        let mut new = cur.clone();
        new.apply(new_soa, &delta);
        assert_eq!(new.serial(), 7);
        let mut owners: Vec<String> = new.records.keys().map(|(n, _)| n.to_string()).collect();
        owners.sort();
        assert_eq!(owners, ["i.global.", "j.global."]);
        // A delete of a record we do not have; a chain not starting at our serial.
        for bad in [
            vec![soa(6), soa(5), a("x.global.", "240.0.0.9"), soa(6), soa(6)],
            vec![soa(7), soa(6), soa(7), soa(7)],
        ] {
            assert!(receive(&z, bad.clone(), Some(&cur)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            receive(&z, vec![soa(5)], Some(&cur)),
            Ok(Received::UpToDate)
        ));
    }
}
