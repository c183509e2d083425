//! Zone transfer: every record of a zone in master-file order (AXFR, `zonefile`), rendered a
//! node at a time while the transfer is sent, and the split of a transfer into messages.
//!
//! A transfer holds the zone's [`Order`] (a key per node, shared by the transfers of one
//! snapshot) and the records of the message being sent, never the zone's records: at 100,000
//! hosts those were ~330 MiB per transfer in flight.

use std::collections::VecDeque;

use hickory_proto::rr::{LowerName, Name, Record};

use super::key::{self, Key};
use super::records::Node;
use super::{Apex, Snapshot};

/// Records per message in a zone transfer.
pub const AXFR_CHUNK: usize = 500;

/// The nodes of one zone of one snapshot in canonical order: what a transfer walks.
#[derive(Debug)]
pub struct Order {
    generation: u64,
    zone: LowerName,
    /// (node key, whether it is a wildcard's node: `*.bar.global` is kept under `bar.global`).
    nodes: Vec<(Key, bool)>,
}

impl Order {
    /// The snapshot it was made from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn zone(&self) -> &LowerName {
        &self.zone
    }
}

/// The labels of a node's own name, rightmost first (see [`key::labels_rev`]).
fn node_labels((k, wild): &(Key, bool)) -> smallvec::SmallVec<[&[u8]; 12]> {
    key::labels_rev(if *wild { &[b"*"] } else { &[] }, k)
}

/// The owner of a wildcard's node, kept under its parent's key.
pub(super) fn wildcard_name(parent: &[u8]) -> Name {
    Name::from_labels([&b"*"[..]])
        .and_then(|w| w.append_domain(&key::to_name(parent)))
        .expect("a wildcard below a valid name")
}

impl Snapshot {
    /// The closest enclosing zone of the name `key` stands for.
    pub(super) fn zone_of_key(&self, key: &[u8]) -> Option<&Apex> {
        self.apexes
            .iter()
            .find(|a| key::is_at_or_below(key, &a.key))
    }

    /// The nodes of `zone` in canonical order; None when it is not the apex of a zone served.
    /// Sorts keys, never names or records: a few MiB and a fraction of a second at 100,000
    /// hosts, once per snapshot however many secondaries transfer it.
    pub fn transfer_order(&self, zone: &LowerName) -> Option<Order> {
        let apex = self.apexes.iter().find(|a| a.name == *zone)?;
        // Only names whose closest enclosing zone is this one (a wildcard's is its parent's).
        let ours = |k: &[u8]| self.zone_of_key(k).is_some_and(|a| std::ptr::eq(a, apex));
        let mut nodes = Vec::new();
        for shard in &self.shards {
            nodes.extend(
                (shard.nodes.keys().map(|k| (k, false)))
                    .chain(shard.wildcards.keys().map(|k| (k, true)))
                    .filter(|(k, _)| ours(k))
                    .map(|(k, wild)| (k.clone(), wild)),
            );
        }
        nodes.sort_unstable_by(|a, b| node_labels(a).cmp(&node_labels(b)));
        Some(Order {
            generation: self.generation,
            zone: zone.clone(),
            nodes,
        })
    }

    /// Every record of the zone of `order` in master-file order: SOA, NS, then each name with
    /// its records (no closing SOA). Rendered as it is read.
    pub fn zone_stream<O: AsRef<Order>>(&self, order: O) -> ZoneRecords<'_, O> {
        debug_assert_eq!(order.as_ref().generation, self.generation);
        let head: Vec<Record> = self
            .apexes
            .iter()
            .find(|a| a.name == order.as_ref().zone)
            .map(|a| {
                std::iter::once(a.soa.clone())
                    .chain(a.ns.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        ZoneRecords {
            snap: self,
            order,
            next: 0,
            below: VecDeque::new(),
            ahead: None,
            out: head.into_iter(),
        }
    }

    /// Every record of one zone in master-file order (SOA first), for `zonefile` and tests.
    pub fn zone_records(&self, zone: &LowerName) -> Vec<Record> {
        self.transfer_order(zone)
            .map(|order| self.zone_stream(order).collect())
            .unwrap_or_default()
    }

    /// A full transfer of the zone of `order`: the records of each message in turn (RFC 5936:
    /// the SOA opens and closes it).
    pub fn axfr<'s, O: AsRef<Order> + 's>(
        &'s self,
        order: O,
    ) -> Messages<impl Iterator<Item = Record> + 's> {
        let soa = self.soa(&order.as_ref().zone).cloned();
        messages(self.zone_stream(order).chain(soa))
    }
}

/// One node's names, rendered: its own name and records, and the names below it that it holds
/// data for (SRV owners), each with its records.
type Rendered = (Name, Vec<Record>, Vec<(Name, Vec<Record>)>);

/// The records of a zone in master-file order, rendered a node at a time. Nodes come sorted
/// ([`Order`]); the SRV names a node holds sort below it, but possibly after other nodes below
/// it (`0.h.global` < `_http._tcp.h.global`), so they wait in `below` for their turn.
pub struct ZoneRecords<'s, O> {
    snap: &'s Snapshot,
    order: O,
    next: usize,
    /// Names below nodes already passed, sorted, each waiting for its place.
    below: VecDeque<(Name, Vec<Record>)>,
    /// The next node, rendered.
    ahead: Option<Rendered>,
    /// The records of the name being read.
    out: std::vec::IntoIter<Record>,
}

impl<O: AsRef<Order>> ZoneRecords<'_, O> {
    fn node(&self, (k, wild): &(Key, bool)) -> Option<&Node> {
        let shard = self.snap.shard(k);
        if *wild {
            shard.wildcards.get(k)
        } else {
            shard.nodes.get(k)
        }
    }

    /// The next node of the order that exists, rendered.
    fn render_next(&mut self) -> Option<Rendered> {
        while let Some(entry) = self.order.as_ref().nodes.get(self.next) {
            self.next += 1;
            let Some(node) = self.node(entry) else {
                continue;
            };
            let (k, wild) = entry;
            let name = if *wild {
                wildcard_name(k)
            } else {
                key::to_name(k)
            };
            // Its own name comes last, the names below it first.
            let mut names = node.master_records(&name, k, self.snap.ttl);
            let (name, own) = names.pop().expect("a node's own name");
            return Some((name, own, names));
        }
        None
    }
}

impl<O: AsRef<Order>> Iterator for ZoneRecords<'_, O> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.out.next() {
                return Some(r);
            }
            if self.ahead.is_none() {
                self.ahead = self.render_next();
            }
            let below_first = match (&self.ahead, self.below.front()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some((name, ..)), Some((below, _))) => below < name,
            };
            if below_first {
                let (_, records) = self.below.pop_front().expect("checked");
                self.out = records.into_iter();
                continue;
            }
            let (_, own, names) = self.ahead.take()?;
            self.out = own.into_iter();
            for (name, records) in names {
                // After any equal name already waiting: the order the node holds them in.
                let at = self.below.partition_point(|(n, _)| *n <= name);
                self.below.insert(at, (name, records));
            }
        }
    }
}

/// Records split into the messages of a transfer, [`AXFR_CHUNK`] at a time.
pub struct Messages<I>(I);

pub fn messages<I: Iterator<Item = Record>>(records: I) -> Messages<I> {
    Messages(records)
}

impl<I: Iterator<Item = Record>> Iterator for Messages<I> {
    type Item = Vec<Record>;

    fn next(&mut self) -> Option<Vec<Record>> {
        let chunk: Vec<Record> = self.0.by_ref().take(AXFR_CHUNK).collect();
        (!chunk.is_empty()).then_some(chunk)
    }
}

impl AsRef<Order> for Order {
    fn as_ref(&self) -> &Order {
        self
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::serviceentry::{SrvPort, Transport};
    use crate::zone::{ZoneBuilder, ZoneConfig, ZoneHost};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The transfer as it was made before it streamed: every name of the zone with its
    /// records, gathered whole and sorted. The streamed one must be the same, record for
    /// record.
    fn gathered(snap: &Snapshot, zone: &LowerName) -> Vec<Record> {
        let apex = snap.apexes.iter().find(|a| a.name == *zone).unwrap();
        let mut out = vec![apex.soa.clone()];
        out.extend(apex.ns.iter().cloned());
        let in_zone = |name: &Name| snap.zone_of(name).is_some_and(|a| a.name == *zone);
        let mut names: Vec<(LowerName, Vec<Record>)> = Vec::new();
        for shard in &snap.shards {
            let nodes = shard.nodes.iter().map(|(k, n)| (key::to_name(k), k, n));
            let wild = shard
                .wildcards
                .iter()
                .map(|(k, n)| (wildcard_name(k), k, n));
            for (owner, k, node) in nodes.chain(wild) {
                if in_zone(&owner) {
                    names.extend(
                        node.master_records(&owner, k, snap.ttl)
                            .into_iter()
                            .map(|(o, r)| (LowerName::new(&o), r)),
                    );
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(names.into_iter().flat_map(|(_, r)| r));
        out
    }

    /// Names that sort around each other's SRV names: hosts below hosts (`0.`, `a-b.`, `z.`
    /// below `h.`), wildcards with ports, labels starting with `_` and digits.
    pub(crate) fn pool() -> Vec<String> {
        let mut v = Vec::new();
        for p in ["h", "i", "0", "a-b", "_x"] {
            v.push(format!("{p}.bar.global"));
            for c in ["0", "a-b", "z", "_http", "*", "_tcp"] {
                v.push(format!("{c}.{p}.bar.global"));
            }
        }
        v.extend(["*.bar.global", "*.global", "bar.global"].map(String::from));
        v
    }

    pub(crate) fn random_host(rng: &mut StdRng, i: usize) -> ZoneHost {
        let ports = (0..rng.random_range(0..4))
            .map(|_| SrvPort {
                name: ["http", "grpc", "a", "0"][rng.random_range(0..4)].into(),
                transport: if rng.random_bool(0.5) {
                    Transport::Tcp
                } else {
                    Transport::Udp
                },
                number: rng.random_range(1..100),
            })
            .collect();
        let address = format!("240.10.{}.{}", i / 200, i % 200 + 1);
        ZoneHost::new(vec![address.parse().unwrap()], ports)
    }

    /// A builder of `global.` and the reverse zone of 240.10.0.0/16.
    pub(crate) fn builder() -> ZoneBuilder {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        ZoneBuilder::new(&cfg, &["240.10.0.0/16".parse().unwrap()])
    }

    #[test]
    fn the_streamed_zone_is_the_gathered_one_and_splits_into_messages() {
        let pool = pool();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = builder();
            for (i, host) in pool.iter().enumerate() {
                if rng.random_bool(0.7) {
                    b.set_host(host, Some(random_host(&mut rng, i)));
                }
            }
            // Many hosts of one name shape too: more than one message.
            for i in 0..700 {
                b.set_host(
                    &format!("s{i}.big.global"),
                    Some(random_host(&mut rng, i + 100)),
                );
            }
            let snap = b.snapshot();
            for zone in snap.apex_names() {
                let streamed = snap.zone_records(&zone);
                assert_eq!(streamed, gathered(&snap, &zone), "seed {seed}, zone {zone}");
                let order = snap.transfer_order(&zone).unwrap();
                let messages: Vec<Vec<Record>> = snap.axfr(order).collect();
                let flat: Vec<Record> = messages.iter().flatten().cloned().collect();
                assert_eq!(flat[..flat.len() - 1], streamed[..]);
                assert_eq!(flat.last(), streamed.first(), "the SOA closes it");
                assert!(messages
                    .iter()
                    .all(|m| !m.is_empty() && m.len() <= AXFR_CHUNK));
                assert_eq!(messages.len(), flat.len().div_ceil(AXFR_CHUNK));
            }
        }
    }
}
