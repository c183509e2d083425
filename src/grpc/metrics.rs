//! The gRPC frontend's metrics: its connections and the calls it answers with a gRPC status.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{registered, KindLabels};

pub struct GrpcMetrics {
    pub connections: Gauge,
    /// gRPC connections closed by the server (kind idle|refused).
    pub closed: Family<KindLabels, Counter>,
    /// gRPC calls answered with a gRPC status instead of a DNS message, by code.
    pub errors: Family<KindLabels, Counter>,
}

impl GrpcMetrics {
    pub fn new(r: &mut Registry) -> GrpcMetrics {
        GrpcMetrics {
            connections: registered(
                r,
                "grpc_connections",
                "Open gRPC connections (--grpc-listen)",
                Gauge::default(),
            ),
            closed: registered(
                r,
                "grpc_closed",
                "gRPC connections closed by the server: no call for --grpc-idle-timeout (idle), \
                 or over --grpc-max-connections (refused)",
                Family::default(),
            ),
            errors: registered(
                r,
                "grpc_errors",
                "gRPC calls answered with a gRPC status instead of a DNS message, by kind: \
                 invalid_argument (empty, shorter than a DNS header, over 65,535 bytes, or a \
                 response), unimplemented (a method other than Query)",
                Family::default(),
            ),
        }
    }
}
