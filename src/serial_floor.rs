//! The SOA serial never goes backwards, across restarts too: secondaries ignore a primary whose
//! serial is older than theirs. Serials follow the clock (at least the unix time) and increase by
//! one per publish, so many publishes in a burst run ahead of the clock; a restart soon after
//! would start lower. A floor kept in the state directory, always above every serial published,
//! is where the next start begins. It is written (and fsynced) only when a serial reaches it,
//! then set [`LEAP`] ahead: one small write every few thousand publishes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::warn;

/// How far above the serial being published the floor is set.
pub const LEAP: u32 = 10_000;

pub struct SerialFloor {
    path: PathBuf,
    /// Every serial published is below this (once written).
    floor: u32,
}

impl SerialFloor {
    /// Reads `DIR/serial` (0 when absent). A file that does not hold a number is refused.
    pub fn open(dir: &Path) -> Result<SerialFloor> {
        let path = dir.join("serial");
        let floor = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a serial number", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(SerialFloor { path, floor })
    }

    /// Where the next serial starts.
    pub fn floor(&self) -> u32 {
        self.floor
    }

    /// Makes sure `serial` is below the stored floor before it is published.
    pub fn cover(&mut self, serial: u32) {
        if serial < self.floor {
            return;
        }
        let next = serial.saturating_add(LEAP);
        match write_durably(&self.path, next) {
            Ok(()) => self.floor = next,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot keep the serial floor; a restart may start at a lower serial")
            }
        }
    }
}

/// Write to a temporary file, fsync, rename, fsync the directory.
fn write_durably(path: &Path, value: u32) -> Result<()> {
    let dir = path.parent().context("serial file without a directory")?;
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_stays_above_every_covered_serial() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = SerialFloor::open(dir.path()).unwrap();
        assert_eq!(f.floor(), 0);
        f.cover(100);
        assert_eq!(f.floor(), 100 + LEAP);
        f.cover(200); // below the floor: nothing written
        assert_eq!(SerialFloor::open(dir.path()).unwrap().floor(), 100 + LEAP);
        f.cover(100 + LEAP);
        assert_eq!(
            SerialFloor::open(dir.path()).unwrap().floor(),
            100 + 2 * LEAP
        );
        fs::write(dir.path().join("serial"), "garbage").unwrap();
        assert!(SerialFloor::open(dir.path()).is_err());
    }
}
