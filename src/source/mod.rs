//! Sources turn ServiceEntries (from files or clusters) into events for the engine. Every source
//! sends the full content of a unit (a file, a cluster) on each change, so the engine never has to
//! reason about deltas.

pub mod files;

use crate::registry::SourceKey;
use crate::serviceentry::Entry;

#[derive(Debug)]
pub enum SourceEvent {
    /// A unit's complete, validated content.
    Unit { key: SourceKey, entries: Vec<Entry> },
    /// A unit that no longer exists (a deleted file).
    RemoveUnit(SourceKey),
    /// Every unit of a cluster (a cluster taken out of the configuration).
    RemoveCluster(String),
    /// The named source has delivered its first full state.
    Synced(String),
    /// A shared allocation store changed under us (another instance's claims).
    StoreChanged(crate::alloc::Table),
}
