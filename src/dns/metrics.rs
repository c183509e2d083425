//! The DNS frontend's metrics: queries answered and how fast, packets given no answer, rate
//! limiting and TCP connections; and the primary's side of zone transfer and NOTIFY.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::metrics::{registered, KindLabels, ResultLabels, TransferLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub qtype: &'static str,
    pub rcode: &'static str,
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Rate limiting: dropped or slipped (sent truncated).
    pub action: &'static str,
}

/// Answering queries, on every transport.
pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub latency: Histogram,
    pub udp_wait: Histogram,
    pub rate_limited: Family<ActionLabels, Counter>,
    /// Packets given no answer: shorter than a header, or a response (kind short|response).
    pub dropped: Family<KindLabels, Counter>,
    pub tcp_connections: Gauge,
    /// TCP connections closed by the server (kind idle|evicted|refused).
    pub tcp_closed: Family<KindLabels, Counter>,
}

impl DnsMetrics {
    pub fn new(r: &mut Registry) -> DnsMetrics {
        // 10 µs … ~160 ms.
        let latency_buckets = || Histogram::new(exponential_buckets(0.00001, 2.0, 15));
        DnsMetrics {
            queries: registered(
                r,
                "dns_queries",
                "DNS queries answered, by query type, rcode and transport",
                Family::default(),
            ),
            latency: registered(
                r,
                "dns_query_duration_seconds",
                "Time from decoded query to sent answer",
                latency_buckets(),
            ),
            udp_wait: registered(
                r,
                "dns_udp_wait_seconds",
                "Time a UDP query waited in the socket before a worker read it (kernel arrival \
                 stamp); grows when the workers are short of CPU",
                latency_buckets(),
            ),
            rate_limited: registered(
                r,
                "rate_limited",
                "UDP responses held back by --rate-limit: dropped, or slipped (sent truncated)",
                Family::default(),
            ),
            dropped: registered(
                r,
                "dns_dropped",
                "DNS packets given no answer: shorter than a header (short) or a response \
                 (response)",
                Family::default(),
            ),
            tcp_connections: registered(
                r,
                "tcp_connections",
                "Open DNS TCP connections",
                Gauge::default(),
            ),
            tcp_closed: registered(
                r,
                "tcp_closed",
                "DNS TCP connections closed by the server: idle past --tcp-idle-timeout (idle), \
                 closed for a new one at --tcp-max-connections (evicted), refused at the cap with \
                 every connection busy (refused)",
                Family::default(),
            ),
        }
    }
}

/// The primary's side of zone transfer (transfers asked of this server and their turns) and
/// NOTIFY in both directions.
pub struct TransferMetrics {
    pub served: Family<TransferLabels, Counter>,
    /// Zone transfers being sent now (at most `--transfers-out`).
    pub active: Gauge,
    /// Zone transfers waiting for a turn (see `--transfers-out-wait`).
    pub waiting: Gauge,
    /// IXFR requests carrying a content digest: matched a version of the journal or not.
    pub ixfr_content: Family<ResultLabels, Counter>,
    pub notifies: Family<TransferLabels, Counter>,
}

impl TransferMetrics {
    pub fn new(r: &mut Registry) -> TransferMetrics {
        TransferMetrics {
            served: registered(
                r,
                "transfers_served",
                "Zone transfers asked of this server, by kind (axfr, ixfr) and result (served, \
                 refused, busy: over --transfers-out, answered SERVFAIL, aborted: the client \
                 stopped reading or went away)",
                Family::default(),
            ),
            active: registered(
                r,
                "transfers_out_active",
                "Zone transfers being sent now (at most --transfers-out)",
                Gauge::default(),
            ),
            waiting: registered(
                r,
                "transfers_out_waiting",
                "Zone transfers waiting for a turn (over --transfers-out, for up to \
                 --transfers-out-wait)",
                Gauge::default(),
            ),
            ixfr_content: registered(
                r,
                "ixfr_content",
                "IXFR requests that carried the content digest of the client's zone, by result: \
                 matched (a version of the journal had that content: answered incrementally from \
                 it) or unmatched (answered with the whole zone)",
                Family::default(),
            ),
            notifies: registered(
                r,
                "notifies",
                "NOTIFY messages by direction (notify-out: sent, unanswered; notify-in: accepted, \
                 refused)",
                Family::default(),
            ),
        }
    }
}
