//! The secondary's metrics: transfers from its primaries, and each zone's serial and freshness.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{registered, TransferLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub zone: String,
}

pub struct SecondaryMetrics {
    pub transfers: Family<TransferLabels, Counter>,
    pub serial: Family<ZoneLabels, Gauge>,
    pub lag: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    pub stale: Family<ZoneLabels, Gauge>,
    /// The wait before a zone's next refresh round: --refresh, longer after failed rounds.
    pub retry: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
}

impl SecondaryMetrics {
    pub fn new(r: &mut Registry) -> SecondaryMetrics {
        SecondaryMetrics {
            transfers: registered(
                r,
                "transfers",
                "Zone transfers from primaries (secondary mode), by kind and result",
                Family::default(),
            ),
            serial: registered(
                r,
                "secondary_serial",
                "SOA serial of the zone as loaded from a primary",
                Family::default(),
            ),
            lag: registered(
                r,
                "secondary_lag_seconds",
                "Time since a primary's newer serial was seen and not yet loaded (0: up to date)",
                Family::default(),
            ),
            stale: registered(
                r,
                "secondary_stale",
                "1 while no primary answers for the zone (the last loaded zone is served)",
                Family::default(),
            ),
            retry: registered(
                r,
                "secondary_retry_seconds",
                "Wait before the zone's next refresh round: --refresh, longer and jittered after \
                 failed rounds (a NOTIFY still starts one at once)",
                Family::default(),
            ),
        }
    }
}
