//! One tracker's delivery: read the spool from its cursor, keep what its filter
//! matches, cut files by age, count and size, write them, then move the cursor.
//!
//! Each pipeline runs on a thread of its own (compression is CPU work) and calls
//! the async S3 client through the runtime handle. It reads the spool only as fast
//! as it delivers: a slow or failing bucket leaves data in the spool, not in memory.

use super::batch::{Batch, tracker_suffix};
use super::key::{FileId, object_key};
use super::s3::DestinationError;
use super::sink::Sink;
use crate::api::{Compression, Redaction};
use crate::route::Filter;
use crate::spool::{Position, Spool, entries};
use crate::telemetry::{Metrics, TrackerLabels};
use crate::trace::{self, RouteMeta};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds the sink of a tracker (reads credentials); called again after failures
/// that new credentials may fix.
pub type SinkFactory = Arc<dyn Fn() -> BoxFuture<'static, Result<Sink, String>> + Send + Sync>;

/// What a pipeline needs to know about its tracker.
#[derive(Clone)]
pub struct PipelineSpec {
    pub name: String,
    pub prefix: String,
    pub filter: Filter,
    pub compression: Compression,
    pub max_age: Duration,
    pub max_events: u64,
    pub max_bytes: u64,
    pub redaction: Redaction,
    pub sink: SinkFactory,
    /// Changes when anything above changes; a changed pipeline is restarted.
    pub fingerprint: String,
}

/// Identity of this writer.
#[derive(Clone, Debug)]
pub struct WriterId {
    pub cluster: String,
    /// Pod name (or host name): files of different replicas never collide.
    pub writer: String,
}

/// What a tracker has delivered, for its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryStats {
    pub last_key: Option<String>,
    pub last_time: Option<jiff::Timestamp>,
    pub last_events: u64,
    /// Traces and files delivered since the pipeline started in this process.
    pub events: u64,
    pub files: u64,
    pub last_error: Option<(String, String)>,
}

/// Delivery statistics of every tracker, shared with the status writer.
pub type Stats = Arc<Mutex<HashMap<String, DeliveryStats>>>;

struct Running {
    fingerprint: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The set of running pipelines.
pub struct Pipelines {
    spool: Spool,
    id: WriterId,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    pub stats: Stats,
    /// Recent receive→written latencies in ms (one per spool record per file),
    /// bounded; for `kubetrail bench`.
    pub latencies: Latencies,
    running: Mutex<HashMap<String, Running>>,
}

/// Bounded store of recent delivery latencies (ms).
pub type Latencies = Arc<Mutex<std::collections::VecDeque<i64>>>;
const MAX_LATENCY_SAMPLES: usize = 100_000;

impl Pipelines {
    pub fn new(spool: Spool, id: WriterId, metrics: Arc<Metrics>) -> Arc<Pipelines> {
        Arc::new(Pipelines {
            spool,
            id,
            handle: tokio::runtime::Handle::current(),
            metrics,
            stats: Stats::default(),
            latencies: Latencies::default(),
            running: Mutex::default(),
        })
    }

    /// Makes the running pipelines match `desired` (the enabled trackers): starts
    /// new ones, restarts changed ones, stops the others and releases their cursors.
    pub fn apply(&self, desired: Vec<PipelineSpec>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<String, PipelineSpec> =
            desired.into_iter().map(|s| (s.name.clone(), s)).collect();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            if !wanted.contains_key(&name) {
                if let Some(r) = running.remove(&name) {
                    r.stop.store(true, Ordering::SeqCst);
                }
                if let Err(e) = self.spool.deactivate(&name) {
                    tracing::warn!(tracker = %name, error = %e, "releasing cursor failed");
                }
                // Counters stay: they rise for the life of the process, so the
                // lease holder never mistakes a re-enabled tracker for a reset.
                if let Some(s) = self
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&name)
                {
                    s.last_error = None;
                }
                tracing::info!(tracker = %name, "delivery stopped");
            }
        }
        for (name, spec) in wanted {
            let previous = match running.get(&name) {
                Some(r) if r.fingerprint == spec.fingerprint => continue,
                Some(_) => running.remove(&name),
                None => None,
            };
            let previous_thread = previous.and_then(|mut r| {
                r.stop.store(true, Ordering::SeqCst);
                r.thread.take()
            });
            let stop = Arc::new(AtomicBool::new(false));
            let worker = Worker {
                spec: spec.clone(),
                spool: self.spool.clone(),
                id: self.id.clone(),
                handle: self.handle.clone(),
                metrics: self.metrics.clone(),
                stats: self.stats.clone(),
                latencies: self.latencies.clone(),
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("deliver-{name}"))
                .spawn(move || {
                    // A restarted pipeline starts once the old one has stopped, from
                    // the cursor the old one left.
                    if let Some(t) = previous_thread {
                        let _ = t.join();
                    }
                    worker.run();
                });
            match thread {
                Ok(t) => {
                    running.insert(
                        name,
                        Running {
                            fingerprint: spec.fingerprint,
                            stop,
                            thread: Some(t),
                        },
                    );
                }
                Err(e) => tracing::error!(tracker = %name, error = %e, "starting delivery thread failed"),
            }
        }
    }

    /// Names of the running pipelines.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Stops every pipeline and waits for them.
    pub fn shutdown(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.values() {
            r.stop.store(true, Ordering::SeqCst);
        }
        for (_, mut r) in running.drain() {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Worker {
    spec: PipelineSpec,
    spool: Spool,
    id: WriterId,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    stats: Stats,
    latencies: Latencies,
    stop: Arc<AtomicBool>,
}

/// A record being consumed.
struct Current {
    seq: u64,
    received_ms: i64,
    payload: Vec<u8>,
    next_idx: u32,
}

impl Worker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn run(self) {
        let name = self.spec.name.clone();
        let span = tracing::info_span!("deliver", tracker = %name);
        let _guard = span.enter();
        let mut committed = match self.spool.activate(&name) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "activating cursor failed");
                return;
            }
        };
        tracing::info!(seq = committed.seq, idx = committed.idx, "delivery started");
        let mut sink: Option<Sink> = None;
        let mut reader = self.spool.reader(committed);
        let mut head_rx = self.spool.subscribe();
        let suffix = tracker_suffix(&name);
        let mut pos = committed;
        let mut current: Option<Current> = None;
        let mut batch: Option<Batch> = None;
        let mut last_idle_commit = Instant::now();

        while !self.stopped() {
            // Take the next record if the current one is used up.
            if current.is_none() {
                match reader.next_record() {
                    Ok(Some(rec)) => {
                        let next_idx = if rec.seq == pos.seq { pos.idx } else { 0 };
                        pos = Position {
                            seq: rec.seq,
                            idx: next_idx,
                        };
                        current = Some(Current {
                            seq: rec.seq,
                            received_ms: rec.received_ms,
                            payload: rec.payload,
                            next_idx,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reading spool failed");
                        std::thread::sleep(Duration::from_secs(1));
                        reader = self.spool.reader(pos);
                        continue;
                    }
                }
            }

            let mut cut = false;
            if let Some(cur) = current.as_mut() {
                let mut sampled = false;
                for (i, (meta, line)) in entries::iter(&cur.payload)
                    .enumerate()
                    .skip(cur.next_idx as usize)
                {
                    cur.next_idx = i as u32 + 1;
                    pos = Position {
                        seq: cur.seq,
                        idx: cur.next_idx,
                    };
                    let Ok(meta) = serde_json::from_slice::<RouteMeta<'_>>(meta) else {
                        tracing::warn!(
                            seq = cur.seq,
                            idx = i,
                            "unreadable routing metadata; trace skipped"
                        );
                        continue;
                    };
                    if !self.spec.filter.matches(&meta) {
                        continue;
                    }
                    let b = batch.get_or_insert_with(|| {
                        Batch::new(self.spec.compression, committed, now_ms(), meta.time_ms)
                    });
                    let redacted = redact_for(&self.spec.redaction, &meta, line);
                    if let Err(e) = b.push(redacted.as_deref().unwrap_or(line), &suffix) {
                        tracing::error!(error = %e, "compressing failed");
                    }
                    if !sampled {
                        b.received_ms.push(cur.received_ms);
                        sampled = true;
                    }
                    if b.events >= self.spec.max_events || b.raw_bytes >= self.spec.max_bytes {
                        cut = true;
                        break;
                    }
                }
                if !cut {
                    current = None;
                }
            }

            let caught_up = current.is_none() && reader.next_seq() >= self.spool.head();
            let max_age_ms = self.spec.max_age.as_millis() as i64;
            let aged = batch
                .as_ref()
                .is_some_and(|b| now_ms() - b.opened_ms >= max_age_ms);
            if cut || aged {
                if let Some(b) = batch.take() {
                    if self.deliver(b, pos, &mut sink) {
                        committed = pos;
                        last_idle_commit = Instant::now();
                    } else {
                        // Stopped before the file was written: the next pipeline
                        // starts again from the committed cursor.
                        return;
                    }
                }
                continue;
            }

            if caught_up {
                // Nothing pending in a batch: let the cursor follow skipped traces
                // now and then, so the spool can be trimmed.
                if batch.is_none() && pos != committed && last_idle_commit.elapsed() >= Duration::from_secs(1)
                {
                    match self.spool.commit(&name, pos) {
                        Ok(()) => committed = pos,
                        Err(e) => tracing::warn!(error = %e, "committing cursor failed"),
                    }
                    last_idle_commit = Instant::now();
                }
                let wait = match &batch {
                    Some(b) => {
                        let left = b.opened_ms + max_age_ms - now_ms();
                        Duration::from_millis(left.clamp(1, 200) as u64)
                    }
                    None => Duration::from_millis(200),
                };
                let head = self.spool.head();
                self.handle.block_on(async {
                    if *head_rx.borrow_and_update() > head {
                        return;
                    }
                    let _ = tokio::time::timeout(wait, head_rx.changed()).await;
                });
            }
        }
    }

    /// Writes a file, retrying until it is written or the pipeline is stopped.
    /// Returns whether it was written; the cursor is moved to `end` only then.
    fn deliver(&self, batch: Batch, end: Position, sink: &mut Option<Sink>) -> bool {
        let name = &self.spec.name;
        let key = object_key(&FileId {
            prefix: &self.spec.prefix,
            cluster: &self.id.cluster,
            tracker: name,
            writer: &self.id.writer,
            epoch: self.spool.epoch(),
            start: batch.start,
            first_time_ms: batch.first_time_ms,
            compression: self.spec.compression,
        });
        let events = batch.events;
        let received = batch.received_ms.clone();
        let body = match batch.finish() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "finishing compression failed");
                return false;
            }
        };
        let size = body.len();
        let mut attempt = 0u32;
        loop {
            if self.stopped() {
                return false;
            }
            attempt += 1;
            let result: Result<(), (String, String)> = self.handle.block_on(async {
                if sink.is_none() {
                    *sink = Some(
                        (self.spec.sink)()
                            .await
                            .map_err(|e| ("SinkUnavailable".to_string(), e))?,
                    );
                }
                let s = sink
                    .as_ref()
                    .ok_or_else(|| ("SinkUnavailable".to_string(), String::new()))?;
                s.put(&key, body.clone(), self.spec.compression)
                    .await
                    .map_err(|e: DestinationError| (e.reason().to_string(), e.to_string()))
            });
            match result {
                Ok(()) => break,
                Err((reason, message)) => {
                    self.metrics
                        .delivery_errors
                        .get_or_create(&crate::telemetry::ReasonLabels {
                            reason: reason.clone(),
                        })
                        .inc();
                    tracing::warn!(%key, attempt, %reason, error = %message, "writing trace file failed; will retry");
                    {
                        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                        stats.entry(name.clone()).or_default().last_error = Some((reason.clone(), message));
                    }
                    // Credentials or destination may have been fixed meanwhile.
                    if reason != "DestinationUnreachable" && reason != "S3Error" {
                        *sink = None;
                    }
                    let delay = retry_delay(attempt);
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !self.stopped() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        if let Err(e) = self.spool.commit(name, end) {
            // The file is written; without the cursor it is rewritten (same key) after a restart.
            tracing::warn!(error = %e, "committing cursor failed");
        }
        let now = jiff::Timestamp::now();
        let labels = TrackerLabels {
            tracker: name.clone(),
        };
        self.metrics
            .events_delivered
            .get_or_create(&labels)
            .inc_by(events);
        self.metrics.files_delivered.get_or_create(&labels).inc();
        let now_ms = now.as_millisecond();
        {
            let mut lat = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
            for r in received {
                let ms = (now_ms - r).max(0);
                self.metrics.delivery_latency.observe(ms as f64 / 1000.0);
                if lat.len() == MAX_LATENCY_SAMPLES {
                    lat.pop_front();
                }
                lat.push_back(ms);
            }
        }
        tracing::info!(%key, events, bytes = size, "trace file delivered");
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = stats.entry(name.clone()).or_default();
        s.last_key = Some(key);
        s.last_time = Some(now);
        s.last_events = events;
        s.events += events;
        s.files += 1;
        s.last_error = None;
        true
    }
}

/// 1 s doubling to 30 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A tracker's own redaction (beyond the Secret values removed at ingest), applied
/// only to traces it concerns. `None`: the line stays as it is.
fn redact_for(r: &Redaction, meta: &RouteMeta<'_>, line: &[u8]) -> Option<Vec<u8>> {
    let exec = r.exec_command && matches!(meta.resource.as_ref(), "pods/exec" | "pods/attach");
    let fields: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| f.api_group == meta.group && f.resource == meta.resource)
        .flat_map(|f| f.paths.iter().map(String::as_str))
        .collect();
    if !exec && fields.is_empty() {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    if exec && let Some(uri) = v.get("request_uri").and_then(|u| u.as_str()) {
        v["request_uri"] = serde_json::Value::String(trace::redact_exec_command(uri));
    }
    for body in ["request", "response"] {
        if let Some(obj) = v.get_mut(body) {
            for p in &fields {
                trace::remove_path(obj, p);
            }
        }
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FieldRedaction;

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(6), Duration::from_secs(30));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }

    #[test]
    fn tracker_redaction_applies_only_where_configured() {
        let meta = |resource: &'static str| RouteMeta {
            verb: "create".into(),
            group: "".into(),
            resource: resource.into(),
            namespace: "d".into(),
            user: "u".into(),
            groups: vec![],
            stage: "ResponseComplete".into(),
            time_ms: 0,
        };
        let r = Redaction {
            exec_command: true,
            fields: vec![FieldRedaction {
                api_group: "".into(),
                resource: "configmaps".into(),
                paths: vec!["data".into()],
            }],
        };
        let exec = br#"{"request_uri":"/api/v1/namespaces/d/pods/p/exec?command=cat&command=/etc/passwd&stdin=true"}"#;
        let out = redact_for(&r, &meta("pods/exec"), exec).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"request_uri":"/api/v1/namespaces/d/pods/p/exec?stdin=true"}"#
        );
        let cm = br#"{"request":{"data":{"k":"v"},"metadata":{}},"response":{"data":{"k":"v"}}}"#;
        let out = String::from_utf8(redact_for(&r, &meta("configmaps"), cm).unwrap()).unwrap();
        assert!(!out.contains(r#""k":"v""#), "{out}");
        assert!(redact_for(&r, &meta("secrets"), cm).is_none());
        assert!(redact_for(&Redaction::default(), &meta("pods/exec"), exec).is_none());
    }
}
