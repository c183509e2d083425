//! The answer rules (README, "Answers"), checked on the real binary over UDP and TCP with
//! hickory's client, and with hand-built packets (hickory_proto `Message`, raw bytes) for the
//! protocol edge cases.
//!
//! Fixture: `tests/data/answers/main.yaml` (cluster `local`) and `tests/data/answers/c{1,2}/` (two
//! clusters listing the same hosts). Every test starts its own server on ephemeral loopback ports.
//! One module per topic; `support` holds the assertions and raw-packet helpers they share.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod apex;
mod clusters;
mod edns;
mod positive;
mod protocol;
mod srv_ptr;
mod transfer;
mod wildcards;
