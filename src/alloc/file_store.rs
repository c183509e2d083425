//! Crash-safe, human-readable file store for the allocation table (the embedded default).
//!
//! Two files in `STATE_DIR`: `allocations.json`, the table as of its last compaction, replaced
//! atomically (write `allocations.json.tmp`, fsync, rename over, fsync the directory); and
//! `allocations.log`, one JSON line per host changed since, appended and fsynced before the
//! change is served. The table is the base with the log's lines applied in order; each line is
//! a host's whole new state, so applying a line twice changes nothing, and a crash between
//! compaction and truncation of the log loses nothing. A change of a few hosts therefore costs
//! a few hundred bytes and one fsync, whatever the size of the table; the log is folded into the
//! base when it grows past a quarter of the table, and at start-up when it ends in a cut line.
//!
//! A crash can cut only the log's last line, which was then never acknowledged: a last line
//! without its newline is ignored, and the log folded into the base before anything is
//! appended. Anything else that does not parse is refused, never repaired. A lock file keeps two servers off one state directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Allocation, Table};

pub const FILE_NAME: &str = "allocations.json";
pub const LOG_NAME: &str = "allocations.log";
const FORMAT: &str = "globaldns-allocations/v1";

/// `allocations.json`. Read into `Vec<Row>`; written from [`Rows`], straight from the table.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnDisk<A = Vec<Row>> {
    format: String,
    allocations: A,
}

/// One host's state: read with an owned name, written with one borrowed from the table.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Row<H = String> {
    host: H,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6: Option<std::net::Ipv6Addr>,
    /// RFC 3339, so that an operator reading the file sees when the hold started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released_at: Option<String>,
    /// Log lines only: the host's entry is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    removed: bool,
}

pub struct FileStore {
    dir: PathBuf,
    _lock: File,
    /// Lines in the log since the base was written.
    log_lines: usize,
    /// Whether `allocations.json` exists (until it does, the whole table is written there).
    has_base: bool,
}

impl FileStore {
    /// Opens (creating) the state directory and takes its lock.
    pub fn open(dir: &Path) -> Result<FileStore> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "state directory {} is in use by another globaldns process (lock {})",
                dir.display(),
                lock_path.display()
            );
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            _lock: lock,
            log_lines: 0,
            has_base: dir.join(FILE_NAME).exists(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_NAME)
    }

    /// Reads the table (base + log). A log that ends in a cut line is folded into the base right
    /// away, so that appends never follow it; so is a long one. A short clean log is kept and
    /// appended to (a restart then writes nothing).
    pub fn load(&mut self) -> Result<Table> {
        let (table, log) = read_table_and_log(&self.dir)?;
        if log.cut || log.lines > (table.len() / 4).max(1000) {
            self.save(&table)?;
        } else {
            self.log_lines = log.lines;
        }
        Ok(table)
    }

    /// Makes `changes` durable: appended to the log, or, when the log has grown large, by
    /// writing the whole `table` (the state after the changes) as the new base.
    pub fn apply(&mut self, changes: &[super::Change], table: &Table) -> Result<()> {
        if !self.has_base || self.log_lines + changes.len() > (table.len() / 4).max(1000) {
            return self.save(table);
        }
        let mut text = Vec::with_capacity(changes.len() * 96);
        for c in changes {
            let line = match &c.after {
                Some(a) => row(&c.host, a),
                None => Row {
                    removed: true,
                    ..row(&c.host, &Allocation::default())
                },
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        let path = self.log_path();
        let created = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.write_all(&text)
            .and_then(|()| f.sync_data())
            .with_context(|| format!("cannot append to {}", path.display()))?;
        if created {
            File::open(&self.dir)?.sync_all()?;
        }
        self.log_lines += changes.len();
        Ok(())
    }

    /// Writes the whole table as the new base and empties the log; returns only once it would
    /// survive a crash.
    pub fn save(&mut self, table: &Table) -> Result<()> {
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        // Streamed: at 100,000 hosts a copy of the rows and the text would be ~20 MB more at the
        // first load's peak.
        let mut w = BufWriter::new(f);
        serde_json::to_writer_pretty(
            &mut w,
            &OnDisk {
                format: FORMAT.into(),
                allocations: Rows(table),
            },
        )?;
        w.write_all(b"\n")?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()?;
        // Only now that the base holds everything may the log go (replaying it would be harmless).
        match fs::remove_file(self.log_path()) {
            Ok(()) => File::open(&self.dir)?.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("cannot remove the allocation log"),
        }
        self.log_lines = 0;
        self.has_base = true;
        Ok(())
    }
}

impl super::store::Store for FileStore {
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
    fn load(&mut self) -> Result<Table> {
        FileStore::load(self)
    }
    fn commit(&mut self, changes: &[super::Change], table: &Table) -> Result<super::store::Commit> {
        self.apply(changes, table)?;
        Ok(super::store::Commit::Done)
    }
}

/// The table as a JSON array of rows, serialised without collecting them first.
struct Rows<'a>(&'a Table);

impl Serialize for Rows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(host, a)| row(host.as_str(), a)))
    }
}

fn row<'a>(host: &'a str, a: &Allocation) -> Row<&'a str> {
    Row {
        host,
        ipv4: a.ipv4,
        ipv6: a.ipv6,
        released_at: a.released_at.map(|s| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }),
        removed: false,
    }
}

fn released_at(row: &Row, errors: &mut Vec<String>) -> Option<u64> {
    match row.released_at.as_deref().map(humantime::parse_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        ),
        Some(Err(e)) => {
            errors.push(format!("{}: releasedAt: {e}", row.host));
            None
        }
    }
}

/// Reads and parses the table without taking the lock (for `globaldns allocations`, and for
/// `check`). A missing file is an empty table; anything unreadable is an error, never "empty".
pub fn read_table(dir: &Path) -> Result<Table> {
    read_table_and_log(dir).map(|(t, _)| t)
}

/// What the log held.
#[derive(Default)]
struct LogState {
    lines: usize,
    /// It ends in a line without its newline (an append a crash interrupted).
    cut: bool,
}

fn read_table_and_log(dir: &Path) -> Result<(Table, LogState)> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No base yet (nothing ever committed), or only a log: the log alone is the table.
            let mut table = Table::new();
            let log = apply_log(dir, &mut table)?;
            return Ok((table, log));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let disk: OnDisk = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "allocation store {} is not valid (refusing to start; fix or move the file — it is \
             never rewritten automatically)",
            path.display()
        )
    })?;
    if disk.format != FORMAT {
        bail!(
            "{}: unknown format {:?}, expected {FORMAT:?}",
            path.display(),
            disk.format
        );
    }
    let mut table = Table::new();
    let mut errors = Vec::new();
    for row in disk.allocations {
        let a = Allocation {
            ipv4: row.ipv4,
            ipv6: row.ipv6,
            released_at: released_at(&row, &mut errors),
        };
        if row.removed {
            errors.push(format!("{}: \"removed\" belongs in the log only", row.host));
        }
        if table.insert(row.host.clone(), a).is_some() {
            errors.push(format!("{}: listed twice", row.host));
        }
    }
    if !errors.is_empty() {
        bail!(
            "allocation store {} is not valid: {}",
            path.display(),
            errors.join("; ")
        );
    }
    let log = apply_log(dir, &mut table)?;
    Ok((table, log))
}

/// Applies `allocations.log` (if any) to the base table.
fn apply_log(dir: &Path, table: &mut Table) -> Result<LogState> {
    let path = dir.join(LOG_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogState::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Only complete lines count: a cut last line is an append that never returned.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = bytes.len() - complete,
            "allocation log ends in a cut line (a crash during an append that was never acknowledged); ignoring it"
        );
    }
    let mut errors = Vec::new();
    let mut lines = 0;
    for (n, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        lines += 1;
        match serde_json::from_slice::<Row>(line) {
            Ok(l) if l.removed => {
                table.remove(&l.host);
            }
            Ok(l) => {
                let a = Allocation {
                    ipv4: l.ipv4,
                    ipv6: l.ipv6,
                    released_at: released_at(&l, &mut errors),
                };
                table.insert(l.host, a);
            }
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    if !errors.is_empty() {
        bail!(
            "allocation log {} is not valid (refusing to start; fix or move the file — it is \
             never rewritten automatically): {}",
            path.display(),
            errors.join("; ")
        );
    }
    Ok(LogState {
        lines,
        cut: complete < bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        assert!(
            FileStore::open(dir.path()).is_err(),
            "second opener must be refused"
        );
        let mut t = Table::new();
        t.insert(
            "a.b.global".into(),
            Allocation {
                ipv4: Some("240.10.0.1".parse().unwrap()),
                ipv6: None,
                released_at: Some(1_700_000_000),
            },
        );
        store.save(&t).unwrap();
        assert_eq!(store.load().unwrap(), t);
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(
            text.contains("\"releasedAt\": \"2023-11-14T22:13:20Z\""),
            "{text}"
        );
    }

    #[test]
    fn corrupt_store_is_refused_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FILE_NAME),
            b"{\"format\": \"globaldns-allocations/v1\", \"alloc",
        )
        .unwrap();
        let err = read_table(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not valid"), "{err:#}");
        let body = fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(body.ends_with(b"\"alloc"), "file must be left as it was");
    }

    fn alloc(ip: &str) -> Allocation {
        Allocation {
            ipv4: Some(ip.parse().unwrap()),
            ..Default::default()
        }
    }

    fn change(
        host: &str,
        before: Option<Allocation>,
        after: Option<Allocation>,
    ) -> super::super::Change {
        super::super::Change {
            host: host.into(),
            before,
            after,
        }
    }

    #[test]
    fn small_changes_append_to_the_log_and_replay_over_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        let mut t = Table::new();
        t.insert("a.x.global".into(), alloc("240.10.0.1"));
        // No base yet: the first commit writes it whole.
        store
            .apply(&[change("a.x.global", None, Some(alloc("240.10.0.1")))], &t)
            .unwrap();
        assert!(store.path().exists() && !store.log_path().exists());
        let base = fs::read(store.path()).unwrap();
        t.insert("b.x.global".into(), alloc("240.10.0.2"));
        t.remove("a.x.global");
        store
            .apply(
                &[
                    change("a.x.global", Some(alloc("240.10.0.1")), None),
                    change("b.x.global", None, Some(alloc("240.10.0.2"))),
                ],
                &t,
            )
            .unwrap();
        assert_eq!(
            fs::read(store.path()).unwrap(),
            base,
            "the base is not rewritten"
        );
        let log = fs::read_to_string(store.log_path()).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
        assert!(log.contains("\"removed\":true"), "{log}");
        assert_eq!(read_table(dir.path()).unwrap(), t);
        drop(store);
        // A short clean log is kept and appended to after a restart.
        let mut store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), t);
        assert_eq!(
            fs::read(store.path()).unwrap(),
            base,
            "a restart writes nothing"
        );
        t.insert("c.x.global".into(), alloc("240.10.0.3"));
        store
            .apply(&[change("c.x.global", None, Some(alloc("240.10.0.3")))], &t)
            .unwrap();
        assert_eq!(
            fs::read_to_string(store.log_path())
                .unwrap()
                .lines()
                .count(),
            3
        );
        assert_eq!(read_table(dir.path()).unwrap(), t);
    }

    #[test]
    fn a_cut_last_line_is_ignored_and_a_bad_line_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileStore::open(dir.path()).unwrap();
        let mut t = Table::new();
        t.insert("a.x.global".into(), alloc("240.10.0.1"));
        store.save(&t).unwrap();
        drop(store);
        let log = dir.path().join(LOG_NAME);
        fs::write(
            &log,
            "{\"host\":\"b.x.global\",\"ipv4\":\"240.10.0.2\"}\n{\"host\":\"c.x.gl",
        )
        .unwrap();
        let got = read_table(dir.path()).unwrap();
        assert_eq!(
            got.len(),
            2,
            "the complete line counts, the cut one does not: {got:?}"
        );
        fs::write(
            &log,
            "{\"host\":\"b.x.global\",\"ipv4\":\"240.10.0.2\"}\nnot json\n",
        )
        .unwrap();
        let err = format!("{:#}", read_table(dir.path()).unwrap_err());
        assert!(err.contains("line 2") && err.contains(LOG_NAME), "{err}");
        let mut store = FileStore::open(dir.path()).unwrap();
        assert!(store.load().is_err());
        assert!(log.exists(), "a bad log is left as it was");
    }
}
