//! The console's overview: counts over every trace a query matches, by time
//! bucket, rating, user and denied operation.

use super::scan::{IdSet, Lines, count_key};
use super::*;

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
pub(super) struct OverviewItem {
    key: u64,
    bucket: u32,
    rating: u8,
    user: u32,
    denied: Option<u32>,
}

#[derive(Default)]
pub(super) struct OverviewScan {
    traces: u64,
    items: Vec<OverviewItem>,
    users: Vec<String>,
    denied: Vec<String>,
}

pub(super) fn intern(
    table: &mut Vec<String>,
    index: &mut std::collections::HashMap<String, u32>,
    s: &str,
) -> u32 {
    if let Some(i) = index.get(s) {
        return *i;
    }
    let i = table.len() as u32;
    table.push(s.to_string());
    index.insert(s.to_string(), i);
    i
}

pub(super) fn scan_overview(q: &Query, key: &str, bytes: &[u8], origin: i64, bucket_ms: i64) -> OverviewScan {
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
pub(super) fn count(m: &mut std::collections::HashMap<String, u64>, key: &str) {
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
