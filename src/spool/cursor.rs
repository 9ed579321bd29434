//! Per-tracker delivery state, persisted in `{spool}/cursors.json`.
//!
//! A tracker keeps one open file per UTC day it sees, so "everything before the
//! cursor is delivered" is not enough to replay exactly after a crash. The state
//! says precisely what is done:
//! - `pos`: every entry before it is delivered, filtered out or dropped;
//! - `done`: for entries at or after `pos`, per day, the position below which that
//!   day's entries are already in a delivered file (a newer day's file was cut
//!   while an older day's file was still open);
//! - `pending`: a file that was cut and named but not yet confirmed written. A
//!   restart rebuilds exactly that file under exactly that key, so a file written
//!   just before a crash is overwritten, never duplicated.

use super::Position;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// A file cut but not yet confirmed written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub key: String,
    /// UTC day (days since 1970-01-01) of every trace in the file.
    pub day: i64,
    /// Position of the file's first entry.
    pub start: Position,
    /// Position just after its last entry.
    pub end: Position,
    /// Earliest and latest trace time in it (Unix ms; 0 from older versions).
    #[serde(default)]
    pub earliest_ms: i64,
    #[serde(default)]
    pub latest_ms: i64,
}

/// Delivery state of one tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerCursor {
    /// (The cursor file of earlier versions held only this.)
    #[serde(flatten)]
    pub pos: Position,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub done: BTreeMap<i64, Position>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Intent>,
    /// The writer's digest chain for this tracker (with `integrity.digests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::integrity::Chain>,
}

impl TrackerCursor {
    pub fn at(pos: Position) -> TrackerCursor {
        TrackerCursor {
            pos,
            ..Default::default()
        }
    }

    /// Whether the entry at `p` of `day` is already in a delivered file.
    pub fn is_done(&self, day: i64, p: Position) -> bool {
        p < self.pos || self.done.get(&day).is_some_and(|mark| p < *mark)
    }

    /// Drops what `pos` already covers.
    pub fn tidy(&mut self) {
        let pos = self.pos;
        self.done.retain(|_, mark| *mark > pos);
    }
}

/// The file's content.
#[derive(Default, Serialize, Deserialize)]
pub struct CursorFile {
    #[serde(default)]
    pub positions: HashMap<String, TrackerCursor>,
}

/// Why the cursor file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is unreadable ({source}); refusing to start with empty cursors, which would \
         skip or repeat deliveries. Restore it, or move it away to start every tracker at the \
         head of the spool"
    )]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Loads the cursor file; a missing file is an empty state, an unreadable one an error.
pub fn load(dir: &Path) -> Result<CursorFile, CursorError> {
    let path = dir.join("cursors.json");
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| CursorError::Corrupt { path: shown, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CursorFile::default()),
        Err(source) => Err(CursorError::Read { path: shown, source }),
    }
}

/// Writes the cursor file atomically: a synced temporary file, renamed, then the
/// directory synced so the rename itself survives a power loss.
pub fn save(dir: &Path, file: &CursorFile, fsync: bool) -> io::Result<()> {
    let tmp = dir.join("cursors.json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(file).map_err(io::Error::other)?)?;
    if fsync {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join("cursors.json"))?;
    if fsync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_cursor_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cursors.json"),
            r#"{"positions":{"system":{"seq":7,"idx":3}}}"#,
        )
        .unwrap();
        let f = load(dir.path()).unwrap();
        assert_eq!(
            f.positions["system"],
            TrackerCursor::at(Position { seq: 7, idx: 3 })
        );
    }

    #[test]
    fn an_unreadable_cursor_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cursors.json"), b"{\"positions\":{\"a\":").unwrap();
        let err = load(dir.path()).err().expect("refused").to_string();
        assert!(
            err.contains("unreadable") && err.contains("move it away"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            load(empty.path()).unwrap().positions.is_empty(),
            "missing file: empty state"
        );
    }

    #[test]
    fn round_trip_and_done_marks() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = TrackerCursor::at(Position { seq: 10, idx: 0 });
        c.done.insert(20_000, Position { seq: 15, idx: 2 });
        c.pending = Some(Intent {
            key: "k".into(),
            day: 20_001,
            start: Position { seq: 11, idx: 0 },
            end: Position { seq: 12, idx: 5 },
            earliest_ms: 0,
            latest_ms: 0,
        });
        assert!(c.is_done(19_999, Position { seq: 9, idx: 9 }), "before pos");
        assert!(c.is_done(20_000, Position { seq: 15, idx: 1 }));
        assert!(!c.is_done(20_000, Position { seq: 15, idx: 2 }));
        assert!(!c.is_done(20_001, Position { seq: 12, idx: 0 }));
        let mut file = CursorFile::default();
        file.positions.insert("t".into(), c.clone());
        save(dir.path(), &file, true).unwrap();
        assert_eq!(load(dir.path()).unwrap().positions["t"], c);
        c.pos = Position { seq: 16, idx: 0 };
        c.tidy();
        assert!(c.done.is_empty());
    }
}
