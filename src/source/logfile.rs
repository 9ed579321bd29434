//! The audit log file source: follows the JSON-lines file the kube-apiserver
//! writes with `--audit-log-path` (one `audit.k8s.io/v1` Event per line) into the
//! spool, with the same redaction, routing and delivery as webhook batches.
//!
//! The position (file identity: device and inode, and byte offset) lives in
//! `auditlog-position.json` in the spool directory. Before a chunk of lines is
//! stored, its end is written there as pending; after the spool has it
//! (fsynced) the offset moves to that end. A crash in between re-reads exactly
//! the same lines into exactly the same batch, which the de-duplication window
//! (restored from the spool at start) recognizes: no line is stored twice or
//! skipped. It follows the apiserver's own rotation (the file renamed to a
//! timestamped backup, a new one created: the rest of the old file is read
//! first, then any newer backups, then the new file), copy-truncate (the file
//! shrinks: read again from its start), a partial last line (left until its
//! newline arrives) and a file that does not exist yet.

use super::dedupe;
use super::intake::{Intake, IntakeError, Stored};
use crate::spool::AppendError;
use crate::trace::Source;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Most bytes of lines stored as one batch.
const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// The position file, in the spool directory.
pub const POSITION_FILE: &str = "auditlog-position.json";

/// Where the follower is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    /// The end of a chunk being stored (re-read exactly after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_end: Option<u64>,
    /// Hash of the file's first line: when it changes, the file was truncated
    /// and written again (copy-truncate), even if it is as long as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// What the follower needs.
pub struct Follower {
    pub path: PathBuf,
    /// Where the lines go, and whether they are taken now.
    pub intake: Intake,
    /// How often the file is checked for new lines.
    pub poll: Duration,
}

/// Why the follower stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("audit log position file {path}: {source}")]
    Position {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn load(dir: &Path) -> Result<Option<Position>, FollowError> {
    let path = dir.join(POSITION_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| FollowError::Position {
                path: path.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FollowError::Position {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Atomic and durable: a synced temporary file renamed, then the directory synced.
fn save(dir: &Path, p: &Position) -> io::Result<()> {
    let tmp = dir.join(format!("{POSITION_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(p).map_err(io::Error::other)?)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(POSITION_FILE))?;
    File::open(dir)?.sync_all()
}

/// The backups the apiserver rotates to: `<stem>-<time>.<ext>` next to the file.
fn backups(path: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else {
        return Vec::new();
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&format!("{stem}-"))
            && (ext.is_empty() || name.ends_with(&format!(".{ext}")))
            && let Ok(m) = e.metadata()
            && m.is_file()
        {
            out.push((e.path(), m));
        }
    }
    out
}

fn mtime(m: &std::fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Turns complete lines into an `EventList` body. A line that is not a JSON
/// object is kept as a string item, which becomes a malformed-event trace.
pub fn event_list(lines: &[u8]) -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(lines.len() + 128);
    body.extend_from_slice(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":["#);
    let mut n = 0;
    for line in lines.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if n > 0 {
            body.push(b',');
        }
        n += 1;
        let readable = line.first() == Some(&b'{')
            && serde_json::from_slice::<&serde_json::value::RawValue>(line).is_ok();
        if readable {
            body.extend_from_slice(line);
        } else {
            // Its bytes are not quoted: an unreadable line may hold anything.
            let _ = serde_json::to_writer(
                &mut body,
                &format!("unreadable audit log line of {} bytes", line.len()),
            );
        }
    }
    body.extend_from_slice(b"]}");
    (body, n)
}

impl Follower {
    fn dir(&self) -> PathBuf {
        self.intake.spool().dir().to_path_buf()
    }

    /// Runs until the process stops ingesting.
    #[tracing::instrument(name = "auditlog", skip_all, fields(path = %self.path.display()))]
    pub async fn run(self) -> Result<(), FollowError> {
        let dir = self.dir();
        let mut pos = load(&dir)?;
        let mut file: Option<File> = None;
        let mut warned_missing = false;
        tracing::info!(position = ?pos, "following the audit log file");
        loop {
            if self.intake.lifecycle().is_draining() {
                return Ok(());
            }
            if !self.intake.lifecycle().accepting() {
                tokio::time::sleep(self.poll).await;
                continue;
            }
            // The file we are on: the one at our position's identity, wherever
            // it is now (the path, or a rotated backup).
            if file.is_none() {
                match self.open_at(&mut pos) {
                    Some(f) => {
                        warned_missing = false;
                        file = Some(f);
                    }
                    None => {
                        if !warned_missing {
                            tracing::info!("audit log file not there yet; waiting for it");
                            warned_missing = true;
                        }
                        tokio::time::sleep(self.poll).await;
                        continue;
                    }
                }
            }
            let (Some(f), Some(p)) = (file.as_mut(), pos.as_mut()) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let head_changed =
                p.offset > 0 && p.head.is_some() && first_line_hash(f).ok().flatten() != p.head;
            if len < p.offset || head_changed {
                tracing::warn!(
                    offset = p.offset,
                    len,
                    "audit log file truncated (copy-truncate): reading it from its start"
                );
                p.offset = 0;
                p.pending_end = None;
                p.head = None;
                self.persist(&dir, p).await;
            }
            let chunk = match read_chunk(f, p.offset, p.pending_end, len) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the audit log file failed; retrying");
                    file = None;
                    tokio::time::sleep(self.poll).await;
                    continue;
                }
            };
            if chunk.is_empty() {
                // At the end of this file: if the path is another file now (a
                // rotation), go on with the next one; else wait for more lines.
                let here = (p.dev, p.ino);
                let at_path = std::fs::metadata(&self.path).ok().map(|m| identity(&m));
                if at_path.is_some_and(|id| id != here) {
                    let next = self.next_after(f, at_path.unwrap_or(here));
                    tracing::info!(
                        from_inode = here.1,
                        to_inode = next.1,
                        "audit log rotated: going on with the next file"
                    );
                    *p = Position {
                        dev: next.0,
                        ino: next.1,
                        offset: 0,
                        pending_end: None,
                        head: None,
                    };
                    self.persist(&dir, p).await;
                    file = None;
                    continue;
                }
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let end = p.offset + chunk.len() as u64;
            if p.pending_end != Some(end) {
                p.pending_end = Some(end);
                self.persist(&dir, p).await;
            }
            // The head is taken from the bytes just read when they start the
            // file: read again after storing, the file may already have been
            // truncated and rewritten, and its new first line taken as ours
            // would hide that truncation (and lose the new lines).
            if p.head.is_none() {
                p.head = if p.offset == 0 {
                    head_hash(&chunk)
                } else {
                    first_line_hash(f).ok().flatten()
                };
            }
            self.store(&chunk).await;
            p.offset = end;
            p.pending_end = None;
            self.persist(&dir, p).await;
        }
    }

    /// Writes the position, retrying until it is on disk (a position not
    /// written would repeat lines after a crash, never lose them).
    async fn persist(&self, dir: &Path, p: &Position) {
        while let Err(e) = save(dir, p) {
            tracing::warn!(error = %e, "writing the audit log position failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Opens the file our position names, or (no position yet, or its file
    /// gone) the file at the path from its start.
    fn open_at(&self, pos: &mut Option<Position>) -> Option<File> {
        if let Some(p) = pos.as_ref() {
            if let Ok(f) = File::open(&self.path)
                && f.metadata().is_ok_and(|m| identity(&m) == (p.dev, p.ino))
            {
                return Some(f);
            }
            for (path, m) in backups(&self.path) {
                if identity(&m) == (p.dev, p.ino)
                    && let Ok(f) = File::open(&path)
                {
                    tracing::info!(file = %path.display(), offset = p.offset, "resuming in a rotated audit log file");
                    return Some(f);
                }
            }
            tracing::warn!(
                inode = p.ino,
                offset = p.offset,
                "the audit log file being read is gone (rotated away and deleted); going on with the current one"
            );
        }
        let f = File::open(&self.path).ok()?;
        let m = f.metadata().ok()?;
        *pos = Some(Position {
            dev: m.dev(),
            ino: m.ino(),
            offset: 0,
            pending_end: None,
            head: None,
        });
        Some(f)
    }

    /// The file to read after `done` (a rotated one, read to its end): the
    /// oldest backup newer than it, else the file at the path (`current`).
    fn next_after(&self, done: &File, current: (u64, u64)) -> (u64, u64) {
        let Ok(dm) = done.metadata() else { return current };
        let (done_id, done_time) = (identity(&dm), mtime(&dm));
        backups(&self.path)
            .into_iter()
            .filter(|(_, m)| identity(m) != done_id && identity(m) != current && mtime(m) > done_time)
            .min_by_key(|(p, m)| (mtime(m), p.clone()))
            .map(|(_, m)| identity(&m))
            .unwrap_or(current)
    }

    /// Stores a chunk, retrying until the spool has it.
    async fn store(&self, chunk: &[u8]) {
        let (body, lines) = event_list(chunk);
        let key = dedupe::batch_key(&body);
        loop {
            let received = jiff::Timestamp::now();
            match self.intake.take(&body, Source::AuditLog, received, key).await {
                Ok(Stored::Spooled(seq)) => {
                    tracing::debug!(seq, lines, "audit log lines spooled");
                    return;
                }
                Ok(Stored::Copy) => {
                    tracing::info!(lines, "audit log lines stored before a restart; not stored again");
                    return;
                }
                Ok(Stored::Empty) => return,
                Err(IntakeError::Malformed(e)) => {
                    // Not reached: the body is built here; kept as a clear error.
                    tracing::error!(error = %e, lines, "audit log lines could not be encoded; skipped");
                    return;
                }
                Err(IntakeError::Busy) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(IntakeError::Append(AppendError::Full { used, max })) => {
                    tracing::warn!(used, max, "spool full; audit log reading waits");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(IntakeError::Append(e)) => {
                    tracing::warn!(error = %e, "spooling audit log lines failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Bytes of a file's start looked at for its first line.
const HEAD_BYTES: usize = 64 * 1024;

/// Hash of the first complete line of `start`, the first bytes of a file.
fn head_hash(start: &[u8]) -> Option<String> {
    let start = &start[..start.len().min(HEAD_BYTES)];
    memchr::memchr(b'\n', start).map(|i| blake3::hash(&start[..=i]).to_hex()[..32].to_string())
}

/// Hash of the file's first complete line (at most 64 KiB are looked at).
fn first_line_hash(f: &mut File) -> io::Result<Option<String>> {
    f.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0; HEAD_BYTES];
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if memchr::memchr(b'\n', &buf[..n]).is_some() {
            break;
        }
    }
    Ok(head_hash(&buf[..n]))
}

/// Complete lines from `offset`: exactly up to `pending` when set (a chunk
/// being stored before a restart), else up to the last newline within
/// [`MAX_CHUNK`]. A single line longer than that is taken whole.
fn read_chunk(f: &mut File, offset: u64, pending: Option<u64>, len: u64) -> io::Result<Vec<u8>> {
    let want = match pending {
        Some(end) if end > offset && end <= len => (end - offset) as usize,
        _ => (len.saturating_sub(offset) as usize).min(MAX_CHUNK),
    };
    if want == 0 {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; want];
    f.read_exact(&mut buf)?;
    if pending.is_some_and(|end| end == offset + want as u64) {
        return Ok(buf);
    }
    match memchr::memrchr(b'\n', &buf) {
        Some(i) => buf.truncate(i + 1),
        None if want == MAX_CHUNK => {
            // One line longer than a chunk: read on to its end.
            let mut rest = Vec::new();
            let mut byte = [0u8; 65536];
            loop {
                let n = f.read(&mut byte)?;
                if n == 0 {
                    return Ok(Vec::new());
                }
                if let Some(i) = memchr::memchr(b'\n', &byte[..n]) {
                    rest.extend_from_slice(&byte[..=i]);
                    break;
                }
                rest.extend_from_slice(&byte[..n]);
            }
            buf.extend_from_slice(&rest);
        }
        None => buf.clear(),
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use std::sync::Arc;

    #[test]
    fn lines_become_an_event_list_and_bad_lines_are_kept_as_strings() {
        let (body, n) = event_list(b"{\"auditID\":\"a\"}\n\nnot json\n{\"auditID\":\"b\"}\n");
        assert_eq!(n, 3);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["items"][0]["auditID"], "a");
        assert!(
            v["items"][1]
                .as_str()
                .unwrap()
                .starts_with("unreadable audit log line of 8 bytes")
        );
        assert_eq!(v["items"][2]["auditID"], "b");
    }

    #[test]
    fn chunks_end_at_a_newline_or_exactly_where_a_pending_chunk_ended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"one\ntwo\nthr").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(read_chunk(&mut f, 0, None, 11).unwrap(), b"one\ntwo\n");
        assert_eq!(read_chunk(&mut f, 4, None, 11).unwrap(), b"two\n");
        assert_eq!(read_chunk(&mut f, 8, None, 11).unwrap(), b"");
        assert_eq!(read_chunk(&mut f, 0, Some(4), 11).unwrap(), b"one\n");
    }

    fn line(id: &str) -> String {
        format!(
            "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"{id}\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"user\":{{\"username\":\"u\"}},\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"n\",\"apiVersion\":\"v1\"}},\"responseStatus\":{{\"code\":200}},\"requestReceivedTimestamp\":\"2026-12-01T00:00:00Z\"}}\n"
        )
    }

    /// Every trace id in the spool, with how often it is there.
    fn spooled(spool: &Spool) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        let mut r = spool.reader(crate::spool::Position::default());
        while let Some(rec) = r.next_record().unwrap() {
            for (_, l) in crate::spool::record::entries::iter(&rec.payload) {
                let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                assert_eq!(v["source"], "auditLog");
                *out.entry(v["trace_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        out
    }

    async fn until(spool: &Spool, ids: &[&str]) {
        for _ in 0..500 {
            let got = spooled(spool);
            if ids.iter().all(|id| got.contains_key(*id)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not spooled: {ids:?}; have {:?}", spooled(spool));
    }

    /// A file that is not there yet, a partial last line, the apiserver's
    /// rotation (rename to a backup, a new file) and copy-truncate: every line
    /// is spooled exactly once; a restart reads nothing again.
    #[tokio::test]
    async fn follows_missing_partial_rotated_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Spool::open(crate::spool::Config {
                dir: dir.path().join("spool"),
                max_bytes: 1 << 30,
                segment_bytes: 1 << 20,
                fsync: false,
                tracker_budget: 0,
                dedupe_window_ms: 900_000,
                dedupe_max: 1000,
            })
            .unwrap()
        };
        let spool = open();
        let log = dir.path().join("audit.log");
        let follow = |spool: Spool| {
            let recovered = spool.take_recovered_hashes();
            Follower {
                path: log.clone(),
                intake: Intake::new(
                    spool,
                    Arc::new(dedupe::Window::new(
                        Duration::from_secs(900),
                        1000,
                        recovered,
                        jiff::Timestamp::now().as_millisecond(),
                    )),
                    Arc::new(crate::telemetry::Metrics::default()),
                    "c",
                    1 << 20,
                    crate::source::Lifecycle::open(),
                ),
                poll: Duration::from_millis(10),
            }
        };
        let task = tokio::spawn(follow(spool.clone()).run());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let append = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let a3 = line("a3");
        append(&format!("{}{}{}", line("a1"), line("a2"), &a3[..20]));
        until(&spool, &["a1", "a2"]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!spooled(&spool).contains_key("a3"), "a partial line waits");
        append(&format!("{}{}", &a3[20..], line("a4")));
        until(&spool, &["a3", "a4"]).await;
        // Rotation: a line written just before, a backup, a new file.
        append(&line("a5"));
        std::fs::rename(&log, dir.path().join("audit-2026-12-01T00-00-00.000.log")).unwrap();
        append(&line("a6"));
        until(&spool, &["a5", "a6"]).await;
        // Copy-truncate: the file shrinks.
        std::fs::write(&log, b"").unwrap();
        append(&line("a7"));
        until(&spool, &["a7"]).await;
        task.abort();
        let _ = task.await;
        let got = spooled(&spool);
        assert_eq!(got.len(), 7, "{got:?}");
        assert!(got.values().all(|n| *n == 1), "each line once: {got:?}");
        // A restart on the same spool reads nothing again.
        drop(spool);
        let spool = open();
        let task = tokio::spawn(follow(spool.clone()).run());
        append(&line("a8"));
        until(&spool, &["a8"]).await;
        task.abort();
        let got = spooled(&spool);
        assert!(
            got.values().all(|n| *n == 1),
            "each line once after a restart: {got:?}"
        );
        assert_eq!(got.len(), 8);
    }
}
