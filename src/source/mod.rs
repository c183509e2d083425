//! Sources turn ServiceEntries (from files or clusters) into events for the engine. Every source
//! sends the full content of a unit (a file; in a cluster, one ServiceEntry object,
//! `namespace/name`) on each change, so the engine never has to reason about deltas.

pub mod files;

use std::sync::mpsc::Sender;

use crate::engine::Input;
use crate::registry::SourceKey;
use crate::serviceentry::Entry;

/// Where a source sends its events: the engine's input.
#[derive(Clone, Debug)]
pub struct Events(Sender<Input>);

impl Events {
    pub fn new(tx: Sender<Input>) -> Events {
        Events(tx)
    }

    /// False once the engine is gone (the process is stopping).
    pub fn send(&self, ev: SourceEvent) -> bool {
        self.0.send(Input::Source(ev)).is_ok()
    }
}

#[derive(Debug)]
pub enum SourceEvent {
    /// A unit's complete, validated content.
    Unit { key: SourceKey, entries: Vec<Entry> },
    /// A unit that no longer exists (a deleted file or object).
    RemoveUnit(SourceKey),
    /// Every unit of a cluster (a cluster taken out of the configuration).
    RemoveCluster(String),
    /// The named source has delivered its first full state.
    Synced(String),
}
