//! The query engine: "what happened", over a tracker's trace files.
//!
//! For a time range it lists only the day prefixes the range touches, fetches
//! and decompresses files with a bounded number in flight, filters each trace as
//! it streams (from a borrowed view, without building the whole JSON value), shows
//! a trace found twice once (same trace ID, time and size: a file written again
//! after a crash, an event re-sent in another batch), and orders newest first (or oldest first for a resource's
//! lifecycle), stopping early where the order allows.

use crate::api::{Order, QueryFilter};
use crate::route::Criteria;
use crate::store::key::day_prefix;
use crate::store::s3::DestinationError;
use crate::store::{ObjectInfo, Store};
use crate::trace::View;
use crate::trace::view::{Field, Fields};
use futures::StreamExt;
use std::borrow::Cow;
use std::collections::{BinaryHeap, HashSet};

mod overview;
mod scan;
mod spill;

pub use overview::{Overview, overview};
use scan::{FileScan, IdSet, scan_file};
pub use spill::Spill;

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
    /// [`Query::new`] over the trails of `trail`'s tracker (its prefix) in
    /// `clusters` (one bucket may hold many clusters' trails).
    pub fn of(trail: &crate::store::Trail, clusters: Vec<String>, from_ms: i64, to_ms: i64) -> Query {
        Query::new(
            trail.prefix.clone(),
            clusters,
            trail.tracker.clone(),
            from_ms,
            to_ms,
        )
    }

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
        let base = crate::store::key::area_prefix(prefix, crate::store::key::Area::Traces);
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

#[cfg(test)]
mod tests;
