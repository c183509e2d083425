//! The store battery (tests/support/store_battery.rs) against the file store and the in-memory
//! store; the Kubernetes store runs it against a real apiserver in tests/kube_e2e/store.rs.

#[path = "support/store_battery.rs"]
mod store_battery;

use std::sync::{Arc, Mutex};

use globaldns::alloc::file_store::{self, FileStore};
use globaldns::alloc::store::{Commit, MemoryStore, Store};
use globaldns::alloc::{Change, Table};

/// A store reading the file store's directory without its lock (the server holds it): what a
/// restarted server would load.
struct FileReader(std::path::PathBuf);

impl Store for FileReader {
    fn describe(&self) -> String {
        format!("{} (read only)", self.0.display())
    }
    fn load(&mut self) -> anyhow::Result<Table> {
        file_store::read_table(&self.0)
    }
    fn commit(&mut self, _: &[Change], _: &Table) -> anyhow::Result<Commit> {
        unreachable!("the battery only loads through a reopened store")
    }
}

#[test]
fn file_store_keeps_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = FileStore::open(&path).unwrap();
    store_battery::run(Box::new(store), || Box::new(FileReader(path.clone())));
}

/// The in-memory store, shared so that "reopening" sees what was committed.
struct Shared(Arc<Mutex<MemoryStore>>);

impl Store for Shared {
    fn describe(&self) -> String {
        self.0.lock().unwrap().describe()
    }
    fn load(&mut self) -> anyhow::Result<Table> {
        self.0.lock().unwrap().load()
    }
    fn commit(&mut self, changes: &[Change], table: &Table) -> anyhow::Result<Commit> {
        self.0.lock().unwrap().commit(changes, table)
    }
}

#[test]
fn memory_store_keeps_every_commit() {
    let shared = Arc::new(Mutex::new(MemoryStore::default()));
    let s = shared.clone();
    store_battery::run(Box::new(Shared(shared)), move || {
        Box::new(Shared(s.clone()))
    });
}
