//! The allocation's metrics: the VIP table (what it holds, what moved, what could not be given)
//! and the store that persists it, with `--store kube`'s claims and claimer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::{registered, ResultLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    pub family: &'static str,
}

/// The VIP allocation table.
pub struct AllocMetrics {
    pub vips_allocated: Family<FamilyLabels, Gauge>,
    pub vips_held: Gauge,
    pub vip_conflicts: Counter,
    pub vip_exhausted: Counter,
}

impl AllocMetrics {
    pub fn new(r: &mut Registry) -> AllocMetrics {
        AllocMetrics {
            vips_allocated: registered(
                r,
                "vips_allocated",
                "VIPs in the allocation table, active and held",
                Family::default(),
            ),
            vips_held: registered(
                r,
                "vips_held",
                "Hosts whose VIPs are held after their last ServiceEntry went away",
                Gauge::default(),
            ),
            vip_conflicts: registered(
                r,
                "vip_conflicts",
                "Auto VIPs moved because a user address took their slot",
                Counter::default(),
            ),
            vip_exhausted: registered(
                r,
                "vip_exhausted",
                "Allocations that failed because the range is full",
                Counter::default(),
            ),
        }
    }
}

/// The allocation store; with `--store kube`, the VipClaims this instance sends and the claimer
/// lease that decides which instance claims new hosts at once.
pub struct StoreMetrics {
    pub errors: Counter,
    /// VipClaim creates sent by this instance, by result (created, exists, failed).
    pub claim_creates: Family<ResultLabels, Counter>,
    /// 1 while this instance holds the claimer lease (`--store kube`).
    pub claimer: Gauge,
    pub claims_deferred: Counter,
    pub claims_adopted_after_defer: Counter,
    pub claims_after_defer: Counter,
    pub claims_waiting: Gauge,
}

impl StoreMetrics {
    pub fn new(r: &mut Registry) -> StoreMetrics {
        StoreMetrics {
            errors: registered(
                r,
                "store_errors",
                "Failed writes of the allocation store",
                Counter::default(),
            ),
            claim_creates: registered(
                r,
                "store_claim_creates",
                "VipClaim creates this instance sent to the kube store, by result: created, \
                 exists (another instance claimed the address first) or failed",
                Family::default(),
            ),
            claimer: registered(
                r,
                "claimer",
                "1 while this instance holds the claimer lease of the kube store (it claims new \
                 hosts at once; the others wait --claim-defer for its claims)",
                Gauge::default(),
            ),
            claims_deferred: registered(
                r,
                "claims_deferred",
                "Hosts needing a new VIP whose claim this instance deferred to the claimer \
                 instance",
                Counter::default(),
            ),
            claims_adopted_after_defer: registered(
                r,
                "claims_adopted_after_defer",
                "Deferred hosts whose VIP came from another instance's claim",
                Counter::default(),
            ),
            claims_after_defer: registered(
                r,
                "claims_after_defer",
                "Deferred hosts this instance claimed itself (no claim came within \
                 --claim-defer, or it became the claimer)",
                Counter::default(),
            ),
            claims_waiting: registered(
                r,
                "claims_waiting",
                "Hosts waiting now for the claimer instance's claim",
                Gauge::default(),
            ),
        }
    }
}
