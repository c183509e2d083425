//! Crash-safe, human-readable file store for the allocation table (the embedded default).
//!
//! `STATE_DIR/allocations.json` is replaced atomically: write `allocations.json.tmp`, fsync it,
//! rename it over the old file, fsync the directory. A crash at any instant leaves either the old
//! or the new table, never a mix. A lock file keeps two servers off one state directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Allocation, Table};

pub const FILE_NAME: &str = "allocations.json";
const FORMAT: &str = "globaldns-allocations/v1";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnDisk {
    format: String,
    allocations: Vec<Row>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Row {
    host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6: Option<std::net::Ipv6Addr>,
    /// RFC 3339, so that an operator reading the file sees when the hold started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released_at: Option<String>,
}

pub struct FileStore {
    dir: PathBuf,
    _lock: File,
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
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    pub fn load(&self) -> Result<Table> {
        read_table(&self.dir)
    }

    /// Writes the table durably; returns only once it would survive a crash.
    pub fn save(&self, table: &Table) -> Result<()> {
        let rows = table
            .iter()
            .map(|(host, a)| Row {
                host: host.clone(),
                ipv4: a.ipv4,
                ipv6: a.ipv6,
                released_at: a.released_at.map(|s| {
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s))
                        .to_string()
                }),
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT.into(),
            allocations: rows,
        })?;
        text.push(b'\n');
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// Reads and parses the table without taking the lock (for `globaldns allocations`, and for
/// `check`). A missing file is an empty table; anything unreadable is an error, never "empty".
pub fn read_table(dir: &Path) -> Result<Table> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::new()),
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
        let released_at = match row.released_at.as_deref().map(humantime::parse_rfc3339) {
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
        };
        let a = Allocation {
            ipv4: row.ipv4,
            ipv6: row.ipv6,
            released_at,
        };
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
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
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
}
