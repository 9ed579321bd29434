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
pub mod record;
mod seen;

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

/// What a scan of a segment found.
struct Scan {
    /// Length of the prefix that ends with a valid record.
    valid_len: u64,
    records: Vec<(u64, u32)>,
    /// Damaged records between valid ones (skipped by readers).
    corrupt: u64,
    /// Window keys of the events, with their receive times.
    hashes: Vec<(u64, i64)>,
}

/// Reads the record starting at `offset` of `bytes`, if it is whole and valid.
fn decode_at(bytes: &[u8], offset: usize) -> Option<(record::Header, &[u8])> {
    let h = bytes.get(offset..offset + HEADER)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if u32_at(0) != MAGIC {
        return None;
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&h[12..20]);
    let seq = u64::from_le_bytes(b8);
    b8.copy_from_slice(&h[20..28]);
    let received_ms = i64::from_le_bytes(b8);
    let len = u32_at(4);
    let payload = bytes.get(offset + HEADER..offset + HEADER + len as usize)?;
    (checksum(seq, received_ms, payload) == u32_at(8)).then_some((
        record::Header {
            len,
            crc: u32_at(8),
            seq,
            received_ms,
        },
        payload,
    ))
}

/// The next valid record at or after `from`: resynchronises past damage.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while let Some(i) = memchr::memmem::find(&bytes[at..], &magic) {
        if decode_at(bytes, at + i).is_some() {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

/// Validates a segment: the records in it, the length of its valid prefix, and
/// how many damaged records lie between valid ones.
fn scan_segment(path: &Path) -> io::Result<Scan> {
    let bytes = std::fs::read(path)?;
    let mut scan = Scan {
        valid_len: 0,
        records: Vec::new(),
        corrupt: 0,
        hashes: Vec::new(),
    };
    let mut at = 0usize;
    while at < bytes.len() {
        match decode_at(&bytes, at) {
            Some((h, payload)) => {
                let mut n = 0u32;
                for (meta, _) in entries::iter(payload) {
                    n += 1;
                    if let Some(key) = crate::trace::meta_key(meta) {
                        scan.hashes.push((key, h.received_ms));
                    }
                }
                scan.records.push((h.seq, n));
                at += HEADER + h.len as usize;
                scan.valid_len = at as u64;
            }
            None => match resync(&bytes, at + 1) {
                Some(next) => {
                    scan.corrupt += 1;
                    at = next;
                }
                // Nothing valid after it: a torn tail.
                None => break,
            },
        }
    }
    Ok(scan)
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    first: u64,
    size: u64,
    next_seq: u64,
    segment_bytes: u64,
    fsync: bool,
    dedupe: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>, config: &Config, next_seq: u64) -> io::Result<Writer> {
        let last = lock(&shared.segments)
            .iter()
            .next_back()
            .map(|(f, s)| (*f, s.bytes));
        let (first, size) = match last {
            Some(v) => v,
            None => {
                lock(&shared.segments).insert(next_seq, Segment::default());
                (next_seq, 0)
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&config.dir, first))?;
        if config.fsync {
            File::open(&config.dir)?.sync_all()?;
        }
        Ok(Writer {
            shared,
            file,
            first,
            size,
            next_seq,
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            dedupe: config.dedupe_max > 0,
        })
    }

    /// Group commit: takes every waiting append, writes them, syncs once, answers
    /// all; then enforces the trackers' budgets so a stuck tracker never fills
    /// the spool for everyone.
    fn run(mut self, mut rx: mpsc::Receiver<Append>, head: watch::Sender<u64>) {
        let mut group = Vec::new();
        let mut buf = Vec::new();
        let mut last_gc = std::time::Instant::now();
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < 256 {
                match rx.try_recv() {
                    Ok(a) => group.push(a),
                    Err(_) => break,
                }
            }
            let result = self.write_group(&group, &mut buf);
            match result {
                Ok(first_seq) => {
                    let _ = head.send(self.next_seq);
                    for (i, a) in group.drain(..).enumerate() {
                        let _ = a.done.send(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool write failed");
                    for a in group.drain(..) {
                        let _ = a
                            .done
                            .send(Err(AppendError::Io(io::Error::new(e.kind(), e.to_string()))));
                    }
                }
            }
            if last_gc.elapsed() >= std::time::Duration::from_millis(100) {
                last_gc = std::time::Instant::now();
                if let Err(e) = self.shared.collect_garbage(self.next_seq) {
                    tracing::warn!(error = %e, "spool garbage collection failed");
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Append], buf: &mut Vec<u8>) -> io::Result<u64> {
        if self.size >= self.segment_bytes {
            self.roll()?;
        }
        let first_seq = self.next_seq;
        buf.clear();
        for (i, a) in group.iter().enumerate() {
            record::encode(buf, first_seq + i as u64, a.received_ms, &a.payload);
        }
        if let Err(e) = self
            .file
            .write_all(buf)
            .and_then(|_| if self.fsync { self.file.sync_data() } else { Ok(()) })
        {
            // Cut off whatever part of the group reached the file: those records
            // were not acknowledged and their sequence numbers will be reused.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.next_seq += group.len() as u64;
        {
            let mut segs = lock(&self.shared.segments);
            let seg = segs.entry(self.first).or_default();
            seg.bytes = self.size;
            seg.records.extend(
                group
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (first_seq + i as u64, a.entries)),
            );
        }
        self.shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if self.dedupe {
            // One entry per event (the window counts events).
            let keys: Vec<(u64, i64)> = group
                .iter()
                .filter_map(|a| a.key.map(|k| (k, a.received_ms, a.entries)))
                .flat_map(|(k, ms, n)| std::iter::repeat_n((k, ms), n as usize))
                .collect();
            // Synced before any segment is deleted (see `seen`); a failure here
            // only weakens de-duplication after a restart.
            if let Err(e) = lock(&self.shared.seen).append(&keys) {
                tracing::warn!(error = %e, "appending to the seen log failed");
            }
        }
        Ok(first_seq)
    }

    fn roll(&mut self) -> io::Result<()> {
        let first = self.next_seq;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.shared.dir, first))?;
        if self.fsync {
            File::open(&self.shared.dir)?.sync_all()?;
        }
        self.first = first;
        self.size = 0;
        lock(&self.shared.segments).insert(first, Segment::default());
        Ok(())
    }
}

/// Reads records in order. Blocking I/O: use it from a blocking thread.
pub struct Reader {
    spool: Spool,
    next: u64,
    /// (first seq of the open segment, file positioned at record `next`).
    file: Option<(u64, File)>,
    /// Damaged records skipped so far.
    pub corrupt: u64,
}

impl Reader {
    /// The next record, or `None` when every durable record has been read. A
    /// damaged record is skipped and counted in [`Reader::corrupt`]: it never
    /// stalls delivery.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            if self.next >= self.spool.head() {
                return Ok(None);
            }
            if self.file.is_none() {
                self.open_at(self.next)?;
            }
            let Some((first, f)) = self.file.as_mut() else {
                return Ok(None);
            };
            let first = *first;
            let at = f.stream_position()?;
            let header = match read_header(f) {
                Ok(h) => h,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    self.skip_damage(first, at)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match header {
                Some(h) => {
                    let mut payload = vec![0u8; h.len as usize];
                    if f.read_exact(&mut payload).is_err()
                        || checksum(h.seq, h.received_ms, &payload) != h.crc
                    {
                        self.skip_damage(first, at)?;
                        continue;
                    }
                    if h.seq < self.next {
                        continue;
                    }
                    self.next = h.seq + 1;
                    return Ok(Some(Record {
                        seq: h.seq,
                        received_ms: h.received_ms,
                        payload,
                    }));
                }
                None => {
                    // End of this segment: move on to the one holding `next`.
                    let later = lock(&self.spool.shared.segments)
                        .range(first + 1..)
                        .next()
                        .map(|(f, _)| *f);
                    match later {
                        Some(l) => {
                            self.next = self.next.max(l);
                            self.file = None;
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }

    /// Counts the damaged record at `at` and moves to the next valid one.
    fn skip_damage(&mut self, first: u64, at: u64) -> io::Result<()> {
        self.corrupt += 1;
        tracing::error!(segment = first, offset = at, "damaged spool record skipped");
        let bytes = std::fs::read(segment_path(&self.spool.shared.dir, first))?;
        let next = resync(&bytes, at as usize + 1);
        match (next, self.file.as_mut()) {
            (Some(n), Some((_, f))) => {
                f.seek(SeekFrom::Start(n as u64))?;
            }
            _ => {
                // Nothing valid after it in this segment: go on with the next one.
                let later = lock(&self.spool.shared.segments)
                    .range(first + 1..)
                    .next()
                    .map(|(f, _)| *f);
                match later {
                    Some(l) => self.next = self.next.max(l),
                    None => self.next = self.spool.head(),
                }
                self.file = None;
            }
        }
        Ok(())
    }

    /// Opens the segment that holds `seq` and skips to it.
    fn open_at(&mut self, seq: u64) -> io::Result<()> {
        let first = {
            let segs = lock(&self.spool.shared.segments);
            segs.range(..=seq)
                .next_back()
                .map(|(f, _)| *f)
                .or_else(|| segs.keys().next().copied())
        };
        let Some(first) = first else {
            return Ok(());
        };
        if first > seq {
            // What was asked for is gone (dropped over budget): start at what is left.
            self.next = first;
        }
        let mut f = File::open(segment_path(&self.spool.shared.dir, first))?;
        // Skip records before `seq` by their headers only.
        loop {
            let pos = f.stream_position()?;
            match read_header(&mut f) {
                Ok(Some(h)) if h.seq < self.next => {
                    f.seek(SeekFrom::Current(h.len as i64))?;
                }
                Ok(_) | Err(_) => {
                    f.seek(SeekFrom::Start(pos))?;
                    break;
                }
            }
        }
        self.file = Some((first, f));
        Ok(())
    }

    /// The sequence number of the next record to be read.
    pub fn next_seq(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            segment_bytes: 200,
            fsync: true,
            tracker_budget: 0,
            dedupe_window_ms: 900_000,
            dedupe_max: 1000,
        }
    }

    fn at(seq: u64) -> TrackerCursor {
        TrackerCursor::at(Position { seq, idx: 0 })
    }

    fn read_all(spool: &Spool, from: u64) -> Vec<(u64, Vec<u8>)> {
        let mut r = spool.reader(Position { seq: from, idx: 0 });
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push((rec.seq, rec.payload));
        }
        out
    }

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(config(dir.path())).unwrap();
        // A tracker at 0 holds every segment: without one, the writer's periodic
        // garbage collection may delete them on a slow disk before they are read.
        assert_eq!(spool.activate("reader").unwrap(), at(0));
        for i in 0..10u8 {
            let seq = spool.append(vec![i; 50], 1, None, 1000 + i as i64).await.unwrap();
            assert_eq!(seq, i as u64);
        }
        assert_eq!(spool.head(), 10);
        assert!(spool.segments() > 2, "segments rolled: {}", spool.segments());
        let all = read_all(&spool, 0);
        assert_eq!(all.len(), 10);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, (s, p))| *s == i as u64 && p == &vec![i as u8; 50])
        );
        let tail = read_all(&spool, 7);
        assert_eq!(tail.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 8, 9]);
    }

    #[tokio::test]
    async fn reopen_continues_the_sequence_and_repairs_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(Config {
                segment_bytes: 1 << 20,
                ..config(dir.path())
            })
            .unwrap();
            for i in 0..3u8 {
                spool.append(vec![i; 10], 1, None, 0).await.unwrap();
            }
        }
        // A crash mid-write leaves half a record behind.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&MAGIC.to_le_bytes()).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let spool = Spool::open(config(dir.path())).unwrap();
        assert_eq!(spool.head(), 3);
        assert_eq!(spool.append(vec![9; 10], 1, None, 0).await.unwrap(), 3);
        let all = read_all(&spool, 0);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_damaged_record_is_skipped_and_counted_not_a_stall() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            segment_bytes: 1 << 20,
            ..config(dir.path())
        };
        {
            let spool = Spool::open(cfg.clone()).unwrap();
            for i in 0..5u8 {
                spool.append(vec![i; 40], 1, None, 0).await.unwrap();
            }
        }
        // Flip a payload byte of record 2 (bit rot).
        let seg = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        let rec = HEADER + 40;
        bytes[2 * rec + HEADER + 5] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let spool = Spool::open(cfg).unwrap();
        assert_eq!(spool.head(), 5, "records after the damage are kept");
        let mut r = spool.reader(Position::default());
        let mut seqs = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            seqs.push(rec.seq);
        }
        assert_eq!(seqs, [0, 1, 3, 4]);
        assert_eq!(r.corrupt, 1);
        // A damaged header too: the reader resynchronises on the next record.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[3 * rec] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let mut r = spool.reader(Position::default());
        let mut seqs = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            seqs.push(rec.seq);
        }
        assert_eq!(seqs, [0, 1, 4]);
        assert_eq!(
            r.corrupt, 1,
            "one damaged stretch (records 2 and 3) skipped at once"
        );
    }

    #[tokio::test]
    async fn full_spool_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(Config {
            max_bytes: 100,
            ..config(dir.path())
        })
        .unwrap();
        spool.append(vec![0; 60], 1, None, 0).await.unwrap();
        let err = spool.append(vec![0; 60], 1, None, 0).await.unwrap_err();
        assert!(matches!(err, AppendError::Full { .. }), "{err}");
        assert_eq!(spool.head(), 1, "nothing written");
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(config(dir.path())).unwrap();
        let err = Spool::open(config(dir.path())).err().expect("refused");
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(spool);
    }

    #[tokio::test]
    async fn an_unreadable_cursor_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cursors.json"), b"\0\0garbage").unwrap();
        let err = Spool::open(config(dir.path())).err().expect("refused");
        assert!(matches!(err, OpenError::Cursor(_)), "{err}");
    }

    #[tokio::test]
    async fn segments_are_deleted_only_after_every_tracker_passed_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(config(dir.path())).unwrap();
        assert_eq!(spool.activate("a").unwrap(), at(0));
        assert_eq!(spool.activate("b").unwrap(), at(0));
        for _ in 0..10 {
            spool.append(vec![0; 50], 1, None, 0).await.unwrap();
        }
        let before = spool.segments();
        spool.commit("a", &at(10)).unwrap();
        assert_eq!(spool.segments(), before, "b still needs them");
        spool.commit("b", &at(6)).unwrap();
        assert!(spool.segments() < before);
        assert_eq!(read_all(&spool, 6).len(), 4, "what b needs is still there");
        spool.deactivate("b").unwrap();
        assert_eq!(spool.segments(), 1, "only the newest segment stays");
        // A file that was in flight when b was disabled does not bring its cursor back.
        spool.commit("b", &at(8)).unwrap();
        assert_eq!(spool.cursor("b"), None);
        // Cursors survive a restart.
        drop(spool);
        let spool = Spool::open(config(dir.path())).unwrap();
        assert_eq!(spool.cursor("a"), Some(at(10)));
        assert_eq!(spool.cursor("b"), None);
        assert_eq!(spool.head(), 10);
    }

    #[tokio::test]
    async fn hashes_of_spooled_and_deleted_segments_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let now = jiff::Timestamp::now().as_millisecond();
        let payload = |h: u128| {
            let mut p = Vec::new();
            let meta = format!(r#"{{"verb":"get","key":{}}}"#, (h & 0xff) as u64);
            entries::push(&mut p, meta.as_bytes(), b"{}");
            p
        };
        {
            let spool = Spool::open(config(dir.path())).unwrap();
            spool.activate("a").unwrap();
            for n in 1..=6u128 {
                let h = (n << 64) | n;
                spool.append(payload(h), 1, Some(n as u64), now).await.unwrap();
            }
            // Delivered: segments go, their hashes stay in the seen log.
            spool.commit("a", &at(6)).unwrap();
            assert_eq!(spool.segments(), 1);
        }
        let spool = Spool::open(config(dir.path())).unwrap();
        let mut got: Vec<u64> = spool
            .take_recovered_hashes()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        got.sort();
        // Keys of the live segment come from it and from the seen log.
        got.dedup();
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        assert!(spool.take_recovered_hashes().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn a_tracker_over_its_budget_drops_its_oldest_and_holds_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of ~2 records (78 bytes each), budget of ~3 segments.
        let spool = Spool::open(Config {
            segment_bytes: 150,
            tracker_budget: 500,
            ..config(dir.path())
        })
        .unwrap();
        spool.activate("healthy").unwrap();
        spool.activate("stuck").unwrap();
        for i in 0..20u64 {
            spool.append(vec![0; 50], 3, None, 0).await.unwrap();
            spool.commit("healthy", &at(i + 1)).unwrap();
        }
        spool.collect_garbage().unwrap();
        let b = spool.backlog("stuck");
        assert!(b.overflowing, "{b:?}");
        let floor = spool.floor("stuck").unwrap();
        assert!(floor.seq > 0, "stuck tracker's cursor moved on: {floor:?}");
        assert_eq!(b.dropped, floor.seq * 3, "every skipped entry counted");
        assert!(
            spool.bytes() <= 500 + 150,
            "the spool is not held: {}",
            spool.bytes()
        );
        assert_eq!(spool.backlog("healthy"), Backlog::default());
        // The stuck tracker cannot move its cursor back behind what was dropped.
        let stored = spool.commit("stuck", &at(0)).unwrap();
        assert_eq!(stored.pos, floor);
        // Caught up: no longer overflowing.
        spool.commit("stuck", &at(20)).unwrap();
        assert!(!spool.backlog("stuck").overflowing);
    }

    #[test]
    fn entries_round_trip() {
        let mut p = Vec::new();
        entries::push(&mut p, b"{\"m\":1}", b"{\"l\":1}");
        entries::push(&mut p, b"", b"x");
        let got: Vec<_> = entries::iter(&p).collect();
        assert_eq!(
            got,
            vec![(&b"{\"m\":1}"[..], &b"{\"l\":1}"[..]), (&b""[..], &b"x"[..])]
        );
        assert_eq!(
            entries::iter(&p[..5]).count(),
            0,
            "a cut payload yields nothing partial"
        );
    }
}
