//! The query engine: "what happened", over a tracker's trace files.
//!
//! For a time range it lists only the day prefixes the range touches, fetches
//! and decompresses files with a bounded number in flight, filters each trace as
//! it streams (from a borrowed view, without building the whole JSON value), shows
//! a trace found twice once (same trace ID, time and size: a file written again
//! after a crash, an event re-sent in another batch), and orders newest first (or oldest first for a resource's
//! lifecycle), stopping early where the order allows.

use crate::api::{Order, QueryFilter};
use crate::deliver::key::day_prefix;
use crate::route::Criteria;
use crate::store::s3::DestinationError;
use crate::store::{ObjectInfo, Store};
use crate::trace::View;
use crate::trace::view::{Field, Fields};
use futures::StreamExt;
use std::borrow::Cow;
use std::collections::{BinaryHeap, HashSet};

/// Where a tracker's files are and what to look for.
#[derive(Clone, Debug)]
pub struct Query {
    pub prefix: String,
    /// Cluster names in the keys; `*` searches every cluster found under the
    /// prefix (one bucket may hold many clusters' trails).
    pub clusters: Vec<String>,
    pub tracker: String,
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
    pub filter: QueryFilter,
    pub limit: usize,
    pub order: Order,
    /// Only traces of this namespace (a tenant's TraceQuery); `None`: all.
    pub namespace_scope: Option<String>,
    /// Files fetched at once.
    pub parallelism: usize,
    /// Most bytes of result lines kept; past it the oldest (newest first) or
    /// newest (oldest first) are let go and the result is `truncated`.
    /// `usize::MAX`: no bound.
    pub max_hit_bytes: usize,
    /// A scratch directory: result lines are written there as they are found
    /// and only their place is held, so memory does not grow with `limit`.
    /// `None`: lines are held in memory.
    pub spill_dir: Option<std::path::PathBuf>,
    /// A page's cursor: only traces strictly before (newest first) or after
    /// (oldest first) this `(time ms, trace id)`. Files past it are not read,
    /// so a later page does not rescan the earlier ones.
    pub cursor: Option<(i64, String)>,
    /// Newest first: stop reading once no file left can hold a trace newer than
    /// the worst one kept (a file's traces are no later than its last-modified
    /// time + [`CLOCK_SLACK_MS`]); `matched` then counts only the files read
    /// and the answer is `truncated`. (Oldest first always stops early.)
    pub stop_early: bool,
}

impl Query {
    /// Every trace of `tracker`'s trail under `prefix` in `clusters` within
    /// `[from_ms, to_ms)`: newest first, no limit, 8 files at once, lines held
    /// in memory without a bound, no cursor. Callers narrow it with struct update
    /// syntax (`Query { limit, ..Query::new(…) }`).
    pub fn new(
        prefix: impl Into<String>,
        clusters: Vec<String>,
        tracker: impl Into<String>,
        from_ms: i64,
        to_ms: i64,
    ) -> Query {
        Query {
            prefix: prefix.into(),
            clusters,
            tracker: tracker.into(),
            from_ms,
            to_ms,
            filter: QueryFilter::default(),
            limit: usize::MAX,
            order: Order::NewestFirst,
            namespace_scope: None,
            parallelism: 8,
            max_hit_bytes: usize::MAX,
            spill_dir: None,
            cursor: None,
            stop_early: false,
        }
    }
}

/// The lines of a query's results, in a scratch file removed when dropped.
#[derive(Debug)]
pub struct Spill {
    file: std::fs::File,
    path: std::path::PathBuf,
    len: u64,
}

impl Spill {
    fn create(dir: &std::path::Path) -> std::io::Result<Spill> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("query-{}-{n}.spill", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Spill { file, path, len: 0 })
    }

    fn push(&mut self, line: &str) -> std::io::Result<(u64, u32)> {
        use std::io::Write as _;
        let at = self.len;
        (&self.file).write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        Ok((at, u32::try_from(line.len()).unwrap_or(u32::MAX)))
    }

    fn read(&self, at: u64, len: u32) -> std::io::Result<String> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, at)?;
        String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One matching trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub time_ms: i64,
    pub trace_id: String,
    /// The trace's JSON line as stored; empty when the line was spilled
    /// (then `spilled` says where, see [`Outcome::line`]).
    pub line: String,
    /// Offset and length of the line in the query's spill file.
    pub spilled: Option<(u64, u32)>,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_ms, &self.trace_id).cmp(&(other.time_ms, &other.trace_id))
    }
}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The answer.
#[derive(Debug, Default)]
pub struct Outcome {
    /// At most `limit` traces in the asked order.
    pub hits: Vec<Hit>,
    /// Traces that matched (distinct trace IDs), counting those beyond `limit`
    /// among the files read.
    pub matched: u64,
    pub truncated: bool,
    /// Fewer than `limit` traces are kept because their lines exceeded
    /// `max_hit_bytes`.
    pub memory_capped: bool,
    pub scanned_objects: u64,
    pub scanned_bytes: u64,
    pub scanned_traces: u64,
    /// The prefixes listed (one per day).
    pub listed_prefixes: Vec<String>,
    /// Where the hits' lines are, with [`Query::spill_dir`].
    pub spill: Option<Spill>,
}

impl Outcome {
    /// A hit's line, from memory or from the spill file.
    pub fn line<'h>(&self, h: &'h Hit) -> std::io::Result<Cow<'h, str>> {
        match (h.spilled, &self.spill) {
            (Some((at, len)), Some(s)) => s.read(at, len).map(Cow::Owned),
            _ => Ok(Cow::Borrowed(&h.line)),
        }
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("time range is empty: from must be before to")]
    EmptyRange,
    #[error("time range of {days} days is larger than the allowed {max} days")]
    RangeTooLarge { days: i64, max: i64 },
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("query scratch file: {0}")]
    Scratch(#[source] std::io::Error),
}

impl QueryError {
    pub fn reason(&self) -> crate::api::Reason {
        match self {
            Self::EmptyRange => crate::api::Reason::InvalidTimeRange,
            Self::RangeTooLarge { .. } => crate::api::Reason::RangeTooLarge,
            Self::Destination(e) => e.reason(),
            Self::Scratch(_) => crate::api::Reason::ScratchError,
        }
    }
}

/// The fields `q` needs: the trace ID and time always, the others only when a
/// filter or the namespace scope looks at them.
fn needed_fields(q: &Query) -> Fields {
    let f = &q.filter;
    let mut needed = Fields::of(&[Field::TraceId, Field::Time]);
    for (used, field) in [
        (!f.verbs.is_empty(), Field::TraceName),
        (!f.ratings.is_empty(), Field::TraceRating),
        (!f.api_groups.is_empty(), Field::ServiceType),
        (!f.resources.is_empty(), Field::ResourceType),
        (!f.resource_names.is_empty(), Field::ResourceName),
        (
            !f.namespaces.is_empty() || q.namespace_scope.is_some(),
            Field::Namespace,
        ),
        (!f.users.is_empty(), Field::User),
        (!f.source_ips.is_empty(), Field::SourceIps),
    ] {
        if used {
            needed = needed.with(field);
        }
    }
    needed
}

/// Whether a trace passes the filter and scope.
fn matches(q: &Query, criteria: &Criteria, v: &View<'_>) -> bool {
    if let Some(ns) = &q.namespace_scope
        && v.namespace != ns.as_str()
    {
        return false;
    }
    criteria.matches(v)
}

/// Whether a trace comes after the query's cursor in the asked order.
fn past_cursor(q: &Query, t: i64, id: &str) -> bool {
    match (&q.cursor, q.order) {
        (None, _) => true,
        (Some((ct, cid)), Order::NewestFirst) => (t, id) < (*ct, cid.as_str()),
        (Some((ct, cid)), Order::OldestFirst) => (t, id) > (*ct, cid.as_str()),
    }
}

/// The day prefixes of a range (UTC days, inclusive of the day of `to - 1ms`).
pub fn day_prefixes(q: &Query) -> Vec<String> {
    let day_ms = 86_400_000;
    let mut out = Vec::new();
    let mut day = q.from_ms.div_euclid(day_ms);
    let last = (q.to_ms - 1).div_euclid(day_ms);
    while day <= last {
        if let Ok(ts) = jiff::Timestamp::from_millisecond(day * day_ms) {
            let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
            for cluster in q.clusters.iter().filter(|c| *c != "*") {
                out.push(day_prefix(
                    &q.prefix,
                    cluster,
                    &q.tracker,
                    d.year(),
                    d.month(),
                    d.day(),
                ));
            }
        }
        day += 1;
    }
    out
}

/// The clusters a query searches: its list, with `*` replaced by every
/// cluster that has a folder under `{prefix}/KubeTrail/`.
pub async fn resolve_clusters(
    sink: &Store,
    prefix: &str,
    clusters: &[String],
) -> Result<Vec<String>, QueryError> {
    let mut out: Vec<String> = clusters.iter().filter(|c| *c != "*").cloned().collect();
    if clusters.iter().any(|c| c == "*") {
        let base = crate::deliver::key::area_prefix(prefix, crate::deliver::key::Area::Traces);
        for dir in sink.list_dirs(&base).await? {
            let name = dir.trim_start_matches(&base).trim_end_matches('/').to_string();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

/// First-trace time of a file, from its name (`…_{yyyymmddTHHMMSSZ}_…`).
pub fn file_time_ms(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    let stamp = name
        .split('_')
        .find(|p| p.len() == 16 && p.ends_with('Z') && p.as_bytes().get(8) == Some(&b'T'))?;
    let s = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// What one file contributed.
struct FileScan {
    bytes: u64,
    traces: u64,
    unreadable: bool,
    /// Hashes of the trace IDs that matched (for the distinct count).
    matched: Vec<u64>,
    /// The file's best `limit` hits in the asked order, with their ID hashes.
    hits: Vec<(u64, Hit)>,
}

impl FileScan {
    fn unreadable(bytes: u64) -> FileScan {
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
type IdSet = HashSet<u64>;

/// The de-duplication key of a trace: BLAKE3 over its whole line except the
/// value of `record_time` (when kubetrail received it, which differs between a
/// batch and its retry stored by another replica). Never the client-chosen trace
/// ID alone: two different operations that share an `Audit-ID` are two results,
/// and nobody can make one line pass for another.
fn trace_key(line: &[u8]) -> u64 {
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
fn count_key(trace_id: &str, time: &str, len: usize) -> u64 {
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
struct Lines<'a> {
    reader: Box<dyn std::io::Read + 'a>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'a> Lines<'a> {
    fn new(key: &str, bytes: &'a [u8]) -> std::io::Result<Self> {
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
    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
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
fn scan_file(q: &Query, key: &str, bytes: Vec<u8>, limit: usize) -> FileScan {
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
struct Candidate {
    time_ms: i64,
    trace_id: String,
    line: Vec<u8>,
}

impl Candidate {
    fn into_hit(self) -> (u64, Hit) {
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

/// How far the store's clock (an object's last-modified time) may be behind the
/// apiserver's (a trace's time) before a query would skip a file it needs.
pub const CLOCK_SLACK_MS: i64 = 3_600_000;

/// What a query reads: the query with its clusters resolved and its range
/// narrowed by the cursor, the day prefixes listed, and the files in the order
/// they are read.
struct Plan {
    query: Query,
    prefixes: Vec<String>,
    objects: Vec<(i64, ObjectInfo)>,
}

/// Checks the range and lists the files a query reads; `None` when the cursor
/// leaves nothing to read.
async fn plan(sink: &Store, q: &Query, max_days: i64) -> Result<Option<Plan>, QueryError> {
    if q.from_ms >= q.to_ms {
        return Err(QueryError::EmptyRange);
    }
    let days = (q.to_ms - q.from_ms + 86_399_999) / 86_400_000;
    if days > max_days {
        return Err(QueryError::RangeTooLarge { days, max: max_days });
    }
    let mut q = q.clone();
    if q.clusters.iter().any(|c| c == "*") {
        q.clusters = resolve_clusters(sink, &q.prefix, &q.clusters).await?;
    }
    // A cursor narrows the range, so whole days and files past it are skipped.
    match (&q.cursor, q.order) {
        (Some((t, _)), Order::NewestFirst) => q.to_ms = q.to_ms.min(t + 1),
        (Some((t, _)), Order::OldestFirst) => q.from_ms = q.from_ms.max(*t),
        (None, _) => {}
    }
    if q.from_ms >= q.to_ms {
        return Ok(None);
    }
    let prefixes = day_prefixes(&q);
    let mut objects: Vec<(i64, ObjectInfo)> = Vec::new();
    for prefix in &prefixes {
        for o in sink.list(prefix).await? {
            let t = file_time_ms(&o.key).unwrap_or(i64::MIN);
            // Named after its earliest trace: a file starting at or after `to`
            // has nothing for us. And a file is written after its traces
            // happened: one last written (well) before `from` has nothing either.
            let written_before =
                o.modified_ms > 0 && o.modified_ms.saturating_add(CLOCK_SLACK_MS) < q.from_ms;
            if t < q.to_ms && !written_before {
                objects.push((t, o));
            }
        }
    }
    match q.order {
        Order::NewestFirst => objects.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.key.cmp(&a.1.key))),
        Order::OldestFirst => objects.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.key.cmp(&b.1.key))),
    }
    Ok(Some(Plan {
        query: q,
        prefixes,
        objects,
    }))
}

/// Runs a query against a tracker's destination.
pub async fn run(sink: &Store, q: &Query, max_days: i64) -> Result<Outcome, QueryError> {
    let Some(Plan {
        query: q,
        prefixes,
        objects,
    }) = plan(sink, q, max_days).await?
    else {
        return Ok(Outcome::default());
    };
    let q = &q;
    let mut out = Outcome {
        listed_prefixes: prefixes,
        ..Outcome::default()
    };

    let limit = q.limit.max(1);
    let shared = std::sync::Arc::new(q.clone());
    // Newest first keeps the `limit` newest in a min-heap; oldest first the oldest in a max-heap.
    let mut newest: BinaryHeap<std::cmp::Reverse<Hit>> = BinaryHeap::new();
    let mut oldest: BinaryHeap<Hit> = BinaryHeap::new();
    let mut matched: IdSet = IdSet::default();
    let mut kept: IdSet = IdSet::default();
    let times: Vec<i64> = objects.iter().map(|(t, _)| *t).collect();
    // The latest trace time each file can hold, as a maximum over the files
    // from each position on.
    let mut newest_left: Vec<i64> = objects
        .iter()
        .map(|(_, o)| {
            if o.modified_ms > 0 {
                o.modified_ms.saturating_add(CLOCK_SLACK_MS)
            } else {
                i64::MAX
            }
        })
        .collect();
    for i in (0..newest_left.len().saturating_sub(1)).rev() {
        newest_left[i] = newest_left[i].max(newest_left[i + 1]);
    }
    // Fetch, decompress and filter several files at once (on blocking threads);
    // results are merged in file order.
    let mut scans = futures::stream::iter(objects.into_iter().map(|(_, o)| {
        let q = shared.clone();
        let sink = sink.clone();
        async move {
            let bytes = sink.get(&o.key).await?;
            let key = o.key.clone();
            let scan = tokio::task::spawn_blocking(move || scan_file(&q, &key, bytes, limit))
                .await
                .unwrap_or_else(|_| FileScan::unreadable(0));
            Ok::<_, DestinationError>((o, scan))
        }
    }))
    .buffered(q.parallelism.max(1));
    let mut index = 0usize;
    let mut held = 0usize;
    let mut spill = q
        .spill_dir
        .as_deref()
        .map(Spill::create)
        .transpose()
        .map_err(QueryError::Scratch)?;
    while let Some(result) = scans.next().await {
        index += 1;
        let (o, scan) = result?;
        out.scanned_objects += 1;
        out.scanned_bytes += scan.bytes;
        out.scanned_traces += scan.traces;
        if scan.unreadable {
            tracing::warn!(key = %o.key, "unreadable trace file skipped");
        }
        matched.extend(scan.matched);
        for (hash, mut hit) in scan.hits {
            // Not better than the worst of a full heap: it would go at once.
            let full = newest.len().max(oldest.len()) >= limit;
            let worse = match q.order {
                Order::NewestFirst => newest.peek().is_some_and(|w| hit <= w.0),
                Order::OldestFirst => oldest.peek().is_some_and(|w| hit >= *w),
            };
            if full && worse {
                continue;
            }
            if !kept.insert(hash) {
                continue;
            }
            held += hit.line.len();
            if let Some(s) = spill.as_mut() {
                hit.spilled = Some(s.push(&hit.line).map_err(QueryError::Scratch)?);
                hit.line = String::new();
            }
            match q.order {
                Order::NewestFirst => {
                    newest.push(std::cmp::Reverse(hit));
                    while newest.len() > limit || (held > q.max_hit_bytes && newest.len() > 1) {
                        if newest.len() <= limit {
                            out.memory_capped = true;
                        }
                        held -= newest
                            .pop()
                            .map_or(0, |h| h.0.spilled.map_or(h.0.line.len(), |(_, l)| l as usize));
                    }
                }
                Order::OldestFirst => {
                    oldest.push(hit);
                    while oldest.len() > limit || (held > q.max_hit_bytes && oldest.len() > 1) {
                        if oldest.len() <= limit {
                            out.memory_capped = true;
                        }
                        held -= oldest
                            .pop()
                            .map_or(0, |h| h.spilled.map_or(h.line.len(), |(_, l)| l as usize));
                    }
                }
            }
        }
        // Oldest first: files are in order of their earliest trace (the time in
        // the name), so none of a file's traces is older; once `limit` traces older than the
        // next file's start are in hand, nothing later can displace them.
        if q.stop_early
            && q.order == Order::NewestFirst
            && newest.len() >= limit
            && let (Some(worst), Some(left)) = (newest.peek(), newest_left.get(index))
            && *left < worst.0.time_ms
        {
            out.truncated = true;
            break;
        }
        if q.order == Order::OldestFirst
            && (oldest.len() >= limit || out.memory_capped)
            && let (Some(top), Some(next)) = (oldest.peek(), times.get(index))
            && *next > top.time_ms
        {
            out.truncated = true;
            break;
        }
    }
    out.matched = matched.len() as u64;
    out.hits = match q.order {
        Order::NewestFirst => {
            let mut v: Vec<Hit> = newest.into_iter().map(|r| r.0).collect();
            v.sort_by(|a, b| b.cmp(a));
            v
        }
        Order::OldestFirst => oldest.into_sorted_vec(),
    };
    out.truncated = out.truncated || out.matched > out.hits.len() as u64;
    out.spill = spill;
    Ok(out)
}

/// Counts over every trace a query matches, for the console's overview.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub from_ms: i64,
    pub bucket_ms: i64,
    /// Per bucket of `bucket_ms` from `from_ms`: normal, warning, incident.
    pub buckets: Vec<[u64; 3]>,
    /// Distinct traces matched.
    pub total: u64,
    /// Users by traces, most first.
    pub top_users: Vec<(String, u64)>,
    /// Denied operations (401, 403) as `verb resource`, most first.
    pub top_denied: Vec<(String, u64)>,
    pub scanned_objects: u64,
    pub scanned_traces: u64,
}

/// One matched trace of a file, as the overview counts it; strings are
/// indexes into the file's own tables.
struct OverviewItem {
    key: u64,
    bucket: u32,
    rating: u8,
    user: u32,
    denied: Option<u32>,
}

#[derive(Default)]
struct OverviewScan {
    traces: u64,
    items: Vec<OverviewItem>,
    users: Vec<String>,
    denied: Vec<String>,
}

fn intern(table: &mut Vec<String>, index: &mut std::collections::HashMap<String, u32>, s: &str) -> u32 {
    if let Some(i) = index.get(s) {
        return *i;
    }
    let i = table.len() as u32;
    table.push(s.to_string());
    index.insert(s.to_string(), i);
    i
}

fn scan_overview(q: &Query, key: &str, bytes: &[u8], origin: i64, bucket_ms: i64) -> OverviewScan {
    let mut out = OverviewScan::default();
    let Ok(mut lines) = Lines::new(key, bytes) else {
        return out;
    };
    let needed = [
        Field::TraceRating,
        Field::User,
        Field::TraceName,
        Field::ResourceType,
        Field::Code,
    ]
    .into_iter()
    .fold(needed_fields(q), Fields::with);
    let criteria = Criteria::from_query(&q.filter);
    let (mut users, mut denied) = (Default::default(), Default::default());
    while let Ok(Some(line)) = lines.next_line() {
        if line.is_empty() {
            continue;
        }
        out.traces += 1;
        let Some(v) = View::read(line, needed) else {
            continue;
        };
        let Some(t) = crate::trace::parse_time_ms(&v.time) else {
            continue;
        };
        if t < q.from_ms || t >= q.to_ms || !matches(q, &criteria, &v) {
            continue;
        }
        let rating = match v.trace_rating.as_ref() {
            "warning" => 1,
            "incident" => 2,
            _ => 0,
        };
        let user = intern(&mut out.users, &mut users, &v.user);
        let denied_op = matches!(v.code, Some(401 | 403)).then(|| {
            let op = format!("{} {}", v.verb(), v.resource_type);
            intern(&mut out.denied, &mut denied, op.trim())
        });
        out.items.push(OverviewItem {
            key: count_key(&v.trace_id, &v.time, line.len()),
            bucket: ((t - origin) / bucket_ms) as u32,
            rating,
            user,
            denied: denied_op,
        });
    }
    out
}

/// Adds one to `key`'s count, copying the key only the first time.
fn count(m: &mut std::collections::HashMap<String, u64>, key: &str) {
    match m.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            m.insert(key.to_string(), 1);
        }
    }
}

/// Counts traces per time bucket and rating, and the top users and denied
/// operations, over every trace the query matches (its limit and cursor are
/// not used). Files are read as for [`run`], several at once.
pub async fn overview(
    sink: &Store,
    q: &Query,
    max_days: i64,
    bucket_ms: i64,
    top: usize,
) -> Result<Overview, QueryError> {
    let bucket_ms = bucket_ms.max(1);
    let mut q = q.clone();
    q.cursor = None;
    // Buckets start on whole multiples of their length (whole hours).
    let origin = q.from_ms - q.from_ms.rem_euclid(bucket_ms);
    let mut out = Overview {
        from_ms: origin,
        bucket_ms,
        ..Overview::default()
    };
    let Some(Plan { query, objects, .. }) = plan(sink, &q, max_days).await? else {
        return Ok(out);
    };
    let n = ((query.to_ms - origin + bucket_ms - 1) / bucket_ms).max(1) as usize;
    out.buckets = vec![[0; 3]; n];
    let shared = std::sync::Arc::new(query);
    let mut scans = futures::stream::iter(objects.into_iter().map(|(_, o)| {
        let q = shared.clone();
        let sink = sink.clone();
        async move {
            let bytes = sink.get(&o.key).await?;
            let scan =
                tokio::task::spawn_blocking(move || scan_overview(&q, &o.key, &bytes, origin, bucket_ms))
                    .await
                    .unwrap_or_default();
            Ok::<_, DestinationError>(scan)
        }
    }))
    .buffered(q.parallelism.max(1));
    let mut seen = IdSet::default();
    let mut users: std::collections::HashMap<String, u64> = Default::default();
    let mut denied: std::collections::HashMap<String, u64> = Default::default();
    while let Some(scan) = scans.next().await {
        let scan = scan?;
        out.scanned_objects += 1;
        out.scanned_traces += scan.traces;
        for item in scan.items {
            if !seen.insert(item.key) {
                continue;
            }
            out.total += 1;
            if let Some(b) = out.buckets.get_mut(item.bucket as usize) {
                b[item.rating as usize] += 1;
            }
            count(&mut users, &scan.users[item.user as usize]);
            if let Some(d) = item.denied {
                count(&mut denied, &scan.denied[d as usize]);
            }
        }
    }
    let top_of = |m: std::collections::HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(top);
        v
    };
    out.top_users = top_of(users);
    out.top_denied = top_of(denied);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field a query can read.
    const QUERY_FIELDS: Fields = Fields::of(&[
        Field::TraceId,
        Field::TraceName,
        Field::TraceRating,
        Field::ServiceType,
        Field::ResourceType,
        Field::ResourceName,
        Field::Namespace,
        Field::User,
        Field::SourceIps,
        Field::Time,
        Field::Code,
    ]);

    fn all_lines(key: &str, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Lines::new(key, bytes).unwrap();
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().unwrap() {
            out.push(l.to_vec());
        }
        out
    }

    #[test]
    fn lines_span_members_frames_and_long_lines() {
        use std::io::Write;
        // A line longer than the 1 MiB block, and a last line without a newline.
        let long = vec![b'x'; 3 << 20];
        let parts: [&[u8]; 3] = [b"a\nb\n", &long, b"\nc"];
        let expect = vec![b"a".to_vec(), b"b".to_vec(), long.clone(), b"c".to_vec()];
        let plain: Vec<u8> = parts.concat();
        assert_eq!(all_lines("f.jsonl", &plain), expect);
        // Each part its own gzip member / zstd frame, as delivery writes them.
        let mut gz = Vec::new();
        let mut zst = Vec::new();
        for part in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            gz.extend(e.finish().unwrap());
            zst.extend(zstd::encode_all(part, 1).unwrap());
        }
        assert_eq!(all_lines("f.jsonl.gz", &gz), expect);
        assert_eq!(all_lines("f.jsonl.zst", &zst), expect);
        // A damaged file is an error, not a silent end.
        let mut lines = Lines::new("f.jsonl.gz", &gz[..gz.len() / 2]).unwrap();
        let mut result = Ok(None);
        for _ in 0..10 {
            result = lines.next_line().map(|l| l.map(<[u8]>::to_vec));
            if !matches!(result, Ok(Some(_))) {
                break;
            }
        }
        assert!(result.is_err(), "a cut gzip file is reported: {result:?}");
    }

    fn q(from: &str, to: &str) -> Query {
        let (from, to) = (
            crate::trace::parse_time_ms(from).unwrap(),
            crate::trace::parse_time_ms(to).unwrap(),
        );
        Query {
            limit: 10,
            parallelism: 4,
            ..Query::new("p", vec!["c".into()], "t", from, to)
        }
    }

    #[test]
    fn duplicates_are_keyed_by_content_not_by_trace_id() {
        let a = r#"{"trace_id":"same","time":"2026-11-24T01:00:00Z","trace_name":"delete secrets","record_time":"2026-11-24T01:00:00.1Z","tracker":"t"}"#;
        // The same operation stored again by another replica: only record_time differs.
        let a_again = a.replace("01:00:00.1Z", "01:00:07.9Z");
        let b = r#"{"trace_id":"same","time":"2026-11-24T01:00:00Z","trace_name":"get secrets","record_time":"2026-11-24T01:00:00.1Z","tracker":"t"}"#;
        let old = r#"{"trace_id":"same","time":"2026-11-24T01:00:02Z"}"#;
        let body = format!("{a}\n{b}\n{a_again}\n{old}\n{old}\n");
        let scan = scan_file(
            &q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
            "x.jsonl",
            body.into_bytes(),
            10,
        );
        let distinct: HashSet<u64> = scan.matched.iter().copied().collect();
        assert_eq!(scan.matched.len(), 5);
        assert_eq!(
            distinct.len(),
            3,
            "two operations sharing an Audit-ID are two; copies are one"
        );
        // Results are keyed by content: the same three.
        let shown: HashSet<u64> = scan.hits.iter().map(|(k, _)| *k).collect();
        assert_eq!(shown.len(), 3);
        // Alike in trace ID, time and length, different in content: two results.
        let c = a.replace("delete", "update");
        let scan = scan_file(
            &q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
            "x.jsonl",
            format!("{a}\n{c}\n").into_bytes(),
            10,
        );
        let shown: HashSet<u64> = scan.hits.iter().map(|(k, _)| *k).collect();
        assert_eq!(shown.len(), 2, "both operations are shown");
    }

    #[test]
    fn prefixes_cover_exactly_the_days_asked() {
        let p = day_prefixes(&q("2026-11-22T23:00:00Z", "2026-11-24T00:00:00Z"));
        assert_eq!(p, ["p/KubeTrail/c/2026/11/22/t/", "p/KubeTrail/c/2026/11/23/t/"]);
        let p = day_prefixes(&q("2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"));
        assert_eq!(p, ["p/KubeTrail/c/2026/11/24/t/"]);
    }

    #[test]
    fn view_reads_fields_in_any_order_and_stops_early() {
        let v = View::read(br#"{"time":"t","trace_id":"a","namespace":"n"}"#, QUERY_FIELDS).unwrap();
        assert_eq!(
            (v.time.as_ref(), v.trace_id.as_ref(), v.namespace.as_ref()),
            ("t", "a", "n")
        );
        // Once every field was seen, what follows is not even looked at.
        let line = br#"{"trace_id":"a","trace_name":"get pods","trace_rating":"normal","service_type":"core","resource_type":"pods","resource_name":"p","namespace":"n","user":"u","source_ips":[],"code":200,"time":"t","request":{"broken"#;
        assert_eq!(View::read(line, QUERY_FIELDS).unwrap().user, "u");
        assert!(View::read(b"{not json", QUERY_FIELDS).is_none());
        assert!(
            View::read(br#"{"trace_id":"a","#, QUERY_FIELDS).is_none(),
            "a cut line with fields missing is refused"
        );
        // A query that reads only the ID and time stops after those two.
        let line = br#"{"trace_id":"a","user":"u","time":"t","namespace":{"broken"#;
        let v = View::read(line, Fields::of(&[Field::TraceId, Field::Time])).unwrap();
        assert_eq!(
            (v.trace_id.as_ref(), v.user.as_ref()),
            ("a", ""),
            "unneeded fields stay empty"
        );
    }

    #[test]
    fn file_times_come_from_the_name() {
        let k = "p/KubeTrail/c/2026/11/24/t/c_t_20261124T010101Z_w-1_0a1b2c3d-000000000042-00007.jsonl.gz";
        assert_eq!(
            file_time_ms(k),
            crate::trace::parse_time_ms("2026-11-24T01:01:01Z")
        );
        assert_eq!(file_time_ms("p/x.jsonl"), None);
    }

    #[test]
    fn filters_and_scope() {
        let line = r#"{"trace_id":"a","trace_name":"delete secrets","trace_rating":"warning","service_type":"core","resource_type":"secrets","resource_name":"db","namespace":"shop","user":"alice","source_ips":["10.0.0.1"],"time":"2026-11-24T01:00:00Z","request":{"big":[1,2,3]}}"#;
        let v = View::read(line.as_bytes(), QUERY_FIELDS).unwrap();
        let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
        // The view a query reads (only the fields it needs) decides as the full one does.
        let partial = |query: &Query| View::read(line.as_bytes(), needed_fields(query)).unwrap();
        assert!(matches(&query, &Criteria::from_query(&query.filter), &v));
        let set = |f: &mut QueryFilter, yaml: &str| *f = serde_json::from_str(yaml).unwrap();
        for (yaml, expect) in [
            (r#"{"verbs":["delete"]}"#, true),
            (r#"{"verbs":["get"]}"#, false),
            (r#"{"apiGroups":[""]}"#, true),
            (r#"{"apiGroups":["core"]}"#, true),
            (r#"{"apiGroups":["apps"]}"#, false),
            (r#"{"resources":["secrets"],"resourceNames":["db"]}"#, true),
            (r#"{"resourceNames":["other"]}"#, false),
            (r#"{"users":["ali*"],"ratings":["warning"]}"#, true),
            (r#"{"ratings":["normal"]}"#, false),
            (r#"{"sourceIps":["10.0.0.1"]}"#, true),
            (r#"{"traceIds":["b"]}"#, false),
        ] {
            set(&mut query.filter, yaml);
            let c = Criteria::from_query(&query.filter);
            assert_eq!(matches(&query, &c, &v), expect, "{yaml}");
            assert_eq!(
                matches(&query, &c, &partial(&query)),
                expect,
                "{yaml}, needed fields only"
            );
        }
        query.filter = QueryFilter::default();
        query.namespace_scope = Some("other".into());
        let c = Criteria::from_query(&query.filter);
        assert!(
            !matches(&query, &c, &v),
            "another namespace's trace is out of scope"
        );
        assert!(!matches(&query, &c, &partial(&query)));
        query.namespace_scope = Some("shop".into());
        assert!(matches(&query, &Criteria::from_query(&query.filter), &v));
        assert!(matches(&query, &c, &partial(&query)));
    }

    /// Trace files in a local directory, named as delivery names them.
    async fn files(dir: &std::path::Path, groups: &[&[(&str, &str, &str, i32)]]) -> Store {
        use crate::deliver::batch::{Batch, tracker_suffix};
        use crate::deliver::key::{FileId, object_key};
        let sink = Store::Dir(dir.to_path_buf());
        for (n, group) in groups.iter().enumerate() {
            let mut b = Batch::new(crate::api::Compression::Gzip);
            for (id, time, user, code) in group.iter() {
                let rating = match code {
                    500.. => "incident",
                    400.. => "warning",
                    _ => "normal",
                };
                let line = format!(
                    r#"{{"trace_id":"{id}","time":"{time}","trace_name":"get pods","trace_rating":"{rating}","resource_type":"pods","user":"{user}","code":{code},"namespace":"n"}}"#
                );
                b.push(line.as_bytes(), &tracker_suffix("t")).unwrap();
            }
            let key = object_key(&FileId {
                prefix: "p",
                cluster: "c",
                tracker: "t",
                writer: "w",
                epoch: "00000000",
                start: crate::spool::Position {
                    seq: n as u64,
                    idx: 0,
                },
                earliest_ms: crate::trace::parse_time_ms(group[0].1).unwrap(),
                compression: crate::api::Compression::Gzip,
            });
            sink.put(&key, b.finish().unwrap(), crate::api::Compression::Gzip)
                .await
                .unwrap();
        }
        sink
    }

    #[tokio::test]
    async fn pages_follow_the_cursor_and_skip_the_files_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = files(
            dir.path(),
            &[
                &[
                    ("a", "2026-11-24T01:00:00Z", "u", 200),
                    ("b", "2026-11-24T01:10:00Z", "u", 200),
                ],
                &[
                    ("c", "2026-11-24T02:00:00Z", "u", 200),
                    ("d", "2026-11-24T02:00:00Z", "u", 200),
                ],
                &[
                    ("e", "2026-11-24T03:00:00Z", "u", 200),
                    ("f", "2026-11-24T03:30:00Z", "u", 200),
                ],
            ],
        )
        .await;
        let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
        query.limit = 2;
        let mut seen = Vec::new();
        let mut read = Vec::new();
        loop {
            let out = run(&sink, &query, 31).await.unwrap();
            read.push(out.scanned_objects);
            seen.extend(out.hits.iter().map(|h| h.trace_id.clone()));
            match out.hits.last() {
                Some(h) if out.matched > out.hits.len() as u64 => {
                    query.cursor = Some((h.time_ms, h.trace_id.clone()));
                }
                _ => break,
            }
        }
        // Two traces at the same millisecond are split by ID, never lost or repeated.
        assert_eq!(seen, ["f", "e", "d", "c", "b", "a"]);
        assert_eq!(
            read,
            [3, 3, 2],
            "a page reads no file that starts after its cursor"
        );
        query.order = Order::OldestFirst;
        query.cursor = Some((
            crate::trace::parse_time_ms("2026-11-24T02:00:00Z").unwrap(),
            "c".into(),
        ));
        let out = run(&sink, &query, 31).await.unwrap();
        let ids: Vec<_> = out.hits.iter().map(|h| h.trace_id.as_str()).collect();
        assert_eq!(ids, ["d", "e"], "oldest first continues after the cursor");
    }

    #[tokio::test]
    async fn a_file_written_long_before_the_range_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let sink = files(dir.path(), &[&[("a", "2026-11-24T01:00:00Z", "u", 200)]]).await;
        let key = sink.list("p/").await.unwrap().remove(0).key;
        let set_written = |at: &str| {
            let ms = crate::trace::parse_time_ms(at).unwrap() as u64;
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(&key))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                .unwrap();
        };
        let later = q("2026-11-24T05:00:00Z", "2026-11-24T06:00:00Z");
        set_written("2026-11-24T01:00:30Z");
        assert_eq!(run(&sink, &later, 31).await.unwrap().scanned_objects, 0);
        // Within the clock slack it is still read (the store's clock may lag).
        set_written("2026-11-24T04:30:00Z");
        assert_eq!(run(&sink, &later, 31).await.unwrap().scanned_objects, 1);
        let whole = q("2026-11-24T00:00:00Z", "2026-11-24T06:00:00Z");
        assert_eq!(run(&sink, &whole, 31).await.unwrap().hits.len(), 1);
    }

    #[tokio::test]
    async fn newest_first_stops_when_no_file_left_can_hold_a_newer_trace() {
        let dir = tempfile::tempdir().unwrap();
        let sink = files(
            dir.path(),
            &[
                &[("a", "2026-11-24T01:00:00Z", "u", 200)],
                &[("b", "2026-11-24T05:00:00Z", "u", 200)],
                &[("c", "2026-11-24T09:00:00Z", "u", 200)],
            ],
        )
        .await;
        // Each file written 30 s after its trace, as delivery would.
        for o in sink.list("p/").await.unwrap() {
            let ms = file_time_ms(&o.key).unwrap() as u64 + 30_000;
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(&o.key))
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                .unwrap();
        }
        let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
        query.limit = 1;
        let full = run(&sink, &query, 31).await.unwrap();
        assert_eq!(
            (full.scanned_objects, full.matched),
            (3, 3),
            "exact counts by default"
        );
        query.stop_early = true;
        let out = run(&sink, &query, 31).await.unwrap();
        assert_eq!(out.hits[0].trace_id, "c");
        assert_eq!(
            out.scanned_objects, 1,
            "the older files cannot hold anything newer"
        );
        assert!(out.truncated, "more may exist: a page shows a next link");
        // A file rewritten late (a replay) may hold anything: it is read.
        let a = sink
            .list("p/")
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.key.contains("T010000Z"))
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(&a.key))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(run(&sink, &query, 31).await.unwrap().scanned_objects, 3);
    }

    #[tokio::test]
    async fn the_overview_counts_every_match_by_bucket_rating_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let sink = files(
            dir.path(),
            &[
                &[
                    ("a", "2026-11-24T01:05:00Z", "ann", 200),
                    ("b", "2026-11-24T01:55:00Z", "bob", 403),
                ],
                &[
                    ("c", "2026-11-24T02:15:00Z", "ann", 500),
                    ("d", "2026-11-24T02:20:00Z", "ann", 200),
                ],
                // The same trace delivered twice (a retry) counts once.
                &[("d", "2026-11-24T02:20:00Z", "ann", 200)],
            ],
        )
        .await;
        let query = q("2026-11-24T01:30:00Z", "2026-11-24T03:00:00Z");
        let o = overview(&sink, &query, 31, 3_600_000, 10).await.unwrap();
        assert_eq!(
            o.from_ms,
            crate::trace::parse_time_ms("2026-11-24T01:00:00Z").unwrap(),
            "whole hours"
        );
        assert_eq!(
            o.buckets,
            vec![[0, 1, 0], [1, 0, 1]],
            "a (01:05) is before the range"
        );
        assert_eq!(o.total, 3);
        assert_eq!(o.top_users, vec![("ann".to_string(), 2), ("bob".to_string(), 1)]);
        assert_eq!(o.top_denied, vec![("get pods".to_string(), 1)]);
    }
}
