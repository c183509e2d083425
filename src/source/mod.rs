//! Sources turn ServiceEntries (from files or clusters) into events for the engine. Every source
//! sends the full content of a unit (a file; in a cluster, one ServiceEntry object,
//! `namespace/name`) on each change, so the engine never has to reason about deltas.

pub mod files;
pub mod metrics;

// The engine's input lives in its own module (`crate::input`), below both the sources and the
// engine: sources depend on it, not on the engine.
pub use crate::input::{Events, SourceEvent};
