//! The engine's input: what sources and a shared store tell the one writer. Its own module, below
//! both sides, so that sources depend on it and not on the engine (which depends on nothing of
//! theirs but this).

use std::sync::mpsc::Sender;

use crate::alloc::store::StoreEvent;
use crate::registry::SourceKey;
use crate::serviceentry::Entry;

/// What the engine is told: a source's news, or a shared store's (a table another instance
/// wrote, a change of who claims first).
#[derive(Debug)]
pub enum Input {
    Source(SourceEvent),
    Store(StoreEvent),
}

impl From<SourceEvent> for Input {
    fn from(ev: SourceEvent) -> Input {
        Input::Source(ev)
    }
}

/// What a source says. Every source sends the full content of a unit (a file; in a cluster, one
/// ServiceEntry object, `namespace/name`) on each change, so the engine never has to reason about
/// deltas.
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

/// Where a source sends its events: the engine's input.
#[derive(Clone, Debug)]
pub struct Events(Sender<Input>);

impl Events {
    pub fn new(tx: Sender<Input>) -> Events {
        Events(tx)
    }

    /// False once the engine is gone (the process is stopping): the source can stop too.
    #[must_use]
    pub fn send(&self, ev: SourceEvent) -> bool {
        self.0.send(Input::Source(ev)).is_ok()
    }
}
