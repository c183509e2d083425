//! What a secondary does with a primary's bytes, without the network: for the fuzz target and
//! the property tests, which feed it anything.

use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;

use super::convert::Assembler;
use super::wire::Reader;
use super::zone_data::{receive, serial_of, FullZone, Messages, Received};
use crate::zone::{reverse_zone_for, Snapshot, ZoneConfig};

/// The query id the replayed answers must carry (a real exchange uses a random one).
pub const REPLAY_ID: u16 = 0x2f1e;

/// Replays a TCP stream from a primary (messages, each after its 2-byte length) through the
/// checks of an AXFR of `global.` (or, when `reverse`, of the reverse zone of 240.10.0.0/16),
/// then what follows through those of an IXFR from the zone it gave, building the snapshot
/// after each as a secondary does. Returns the snapshots built; Err names the first refusal.
pub fn replay_transfers(stream: &[u8], reverse: bool) -> Result<Vec<Snapshot>, String> {
    let range: IpNet = "240.10.0.0/16".parse().expect("a valid range");
    let cfg = ZoneConfig {
        zones: vec!["global".into()],
        reverse_zones: vec![],
        ns: vec![],
        ttl: 30,
    };
    let zone = if reverse {
        let mut z = reverse_zone_for(&range);
        z.set_fqdn(true);
        z
    } else {
        Name::from_ascii("global.").expect("a valid name")
    };
    let mut assembler = Assembler::new(&cfg, &[range]);
    let mut rest = stream;
    let mut snapshots = Vec::new();
    let records = read(&zone, RecordType::AXFR, &mut rest)?;
    let Received::Full(first) = receive(&zone, records, None)? else {
        return Err("AXFR: not a full zone".into());
    };
    let mut serial = first.serial();
    snapshots.push(full(&mut assembler, &zone, first));
    while !rest.is_empty() {
        let records = read(&zone, RecordType::IXFR, &mut rest)?;
        let holds = |owner: &Name, data: &RData| assembler.holds(&zone, owner, data);
        match receive(&zone, records, Some((serial, &holds)))? {
            Received::UpToDate => continue,
            Received::Full(z) => {
                serial = z.serial();
                snapshots.push(full(&mut assembler, &zone, z));
            }
            Received::Incremental { soa, delta } => {
                serial = serial_of(&soa).unwrap_or(0);
                assembler.apply(&zone, &soa, &delta);
                snapshots.push(assembler.snapshot());
            }
        }
    }
    Ok(snapshots)
}

/// Serves a whole zone in place of what the zone held, as a secondary does after an AXFR.
fn full(assembler: &mut Assembler, apex: &Name, zone: FullZone) -> Snapshot {
    assembler.replace(apex, zone);
    let snap = assembler.snapshot();
    assembler.ptr_difference(apex, &snap);
    snap
}

/// The records of one exchange, its messages taken from the front of `rest`.
fn read(zone: &Name, qtype: RecordType, rest: &mut &[u8]) -> Result<Messages, String> {
    let mut reader = Reader::new(zone, qtype, REPLAY_ID, None);
    loop {
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or("the stream ends inside an exchange")?;
        let len = usize::from(u16::from_be_bytes(*len));
        let msg = tail.get(..len).ok_or("the stream ends inside a message")?;
        *rest = &tail[len..];
        if reader.message(msg).map_err(|e| e.to_string())? {
            return Ok(reader.records);
        }
    }
}
