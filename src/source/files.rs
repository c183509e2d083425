//! The file source: a directory tree of ServiceEntry YAML. `ROOT/*.yaml` belongs to cluster
//! `local`, `ROOT/<cluster>/**.yaml` to `<cluster>`. Watched with inotify (notify); a file that
//! stops parsing keeps serving its last good content.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use notify::{RecursiveMode, Watcher};
use tracing::{debug, error, info, warn};

use super::metrics::SourceLabels;
use super::{Events, SourceEvent};
use crate::metrics::Metrics;
use crate::registry::SourceKey;
use crate::serviceentry::{parse_yaml, Entry, Problem};

pub const SOURCE_NAME: &str = "files";
pub const LOCAL_CLUSTER: &str = "local";
/// The largest zones file read: a file is parsed whole, and parsing costs a few times its size
/// in memory. 100,000 hosts in one file are ~40 MB; anything near this is a mistake or an attack.
pub const MAX_FILE_BYTES: u64 = 128 << 20;
/// Editors and `kubectl cp` write in several steps; events this close together are one change.
const SETTLE: Duration = Duration::from_millis(15);

/// Parses and validates one file. Err means the file as a whole is unusable (I/O or YAML syntax).
pub fn parse_file(
    path: &Path,
    cluster: &str,
    zones: &[String],
) -> std::result::Result<(Vec<Entry>, Vec<Problem>), String> {
    too_large(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_text(&text, &path.display().to_string(), cluster, zones)
}

/// Refuses a file over [`MAX_FILE_BYTES`] before reading it.
fn too_large(path: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => Err(format!(
            "{}: {} bytes, over the limit of {} MiB for one file (split it)",
            path.display(),
            m.len(),
            MAX_FILE_BYTES >> 20
        )),
        _ => Ok(()),
    }
}

pub fn parse_text(
    text: &str,
    origin: &str,
    cluster: &str,
    zones: &[String],
) -> std::result::Result<(Vec<Entry>, Vec<Problem>), String> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for obj in parse_yaml(text, origin)? {
        match obj {
            Ok(se) => {
                let (entry, p) = se.validate(cluster, origin, zones);
                entries.extend(entry);
                problems.extend(p);
            }
            Err(p) => problems.push(p),
        }
    }
    Ok((entries, problems))
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn is_hidden(rel: &Path) -> bool {
    rel.components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

/// The unit a file under `root` is: its cluster (from the first directory level) and relative path.
/// None for what the source ignores (not YAML, hidden).
pub fn unit_key(root: &Path, path: &Path) -> Option<SourceKey> {
    let rel = path.strip_prefix(root).ok()?;
    if !is_yaml(rel) || is_hidden(rel) {
        return None;
    }
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
    let cluster = if parts.next().is_some() {
        first
    } else {
        LOCAL_CLUSTER.to_string()
    };
    Some(SourceKey {
        cluster,
        unit: rel.display().to_string(),
    })
}

/// Every YAML file below `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Scans the tree once without watching: the events the source sends at start.
pub fn load_once(
    root: &Path,
    zones: Vec<String>,
    metrics: Arc<Metrics>,
) -> Result<Vec<SourceEvent>> {
    if !root.is_dir() {
        bail!("zones directory {} does not exist", root.display());
    }
    let (tx, rx) = mpsc::channel();
    let mut source = FileSource {
        root: root.canonicalize()?,
        zones,
        tx: Events::new(tx),
        metrics,
        loaded: HashMap::new(),
        engine_gone: false,
    };
    source.rescan();
    drop(source);
    Ok(rx
        .into_iter()
        .filter_map(|input| match input {
            crate::input::Input::Source(ev) => Some(ev),
            crate::input::Input::Store(_) => None,
        })
        .collect())
}

struct FileSource {
    root: PathBuf,
    zones: Vec<String>,
    tx: Events,
    metrics: Arc<Metrics>,
    /// Content hash of the last good version of each loaded file.
    loaded: HashMap<PathBuf, u64>,
    /// The engine is gone (the process is stopping): nothing more to send.
    engine_gone: bool,
}

impl FileSource {
    fn send(&mut self, ev: SourceEvent) {
        if !self.tx.send(ev) {
            self.engine_gone = true;
        }
    }

    fn key_for(&self, path: &Path) -> Option<SourceKey> {
        unit_key(&self.root, path)
    }

    fn label(&self) -> SourceLabels {
        SourceLabels {
            source: SOURCE_NAME.into(),
        }
    }

    /// Loads or unloads one path after a change.
    fn refresh(&mut self, path: &Path) {
        let Some(key) = self.key_for(path) else {
            return;
        };
        let read = read_and_parse(path, &key.cluster, &self.zones, self.loaded.get(path));
        self.apply(path, key, read);
    }

    /// Acts on what [`read_and_parse`] found for `path`.
    fn apply(&mut self, path: &Path, key: SourceKey, read: Read) {
        match read {
            Read::Gone => {
                if self.loaded.remove(path).is_some() {
                    info!(file = %path.display(), "file removed; its entries are withdrawn");
                    self.send(SourceEvent::RemoveUnit(key));
                }
            }
            Read::Unchanged => {}
            Read::IoError(e) => {
                error!(file = %path.display(), error = %e, "cannot read file; keeping its last good content");
                let label = self.label();
                self.metrics.source.parse_errors.get_or_create(&label).inc();
            }
            Read::Parsed {
                hash,
                entries,
                problems,
            } => {
                for p in &problems {
                    warn!(object = %p.object, problem = %p.message, "invalid ServiceEntry skipped");
                }
                let (m, label) = (&self.metrics.source, self.label());
                m.invalid_objects
                    .get_or_create(&label)
                    .inc_by(problems.len() as u64);
                m.reloads.get_or_create(&label).inc();
                info!(file = %path.display(), cluster = %key.cluster, entries = entries.len(), "loaded");
                self.loaded.insert(path.to_path_buf(), hash);
                self.send(SourceEvent::Unit { key, entries });
            }
            Read::SyntaxError(e) => {
                error!(file = %path.display(), error = %e, "file does not parse; keeping its last good content");
                let label = self.label();
                self.metrics.source.parse_errors.get_or_create(&label).inc();
            }
        }
    }

    /// Walks the whole tree: loads what changed, withdraws what disappeared. Files are read and
    /// parsed on every core (YAML parsing is most of a large tree's start-up time), then applied
    /// in path order.
    fn rescan(&mut self) {
        let seen = yaml_files(&self.root);
        let work: Vec<(PathBuf, SourceKey, Option<u64>)> = seen
            .iter()
            .filter_map(|p| Some((p.clone(), self.key_for(p)?, self.loaded.get(p).copied())))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(work.len().div_ceil(4))
            .max(1);
        let chunk = work.len().div_ceil(threads).max(1);
        let zones = &self.zones;
        let results: Vec<Read> = std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(p, k, h)| read_and_parse(p, &k.cluster, zones, h.as_ref()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("file parser thread"))
                .collect()
        });
        for ((path, key, _), read) in work.into_iter().zip(results) {
            self.apply(&path, key, read);
        }
        let gone: Vec<PathBuf> = self
            .loaded
            .keys()
            .filter(|p| !seen.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.refresh(&path);
        }
    }
}

/// What reading one file found.
enum Read {
    Gone,
    /// Same bytes as the last good version.
    Unchanged,
    IoError(std::io::Error),
    SyntaxError(String),
    Parsed {
        hash: u64,
        entries: Vec<Entry>,
        problems: Vec<Problem>,
    },
}

/// Reads and parses one file; `last` is the content hash of its last good version.
fn read_and_parse(path: &Path, cluster: &str, zones: &[String], last: Option<&u64>) -> Read {
    if let Err(e) = too_large(path) {
        return Read::SyntaxError(e);
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || path.is_dir() => return Read::Gone,
        Err(e) => return Read::IoError(e),
    };
    let mut h = fnv::FnvHasher::default();
    h.write(&bytes);
    let hash = h.finish();
    if last == Some(&hash) {
        return Read::Unchanged;
    }
    // YAML is Unicode: a file that is not UTF-8 is refused as `check` refuses it, rather than
    // read with replacement characters.
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            return Read::SyntaxError(format!(
                "{}: not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.valid_up_to()
            ))
        }
    };
    match parse_text(text, &path.display().to_string(), cluster, zones) {
        Ok((entries, problems)) => Read::Parsed {
            hash,
            entries,
            problems,
        },
        Err(e) => Read::SyntaxError(e),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
}

/// Events that say something was only looked at (inotify's IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE).
fn ignorable(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

/// Starts the source on its own thread. Returns once the watch is set up; the first full scan
/// follows, then `Synced`.
pub fn spawn(root: &Path, zones: Vec<String>, tx: Events, metrics: Arc<Metrics>) -> Result<()> {
    if !root.is_dir() {
        bail!("zones directory {} does not exist", root.display());
    }
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    let (ntx, nrx) = mpsc::channel();
    // Watch before the first scan so that no change falls between the two.
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = ntx.send(res);
    })?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", root.display()))?;
    let mut source = FileSource {
        root,
        zones,
        tx,
        metrics,
        loaded: HashMap::new(),
        engine_gone: false,
    };
    std::thread::Builder::new()
        .name("file-source".into())
        .spawn(move || {
            crate::background::lower_this_thread();
            let _watcher = watcher;
            source.rescan();
            source.send(SourceEvent::Synced(SOURCE_NAME.into()));
            while let (false, Ok(first)) = (source.engine_gone, nrx.recv()) {
                let mut batch = vec![first];
                while let Ok(more) = nrx.recv_timeout(SETTLE) {
                    batch.push(more);
                }
                let mut full = false;
                let mut paths = Vec::new();
                for ev in batch {
                    match ev {
                        // Opening or reading a file or directory changes nothing, and the
                        // rescan below reads them: counting those would loop forever.
                        Ok(ev) if ignorable(&ev.kind) => {}
                        Ok(ev) => {
                            full |= ev.need_rescan();
                            paths.extend(ev.paths);
                        }
                        Err(e) => {
                            warn!(error = %e, "watch error; rescanning");
                            full = true;
                        }
                    }
                }
                if paths.is_empty() && !full {
                    continue;
                }
                debug!(?paths, full, "zones changed");
                // Directories, and hidden paths (ConfigMap mounts swap a `..data` symlink), can
                // change many files at once: rescan the tree.
                full |= paths.iter().any(|p| {
                    p.is_dir()
                        || p.strip_prefix(&source.root).map_or(true, is_hidden)
                        || (!is_yaml(p) && !p.exists())
                });
                if full {
                    source.rescan();
                } else {
                    paths.sort();
                    paths.dedup();
                    for p in paths {
                        source.refresh(&p);
                    }
                }
            }
        })?;
    Ok(())
}
