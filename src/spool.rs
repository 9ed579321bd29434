//! The spool: a write-ahead log on local disk between the webhook and delivery.
//!
//! The webhook answers 200 only after its batch is appended here and fsynced, so a
//! crash after the answer loses nothing. Every tracker reads the spool from its own
//! cursor; a segment is deleted once every active tracker has delivered past it.
//! When the spool is full, appends fail fast and the webhook answers 503: the
//! apiserver retries, and memory stays bounded.
//!
//! Layout: `{dir}/epoch` (random id of this spool, part of object keys),
//! `{dir}/cursors.json`, and segments `{dir}/{first_seq:020}.seg` holding records
//! `magic u32 | len u32 | crc32 u32 | seq u64 | received_ms i64 | payload`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

const MAGIC: u32 = 0x4b54_524c;
const HEADER: usize = 28;
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
    received_ms: i64,
    done: oneshot::Sender<Result<u64, AppendError>>,
}

struct Shared {
    dir: PathBuf,
    /// first seq → segment size in bytes.
    segments: Mutex<BTreeMap<u64, u64>>,
    bytes: AtomicU64,
    cursors: Mutex<Cursors>,
}

#[derive(Default, Serialize, Deserialize)]
struct Cursors {
    positions: HashMap<String, Position>,
    #[serde(skip)]
    active: HashSet<String>,
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
    pub fn open(config: Config) -> io::Result<Spool> {
        std::fs::create_dir_all(&config.dir)?;
        let epoch = read_or_create_epoch(&config.dir)?;
        let mut segments = BTreeMap::new();
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&config.dir)?
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
        for (first, path) in &names {
            let (valid_len, last) = scan_segment(path)?;
            let file_len = std::fs::metadata(path)?.len();
            if valid_len < file_len {
                tracing::warn!(segment = %path.display(), valid_len, file_len, "truncating torn spool tail");
                OpenOptions::new().write(true).open(path)?.set_len(valid_len)?;
            }
            next_seq = match last {
                Some(seq) => seq + 1,
                None => next_seq.max(*first),
            };
            segments.insert(*first, valid_len);
            total += valid_len;
        }
        let cursors = match std::fs::read(config.dir.join("cursors.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => Cursors::default(),
        };
        let shared = Arc::new(Shared {
            dir: config.dir.clone(),
            segments: Mutex::new(segments),
            bytes: AtomicU64::new(total),
            cursors: Mutex::new(cursors),
        });
        let (head_tx, head) = watch::channel(next_seq);
        let (tx, rx) = mpsc::channel::<Append>(1024);
        let writer = Writer::new(shared.clone(), &config, next_seq)?;
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx, head_tx))?;
        Ok(Spool {
            shared,
            tx,
            head,
            max_bytes: config.max_bytes,
            epoch: epoch.into(),
        })
    }

    /// Appends one record and waits until it is on disk. Returns its sequence number.
    pub async fn append(&self, payload: Vec<u8>, received_ms: i64) -> Result<u64, AppendError> {
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

    /// A reader starting at `from`.
    pub fn reader(&self, from: Position) -> Reader {
        Reader {
            spool: self.clone(),
            next: from.seq,
            file: None,
        }
    }

    /// The persisted cursor of `tracker`, if it has one.
    pub fn cursor(&self, tracker: &str) -> Option<Position> {
        lock(&self.shared.cursors).positions.get(tracker).copied()
    }

    /// Marks `tracker` active and returns where it should start: its cursor, or
    /// the head for a tracker new to this spool (it receives what arrives from now on).
    pub fn activate(&self, tracker: &str) -> io::Result<Position> {
        let head = Position {
            seq: self.head(),
            idx: 0,
        };
        let mut c = lock(&self.shared.cursors);
        c.active.insert(tracker.to_string());
        let start = *c.positions.entry(tracker.to_string()).or_insert(head);
        save_cursors(&self.shared.dir, &c)?;
        Ok(start)
    }

    /// Forgets `tracker` (deleted or disabled); it no longer holds segments back.
    pub fn deactivate(&self, tracker: &str) -> io::Result<()> {
        let mut c = lock(&self.shared.cursors);
        c.active.remove(tracker);
        c.positions.remove(tracker);
        save_cursors(&self.shared.dir, &c)?;
        drop(c);
        self.collect_garbage()
    }

    /// Persists that `tracker` has delivered everything before `pos`, then deletes
    /// segments no active tracker needs. A tracker deactivated meanwhile (a file
    /// still in flight when it was disabled or deleted) gets no cursor back: when
    /// enabled again it starts at the head, like a new one.
    pub fn commit(&self, tracker: &str, pos: Position) -> io::Result<()> {
        {
            let mut c = lock(&self.shared.cursors);
            if !c.active.contains(tracker) {
                return Ok(());
            }
            c.positions.insert(tracker.to_string(), pos);
            save_cursors(&self.shared.dir, &c)?;
        }
        self.collect_garbage()
    }

    /// Deletes every segment all of whose records are behind every active cursor.
    /// The newest segment is always kept: it carries the sequence forward.
    pub fn collect_garbage(&self) -> io::Result<()> {
        let min = {
            let c = lock(&self.shared.cursors);
            c.active
                .iter()
                .filter_map(|t| c.positions.get(t))
                .map(|p| p.seq)
                .min()
                .unwrap_or_else(|| self.head())
        };
        let mut segs = lock(&self.shared.segments);
        let firsts: Vec<u64> = segs.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first <= min {
                let size = segs.remove(&first).unwrap_or(0);
                self.shared.bytes.fetch_sub(size, Ordering::Relaxed);
                match std::fs::remove_file(segment_path(&self.shared.dir, first)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        lock(&self.shared.segments).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn save_cursors(dir: &Path, c: &Cursors) -> io::Result<()> {
    let tmp = dir.join("cursors.json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(c).map_err(io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join("cursors.json"))
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
    Ok(epoch)
}

fn checksum(seq: u64, received_ms: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&received_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads a record header; `None` at a clean end of file.
fn read_header(f: &mut File) -> io::Result<Option<(u32, u32, u64, i64)>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = f.read(&mut h[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "torn record header"))
            };
        }
        got += n;
    }
    let magic = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
    if magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad record magic"));
    }
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
    let ms = i64::from_le_bytes(h[20..28].try_into().unwrap_or_default());
    Ok(Some((len, crc, seq, ms)))
}

/// Validates a segment: returns the length of its valid prefix and its last seq.
fn scan_segment(path: &Path) -> io::Result<(u64, Option<u64>)> {
    let mut f = File::open(path)?;
    let mut valid = 0u64;
    let mut last = None;
    let mut payload = Vec::new();
    loop {
        let header = match read_header(&mut f) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::InvalidData => {
                break;
            }
            Err(e) => return Err(e),
        };
        let (len, crc, seq, ms) = header;
        payload.resize(len as usize, 0);
        if f.read_exact(&mut payload).is_err() || checksum(seq, ms, &payload) != crc {
            break;
        }
        valid += (HEADER + len as usize) as u64;
        last = Some(seq);
    }
    Ok((valid, last))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    first: u64,
    size: u64,
    next_seq: u64,
    segment_bytes: u64,
    fsync: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>, config: &Config, next_seq: u64) -> io::Result<Writer> {
        let last = lock(&shared.segments).iter().next_back().map(|(f, s)| (*f, *s));
        let (first, size) = match last {
            Some(v) => v,
            None => {
                lock(&shared.segments).insert(next_seq, 0);
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
        })
    }

    /// Group commit: takes every waiting append, writes them, syncs once, answers all.
    fn run(mut self, mut rx: mpsc::Receiver<Append>, head: watch::Sender<u64>) {
        let mut group = Vec::new();
        let mut buf = Vec::new();
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
        }
    }

    fn write_group(&mut self, group: &[Append], buf: &mut Vec<u8>) -> io::Result<u64> {
        if self.size >= self.segment_bytes {
            self.roll()?;
        }
        let first_seq = self.next_seq;
        buf.clear();
        for (i, a) in group.iter().enumerate() {
            let seq = first_seq + i as u64;
            buf.extend_from_slice(&MAGIC.to_le_bytes());
            buf.extend_from_slice(&(a.payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&checksum(seq, a.received_ms, &a.payload).to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&a.received_ms.to_le_bytes());
            buf.extend_from_slice(&a.payload);
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
        lock(&self.shared.segments).insert(self.first, self.size);
        self.shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
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
        lock(&self.shared.segments).insert(first, 0);
        Ok(())
    }
}

/// Reads records in order. Blocking I/O: use it from a blocking thread.
pub struct Reader {
    spool: Spool,
    next: u64,
    /// (first seq of the open segment, file positioned at record `next`).
    file: Option<(u64, File)>,
}

impl Reader {
    /// The next record, or `None` when every durable record has been read.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.next >= self.spool.head() {
            return Ok(None);
        }
        loop {
            if self.file.is_none() {
                self.open_at(self.next)?;
            }
            let Some((_, f)) = self.file.as_mut() else {
                return Ok(None);
            };
            match read_header(f)? {
                Some((len, crc, seq, ms)) => {
                    let mut payload = vec![0u8; len as usize];
                    f.read_exact(&mut payload)?;
                    if checksum(seq, ms, &payload) != crc {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("record {seq}: bad checksum"),
                        ));
                    }
                    if seq < self.next {
                        continue;
                    }
                    self.next = seq + 1;
                    return Ok(Some(Record {
                        seq,
                        received_ms: ms,
                        payload,
                    }));
                }
                None => {
                    // End of this segment: move on to the one holding `next`.
                    let current = self.file.as_ref().map(|(first, _)| *first).unwrap_or(0);
                    let has_later = lock(&self.spool.shared.segments)
                        .range(current + 1..)
                        .next()
                        .is_some();
                    if !has_later {
                        return Ok(None);
                    }
                    self.file = None;
                }
            }
        }
    }

    /// Opens the segment that holds `seq` and skips to it.
    fn open_at(&mut self, seq: u64) -> io::Result<()> {
        let first = lock(&self.spool.shared.segments)
            .range(..=seq)
            .next_back()
            .map(|(f, _)| *f)
            .or_else(|| lock(&self.spool.shared.segments).keys().next().copied());
        let Some(first) = first else {
            return Ok(());
        };
        let mut f = File::open(segment_path(&self.spool.shared.dir, first))?;
        // Skip records before `seq` by their headers only.
        loop {
            let pos = f.stream_position()?;
            match read_header(&mut f)? {
                Some((len, _, s, _)) if s < seq => {
                    f.seek(SeekFrom::Current(len as i64))?;
                }
                Some(_) => {
                    f.seek(SeekFrom::Start(pos))?;
                    break;
                }
                None => break,
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

/// The payload of a spool record: the traces of one webhook batch, each as its
/// routing metadata (JSON) and its trace line (JSON without the `tracker` field).
pub mod entries {
    /// Appends one entry to a payload.
    pub fn push(payload: &mut Vec<u8>, meta: &[u8], line: &[u8]) {
        payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        payload.extend_from_slice(meta);
        payload.extend_from_slice(&(line.len() as u32).to_le_bytes());
        payload.extend_from_slice(line);
    }

    /// Iterates `(meta, line)` pairs of a payload.
    pub fn iter(payload: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = payload;
        std::iter::from_fn(move || {
            let meta = take(&mut rest)?;
            let line = take(&mut rest)?;
            Some((meta, line))
        })
    }

    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        if rest.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        if rest.len() < 4 + len {
            return None;
        }
        let (item, tail) = rest[4..].split_at(len);
        *rest = tail;
        Some(item)
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
        }
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
        for i in 0..10u8 {
            let seq = spool.append(vec![i; 50], 1000 + i as i64).await.unwrap();
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
                spool.append(vec![i; 10], 0).await.unwrap();
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
        assert_eq!(spool.append(vec![9; 10], 0).await.unwrap(), 3);
        let all = read_all(&spool, 0);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn full_spool_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(Config {
            max_bytes: 100,
            ..config(dir.path())
        })
        .unwrap();
        spool.append(vec![0; 60], 0).await.unwrap();
        let err = spool.append(vec![0; 60], 0).await.unwrap_err();
        assert!(matches!(err, AppendError::Full { .. }), "{err}");
        assert_eq!(spool.head(), 1, "nothing written");
    }

    #[tokio::test]
    async fn segments_are_deleted_only_after_every_tracker_passed_them() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(config(dir.path())).unwrap();
        assert_eq!(spool.activate("a").unwrap(), Position { seq: 0, idx: 0 });
        assert_eq!(spool.activate("b").unwrap(), Position { seq: 0, idx: 0 });
        for _ in 0..10 {
            spool.append(vec![0; 50], 0).await.unwrap();
        }
        let before = spool.segments();
        spool.commit("a", Position { seq: 10, idx: 0 }).unwrap();
        assert_eq!(spool.segments(), before, "b still needs them");
        spool.commit("b", Position { seq: 6, idx: 0 }).unwrap();
        assert!(spool.segments() < before);
        assert_eq!(read_all(&spool, 6).len(), 4, "what b needs is still there");
        spool.deactivate("b").unwrap();
        assert_eq!(spool.segments(), 1, "only the newest segment stays");
        // A file that was in flight when b was disabled does not bring its cursor back.
        spool.commit("b", Position { seq: 8, idx: 0 }).unwrap();
        assert_eq!(spool.cursor("b"), None);
        // Cursors survive a restart.
        drop(spool);
        let spool = Spool::open(config(dir.path())).unwrap();
        assert_eq!(spool.cursor("a"), Some(Position { seq: 10, idx: 0 }));
        assert_eq!(spool.cursor("b"), None);
        assert_eq!(spool.head(), 10);
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
