//! Prometheus metrics, one registry for the process. Label values are static strings so that the
//! per-query path does not allocate.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub qtype: &'static str,
    pub rcode: &'static str,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    pub family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub cluster: String,
    /// written, conflict, failed or timeout.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Rate limiting: dropped or slipped (sent truncated).
    pub action: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub queries: Family<QueryLabels, Counter>,
    pub latency: Histogram,
    pub udp_wait: Histogram,
    pub hosts_served: Gauge,
    pub hosts_unserved: Gauge,
    pub hosts_tcp_unroutable: Gauge,
    pub vips_allocated: Family<FamilyLabels, Gauge>,
    pub vips_held: Gauge,
    pub host_conflicts: Family<KindLabels, Gauge>,
    pub vip_conflicts: Counter,
    pub vip_exhausted: Counter,
    pub parse_errors: Family<SourceLabels, Counter>,
    pub invalid_objects: Family<SourceLabels, Counter>,
    pub reloads: Family<SourceLabels, Counter>,
    pub snapshot_build: Histogram,
    pub zone_serial: Gauge,
    pub store_errors: Counter,
    /// VipClaim creates sent by this instance, by result (created, exists, failed).
    pub claim_creates: Family<ResultLabels, Counter>,
    /// 1 while this instance holds the claimer lease (`--store kube`).
    pub claimer: Gauge,
    pub claims_deferred: Counter,
    pub claims_adopted_after_defer: Counter,
    pub claims_after_grace: Counter,
    pub claims_waiting: Gauge,
    pub source_up: Family<ClusterLabels, Gauge>,
    pub source_last_sync: Family<ClusterLabels, Gauge>,
    pub source_objects: Family<ClusterLabels, Gauge>,
    pub watch_restarts: Family<ClusterLabels, Counter>,
    pub status_writes: Family<WriteLabels, Counter>,
    pub spec_writes: Family<WriteLabels, Counter>,
    pub transfers_served: Family<TransferLabels, Counter>,
    /// Zone transfers being sent now (at most `--transfers-out`).
    pub transfers_out_active: Gauge,
    /// Zone transfers waiting for a turn (see `--transfers-out-wait`).
    pub transfers_out_waiting: Gauge,
    /// IXFR requests carrying a content digest: matched a version of the journal or not.
    pub ixfr_content: Family<ResultLabels, Counter>,
    pub notifies: Family<TransferLabels, Counter>,
    pub writeback_serial: Gauge,
    pub writeback_writer: Gauge,
    pub transfers: Family<TransferLabels, Counter>,
    pub secondary_serial: Family<ZoneLabels, Gauge>,
    pub secondary_lag: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    pub secondary_stale: Family<ZoneLabels, Gauge>,
    /// The wait before a zone's next refresh round: --refresh, longer after failed rounds.
    pub secondary_retry: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    pub propagation: Histogram,
    pub rate_limited: Family<ActionLabels, Counter>,
    /// Packets given no answer: shorter than a header, or a response (kind short|response).
    pub dns_dropped: Family<KindLabels, Counter>,
    pub tcp_connections: Gauge,
    /// TCP connections closed by the server (kind idle|evicted|refused).
    pub tcp_closed: Family<KindLabels, Counter>,
    pub grpc_connections: Gauge,
    /// gRPC connections closed by the server (kind idle|refused).
    pub grpc_closed: Family<KindLabels, Counter>,
    /// gRPC calls answered with a gRPC status instead of a DNS message, by code.
    pub grpc_errors: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("globaldns");
        let m = Metrics {
            queries: Family::default(),
            // 10 µs … ~160 ms.
            latency: Histogram::new(exponential_buckets(0.00001, 2.0, 15)),
            udp_wait: Histogram::new(exponential_buckets(0.00001, 2.0, 15)),
            hosts_served: Gauge::default(),
            hosts_unserved: Gauge::default(),
            hosts_tcp_unroutable: Gauge::default(),
            vips_allocated: Family::default(),
            vips_held: Gauge::default(),
            host_conflicts: Family::default(),
            vip_conflicts: Counter::default(),
            vip_exhausted: Counter::default(),
            parse_errors: Family::default(),
            invalid_objects: Family::default(),
            reloads: Family::default(),
            snapshot_build: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            zone_serial: Gauge::default(),
            store_errors: Counter::default(),
            claim_creates: Family::default(),
            claimer: Gauge::default(),
            claims_deferred: Counter::default(),
            claims_adopted_after_defer: Counter::default(),
            claims_after_grace: Counter::default(),
            claims_waiting: Gauge::default(),
            source_up: Family::default(),
            source_last_sync: Family::default(),
            source_objects: Family::default(),
            watch_restarts: Family::default(),
            status_writes: Family::default(),
            spec_writes: Family::default(),
            transfers_served: Family::default(),
            transfers_out_active: Gauge::default(),
            transfers_out_waiting: Gauge::default(),
            ixfr_content: Family::default(),
            notifies: Family::default(),
            writeback_serial: Gauge::default(),
            writeback_writer: Gauge::default(),
            transfers: Family::default(),
            secondary_serial: Family::default(),
            secondary_lag: Family::default(),
            secondary_stale: Family::default(),
            secondary_retry: Family::default(),
            // 1 ms … ~16 s.
            propagation: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            rate_limited: Family::default(),
            dns_dropped: Family::default(),
            tcp_connections: Gauge::default(),
            tcp_closed: Family::default(),
            grpc_connections: Gauge::default(),
            grpc_closed: Family::default(),
            grpc_errors: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "dns_queries",
            "DNS queries answered, by query type, rcode and transport",
            m.queries.clone(),
        );
        r.register(
            "dns_query_duration_seconds",
            "Time from decoded query to sent answer",
            m.latency.clone(),
        );
        r.register(
            "dns_udp_wait_seconds",
            "Time a UDP query waited in the socket before a worker read it (kernel arrival stamp); \
             grows when the workers are short of CPU",
            m.udp_wait.clone(),
        );
        r.register(
            "hosts_served",
            "Hosts answered with at least one address",
            m.hosts_served.clone(),
        );
        r.register(
            "hosts_unserved",
            "Hosts known but not answered (no address, no VIP)",
            m.hosts_unserved.clone(),
        );
        r.register(
            "hosts_tcp_unroutable",
            "Hosts with TCP ports that the home cluster's default sidecars (no DNS capture) cannot \
             route by address: no spec.addresses and no VIP written there (see /debug/hosts)",
            m.hosts_tcp_unroutable.clone(),
        );
        r.register(
            "vips_allocated",
            "VIPs in the allocation table, active and held",
            m.vips_allocated.clone(),
        );
        r.register(
            "host_conflicts",
            "Hosts whose clusters list different addresses (kind spec: hand-written; \
             istio-status: Istio's per-cluster allocations)",
            m.host_conflicts.clone(),
        );
        r.register(
            "vips_held",
            "Hosts whose VIPs are held after their last ServiceEntry went away",
            m.vips_held.clone(),
        );
        r.register(
            "vip_conflicts",
            "Auto VIPs moved because a user address took their slot",
            m.vip_conflicts.clone(),
        );
        r.register(
            "vip_exhausted",
            "Allocations that failed because the range is full",
            m.vip_exhausted.clone(),
        );
        r.register(
            "source_parse_errors",
            "Source units (files) that failed to parse; last good content kept",
            m.parse_errors.clone(),
        );
        r.register(
            "invalid_objects",
            "ServiceEntries (or parts of them) skipped as invalid",
            m.invalid_objects.clone(),
        );
        r.register(
            "source_reloads",
            "Source units (re)loaded",
            m.reloads.clone(),
        );
        r.register(
            "snapshot_build_seconds",
            "Time to rebuild the answer snapshot",
            m.snapshot_build.clone(),
        );
        r.register("zone_serial", "Current SOA serial", m.zone_serial.clone());
        r.register(
            "store_errors",
            "Failed writes of the allocation store",
            m.store_errors.clone(),
        );
        r.register(
            "source_up",
            "1 while the cluster's watch is connected",
            m.source_up.clone(),
        );
        r.register(
            "source_last_sync_timestamp_seconds",
            "Unix time of the cluster's last successful list or event",
            m.source_last_sync.clone(),
        );
        r.register(
            "source_objects",
            "ServiceEntries currently known per cluster",
            m.source_objects.clone(),
        );
        r.register(
            "watch_restarts",
            "Watch restarts per cluster",
            m.watch_restarts.clone(),
        );
        r.register(
            "transfers_served",
            "Zone transfers asked of this server, by kind (axfr, ixfr) and result (served, \
             refused, busy: over --transfers-out, answered SERVFAIL, aborted: the client stopped \
             reading or went away)",
            m.transfers_served.clone(),
        );
        r.register(
            "transfers_out_active",
            "Zone transfers being sent now (at most --transfers-out)",
            m.transfers_out_active.clone(),
        );
        r.register(
            "transfers_out_waiting",
            "Zone transfers waiting for a turn (over --transfers-out, for up to --transfers-out-wait)",
            m.transfers_out_waiting.clone(),
        );
        r.register(
            "ixfr_content",
            "IXFR requests that carried the content digest of the client's zone, by result: matched \
             (a version of the journal had that content: answered incrementally from it) or \
             unmatched (answered with the whole zone)",
            m.ixfr_content.clone(),
        );
        r.register(
            "notifies",
            "NOTIFY messages by direction (notify-out: sent, unanswered; notify-in: accepted, refused)",
            m.notifies.clone(),
        );
        r.register(
            "status_writes",
            "Write-back patches of status.addresses, by cluster and result",
            m.status_writes.clone(),
        );
        r.register(
            "spec_writes",
            "Write-back server-side applies of spec.addresses (field manager globaldns), by \
             cluster and result (written, withdrawn, conflict, failed, timeout)",
            m.spec_writes.clone(),
        );
        r.register(
            "writeback_checked_serial",
            "Zone serial of the last snapshot write-back finished acting on",
            m.writeback_serial.clone(),
        );
        r.register(
            "writeback_writer",
            "1 once this instance has finished a write-back pass as the writer (the claimer, or \
             no claimer); 0 while another instance writes",
            m.writeback_writer.clone(),
        );
        r.register(
            "transfers",
            "Zone transfers from primaries (secondary mode), by kind and result",
            m.transfers.clone(),
        );
        r.register(
            "secondary_serial",
            "SOA serial of the zone as loaded from a primary",
            m.secondary_serial.clone(),
        );
        r.register(
            "secondary_lag_seconds",
            "Time since a primary's newer serial was seen and not yet loaded (0: up to date)",
            m.secondary_lag.clone(),
        );
        r.register(
            "secondary_stale",
            "1 while no primary answers for the zone (the last loaded zone is served)",
            m.secondary_stale.clone(),
        );
        r.register(
            "secondary_retry_seconds",
            "Wait before the zone's next refresh round: --refresh, longer and jittered after \
             failed rounds (a NOTIFY still starts one at once)",
            m.secondary_retry.clone(),
        );
        r.register(
            "propagation_seconds",
            "From a change seen (a file read, a watch event; on a secondary, a NOTIFY or a newer \
             serial) to the snapshot with it published",
            m.propagation.clone(),
        );
        r.register(
            "rate_limited",
            "UDP responses held back by --rate-limit: dropped, or slipped (sent truncated)",
            m.rate_limited.clone(),
        );
        r.register(
            "dns_dropped",
            "DNS packets given no answer: shorter than a header (short) or a response (response)",
            m.dns_dropped.clone(),
        );
        r.register(
            "tcp_connections",
            "Open DNS TCP connections",
            m.tcp_connections.clone(),
        );
        r.register(
            "tcp_closed",
            "DNS TCP connections closed by the server: idle past --tcp-idle-timeout (idle), \
             closed for a new one at --tcp-max-connections (evicted), refused at the cap with \
             every connection busy (refused)",
            m.tcp_closed.clone(),
        );
        r.register(
            "grpc_connections",
            "Open gRPC connections (--grpc-listen)",
            m.grpc_connections.clone(),
        );
        r.register(
            "grpc_closed",
            "gRPC connections closed by the server: no call for --grpc-idle-timeout (idle), or \
             over --grpc-max-connections (refused)",
            m.grpc_closed.clone(),
        );
        r.register(
            "grpc_errors",
            "gRPC calls answered with a gRPC status instead of a DNS message, by kind: \
             invalid_argument (empty, shorter than a DNS header, over 65,535 bytes, or a \
             response), unimplemented (a method other than Query)",
            m.grpc_errors.clone(),
        );
        r.register(
            "store_claim_creates",
            "VipClaim creates this instance sent to the kube store, by result: created, exists \
             (another instance claimed the address first) or failed",
            m.claim_creates.clone(),
        );
        r.register(
            "claimer",
            "1 while this instance holds the claimer lease of the kube store (it claims new \
             hosts at once; the others wait --claim-defer for its claims)",
            m.claimer.clone(),
        );
        r.register(
            "claims_deferred",
            "Hosts needing a new VIP whose claim this instance deferred to the claimer instance",
            m.claims_deferred.clone(),
        );
        r.register(
            "claims_adopted_after_defer",
            "Deferred hosts whose VIP came from another instance's claim",
            m.claims_adopted_after_defer.clone(),
        );
        r.register(
            "claims_after_defer",
            "Deferred hosts this instance claimed itself (no claim came within --claim-defer, \
             or it became the claimer)",
            m.claims_after_grace.clone(),
        );
        r.register(
            "claims_waiting",
            "Hosts waiting now for the claimer instance's claim",
            m.claims_waiting.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
