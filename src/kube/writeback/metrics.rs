//! Write-back's metrics: the writes it sent, by cluster and result, and how far it has acted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub cluster: String,
    /// written, conflict, failed or timeout.
    pub result: &'static str,
}

/// Counts one write to `cluster` in `family` (`spec_writes` or `status_writes`) by its result.
pub fn count(family: &Family<WriteLabels, Counter>, cluster: &str, result: &'static str) {
    let cluster = cluster.to_string();
    family.get_or_create(&WriteLabels { cluster, result }).inc();
}

pub struct WriteBackMetrics {
    pub status_writes: Family<WriteLabels, Counter>,
    pub spec_writes: Family<WriteLabels, Counter>,
    pub checked_serial: Gauge,
    pub writer: Gauge,
}

impl WriteBackMetrics {
    pub fn new(r: &mut Registry) -> WriteBackMetrics {
        WriteBackMetrics {
            status_writes: registered(
                r,
                "status_writes",
                "Write-back patches of status.addresses, by cluster and result",
                Family::default(),
            ),
            spec_writes: registered(
                r,
                "spec_writes",
                "Write-back server-side applies of spec.addresses (field manager globaldns), by \
                 cluster and result (written, withdrawn, conflict, failed, timeout)",
                Family::default(),
            ),
            checked_serial: registered(
                r,
                "writeback_checked_serial",
                "Zone serial of the last snapshot write-back finished acting on",
                Gauge::default(),
            ),
            writer: registered(
                r,
                "writeback_writer",
                "1 once this instance has finished a write-back pass as the writer (the claimer, \
                 or no claimer); 0 while another instance writes",
                Gauge::default(),
            ),
        }
    }
}
