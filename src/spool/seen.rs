//! `{spool}/seen.log`: content-hash keys of spooled events, for the
//! de-duplication window (see [`crate::source::dedupe`]) to survive a restart.
//!
//! The writer appends each group's keys right after the group is written (one
//! buffered write, no sync of its own); before a segment is deleted the log is
//! synced, so the keys of every event whose segment is gone are durable — the
//! others are still in the segments. Entries are `key u64 | received_ms i64`,
//! little endian, in receive order; a torn last entry is ignored. When the log
//! holds more than twice the window, it is rewritten with its newest part.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const ENTRY: u64 = 16;
const FILE: &str = "seen.log";

fn decode(bytes: &[u8]) -> Vec<(u64, i64)> {
    bytes
        .chunks_exact(ENTRY as usize)
        .map(|c| {
            let mut k = [0u8; 8];
            k.copy_from_slice(&c[..8]);
            let mut m = [0u8; 8];
            m.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(k), i64::from_le_bytes(m))
        })
        .collect()
}

/// Reads every whole entry.
pub fn load(dir: &Path) -> io::Result<Vec<(u64, i64)>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(b) => Ok(decode(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The open log.
pub struct SeenLog {
    dir: PathBuf,
    file: File,
    entries: u64,
    unsynced: bool,
    fsync: bool,
}

impl SeenLog {
    /// Opens (or creates) the log, cutting a torn last entry.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<SeenLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE))?;
        let len = file.metadata()?.len();
        if len % ENTRY != 0 {
            file.set_len(len - len % ENTRY)?;
        }
        Ok(SeenLog {
            dir: dir.to_path_buf(),
            file,
            entries: len / ENTRY,
            unsynced: false,
            fsync,
        })
    }

    /// Appends entries (not synced).
    pub fn append(&mut self, entries: &[(u64, i64)]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(entries.len() * ENTRY as usize);
        for (k, ms) in entries {
            buf.extend_from_slice(&k.to_le_bytes());
            buf.extend_from_slice(&ms.to_le_bytes());
        }
        self.file.write_all(&buf)?;
        self.entries += entries.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes what was appended durable; then, past twice `keep` entries, keeps
    /// only the newest `keep` (of those received at or after `min_ms`).
    pub fn sync(&mut self, keep: u64, min_ms: i64) -> io::Result<()> {
        if self.unsynced && self.fsync {
            self.file.sync_data()?;
        }
        self.unsynced = false;
        if self.entries <= 2 * keep.max(1) {
            return Ok(());
        }
        // Entries are in receive order: the newest part is a suffix.
        let mut f = File::open(self.dir.join(FILE))?;
        f.seek(SeekFrom::Start((self.entries - keep) * ENTRY))?;
        let mut tail = Vec::with_capacity((keep * ENTRY) as usize);
        f.read_to_end(&mut tail)?;
        let whole = tail.len() - tail.len() % ENTRY as usize;
        tail.truncate(whole);
        let first_young = decode(&tail)
            .iter()
            .position(|(_, ms)| *ms >= min_ms)
            .unwrap_or(whole / ENTRY as usize);
        let kept = &tail[first_young * ENTRY as usize..];
        let tmp = self.dir.join("seen.log.tmp");
        let mut out = File::create(&tmp)?;
        out.write_all(kept)?;
        if self.fsync {
            out.sync_data()?;
        }
        std::fs::rename(&tmp, self.dir.join(FILE))?;
        if self.fsync {
            File::open(&self.dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(self.dir.join(FILE))?;
        self.entries = kept.len() as u64 / ENTRY;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_and_the_log_is_cut_to_its_newest_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SeenLog::open(dir.path(), true).unwrap();
        log.append(&[(1, 10), (2, 20)]).unwrap();
        log.sync(10, 0).unwrap();
        // A torn entry is ignored, and cut when the log is opened again.
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(&[7; 5]).unwrap();
        assert_eq!(load(dir.path()).unwrap(), [(1, 10), (2, 20)]);
        let mut log = SeenLog::open(dir.path(), true).unwrap();
        log.append(&[(3, 30)]).unwrap();
        assert_eq!(load(dir.path()).unwrap(), [(1, 10), (2, 20), (3, 30)]);
        // Past twice the window: only the newest part, not older than min_ms.
        let many: Vec<(u64, i64)> = (4..30).map(|i| (i, i as i64 * 10)).collect();
        log.append(&many).unwrap();
        log.sync(10, 250).unwrap();
        let left = load(dir.path()).unwrap();
        assert_eq!(left.first(), Some(&(25, 250)));
        assert_eq!(left.last(), Some(&(29, 290)));
        log.append(&[(30, 300)]).unwrap();
        assert_eq!(
            load(dir.path()).unwrap().last(),
            Some(&(30, 300)),
            "appends go on after the rewrite"
        );
    }
}
