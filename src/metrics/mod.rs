//! Prometheus metrics, one registry for the process. Each subsystem owns a struct of its metrics,
//! next to the code that updates them, whose constructor registers them (as ztunnel's
//! `dns/metrics.rs`); [`Metrics`] is the registry plus those structs. Label values are static
//! strings where they can be, so that the per-query path does not allocate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::{Metric, Registry};

use crate::alloc::metrics::{AllocMetrics, StoreMetrics};
use crate::dns::metrics::{DnsMetrics, TransferMetrics};
use crate::grpc::metrics::GrpcMetrics;
use crate::kube::writeback::metrics::WriteBackMetrics;
use crate::secondary::metrics::SecondaryMetrics;
use crate::source::metrics::SourceMetrics;
use crate::zone::metrics::ZoneMetrics;

#[cfg(test)]
mod tests;

/// Labels shared by several subsystems' families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    /// axfr or ixfr (transfers); notify-out or notify-in (NOTIFY).
    pub kind: &'static str,
    /// Transfers received (secondary): ok, full (an IXFR answered with the whole zone),
    /// uptodate, refused, unreachable, invalid, older, or mismatch (an IXFR matched by content
    /// that did not lead to the content the primary announced). Served (primary): served, refused.
    /// NOTIFY: sent, unanswered, accepted, refused.
    pub result: &'static str,
}

/// Registers `metric` under `name` (after the `globaldns_` prefix) and hands it back: what each
/// subsystem's constructor calls once per metric.
pub fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// The process's registry and every subsystem's metrics; call sites read e.g.
/// `metrics.dns.queries`.
pub struct Metrics {
    registry: Registry,
    /// Answering queries: counts, latency, dropped and limited packets, TCP connections.
    pub dns: DnsMetrics,
    /// The gRPC frontend (`--grpc-listen`).
    pub grpc: GrpcMetrics,
    /// The primary's side of zone transfer and NOTIFY.
    pub transfer: TransferMetrics,
    /// The published zone: its hosts, serial, build time and propagation.
    pub zone: ZoneMetrics,
    /// The VIP allocation table.
    pub alloc: AllocMetrics,
    /// The allocation store and, with `--store kube`, its claims.
    pub store: StoreMetrics,
    /// Files and clusters read.
    pub source: SourceMetrics,
    /// `--write-back`.
    pub writeback: WriteBackMetrics,
    /// Secondary mode: transfers from primaries and each zone's freshness.
    pub secondary: SecondaryMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("globaldns");
        let r = &mut registry;
        Metrics {
            dns: DnsMetrics::new(r),
            zone: ZoneMetrics::new(r),
            alloc: AllocMetrics::new(r),
            store: StoreMetrics::new(r),
            source: SourceMetrics::new(r),
            transfer: TransferMetrics::new(r),
            writeback: WriteBackMetrics::new(r),
            secondary: SecondaryMetrics::new(r),
            grpc: GrpcMetrics::new(r),
            registry,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
