//! The claim table as the Kubernetes store knows it: VipClaim objects by name, newest version
//! wins, and the allocation table they make (when two claims name one host, the lower address
//! wins and the other is a loser to delete).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use tracing::debug;

use super::crd::{claim_name, ClaimObject};
use crate::alloc::{Allocation, Table};

/// One claim as the store knows it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Claim {
    pub(super) host: String,
    pub(super) ip: IpAddr,
    pub(super) released_at: Option<u64>,
    pub(super) uid: String,
    pub(super) resource_version: String,
}

#[derive(Default)]
pub(super) struct Cache {
    /// By object name.
    pub(super) claims: BTreeMap<String, Claim>,
    /// The last table the engine was given (or committed): no event when it has not changed.
    pub(super) last_sent: Table,
    /// A commit of ours is running: the watch does not report what it sees meanwhile (mostly our
    /// own claims coming back); the commit compares the table with its own when it ends.
    pub(super) committing: bool,
}

pub(super) fn rv_newer_or_same(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n >= o,
        _ => true,
    }
}

pub(super) fn to_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub(super) fn from_rfc3339(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl Claim {
    pub(super) fn from_object(obj: &ClaimObject) -> Option<(String, Claim)> {
        let name = obj.metadata.name.clone()?;
        let ip: IpAddr = obj.spec.address.parse().ok()?;
        // The name is the lock: an object whose address does not match its name is not a claim.
        if claim_name(ip) != name {
            return None;
        }
        Some((
            name,
            Claim {
                host: obj.spec.host.clone(),
                ip,
                released_at: obj.spec.released_at.as_deref().and_then(from_rfc3339),
                uid: obj.metadata.uid.clone().unwrap_or_default(),
                resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            },
        ))
    }
}

impl Cache {
    pub(super) fn apply(&mut self, obj: &ClaimObject) {
        let Some((name, claim)) = Claim::from_object(obj) else {
            debug!(name = ?obj.metadata.name, "ignoring a VipClaim whose address does not match its name");
            return;
        };
        match self.claims.get(&name) {
            Some(old) if !rv_newer_or_same(&claim.resource_version, &old.resource_version) => {}
            _ => {
                self.claims.insert(name, claim);
            }
        }
    }

    pub(super) fn remove(&mut self, name: &str, uid: Option<&str>) {
        if self
            .claims
            .get(name)
            .is_some_and(|c| uid.is_none_or(|u| u == c.uid))
        {
            self.claims.remove(name);
        }
    }

    /// The table, and the claims that lost to another claim of the same host and family.
    pub(super) fn table(&self) -> (Table, Vec<(String, Claim)>) {
        let mut table = Table::new();
        let mut winners: BTreeMap<(String, bool), (String, Claim)> = BTreeMap::new();
        let mut losers = Vec::new();
        for (name, c) in &self.claims {
            let key = (c.host.clone(), c.ip.is_ipv4());
            match winners.get(&key) {
                Some((_, w)) if w.ip < c.ip => losers.push((name.clone(), c.clone())),
                Some(_) => {
                    let old = winners.insert(key, (name.clone(), c.clone()));
                    losers.extend(old);
                }
                None => {
                    winners.insert(key, (name.clone(), c.clone()));
                }
            }
        }
        for (_, c) in winners.values() {
            let a = table.entry(c.host.clone()).or_insert_with(|| Allocation {
                released_at: c.released_at,
                ..Default::default()
            });
            match c.ip {
                IpAddr::V4(v4) => a.ipv4 = Some(v4),
                IpAddr::V6(v6) => a.ipv6 = Some(v6),
            }
            // Held only when every address of the host is held.
            a.released_at = match (a.released_at, c.released_at) {
                (Some(x), Some(y)) => Some(x.max(y)),
                _ => None,
            };
        }
        (table, losers)
    }
}

/// The claims a table stands for: object name → (host, address, releasedAt).
pub(super) fn claims_of(table: &Table) -> BTreeMap<String, (String, IpAddr, Option<u64>)> {
    let mut out = BTreeMap::new();
    for (host, a) in table {
        let ips = a
            .ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(a.ipv6.map(IpAddr::V6));
        for ip in ips {
            out.insert(claim_name(ip), (host.clone(), ip, a.released_at));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::crd::{VipClaim, VipClaimSpec};

    fn claim(host: &str, ip: &str, released: Option<&str>, rv: &str) -> ClaimObject {
        let ip: IpAddr = ip.parse().unwrap();
        let mut o = VipClaim::new(
            &claim_name(ip),
            VipClaimSpec {
                host: host.into(),
                address: ip.to_string(),
                released_at: released.map(String::from),
            },
        );
        o.metadata.uid = Some(format!("uid-{ip}"));
        o.metadata.resource_version = Some(rv.into());
        o.into()
    }

    #[test]
    fn table_from_claims_and_duplicate_resolution() {
        let mut c = Cache::default();
        c.apply(&claim("a.x.global", "240.10.0.9", None, "5"));
        c.apply(&claim("a.x.global", "240.10.0.3", None, "6"));
        c.apply(&claim("a.x.global", "fd00::3", None, "7"));
        c.apply(&claim(
            "b.x.global",
            "240.10.0.4",
            Some("2024-01-01T00:00:00Z"),
            "8",
        ));
        let (t, losers) = c.table();
        assert_eq!(t["a.x.global"].ipv4, Some("240.10.0.3".parse().unwrap()));
        assert_eq!(t["a.x.global"].ipv6, Some("fd00::3".parse().unwrap()));
        assert_eq!(t["a.x.global"].released_at, None);
        assert_eq!(t["b.x.global"].released_at, Some(1704067200));
        assert_eq!(losers.len(), 1);
        assert_eq!(losers[0].0, "v4-240-10-0-9");
        // An older version seen late does not replace a newer one.
        c.apply(&claim("b.x.global", "240.10.0.4", None, "3"));
        assert!(c.table().0["b.x.global"].released_at.is_some());
        // A delete of another incarnation (uid) does not remove the current object.
        c.remove("v4-240-10-0-4", Some("other"));
        assert!(c.claims.contains_key("v4-240-10-0-4"));
    }

    #[test]
    fn claims_of_a_table_round_trip() {
        let mut t = Table::new();
        t.insert(
            "h.x.global".into(),
            Allocation {
                ipv4: Some("240.10.1.2".parse().unwrap()),
                ipv6: None,
                released_at: Some(10),
            },
        );
        let c = claims_of(&t);
        assert_eq!(c["v4-240-10-1-2"].0, "h.x.global");
        assert_eq!(from_rfc3339(&to_rfc3339(1704067200)), Some(1704067200));
    }
}
