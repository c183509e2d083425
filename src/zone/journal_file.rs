//! The journal on disk (`STATE_DIR/journal`), so that a restarted primary continues its serials
//! and answers IXFR from the versions it served before: secondaries then take the changes,
//! not the zone, after a rollout.
//!
//! The file is a sequence of checksummed frames: a header (format and the flags the records
//! depend on, see `ZoneBuilder::fingerprint`), the journal's deltas, a checkpoint of the whole
//! content at one serial, then the deltas appended after it, one per publish. Each delta is
//! written and `fdatasync`ed before its snapshot is published: a serial a secondary has seen is
//! always on disk, so a restart never gives the same serial to other content (a lost tail
//! would). When the deltas appended outgrow the checkpoint, the file is rewritten (to a
//! temporary file, renamed): the journal's deltas, then a checkpoint of the newest content.
//!
//! On start the file gives a [`Lineage`]: the content and serial of the last version and the
//! journal up to it. The builder compares the content rebuilt from the sources with it (see
//! `ZoneBuilder::resume`). A file that does not parse, or was written with other flags, is
//! not continued (logged); a torn last frame (a crash while writing it) is dropped, since its
//! snapshot was never published.

use crate::serviceentry::Transport;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::digest::Digest;
use super::journal::{Digests, Item, Journal, SerialDelta};
use super::key::Key;
use super::records::Data;
use super::Snapshot;

const MAGIC: &[u8] = b"globaldns journal 1";
const HEADER: u8 = 0;
const DELTA: u8 = 1;
const CHECKPOINT: u8 = 2;
/// Appended bytes that always fit before a rewrite, however small the checkpoint.
const MIN_APPEND: u64 = if cfg!(test) { 4096 } else { 1 << 20 };

/// A previous run's last version and journal.
#[derive(Debug)]
pub struct Lineage {
    pub(super) serial: u32,
    pub(super) digests: Digests,
    /// Sorted.
    pub(super) content: Vec<Item>,
    pub(super) journal: Journal,
}

impl Lineage {
    pub fn serial(&self) -> u32 {
        self.serial
    }
}

pub struct JournalFile {
    path: PathBuf,
    fingerprint: String,
    /// Open for appending, after a load or a rewrite.
    file: Option<File>,
    /// The serial of the newest version on disk.
    at: Option<u32>,
    checkpoint_bytes: u64,
    appended: u64,
}

impl JournalFile {
    /// Reads `DIR/journal`: the lineage to continue, if the file holds one written with the
    /// same `fingerprint` and not overtaken by serials published without it (`floor`: the
    /// serial floor, above every serial ever published, see `serial_floor`).
    pub fn open(dir: &Path, fingerprint: String, floor: u32) -> (JournalFile, Option<Lineage>) {
        let path = dir.join("journal");
        let jf = JournalFile {
            path,
            fingerprint,
            file: None,
            at: None,
            checkpoint_bytes: 0,
            appended: 0,
        };
        let lineage = match fs::read(&jf.path) {
            Ok(bytes) => match parse(&bytes, &jf.fingerprint) {
                Ok(Some(l)) if l.serial < floor.saturating_sub(crate::serial_floor::LEAP) => {
                    warn!(
                        serial = l.serial,
                        floor, "the journal is older than serials published since; not continued"
                    );
                    None
                }
                Ok(l) => l,
                Err(e) => {
                    warn!(path = %jf.path.display(), error = %e, "the journal is not continued");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %jf.path.display(), error = %e, "cannot read the journal; not continued");
                None
            }
        };
        if let Some(l) = &lineage {
            info!(
                serial = l.serial,
                oldest = ?l.journal.oldest(),
                records = l.content.len(),
                "journal of the previous run loaded"
            );
        }
        (jf, lineage)
    }

    /// Removes `DIR/journal` (a run without a journal publishes serials it does not record: a
    /// later run must not continue an older lineage).
    pub fn remove(dir: &Path) {
        let path = dir.join("journal");
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot remove the journal");
            }
        }
    }

    /// Makes the snapshot's version durable before it is published: its deltas appended, or
    /// the file rewritten (first snapshot, a gap, or appends outgrowing the checkpoint). On an
    /// error the file is removed: a later run starts a new lineage rather than reuse a serial.
    pub fn persist(&mut self, snap: &Snapshot) -> Result<()> {
        let result = self.write(snap);
        if result.is_err() {
            self.file = None;
            self.at = None;
            let _ = fs::remove_file(&self.path);
        }
        result
    }

    fn write(&mut self, snap: &Snapshot) -> Result<()> {
        let Some((serial, _)) = snap.journal.head() else {
            return Ok(());
        };
        if self.at == Some(*serial) {
            return Ok(());
        }
        let deltas: Vec<&SerialDelta> = snap.journal.deltas().collect();
        let start = self
            .at
            .and_then(|at| deltas.iter().position(|d| d.from == at));
        match (start, &mut self.file) {
            (Some(i), Some(file)) if self.appended < self.checkpoint_bytes.max(MIN_APPEND) => {
                let mut buf = Vec::new();
                for j in i..deltas.len() {
                    delta_frame(&mut buf, deltas[j], to_digests(snap, &deltas, j));
                }
                file.write_all(&buf)
                    .and_then(|()| file.sync_data())
                    .with_context(|| format!("cannot append to {}", self.path.display()))?;
                self.appended += buf.len() as u64;
            }
            _ => self.rewrite(snap, &deltas)?,
        }
        self.at = Some(*serial);
        Ok(())
    }

    /// The journal's deltas, then a checkpoint of the snapshot's content.
    fn rewrite(&mut self, snap: &Snapshot, deltas: &[&SerialDelta]) -> Result<()> {
        let (serial, digests) = snap.journal.head().context("no version")?;
        let mut buf = Vec::new();
        let mut p = Vec::new();
        p.push(HEADER);
        p.extend_from_slice(MAGIC);
        p.extend_from_slice(self.fingerprint.as_bytes());
        frame(&mut buf, &p);
        for (j, d) in deltas.iter().enumerate() {
            delta_frame(&mut buf, d, to_digests(snap, deltas, j));
        }
        let before = buf.len();
        p.clear();
        p.push(CHECKPOINT);
        p.extend_from_slice(&serial.to_be_bytes());
        put_digests(&mut p, digests);
        let mut n = 0u32;
        let at = p.len();
        p.extend_from_slice(&0u32.to_be_bytes());
        for item in super::items(&snap.shards) {
            put_item(&mut p, &item);
            n += 1;
        }
        p[at..at + 4].copy_from_slice(&n.to_be_bytes());
        frame(&mut buf, &p);
        let dir = self.path.parent().context("journal without a directory")?;
        fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()?;
            OpenOptions::new().append(true).open(&self.path)
        };
        let file = write().with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file = Some(file);
        self.checkpoint_bytes = (buf.len() - before) as u64;
        self.appended = 0;
        Ok(())
    }
}

/// The digests at the end of delta `j`: the next delta's start, or the snapshot's head.
fn to_digests<'a>(snap: &'a Snapshot, deltas: &[&'a SerialDelta], j: usize) -> &'a Digests {
    match deltas.get(j + 1) {
        Some(next) => &next.from_digests,
        None => {
            &snap
                .journal
                .head()
                .expect("a journal with deltas has a head")
                .1
        }
    }
}

/// `[length][payload][FNV-1a of payload]`.
fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf.extend_from_slice(&checksum(payload).to_be_bytes());
}

fn checksum(payload: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(payload);
    h.finish()
}

fn delta_frame(buf: &mut Vec<u8>, d: &SerialDelta, to: &Digests) {
    let mut p = vec![DELTA];
    p.extend_from_slice(&d.from.to_be_bytes());
    p.extend_from_slice(&d.to.to_be_bytes());
    put_digests(&mut p, &d.from_digests);
    put_digests(&mut p, to);
    for items in [&d.removed, &d.added] {
        p.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for item in items {
            put_item(&mut p, item);
        }
    }
    frame(buf, &p);
}

fn put_digests(p: &mut Vec<u8>, d: &[Digest]) {
    p.push(d.len() as u8);
    for x in d {
        p.extend_from_slice(&x.to_bytes());
    }
}

/// `[flags: wild][key][data]`, keys and labels length-prefixed (at most 255 bytes).
fn put_item(p: &mut Vec<u8>, (wild, k, data): &Item) {
    p.push(u8::from(*wild));
    p.push(k.len() as u8);
    p.extend_from_slice(k);
    match data {
        Data::A(a) => {
            p.push(0);
            p.extend_from_slice(&a.octets());
        }
        Data::Aaaa(a) => {
            p.push(1);
            p.extend_from_slice(&a.octets());
        }
        Data::Ptr(t) => {
            p.push(2);
            p.push(t.len() as u8);
            p.extend_from_slice(t);
        }
        Data::Srv {
            transport,
            label,
            port,
        } => {
            p.push(3);
            p.push(u8::from(*transport == Transport::Udp));
            p.push(label.len() as u8);
            p.extend_from_slice(label);
            p.extend_from_slice(&port.to_be_bytes());
        }
    }
}

/// A cursor over one frame's payload.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        anyhow::ensure!(self.0.len() >= n, "truncated frame");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn short(&mut self) -> Result<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn digests(&mut self) -> Result<Digests> {
        let n = usize::from(self.u8()?);
        (0..n)
            .map(|_| Digest::from_bytes(self.take(16)?).context("digest"))
            .collect()
    }
    fn item(&mut self) -> Result<Item> {
        let wild = self.u8()? != 0;
        let k: Key = Arc::from(self.short()?);
        let data = match self.u8()? {
            0 => Data::A(<[u8; 4]>::try_from(self.take(4)?)?.into()),
            1 => Data::Aaaa(<[u8; 16]>::try_from(self.take(16)?)?.into()),
            2 => Data::Ptr(Arc::from(self.short()?)),
            3 => {
                let transport = if self.u8()? != 0 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                let label = self.short()?.into();
                let port = u16::from_be_bytes(self.take(2)?.try_into()?);
                Data::Srv {
                    transport,
                    label,
                    port,
                }
            }
            t => anyhow::bail!("unknown data tag {t}"),
        };
        Ok((wild, k, data))
    }
    fn items(&mut self) -> Result<Vec<Item>> {
        let n = self.u32()? as usize;
        // Never trust a count for an allocation: each item takes at least 4 bytes.
        let mut v = Vec::with_capacity(n.min(self.0.len() / 4));
        for _ in 0..n {
            v.push(self.item()?);
        }
        Ok(v)
    }
}

/// The lineage in a journal file: None when it holds no checkpoint. A frame that does not
/// check out ends the file (a torn write); a wrong header is an error.
fn parse(bytes: &[u8], fingerprint: &str) -> Result<Option<Lineage>> {
    let mut rest = bytes;
    let mut frames = Vec::new();
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[..4].try_into()?) as usize;
        let Some(payload) = rest.get(4..4 + len) else {
            break;
        };
        let Some(sum) = rest.get(4 + len..12 + len) else {
            break;
        };
        if checksum(payload).to_be_bytes() != sum || payload.is_empty() {
            break;
        }
        frames.push(payload);
        rest = &rest[12 + len..];
    }
    let Some((header, frames)) = frames.split_first() else {
        anyhow::bail!("no header");
    };
    anyhow::ensure!(
        header.first() == Some(&HEADER) && header[1..].starts_with(MAGIC),
        "not a globaldns journal of this version"
    );
    if &header[1 + MAGIC.len()..] != fingerprint.as_bytes() {
        info!("the journal was written with other zone flags (TTL, zones, name servers); starting a new one");
        return Ok(None);
    }
    let mut journal = Journal::default();
    let mut content: Option<(u32, Digests, BTreeSet<Item>)> = None;
    for f in frames {
        let mut c = Cursor(&f[1..]);
        match f[0] {
            DELTA => {
                let from = c.u32()?;
                let to = c.u32()?;
                let from_digests = c.digests()?;
                let to_digests = c.digests()?;
                let removed = c.items()?;
                let added = c.items()?;
                if let Some((serial, digests, set)) = &mut content {
                    anyhow::ensure!(
                        *serial == from,
                        "a delta from {from} after version {serial}"
                    );
                    for i in &removed {
                        set.remove(i);
                    }
                    set.extend(added.iter().cloned());
                    *serial = to;
                    *digests = to_digests;
                }
                journal.push(SerialDelta {
                    from,
                    to,
                    removed,
                    added,
                    from_digests,
                });
            }
            CHECKPOINT => {
                let serial = c.u32()?;
                let digests = c.digests()?;
                content = Some((serial, digests, c.items()?.into_iter().collect()));
            }
            t => anyhow::bail!("unknown frame kind {t}"),
        }
    }
    let Some((serial, digests, set)) = content else {
        return Ok(None);
    };
    if journal.deltas().last().is_some_and(|d| d.to != serial) {
        journal = Journal::default();
    }
    journal.set_head(serial, digests.clone());
    Ok(Some(Lineage {
        serial,
        digests,
        content: set.into_iter().collect(),
        journal,
    }))
}

/// (removed, added) from `old` to `new`, both sorted.
pub(super) fn difference(old: &[Item], new: &[Item]) -> (Vec<Item>, Vec<Item>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                removed.push(a.clone());
                i += 1;
            }
            (Some(a), None) => {
                removed.push(a.clone());
                i += 1;
            }
            (_, Some(b)) => {
                added.push(b.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    (removed, added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::lookup_tests::host;
    use crate::zone::{ZoneBuilder, ZoneConfig};

    fn builder() -> ZoneBuilder {
        let cfg = ZoneConfig {
            zones: vec!["global".into()],
            reverse_zones: vec![],
            ns: vec![],
            ttl: 30,
        };
        let mut b = ZoneBuilder::new(&cfg, &["240.10.0.0/16".parse().unwrap()]);
        b.keep_journal();
        b
    }

    #[test]
    fn a_torn_tail_is_dropped_and_other_flags_or_garbage_start_anew() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder();
        let fp = b.fingerprint();
        let (mut jf, none) = JournalFile::open(dir.path(), fp.clone(), 0);
        assert!(none.is_none());
        b.set_host("a.global", Some(host(&["240.10.0.1"], &[])));
        let first = b.snapshot();
        jf.persist(&first).unwrap();
        b.set_host("b.global", Some(host(&["240.10.0.2"], &[])));
        let snap = b.snapshot();
        jf.persist(&snap).unwrap();
        let path = dir.path().join("journal");
        let whole = fs::read(&path).unwrap();

        let (_, l) = JournalFile::open(dir.path(), fp.clone(), 0);
        let l = l.expect("a lineage");
        assert_eq!(
            (l.serial, l.content.len()),
            (snap.serial, 4),
            "A and PTR of each"
        );
        assert_eq!(l.journal.oldest(), Some(first.serial));

        // The last delta torn: the version before it.
        fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let (_, l) = JournalFile::open(dir.path(), fp.clone(), 0);
        assert_eq!(l.expect("a lineage").serial, first.serial);

        // Other flags, garbage, a floor above the lineage: nothing continued.
        fs::write(&path, &whole).unwrap();
        assert!(JournalFile::open(dir.path(), "ttl=60".into(), 0)
            .1
            .is_none());
        let floor = snap.serial + 2 * crate::serial_floor::LEAP;
        assert!(JournalFile::open(dir.path(), fp.clone(), floor).1.is_none());
        fs::write(&path, b"\x00\x00\x00\x05hello world and more").unwrap();
        assert!(JournalFile::open(dir.path(), fp, 0).1.is_none());
    }
}
