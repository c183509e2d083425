//! What every part of the Kubernetes side shares: the server's context and source names.

use std::sync::Arc;

use ipnet::IpNet;

use super::listing::ListFrom;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::published::Published;
use crate::source::Events;

/// What the Kubernetes part needs from the server.
pub struct KubeContext {
    /// The home cluster (`--cluster-name`): the in-cluster one's name.
    pub home: String,
    pub tx: Events,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Served zones, normalised.
    pub zones: Vec<String>,
    pub ranges: Vec<IpNet>,
    pub snapshot: Arc<Published>,
    /// Where ServiceEntry lists come from (`--kube-list`).
    pub list: ListFrom,
}

/// Source name (for `/readyz` and the engine) of a cluster's watch.
pub fn source_name(cluster: &str) -> String {
    format!("cluster/{cluster}")
}
