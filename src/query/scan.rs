//! Reading one trace file for a query: decompressed in large blocks and cut
//! into lines in place, each line filtered from a borrowed view, and the
//! matches kept as candidates in the query's order.

use super::*;

/// What one file contributed.
pub(super) struct FileScan {
    pub(super) bytes: u64,
    pub(super) traces: u64,
    pub(super) unreadable: bool,
    /// Hashes of the trace IDs that matched (for the distinct count).
    pub(super) matched: Vec<u64>,
    /// The file's best `limit` hits in the asked order, with their ID hashes.
    pub(super) hits: Vec<(u64, Hit)>,
}

impl FileScan {
    pub(super) fn unreadable(bytes: u64) -> FileScan {
        FileScan {
            bytes,
            traces: 0,
            unreadable: true,
            matched: Vec::new(),
            hits: Vec::new(),
        }
    }
}

/// A set of trace keys, with std's randomly seeded hasher: clients choose much
/// of a trace's content, so crafted traces must not be able to degrade the set.
pub(super) type IdSet = HashSet<u64>;

/// The de-duplication key of a trace: BLAKE3 over its whole line except the
/// value of `record_time` (when kubetrail received it, which differs between a
/// batch and its retry stored by another replica). Never the client-chosen trace
/// ID alone: two different operations that share an `Audit-ID` are two results,
/// and nobody can make one line pass for another.
pub(super) fn trace_key(line: &[u8]) -> u64 {
    const FIELD: &[u8] = b"\"record_time\":\"";
    let mut h = blake3::Hasher::new();
    match memchr::memmem::find(line, FIELD) {
        Some(at) => {
            let value = at + FIELD.len();
            let end = memchr::memchr(b'"', &line[value..]).map_or(line.len(), |e| value + e);
            h.update(&line[..value]);
            h.update(&line[end..]);
        }
        None => {
            h.update(line);
        }
    }
    let mut out = [0u8; 8];
    h.finalize_xof().fill(&mut out);
    u64::from_le_bytes(out)
}

/// A cheap key for counting distinct matches: trace ID, time and line length,
/// hashed with a per-process random key (a crafted trace cannot aim at another).
/// Two different operations alike in all three would be counted once in
/// `matched` — and still both shown.
pub(super) fn count_key(trace_id: &str, time: &str, len: usize) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static STATE: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let mut h = STATE.get_or_init(std::hash::RandomState::new).build_hasher();
    trace_id.hash(&mut h);
    time.hash(&mut h);
    len.hash(&mut h);
    h.finish()
}

/// The decompressed content of a file, read in large blocks and cut into lines
/// in place (no per-line copy).
pub(super) struct Lines<'a> {
    pub(super) reader: Box<dyn std::io::Read + 'a>,
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) eof: bool,
}

impl<'a> Lines<'a> {
    pub(super) fn new(key: &str, bytes: &'a [u8]) -> std::io::Result<Self> {
        let reader: Box<dyn std::io::Read + 'a> = if key.ends_with(".gz") {
            Box::new(flate2::bufread::MultiGzDecoder::new(bytes))
        } else if key.ends_with(".zst") {
            Box::new(zstd::stream::read::Decoder::with_buffer(bytes)?)
        } else {
            Box::new(bytes)
        };
        Ok(Self {
            reader,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            eof: false,
        })
    }

    /// The next line without its newline; `None` at the end.
    pub(super) fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        loop {
            if let Some(n) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = self.start..self.start + n;
                self.start += n + 1;
                return Ok(Some(&self.buf[line]));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(&self.buf[line]));
            }
            // Keep the partial line, then fill the rest of the buffer.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // A line longer than the buffer.
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.reader.read(&mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

/// Decompresses and filters one file, streaming: memory holds one line and the
/// file's best hits, not the whole file.
pub(super) fn scan_file(q: &Query, key: &str, bytes: Vec<u8>, limit: usize) -> FileScan {
    let size = bytes.len() as u64;
    let Ok(mut lines) = Lines::new(key, &bytes) else {
        return FileScan::unreadable(size);
    };
    let needed = needed_fields(q);
    let criteria = Criteria::from_query(&q.filter);
    let mut scan = FileScan {
        bytes: size,
        traces: 0,
        unreadable: false,
        matched: Vec::new(),
        hits: Vec::new(),
    };
    let mut newest: BinaryHeap<std::cmp::Reverse<Candidate>> = BinaryHeap::new();
    let mut oldest: BinaryHeap<Candidate> = BinaryHeap::new();
    // A displaced candidate's buffers are reused by the next one.
    let mut spare = Candidate::default();
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => {
                scan.unreadable = true;
                break;
            }
        };
        if line.is_empty() {
            continue;
        }
        scan.traces += 1;
        let Some(v) = View::read(line, needed) else {
            continue;
        };
        let Some(t) = crate::trace::parse_time_ms(&v.time) else {
            continue;
        };
        if t < q.from_ms || t >= q.to_ms || !matches(q, &criteria, &v) || !past_cursor(q, t, &v.trace_id) {
            continue;
        }
        // Distinct matches are counted by a cheap key; results (what people see)
        // are de-duplicated by the full content key, computed only for the lines
        // still among the file's best `limit` at its end (`into_hit`).
        scan.matched.push(count_key(&v.trace_id, &v.time, line.len()));
        let full = newest.len().max(oldest.len()) >= limit;
        let better = match q.order {
            Order::NewestFirst => newest.peek().is_none_or(|w| t >= w.0.time_ms),
            Order::OldestFirst => oldest.peek().is_none_or(|w| t <= w.time_ms),
        };
        if full && !better {
            continue;
        }
        let mut c = std::mem::take(&mut spare);
        c.time_ms = t;
        c.trace_id.clear();
        c.trace_id.push_str(&v.trace_id);
        c.line.clear();
        c.line.extend_from_slice(line);
        let displaced = match q.order {
            Order::NewestFirst => {
                newest.push(std::cmp::Reverse(c));
                (newest.len() > limit)
                    .then(|| newest.pop())
                    .flatten()
                    .map(|r| r.0)
            }
            Order::OldestFirst => {
                oldest.push(c);
                (oldest.len() > limit).then(|| oldest.pop()).flatten()
            }
        };
        if let Some(d) = displaced {
            spare = d;
        }
    }
    scan.hits = newest
        .into_iter()
        .map(|r| r.0)
        .chain(oldest)
        .map(Candidate::into_hit)
        .collect();
    scan
}

/// A hit while its file is scanned: the line stays bytes (no UTF-8 check, no
/// allocation once the heap is full) until it survives the file's top `limit`.
#[derive(Default)]
pub(super) struct Candidate {
    pub(super) time_ms: i64,
    pub(super) trace_id: String,
    pub(super) line: Vec<u8>,
}

impl Candidate {
    pub(super) fn into_hit(self) -> (u64, Hit) {
        let key = trace_key(&self.line);
        let line = String::from_utf8(self.line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let hit = Hit {
            time_ms: self.time_ms,
            trace_id: self.trace_id,
            line,
            spilled: None,
        };
        (key, hit)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Candidate {}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_ms, &self.trace_id).cmp(&(other.time_ms, &other.trace_id))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
