//! VIP allocation against the real binary: the documented preferred slot, stability across
//! restarts and churn, the hold period, user addresses displacing auto VIPs, exhaustion, agreement
//! between fresh instances, dual-stack ranges, refusal of corrupt stores and of a second server.
//! One module per topic; `support` holds the allocation model and the table reader they share.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod churn;
mod hold;
mod ranges;
mod slots;
mod store;
