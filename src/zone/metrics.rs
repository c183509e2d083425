//! The published zone's metrics: its hosts, its serial, the time to build it and the time from a
//! change seen to the snapshot with it published. Set by the engine (and by a secondary, whose
//! zone comes from its primaries).

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::metrics::{registered, KindLabels};

pub struct ZoneMetrics {
    pub hosts_served: Gauge,
    pub hosts_unserved: Gauge,
    pub hosts_tcp_unroutable: Gauge,
    /// Hosts whose clusters list different addresses, by kind (spec, istio-status).
    pub host_conflicts: Family<KindLabels, Gauge>,
    pub snapshot_build: Histogram,
    pub serial: Gauge,
    pub propagation: Histogram,
}

impl ZoneMetrics {
    pub fn new(r: &mut Registry) -> ZoneMetrics {
        ZoneMetrics {
            hosts_served: registered(
                r,
                "hosts_served",
                "Hosts answered with at least one address",
                Gauge::default(),
            ),
            hosts_unserved: registered(
                r,
                "hosts_unserved",
                "Hosts known but not answered (no address, no VIP)",
                Gauge::default(),
            ),
            hosts_tcp_unroutable: registered(
                r,
                "hosts_tcp_unroutable",
                "Hosts with TCP ports that the home cluster's default sidecars (no DNS capture) \
                 cannot route by address: no spec.addresses and no VIP written there (see \
                 /debug/hosts)",
                Gauge::default(),
            ),
            host_conflicts: registered(
                r,
                "host_conflicts",
                "Hosts whose clusters list different addresses (kind spec: hand-written; \
                 istio-status: Istio's per-cluster allocations)",
                Family::default(),
            ),
            snapshot_build: registered(
                r,
                "snapshot_build_seconds",
                "Time to rebuild the answer snapshot",
                Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            ),
            serial: registered(r, "zone_serial", "Current SOA serial", Gauge::default()),
            propagation: registered(
                r,
                "propagation_seconds",
                "From a change seen (a file read, a watch event; on a secondary, a NOTIFY or a \
                 newer serial) to the snapshot with it published",
                // 1 ms … ~16 s.
                Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            ),
        }
    }
}
