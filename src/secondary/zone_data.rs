//! The checks a transfer must pass before it replaces what we serve (RFC 5936 §2.2, RFC 1995 §4,
//! serial arithmetic RFC 1982), and what it brought. A zone's records are held once, as the
//! snapshot's hosts (`convert`): an IXFR's deletions are checked against those, not against a
//! copy of the records.

use std::collections::HashMap;
use std::net::SocketAddr;

use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

/// A zone as served: where it came from and its SOA (its records are the snapshot's).
#[derive(Clone, Debug)]
pub struct ZoneData {
    /// The primary it came from: another's IXFR counts only when matched by content (see
    /// `content`), since two primaries can give the same serial to different contents (the
    /// replicas of a primary count serials on their own).
    pub from: Option<SocketAddr>,
    pub soa: Record,
}

impl ZoneData {
    pub fn serial(&self) -> u32 {
        serial_of(&self.soa).unwrap_or(0)
    }
}

/// The answer records of an exchange, message by message: a large AXFR is never one block of
/// all its records (nor grown by copying it).
pub type Messages = Vec<Vec<Record>>;

/// A whole zone as transferred (an AXFR, or an IXFR the primary answered in full): its SOA and
/// every other record, as they came (the same record twice is harmless to whoever reads it).
#[derive(Debug)]
pub struct FullZone {
    pub soa: Record,
    pub records: Messages,
}

impl FullZone {
    pub fn serial(&self) -> u32 {
        serial_of(&self.soa).unwrap_or(0)
    }

    /// Every record but the SOA.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }
}

/// A record as a zone holds it: owner and data (a delete matches whatever the TTL).
pub type RecordKey = (LowerName, RData);

/// Whether the zone served holds a record (owner, data): what an IXFR's deletions are checked
/// against.
pub type Holds<'a> = &'a dyn Fn(&Name, &RData) -> bool;

/// The net difference an IXFR makes, record by record: what a secondary applies.
#[derive(Debug, Default)]
pub struct TransferDelta {
    /// Records we hold that the IXFR deletes.
    pub removed: Vec<RecordKey>,
    /// Records it adds (some may be held already, e.g. with another TTL), with their TTL.
    pub added: Vec<(RecordKey, u32)>,
}

/// What a transfer brought.
#[derive(Debug)]
pub enum Received {
    /// The primary has nothing newer (an IXFR answered with its SOA alone).
    UpToDate,
    /// A whole zone (an AXFR, or an IXFR the primary answered in full).
    Full(FullZone),
    /// The IXFR's deltas, checked against our zone and netted.
    Incremental { soa: Record, delta: TransferDelta },
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

/// Checks the answer records of a transfer of `zone`. `current`: our zone's serial and what it
/// holds, for an IXFR.
pub fn receive(
    zone: &Name,
    messages: Messages,
    current: Option<(u32, Holds<'_>)>,
) -> Result<Received, String> {
    let apex_soa = |r: &Record| r.record_type() == RecordType::SOA && r.name == *zone;
    let mut records = messages.iter().flatten();
    let Some(first) = records.next() else {
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
    let Some(second) = records.next() else {
        return Ok(Received::UpToDate);
    };
    let last = messages.iter().flatten().next_back().unwrap_or(first);
    if !apex_soa(last) || serial_of(last) != Some(serial) {
        return Err("the transfer does not end with the SOA it started with".into());
    }
    for r in messages.iter().flatten() {
        if !zone.zone_of(&r.name) {
            return Err(format!("owner {} is outside the zone", r.name));
        }
        if r.dns_class != DNSClass::IN {
            return Err(format!("record {} of class {}", r.name, r.dns_class));
        }
    }
    // `[SOA, SOA]` is an empty zone; deltas start with a second SOA before the closing one.
    let incremental = !std::ptr::eq(second, last) && second.record_type() == RecordType::SOA;
    match (incremental, current) {
        (true, Some((at, holds))) => {
            let records: Vec<Record> = messages.into_iter().flatten().collect();
            let body = &records[1..records.len() - 1];
            deltas(at, holds, &records[0], body).map(|delta| Received::Incremental {
                soa: records[0].clone(),
                delta,
            })
        }
        (true, None) => Err("deltas without a zone to apply them to".into()),
        (false, _) => full(messages).map(Received::Full),
    }
}

/// A whole zone from its messages: the opening SOA taken out, the closing one (checked equal)
/// dropped.
fn full(mut messages: Messages) -> Result<FullZone, String> {
    messages.retain(|m| !m.is_empty());
    if let Some(m) = messages.last_mut() {
        m.pop();
    }
    let soa = messages[0].remove(0);
    if let Some(r) = messages
        .iter()
        .flatten()
        .find(|r| r.record_type() == RecordType::SOA)
    {
        return Err(format!("a second SOA at {} inside a full transfer", r.name));
    }
    Ok(FullZone {
        soa,
        records: messages,
    })
}

/// Checks the deltas of an IXFR (`[old SOA, deletions…, new SOA, additions…]…`) against our
/// zone (at serial `at`, holding what `holds` says) and nets them into one [`TransferDelta`], without
/// copying the zone: the changes so far are an overlay on it. A deletion of a record we do not
/// have, or a chain that does not start at our serial and step forward delta by delta to
/// `new_soa`, makes the whole answer invalid.
fn deltas(
    mut at: u32,
    holds: Holds<'_>,
    new_soa: &Record,
    body: &[Record],
) -> Result<TransferDelta, String> {
    // Key → Some(TTL) present, None deleted; keys absent here are as in our zone.
    let mut overlay: HashMap<RecordKey, Option<u32>> = HashMap::new();
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
                None => holds(&r.name, &r.data),
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
    let mut delta = TransferDelta::default();
    for (k, state) in overlay {
        match state {
            Some(ttl) => delta.added.push((k, ttl)),
            // Deleted: a removal when we held it before (not when the chain added it first).
            None if holds(&Name::from(&k.0), &k.1) => delta.removed.push(k),
            None => {}
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
        let ok = receive(
            &z,
            vec![vec![soa(5), a("h.global.", "240.0.0.1"), soa(5)]],
            None,
        )
        .unwrap();
        let Received::Full(zone) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!((zone.serial(), zone.len()), (5, 1));
        // Across messages, an empty one among them: the same zone.
        let split = vec![
            vec![soa(5), a("h.global.", "240.0.0.1")],
            vec![],
            vec![a("i.global.", "240.0.0.2"), soa(5)],
        ];
        let Ok(Received::Full(zone)) = receive(&z, split, None) else {
            panic!()
        };
        let owners: Vec<String> = zone.records().map(|r| r.name.to_string()).collect();
        assert_eq!(owners, ["h.global.", "i.global."]);
        assert!(matches!(
            receive(&z, vec![vec![soa(5)], vec![soa(5)]], None),
            Ok(Received::Full(FullZone { records, .. })) if records.iter().all(Vec::is_empty)
        ));
        for bad in [
            vec![a("h.global.", "240.0.0.1"), soa(5)],
            vec![soa(5), a("h.global.", "240.0.0.1")],
            vec![soa(5), a("h.global.", "240.0.0.1"), soa(6)],
            vec![soa(5), a("h.example.", "240.0.0.1"), soa(5)],
            vec![soa(5), a("h.global.", "240.0.0.1"), soa(5), soa(5)],
        ] {
            assert!(receive(&z, vec![bad.clone()], None).is_err(), "{bad:?}");
        }
    }

    /// A zone that holds exactly these records, as the snapshot answers [`Holds`].
    fn holding(records: &[Record]) -> impl Fn(&Name, &RData) -> bool {
        let held: std::collections::HashSet<RecordKey> = records
            .iter()
            .map(|r| (LowerName::new(&r.name), r.data.clone()))
            .collect();
        move |owner: &Name, data: &RData| held.contains(&(LowerName::new(owner), data.clone()))
    }

    fn owners(keys: &[RecordKey]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|(n, _)| n.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn deltas_are_checked_against_what_we_hold_and_netted() {
        let z = name("global.");
        let holds = holding(&[a("h.global.", "240.0.0.1")]);
        let ixfr = vec![
            soa(7),
            soa(5),
            a("H.global.", "240.0.0.1"),
            soa(6),
            a("i.global.", "240.0.0.2"),
            a("k.global.", "240.0.0.4"),
            soa(6),
            a("k.global.", "240.0.0.4"),
            soa(7),
            a("j.global.", "240.0.0.3"),
            soa(7),
        ];
        let Ok(Received::Incremental { soa: new, delta }) =
            receive(&z, vec![ixfr], Some((5, &holds)))
        else {
            panic!()
        };
        assert_eq!(serial_of(&new), Some(7));
        // Netted: h removed (whatever its case); i and j added; k added then deleted: nothing.
        assert_eq!(owners(&delta.removed), ["h.global."]);
        let added: Vec<RecordKey> = delta.added.into_iter().map(|(k, _)| k).collect();
        assert_eq!(owners(&added), ["i.global.", "j.global."]);
        assert!(matches!(
            receive(&z, vec![vec![soa(5)]], Some((5, &holds))),
            Ok(Received::UpToDate)
        ));
    }

    #[test]
    fn a_delta_deleting_what_we_do_not_hold_refuses_the_whole_answer() {
        let z = name("global.");
        let holds = holding(&[a("h.global.", "240.0.0.1")]);
        for (bad, why) in [
            // The first delta is fine; the second deletes an address h never had.
            (
                vec![
                    soa(7),
                    soa(5),
                    soa(6),
                    a("x.global.", "240.0.0.9"),
                    soa(6),
                    a("h.global.", "240.0.0.2"),
                    soa(7),
                    soa(7),
                ],
                "deletes h.global.",
            ),
            // Deleted twice in one chain: the second time it is gone.
            (
                vec![
                    soa(7),
                    soa(5),
                    a("h.global.", "240.0.0.1"),
                    soa(6),
                    soa(6),
                    a("h.global.", "240.0.0.1"),
                    soa(7),
                    soa(7),
                ],
                "deletes h.global.",
            ),
            (
                vec![soa(7), soa(6), soa(7), soa(7)],
                "from serial 6, expected 5",
            ),
            (vec![soa(7), soa(5), soa(4), soa(7)], "not forward"),
        ] {
            let err = receive(&z, vec![bad.clone()], Some((5, &holds))).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let err = receive(&z, vec![vec![soa(6), soa(5), soa(6), soa(6)]], None).unwrap_err();
        assert!(err.contains("without a zone"), "{err}");
    }
}
