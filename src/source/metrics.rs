//! The sources' metrics: units (files, objects) loaded, failed or skipped, and each Kubernetes
//! cluster's watch.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::metrics::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabels {
    pub cluster: String,
    /// Where the list came from: cache (the apiserver's watch cache) or paged (etcd).
    pub list: &'static str,
    /// ok, or failed (an error, or the attempt ended before the list was complete).
    pub result: &'static str,
}

pub struct SourceMetrics {
    pub parse_errors: Family<SourceLabels, Counter>,
    pub invalid_objects: Family<SourceLabels, Counter>,
    pub reloads: Family<SourceLabels, Counter>,
    pub up: Family<ClusterLabels, Gauge>,
    pub last_sync: Family<ClusterLabels, Gauge>,
    pub objects: Family<ClusterLabels, Gauge>,
    pub watch_restarts: Family<ClusterLabels, Counter>,
    pub lists: Family<ListLabels, Counter>,
    pub list_seconds: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
}

impl SourceMetrics {
    pub fn new(r: &mut Registry) -> SourceMetrics {
        SourceMetrics {
            parse_errors: registered(
                r,
                "source_parse_errors",
                "Source units (files) that failed to parse; last good content kept",
                Family::default(),
            ),
            invalid_objects: registered(
                r,
                "invalid_objects",
                "ServiceEntries (or parts of them) skipped as invalid",
                Family::default(),
            ),
            reloads: registered(
                r,
                "source_reloads",
                "Source units (re)loaded",
                Family::default(),
            ),
            up: registered(
                r,
                "source_up",
                "1 while the cluster's watch is connected",
                Family::default(),
            ),
            last_sync: registered(
                r,
                "source_last_sync_timestamp_seconds",
                "Unix time of the cluster's last successful list or event",
                Family::default(),
            ),
            objects: registered(
                r,
                "source_objects",
                "ServiceEntries currently known per cluster",
                Family::default(),
            ),
            watch_restarts: registered(
                r,
                "watch_restarts",
                "Watch restarts per cluster",
                Family::default(),
            ),
            lists: registered(
                r,
                "source_lists",
                "ServiceEntry lists a cluster's watch started from, by where they came from \
                 (list=cache: the apiserver's watch cache; paged: etcd) and result (ok, failed)",
                Family::default(),
            ),
            list_seconds: registered(
                r,
                "source_list_seconds",
                "Time the cluster's last complete ServiceEntry list took, from its request to \
                 its last object",
                Family::default(),
            ),
        }
    }
}
