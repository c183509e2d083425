//! Zone transfer: every record of a zone in master-file order (AXFR, `zonefile`), and the
//! split of a full transfer into messages.

use hickory_proto::rr::{LowerName, Name, Record};

use super::key;
use super::Snapshot;

/// Records per message in a zone transfer.
pub const AXFR_CHUNK: usize = 500;

impl Snapshot {
    /// Every record of one zone in master-file order (SOA first), for AXFR and `zonefile`.
    pub fn zone_records(&self, zone: &LowerName) -> Vec<Record> {
        let Some(apex) = self.apexes.iter().find(|a| a.name == *zone) else {
            return vec![];
        };
        let mut out = vec![apex.soa.clone()];
        out.extend(apex.ns.iter().cloned());
        let in_zone = |name: &Name| self.zone_of(name).is_some_and(|a| a.name == *zone);
        // Only names whose closest enclosing zone is this one, each with its records.
        let mut names: Vec<(LowerName, Vec<Record>)> = Vec::new();
        for shard in &self.shards {
            for (k, node) in &shard.nodes {
                let name = key::to_name(k);
                if !in_zone(&name) {
                    continue;
                }
                names.extend(
                    node.master_records(&name, k, self.ttl)
                        .into_iter()
                        .map(|(owner, records)| (LowerName::new(&owner), records)),
                );
            }
            for (k, node) in &shard.wildcards {
                // Stored under its parent: `*.bar.global` lives at `bar.global`.
                let owner = Name::from_labels([&b"*"[..]])
                    .and_then(|w| w.append_domain(&key::to_name(k)))
                    .expect("a wildcard below a valid name");
                if in_zone(&owner) {
                    names.extend(
                        node.master_records(&owner, k, self.ttl)
                            .into_iter()
                            .map(|(owner, records)| (LowerName::new(&owner), records)),
                    );
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(names.into_iter().flat_map(|(_, records)| records));
        out
    }

    /// A full transfer of `zone` as the records of each message (RFC 5936: the SOA opens and
    /// closes it); empty when `zone` is not the apex of a zone served.
    pub fn axfr(&self, zone: &LowerName) -> Vec<Vec<Record>> {
        let mut all = self.zone_records(zone);
        let Some(soa) = all.first().cloned() else {
            return vec![];
        };
        all.push(soa);
        all.chunks(AXFR_CHUNK).map(<[Record]>::to_vec).collect()
    }
}
