//! The allocation table (host → its VIPs) and the counts kept over it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// One host's VIPs. `released_at` (unix seconds) is set while the host is gone and its VIPs held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
}

impl Allocation {
    pub(super) fn ips(&self) -> impl Iterator<Item = IpAddr> {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

/// The allocation table: host (normalised) → its VIPs.
pub type Table = BTreeMap<String, Allocation>;

/// Counts over the table, kept as it changes: metrics read them at every publish, which must
/// not cost a walk over 100,000 entries when one host changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub ipv4: usize,
    pub ipv6: usize,
    pub held: usize,
}

/// Counts `a` in (or out of) the census and the holds.
pub(super) fn tally(
    census: &mut Census,
    holds: &mut BTreeSet<(u64, String)>,
    host: &str,
    a: &Allocation,
    enters: bool,
) {
    for (has, n) in [
        (a.ipv4.is_some(), &mut census.ipv4),
        (a.ipv6.is_some(), &mut census.ipv6),
        (a.released_at.is_some(), &mut census.held),
    ] {
        if has {
            *n = if enters { *n + 1 } else { *n - 1 };
        }
    }
    if let Some(t) = a.released_at {
        if enters {
            holds.insert((t, host.to_string()));
        } else {
            holds.remove(&(t, host.to_string()));
        }
    }
}
