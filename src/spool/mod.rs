//! The spool: a write-ahead log on local disk between the webhook and delivery.
//!
//! The webhook answers 200 only after its batch is appended here and fsynced, so a
//! crash after the answer loses nothing. Every tracker reads the spool from its own
//! cursor; a segment is deleted once every active tracker has delivered past it.
//! A tracker that falls more than its backlog budget behind (its bucket is gone,
//! its credentials revoked) loses its oldest segments instead of holding the spool
//! for everyone: it drops, counts and reports them, and ingest and the other
//! trackers go on. When the spool is full for everyone, appends fail fast and the
//! webhook answers 503: the apiserver retries, and memory stays bounded.
//!
//! Layout: `{dir}/lock` (held while open: two processes never share a spool),
//! `{dir}/epoch` (random id of this spool, part of object keys),
//! `{dir}/cursors.json` ([`cursor`]), and segments `{dir}/{first_seq:020}.seg`
//! of records ([`record`]).

pub mod cursor;
mod reader;
pub mod record;
mod scan;
mod seen;
mod writer;

pub use cursor::{Intent, TrackerCursor};
pub use record::entries;

use cursor::CursorFile;
use record::{HEADER, MAGIC, checksum, read_header};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

pub use reader::Reader;
use scan::scan_segment;
use writer::Writer;
/// Most bytes of one record's payload.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;

/// A position in the spool: entry `idx` of record `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub seq: u64,
    pub idx: u32,
}

/// Spool settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub dir: PathBuf,
    /// Appends are refused (503) while the segments hold more than this.
    pub max_bytes: u64,
    /// A new segment is started when the current one reaches this size.
    pub segment_bytes: u64,
    /// fsync after every group of appends. Only tests and benchmarks turn it off.
    pub fsync: bool,
    /// Most bytes of spool one tracker may have undelivered before its oldest
    /// segments are dropped for it. `0`: no budget of its own (the whole spool).
    pub tracker_budget: u64,
    /// Content hashes of events received this recently (ms) are kept across
    /// restarts for de-duplication, at most `dedupe_max` of them.
    pub dedupe_window_ms: i64,
    pub dedupe_max: usize,
}

/// Why the spool cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("spool I/O in {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("spool {dir} is in use by another process (its lock file is held)")]
    Locked { dir: String },
    #[error(transparent)]
    Cursor(#[from] cursor::CursorError),
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("spool full: {used} of {max} bytes in use")]
    Full { used: u64, max: u64 },
    #[error("record of {0} bytes is larger than the spool accepts")]
    TooLarge(usize),
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
    #[error("spool is closed")]
    Closed,
}

/// A record read back from the spool.
#[derive(Debug)]
pub struct Record {
    pub seq: u64,
    pub received_ms: i64,
    pub payload: Vec<u8>,
}

struct Append {
    payload: Vec<u8>,
    entries: u32,
    /// De-duplication key of the record's batch.
    key: Option<u64>,
    received_ms: i64,
    done: oneshot::Sender<Result<u64, AppendError>>,
}

/// What the spool knows of one segment.
#[derive(Clone, Debug, Default)]
struct Segment {
    bytes: u64,
    /// (seq, number of entries) of each record, in order.
    records: Vec<(u64, u32)>,
}

/// A tracker's standing against its backlog budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries dropped (never examined) since this process opened the spool.
    pub dropped: u64,
    /// Dropping now: over budget, and not yet back under half of it.
    pub overflowing: bool,
}

struct CursorState {
    file: CursorFile,
    active: HashSet<String>,
}

struct Shared {
    dir: PathBuf,
    fsync: bool,
    budget: u64,
    /// first seq → segment.
    segments: Mutex<BTreeMap<u64, Segment>>,
    bytes: AtomicU64,
    cursors: Mutex<CursorState>,
    backlog: Mutex<HashMap<String, Backlog>>,
    /// Held for the life of the spool.
    _lock: File,
    dedupe_window_ms: i64,
    dedupe_max: usize,
    /// Window keys (and receive times) of the events found at open.
    recovered: Mutex<Vec<(u64, i64)>>,
    /// Window keys of spooled events (see [`seen`]).
    seen: Mutex<seen::SeenLog>,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Append>,
    head: watch::Receiver<u64>,
    max_bytes: u64,
    epoch: Arc<str>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir`, repairing a torn tail left by
    /// a crash, and starts its writer thread.
    pub fn open(config: Config) -> Result<Spool, OpenError> {
        let dir_name = config.dir.display().to_string();
        let io_err = |source: io::Error| OpenError::Io {
            dir: dir_name.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.dir.join("lock"))
            .map_err(io_err)?;
        // A process that just exited may take a moment to let go.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(OpenError::Locked {
                        dir: dir_name.clone(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        let epoch = read_or_create_epoch(&config.dir).map_err(io_err)?;
        let cursors = cursor::load(&config.dir)?;
        let mut segments = BTreeMap::new();
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&config.dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let first = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()?;
                Some((first, p))
            })
            .collect();
        names.sort();
        let mut next_seq = 0u64;
        let mut total = 0u64;
        let mut recovered = seen::load(&config.dir).map_err(io_err)?;
        let seen_log = seen::SeenLog::open(&config.dir, config.fsync).map_err(io_err)?;
        for (first, path) in &names {
            let scan = scan_segment(path).map_err(io_err)?;
            let file_len = std::fs::metadata(path).map_err(io_err)?.len();
            if scan.valid_len < file_len {
                tracing::warn!(segment = %path.display(), valid_len = scan.valid_len, file_len, "truncating torn spool tail");
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(scan.valid_len))
                    .map_err(io_err)?;
            }
            if scan.corrupt > 0 {
                tracing::error!(segment = %path.display(), records = scan.corrupt, "corrupt spool records found; they are skipped");
            }
            next_seq = match scan.records.last() {
                Some((seq, _)) => seq + 1,
                None => next_seq.max(*first),
            };
            total += scan.valid_len;
            recovered.extend_from_slice(&scan.hashes);
            segments.insert(
                *first,
                Segment {
                    bytes: scan.valid_len,
                    records: scan.records,
                },
            );
        }
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            fsync: config.fsync,
            budget: if config.tracker_budget == 0 {
                u64::MAX
            } else {
                config.tracker_budget
            },
            segments: Mutex::new(segments),
            bytes: AtomicU64::new(total),
            cursors: Mutex::new(CursorState {
                file: cursors,
                active: HashSet::new(),
            }),
            backlog: Mutex::default(),
            _lock: lock,
            dedupe_window_ms: config.dedupe_window_ms,
            dedupe_max: config.dedupe_max,
            recovered: Mutex::new(recovered),
            seen: Mutex::new(seen_log),
        });
        let (head_tx, head) = watch::channel(next_seq);
        let (tx, rx) = mpsc::channel::<Append>(1024);
        let writer = Writer::new(shared.clone(), &config, next_seq).map_err(io_err)?;
        let spool = Spool {
            shared,
            tx,
            head,
            max_bytes: config.max_bytes,
            epoch: epoch.into(),
        };
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx, head_tx))
            .map_err(io_err)?;
        Ok(spool)
    }

    /// Appends one record of `entries` traces, with its batch's de-duplication
    /// key, and waits until it is on disk. Returns its sequence number.
    pub async fn append(
        &self,
        payload: Vec<u8>,
        entries: u32,
        key: Option<u64>,
        received_ms: i64,
    ) -> Result<u64, AppendError> {
        if payload.len() > MAX_RECORD {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let used = self.bytes();
        if used + payload.len() as u64 > self.max_bytes {
            return Err(AppendError::Full {
                used,
                max: self.max_bytes,
            });
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append {
                payload,
                entries,
                key,
                received_ms,
                done,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        wait.await.map_err(|_| AppendError::Closed)?
    }

    /// The next sequence number to be written; every record below it is durable.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Watches the head.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Bytes held by the segments.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Random id of this spool, so object keys of a new spool never collide with
    /// those of an earlier one on the same writer.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A reader starting at `from`.
    pub fn reader(&self, from: Position) -> Reader {
        Reader {
            spool: self.clone(),
            next: from.seq,
            file: None,
            corrupt: 0,
        }
    }

    /// The window keys and receive times of events spooled before this start
    /// (still in segments, or in the seen log); taken once.
    pub fn take_recovered_hashes(&self) -> Vec<(u64, i64)> {
        std::mem::take(&mut *lock(&self.shared.recovered))
    }

    /// The persisted delivery state of `tracker`, if it has one.
    pub fn cursor(&self, tracker: &str) -> Option<TrackerCursor> {
        lock(&self.shared.cursors).file.positions.get(tracker).cloned()
    }

    /// Where `tracker` must be at least: its persisted position (which moves on
    /// its own when the tracker drops its oldest segments).
    pub fn floor(&self, tracker: &str) -> Option<Position> {
        lock(&self.shared.cursors)
            .file
            .positions
            .get(tracker)
            .map(|c| c.pos)
    }

    /// Marks `tracker` active and returns its state: the persisted one, or the
    /// head for a tracker new to this spool (it receives what arrives from now on).
    pub fn activate(&self, tracker: &str) -> io::Result<TrackerCursor> {
        let head = Position {
            seq: self.head(),
            idx: 0,
        };
        let mut c = lock(&self.shared.cursors);
        c.active.insert(tracker.to_string());
        let start = c
            .file
            .positions
            .entry(tracker.to_string())
            .or_insert_with(|| TrackerCursor::at(head))
            .clone();
        cursor::save(&self.shared.dir, &c.file, self.shared.fsync)?;
        Ok(start)
    }

    /// Forgets `tracker` (deleted or disabled); it no longer holds segments back.
    pub fn deactivate(&self, tracker: &str) -> io::Result<()> {
        let mut c = lock(&self.shared.cursors);
        c.active.remove(tracker);
        c.file.positions.remove(tracker);
        cursor::save(&self.shared.dir, &c.file, self.shared.fsync)?;
        drop(c);
        lock(&self.shared.backlog).remove(tracker);
        self.collect_garbage()
    }

    /// Persists `tracker`'s delivery state, then deletes segments no active
    /// tracker needs. Returns the state as stored: its position never goes back
    /// behind segments dropped for the tracker meanwhile. A tracker deactivated
    /// meanwhile (a file still in flight when it was disabled or deleted) gets no
    /// cursor back: when enabled again it starts at the head, like a new one.
    pub fn commit(&self, tracker: &str, state: &TrackerCursor) -> io::Result<TrackerCursor> {
        let stored = {
            let mut c = lock(&self.shared.cursors);
            if !c.active.contains(tracker) {
                return Ok(state.clone());
            }
            let mut next = state.clone();
            if let Some(prev) = c.file.positions.get(tracker)
                && prev.pos > next.pos
            {
                next.pos = prev.pos;
                if next.pending.as_ref().is_some_and(|p| p.start < next.pos) {
                    next.pending = None;
                }
            }
            next.tidy();
            c.file.positions.insert(tracker.to_string(), next.clone());
            cursor::save(&self.shared.dir, &c.file, self.shared.fsync)?;
            next
        };
        self.collect_garbage()?;
        Ok(stored)
    }

    /// `tracker`'s standing against its backlog budget.
    pub fn backlog(&self, tracker: &str) -> Backlog {
        lock(&self.shared.backlog)
            .get(tracker)
            .copied()
            .unwrap_or_default()
    }

    /// Enforces every active tracker's backlog budget, then deletes every segment
    /// all of whose records are behind every active cursor. The newest segment is
    /// always kept: it carries the sequence forward.
    pub fn collect_garbage(&self) -> io::Result<()> {
        self.shared.collect_garbage(self.head())
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        lock(&self.shared.segments).len()
    }
}

impl Shared {
    fn collect_garbage(&self, head: u64) -> io::Result<()> {
        self.enforce_budgets()?;
        let min = {
            let c = lock(&self.cursors);
            c.active
                .iter()
                .filter_map(|t| c.file.positions.get(t))
                .map(|p| p.pos.seq)
                .min()
                .unwrap_or(head)
        };
        let mut segs = lock(&self.segments);
        let firsts: Vec<u64> = segs.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first <= min {
                self.remember_hashes(first)?;
                let size = segs.remove(&first).map(|s| s.bytes).unwrap_or(0);
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                match std::fs::remove_file(segment_path(&self.dir, first)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Before a segment is deleted, makes the seen log durable: the keys of its
    /// events stay known after a restart.
    fn remember_hashes(&self, _first: u64) -> io::Result<()> {
        if self.dedupe_max == 0 {
            return Ok(());
        }
        let min_ms = jiff::Timestamp::now().as_millisecond() - self.dedupe_window_ms;
        lock(&self.seen).sync(self.dedupe_max as u64, min_ms)
    }

    /// Moves the cursor of every tracker that is more than its budget behind past
    /// its oldest segments, counting what it never examined.
    fn enforce_budgets(&self) -> io::Result<()> {
        let budget = self.budget;
        if budget == u64::MAX {
            return Ok(());
        }
        let segs = lock(&self.segments).clone();
        let mut c = lock(&self.cursors);
        let mut changed = false;
        let active: Vec<String> = c.active.iter().cloned().collect();
        for t in active {
            let Some(state) = c.file.positions.get_mut(&t) else {
                continue;
            };
            let plan = plan_drop(&segs, state.pos, budget);
            let mut backlog = lock(&self.backlog);
            let b = backlog.entry(t.clone()).or_default();
            match plan {
                Some((to, dropped)) => {
                    tracing::warn!(tracker = %t, dropped, from = state.pos.seq, to = to.seq, budget, "tracker over its backlog budget: its oldest traces are dropped");
                    state.pos = to;
                    state.tidy();
                    if state.pending.as_ref().is_some_and(|p| p.start < to) {
                        state.pending = None;
                    }
                    b.dropped += dropped;
                    b.overflowing = true;
                    changed = true;
                }
                None => {
                    if b.overflowing && backlog_bytes(&segs, state.pos) <= budget / 2 {
                        tracing::info!(tracker = %t, "tracker back within its backlog budget");
                        b.overflowing = false;
                    }
                }
            }
        }
        if changed {
            cursor::save(&self.dir, &c.file, self.fsync)?;
        }
        Ok(())
    }
}

/// Bytes of the segments from the one holding `pos` to the head.
fn backlog_bytes(segs: &BTreeMap<u64, Segment>, pos: Position) -> u64 {
    let from = segs.range(..=pos.seq).next_back().map(|(f, _)| *f).unwrap_or(0);
    segs.range(from..).map(|(_, s)| s.bytes).sum()
}

/// Where a cursor at `pos` must move to bring its backlog within `budget`, and how
/// many entries that skips; `None` when it is within. Whole segments are dropped,
/// oldest first, never the newest.
fn plan_drop(segs: &BTreeMap<u64, Segment>, pos: Position, budget: u64) -> Option<(Position, u64)> {
    let mut backlog = backlog_bytes(segs, pos);
    if backlog <= budget {
        return None;
    }
    let from = segs.range(..=pos.seq).next_back().map(|(f, _)| *f).unwrap_or(0);
    let firsts: Vec<u64> = segs.range(from..).map(|(f, _)| *f).collect();
    let mut dropped = 0u64;
    let mut to = pos;
    for pair in firsts.windows(2) {
        if backlog <= budget {
            break;
        }
        let seg = &segs[&pair[0]];
        for (seq, n) in &seg.records {
            if *seq > pos.seq {
                dropped += u64::from(*n);
            } else if *seq == pos.seq {
                dropped += u64::from(n.saturating_sub(pos.idx));
            }
        }
        backlog -= seg.bytes;
        to = Position { seq: pair[1], idx: 0 };
    }
    (to > pos).then_some((to, dropped))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn read_or_create_epoch(dir: &Path) -> io::Result<String> {
    let path = dir.join("epoch");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = crc32fast::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(dir.as_os_str().as_encoded_bytes());
    let epoch = format!("{:08x}", h.finalize());
    let mut f = File::create(&path)?;
    f.write_all(epoch.as_bytes())?;
    f.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(epoch)
}

#[cfg(test)]
mod tests;
