//! `{spool}/seen.log`: content hashes of events whose segments were deleted.
//!
//! The de-duplication window (see [`crate::source::dedupe`]) must survive a
//! restart. The hashes of spooled events are in the segments themselves (in each
//! trace's routing metadata); this file keeps them for events whose segment was
//! already deleted after delivery, written and synced before the segment goes.
//! Entries are `hash u128 | received_ms i64`, little endian; a torn last entry is
//! ignored. The file is rewritten with only the window's entries when it grows.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

const ENTRY: usize = 24;
const FILE: &str = "seen.log";

/// Reads every whole entry.
pub fn load(dir: &Path) -> io::Result<Vec<(u128, i64)>> {
    let bytes = match std::fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .chunks_exact(ENTRY)
        .map(|c| {
            let mut h = [0u8; 16];
            h.copy_from_slice(&c[..16]);
            let mut m = [0u8; 8];
            m.copy_from_slice(&c[16..]);
            (u128::from_le_bytes(h), i64::from_le_bytes(m))
        })
        .collect())
}

fn encode(entries: &[(u128, i64)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * ENTRY);
    for (h, ms) in entries {
        buf.extend_from_slice(&h.to_le_bytes());
        buf.extend_from_slice(&ms.to_le_bytes());
    }
    buf
}

/// Appends entries and syncs them. When the file holds more than `max_entries`
/// twice over, it is rewritten with the newest `max_entries` younger than `min_ms`.
pub fn append(
    dir: &Path,
    entries: &[(u128, i64)],
    min_ms: i64,
    max_entries: usize,
    fsync: bool,
) -> io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let path = dir.join(FILE);
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len as usize / ENTRY + entries.len() > 2 * max_entries.max(1) {
        let mut all = load(dir)?;
        all.extend_from_slice(entries);
        all.retain(|(_, ms)| *ms >= min_ms);
        let keep = all.len().saturating_sub(max_entries);
        let tmp = dir.join("seen.log.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&encode(&all[keep..]))?;
        if fsync {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        if fsync {
            File::open(dir)?.sync_all()?;
        }
        return Ok(());
    }
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    // A torn entry left by a crash would shift every later one: cut it first.
    let whole = len - len % ENTRY as u64;
    if whole != len {
        f.set_len(whole)?;
    }
    f.write_all(&encode(entries))?;
    if fsync {
        f.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_and_the_file_is_compacted_to_the_window() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &[(1, 10), (2, 20)], 0, 10, true).unwrap();
        // A torn entry is ignored, and cut before the next append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(&[7; 5]).unwrap();
        assert_eq!(load(dir.path()).unwrap(), [(1, 10), (2, 20)]);
        append(dir.path(), &[(3, 30)], 0, 10, true).unwrap();
        assert_eq!(load(dir.path()).unwrap(), [(1, 10), (2, 20), (3, 30)]);
        // Past twice the window: rewritten with the newest entries not too old.
        let many: Vec<(u128, i64)> = (4..30).map(|i| (i as u128, i * 10)).collect();
        append(dir.path(), &many, 100, 10, true).unwrap();
        let left = load(dir.path()).unwrap();
        assert_eq!(left.len(), 10);
        assert_eq!(left.last(), Some(&(29, 290)));
        assert!(left.iter().all(|(_, ms)| *ms >= 100));
    }
}
