//! One tracker's delivery: read the spool from its cursor, keep what its filter
//! matches, keep one open file per UTC day ([`super::batcher`] decides when to cut),
//! name each file before writing it, write it, then record what is done.
//!
//! Each pipeline runs on a thread of its own (compression is CPU work) under a
//! supervisor that restarts it with backoff when it fails, and calls the async S3
//! client through the runtime handle. It reads the spool only as fast as it
//! delivers: a slow or failing bucket leaves data in the spool, not in memory.
//!
//! Exactly once per file: before a file is written its key and extent are
//! persisted as an intent ([`crate::spool::Intent`]); after a crash the same file
//! is rebuilt and written under the same key, and entries already in delivered
//! files are skipped on replay. Stopping (SIGTERM, a disabled or deleted tracker,
//! a changed spec) drains: everything spooled is read, every open file is cut and
//! written, then the thread ends, or gives up at the drain deadline leaving the
//! rest in the spool for the next start.

use super::batch::{Batch, tracker_suffix};
use super::batcher::{Batcher, Limits, OpenFile, day_of};
use super::key::{FileId, object_key};
use crate::api::{Compression, Problem, Reason, Redaction};
use crate::integrity::digest::{self as digest_file, DigestFile};
use crate::integrity::{Chain, Delivered, IntegritySpec, boundary_before, period_end};
use crate::route::Filter;
use crate::spool::{self, Intent, Position, Spool, TrackerCursor, entries};
use crate::store::DestinationError;
use crate::store::Store;
use crate::telemetry::{Metrics, TrackerLabels};
use crate::trace::RouteMeta;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds the sink of a tracker (reads credentials); called again after failures
/// that new credentials may fix. A failure keeps the store's own reason (a
/// missing credentials Secret is `CredentialsNotFound`, not a generic one).
pub type StoreFactory = Arc<dyn Fn() -> BoxFuture<'static, Result<Store, Problem>> + Send + Sync>;

/// How long a pipeline that is replaced (changed spec) or retired (disabled,
/// deleted tracker) may take to deliver what it holds.
const RETIRE_DRAIN: Duration = Duration::from_secs(30);

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
    /// Signed digests of delivered files, when `integrity.digests` is on.
    pub integrity: Option<IntegritySpec>,
    pub sink: StoreFactory,
    /// Changes when anything above changes; a changed pipeline is restarted.
    pub fingerprint: String,
}

/// Identity of this writer.
#[derive(Clone, Debug)]
pub struct WriterId {
    pub cluster: String,
    /// Pod name (or host name): files of different replicas never collide, and a
    /// restarted replica (same name, same spool) rewrites the same keys.
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
    /// The last failure, until a file is written again.
    pub last_error: Option<Problem>,
    /// Since when writes have been failing without a success in between.
    pub failing_since: Option<jiff::Timestamp>,
    /// Spool entries dropped unexamined over the backlog budget (this process).
    pub dropped: u64,
    /// Over the backlog budget right now.
    pub overflowing: bool,
    /// Damaged spool records skipped.
    pub corrupt: u64,
    /// Times the pipeline was restarted after a failure.
    pub restarts: u64,
    /// The latest digest this process wrote: the chain head to publish outside
    /// the bucket.
    pub chain_head: Option<crate::integrity::ChainHead>,
}

/// Delivery statistics of every tracker, shared with the status writer.
pub type Stats = Arc<Mutex<HashMap<String, DeliveryStats>>>;

/// Stop signal of a pipeline: drain until the deadline, then give up.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    fn stop(&self, drain: Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + drain);
        self.stop.store(true, Ordering::SeqCst);
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// Stopping, and the drain deadline has passed.
    fn expired(&self) -> bool {
        self.stopping()
            && self
                .deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|d| Instant::now() >= d)
    }
}

struct Running {
    fingerprint: String,
    control: Arc<Control>,
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
    /// Pipelines of disabled or deleted trackers that are still draining; their
    /// cursor is released when they are done.
    retiring: Mutex<HashMap<String, std::thread::JoinHandle<()>>>,
}

/// Bounded store of recent delivery latencies (ms).
pub type Latencies = Arc<Mutex<std::collections::VecDeque<i64>>>;
const MAX_LATENCY_SAMPLES: usize = 100_000;

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
            retiring: Mutex::default(),
        })
    }

    /// Makes the running pipelines match `desired` (the enabled trackers): starts
    /// new ones, restarts changed ones (the old one drains first), and retires the
    /// others: they deliver what they hold, then release their cursors.
    pub fn apply(&self, desired: Vec<PipelineSpec>) {
        let mut running = guard(&self.running);
        let wanted: HashMap<String, PipelineSpec> =
            desired.into_iter().map(|s| (s.name.clone(), s)).collect();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            if wanted.contains_key(&name) {
                continue;
            }
            let Some(mut r) = running.remove(&name) else {
                continue;
            };
            r.control.stop(RETIRE_DRAIN);
            let thread = r.thread.take();
            let spool = self.spool.clone();
            let stats = self.stats.clone();
            let n = name.clone();
            let retire = std::thread::Builder::new()
                .name(format!("retire-{name}"))
                .spawn(move || {
                    if let Some(t) = thread {
                        let _ = t.join();
                    }
                    if let Err(e) = spool.deactivate(&n) {
                        tracing::warn!(tracker = %n, error = %e, "releasing cursor failed");
                    }
                    // Counters stay: they rise for the life of the process, so the
                    // lease holder never mistakes a re-enabled tracker for a reset.
                    if let Some(s) = guard(&stats).get_mut(&n) {
                        s.last_error = None;
                        s.failing_since = None;
                        s.overflowing = false;
                    }
                    tracing::info!(tracker = %n, "delivery stopped");
                });
            match retire {
                Ok(t) => {
                    guard(&self.retiring).insert(name, t);
                }
                Err(e) => tracing::error!(tracker = %name, error = %e, "starting retire thread failed"),
            }
        }
        for (name, spec) in wanted {
            let previous = match running.get(&name) {
                Some(r) if r.fingerprint == spec.fingerprint => continue,
                Some(_) => running.remove(&name),
                None => None,
            };
            let previous_thread = previous
                .and_then(|mut r| {
                    r.control.stop(RETIRE_DRAIN);
                    r.thread.take()
                })
                .or_else(|| guard(&self.retiring).remove(&name));
            let control = Arc::new(Control::default());
            let worker = Worker {
                spec: spec.clone(),
                spool: self.spool.clone(),
                id: self.id.clone(),
                handle: self.handle.clone(),
                metrics: self.metrics.clone(),
                stats: self.stats.clone(),
                latencies: self.latencies.clone(),
                control: control.clone(),
                labels: TrackerLabels {
                    tracker: name.clone(),
                },
            };
            let thread = std::thread::Builder::new()
                .name(format!("deliver-{name}"))
                .spawn(move || {
                    // A restarted pipeline starts once the old one has drained, from
                    // the state the old one left.
                    if let Some(t) = previous_thread {
                        let _ = t.join();
                    }
                    worker.supervise();
                });
            match thread {
                Ok(t) => {
                    running.insert(
                        name,
                        Running {
                            fingerprint: spec.fingerprint,
                            control,
                            thread: Some(t),
                        },
                    );
                }
                Err(e) => tracing::error!(tracker = %name, error = %e, "starting delivery thread failed"),
            }
        }
    }

    /// Trackers this replica still delivers for: running pipelines, and retired
    /// ones that are still draining.
    pub fn delivering(&self) -> std::collections::HashSet<String> {
        let mut names: std::collections::HashSet<String> = guard(&self.running).keys().cloned().collect();
        names.extend(
            guard(&self.retiring)
                .iter()
                .filter(|(_, t)| !t.is_finished())
                .map(|(n, _)| n.clone()),
        );
        names
    }

    /// Names of the running pipelines.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = guard(&self.running).keys().cloned().collect();
        v.sort();
        v
    }

    /// Drains every pipeline: each reads what is spooled, cuts and writes its open
    /// files, and ends; at `drain` from now, whatever is not written stays in the
    /// spool for the next start. Blocks until all have ended.
    pub fn shutdown(&self, drain: Duration) {
        // Taken out of the map first: the lock is never held while waiting (the
        // status publisher reads the map from the async runtime the pipelines
        // themselves need to make progress).
        let stopping: Vec<Running> = guard(&self.running).drain().map(|(_, r)| r).collect();
        for r in &stopping {
            r.control.stop(drain);
        }
        for mut r in stopping {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
        let retiring: Vec<_> = guard(&self.retiring).drain().collect();
        for (_, t) in retiring {
            let _ = t.join();
        }
    }
}

/// Why one run of a pipeline ended early; the supervisor restarts it.
#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("compressing a trace file: {0}")]
    Compress(std::io::Error),
    #[error("digest chain: {0}")]
    Chain(String),
}

/// What is being written.
enum Object<'a> {
    Trace,
    /// A signed digest: its signature also goes into the object's metadata.
    Digest {
        previous: &'a crate::integrity::Previous,
        fingerprint: &'a str,
    },
}

struct Worker {
    spec: PipelineSpec,
    spool: Spool,
    id: WriterId,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    stats: Stats,
    latencies: Latencies,
    control: Arc<Control>,
    labels: TrackerLabels,
}

/// A record being consumed.
struct Current {
    seq: u64,
    received_ms: i64,
    payload: Vec<u8>,
    next_idx: u32,
}

/// The files a run holds open.
struct Open {
    batcher: Batcher,
    batches: HashMap<i64, Batch>,
}

/// Whether a file was written, or the pipeline gave up at its drain deadline.
#[derive(PartialEq)]
enum Written {
    Yes,
    Abandoned,
}

/// The trace time of an entry; the receive time when the event had none.
fn trace_time(meta: &RouteMeta<'_>, received_ms: i64) -> i64 {
    if meta.time_ms != 0 {
        meta.time_ms
    } else {
        received_ms
    }
}

impl Worker {
    /// Runs the pipeline; restarts it with backoff (1 s doubling to 60 s) when
    /// it fails or panics, with the error in the tracker's status.
    fn supervise(self) {
        let span = tracing::info_span!("deliver", tracker = %self.spec.name);
        let _guard = span.enter();
        let mut failures = 0u32;
        loop {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
            let message = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!(
                    "panicked: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                ),
            };
            failures += 1;
            tracing::error!(error = %message, failures, "delivery pipeline failed; restarting");
            self.metrics.pipeline_restarts.get_or_create(&self.labels).inc();
            {
                let mut stats = guard(&self.stats);
                let s = stats.entry(self.spec.name.clone()).or_default();
                s.restarts += 1;
                s.last_error = Some(Problem::new(Reason::PipelineFailed, message));
                s.failing_since.get_or_insert_with(jiff::Timestamp::now);
            }
            if self.control.expired() {
                return;
            }
            let delay =
                Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60));
            let until = Instant::now() + delay;
            while Instant::now() < until && !self.control.expired() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn stats<R>(&self, f: impl FnOnce(&mut DeliveryStats) -> R) -> R {
        let mut stats = guard(&self.stats);
        f(stats.entry(self.spec.name.clone()).or_default())
    }

    /// Mirrors the spool's view of this tracker's backlog into stats and metrics;
    /// also called while a write is being retried, when the backlog grows.
    fn note_drops(&self) {
        let b = self.spool.backlog(&self.spec.name);
        let dropped_delta = self.stats(|s| {
            let delta = b.dropped.saturating_sub(s.dropped);
            s.dropped = s.dropped.max(b.dropped);
            s.overflowing = b.overflowing;
            delta
        });
        if dropped_delta > 0 {
            self.metrics
                .events_dropped
                .get_or_create(&self.labels)
                .inc_by(dropped_delta);
        }
        self.metrics
            .backlog_overflow
            .get_or_create(&self.labels)
            .set(i64::from(b.overflowing));
    }

    /// [`Self::note_drops`], and damaged records the reader skipped.
    fn note_backlog(&self, reader_corrupt: &mut u64, reader: &spool::Reader) {
        self.note_drops();
        let new_corrupt = reader.corrupt.saturating_sub(*reader_corrupt);
        *reader_corrupt = reader.corrupt;
        if new_corrupt > 0 {
            self.stats(|s| s.corrupt += new_corrupt);
            self.metrics
                .spool_corrupt_records
                .get_or_create(&self.labels)
                .inc_by(new_corrupt);
        }
    }

    /// One run: recover an interrupted file, then deliver until stopped.
    fn run(&self) -> Result<(), PipelineError> {
        let name = self.spec.name.as_str();
        let mut state = self.spool.activate(name)?;
        let mut sink: Option<Store> = None;
        if let Some(intent) = state.pending.clone()
            && self.recover(&intent, &mut state, &mut sink)? == Written::Abandoned
        {
            return Ok(());
        }
        self.resume_chain(&mut state, &mut sink)?;
        tracing::info!(seq = state.pos.seq, idx = state.pos.idx, "delivery started");
        let mut reader = self.spool.reader(state.pos);
        let mut head_rx = self.spool.subscribe();
        let suffix = tracker_suffix(name);
        let mut read = state.pos;
        let mut current: Option<Current> = None;
        let mut open = Open {
            batcher: Batcher::new(Limits {
                max_events: self.spec.max_events.max(1),
                max_bytes: self.spec.max_bytes.max(1),
                max_age_ms: self.spec.max_age.as_millis() as i64,
            }),
            batches: HashMap::new(),
        };
        let mut last_idle_commit = Instant::now();
        let mut corrupt_seen = 0u64;
        let mut last_note = Instant::now() - Duration::from_secs(1);

        loop {
            if last_note.elapsed() >= Duration::from_millis(500) {
                self.note_backlog(&mut corrupt_seen, &reader);
                last_note = Instant::now();
            }
            if self.control.expired() {
                // Out of time: what is not written stays in the spool.
                return Ok(());
            }
            if let Some(spec) = &self.spec.integrity
                && let Some(chain) = &state.chain
                && now_ms() >= period_end(chain.period_start_ms, spec.period)
            {
                let end = boundary_before(now_ms(), spec.period);
                if self.write_digest(&mut state, end, &mut sink)? == Written::Abandoned {
                    return Ok(());
                }
            }
            // Segments dropped for this tracker over its budget: go on after them.
            if let Some(floor) = self.spool.floor(name)
                && floor > read
            {
                tracing::warn!(
                    from = read.seq,
                    to = floor.seq,
                    "skipping segments dropped over the backlog budget"
                );
                reader = self.spool.reader(floor);
                read = floor;
                current = None;
            }
            if current.is_none()
                && let Some(rec) = reader.next_record()?
            {
                let next_idx = if rec.seq == read.seq { read.idx } else { 0 };
                read = Position {
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

            let mut full_day = None;
            if let Some(cur) = current.as_mut() {
                let now = now_ms();
                for (i, (meta, line)) in entries::iter(&cur.payload)
                    .enumerate()
                    .skip(cur.next_idx as usize)
                {
                    let here = Position {
                        seq: cur.seq,
                        idx: i as u32,
                    };
                    cur.next_idx = i as u32 + 1;
                    read = Position {
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
                    let t = trace_time(&meta, cur.received_ms);
                    let day = day_of(t);
                    if state.is_done(day, here) {
                        // Already in a file written before a restart.
                        continue;
                    }
                    let redacted = redact_for(&self.spec.redaction, &meta, line);
                    let line = redacted.as_deref().unwrap_or(line);
                    let batch = open
                        .batches
                        .entry(day)
                        .or_insert_with(|| Batch::new(self.spec.compression));
                    batch.push(line, &suffix).map_err(PipelineError::Compress)?;
                    if batch.received_ms.last() != Some(&cur.received_ms) {
                        batch.received_ms.push(cur.received_ms);
                    }
                    let added = open.batcher.add(here, t, (line.len() + suffix.len()) as u64, now);
                    if added.full {
                        full_day = Some(day);
                        break;
                    }
                }
                if full_day.is_none() {
                    current = None;
                }
            }
            if let Some(day) = full_day {
                if self.cut(day, &mut open, &mut state, read, &mut sink)? == Written::Abandoned {
                    return Ok(());
                }
                continue;
            }
            let aged = open.batcher.aged(now_ms());
            if !aged.is_empty() {
                for day in aged {
                    if self.cut(day, &mut open, &mut state, read, &mut sink)? == Written::Abandoned {
                        return Ok(());
                    }
                }
                continue;
            }

            let caught_up = current.is_none() && reader.next_seq() >= self.spool.head();
            if !caught_up {
                continue;
            }
            if self.control.stopping() {
                // Drain: everything spooled was read; cut what is open, then end.
                for day in open.batcher.days() {
                    if self.cut(day, &mut open, &mut state, read, &mut sink)? == Written::Abandoned {
                        return Ok(());
                    }
                }
                state.pos = read;
                state = self.spool.commit(name, &state)?;
                // Close the open period: whatever becomes of the spool, the files
                // delivered so far are in a signed digest.
                if self.spec.integrity.is_some()
                    && self.write_digest(&mut state, now_ms(), &mut sink)? == Written::Abandoned
                {
                    return Ok(());
                }
                self.note_backlog(&mut corrupt_seen, &reader);
                tracing::info!(seq = read.seq, idx = read.idx, "delivery drained");
                return Ok(());
            }
            // Let the cursor follow skipped traces now and then, so the spool can
            // be trimmed.
            let movable = open.batcher.cursor(read);
            if movable != state.pos && last_idle_commit.elapsed() >= Duration::from_secs(1) {
                state.pos = movable;
                state = self.spool.commit(name, &state)?;
                last_idle_commit = Instant::now();
            }
            let wait = match open.batcher.next_deadline_ms() {
                Some(due) => Duration::from_millis((due - now_ms()).clamp(1, 200) as u64),
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

    /// Cuts the file of `day`: names it, persists the intent, writes it, then
    /// records it as done and moves the cursor as far as the open files allow.
    fn cut(
        &self,
        day: i64,
        open: &mut Open,
        state: &mut TrackerCursor,
        read: Position,
        sink: &mut Option<Store>,
    ) -> Result<Written, PipelineError> {
        let Some(file) = open.batcher.take(day) else {
            return Ok(Written::Yes);
        };
        let batch = open
            .batches
            .remove(&day)
            .unwrap_or_else(|| Batch::new(self.spec.compression));
        let key = self.key(&file);
        let received = batch.received_ms.clone();
        let body = batch.finish().map_err(PipelineError::Compress)?;
        state.pending = Some(Intent {
            key: key.clone(),
            day,
            start: file.start,
            end: file.end,
            earliest_ms: file.earliest_ms,
            latest_ms: file.latest_ms,
        });
        *state = self.spool.commit(&self.spec.name, state)?;
        let (size, sha256) = (body.len() as u64, digest_file::sha256_hex(&body));
        if self.put(&key, body, &Object::Trace, sink) == Written::Abandoned {
            return Ok(Written::Abandoned);
        }
        self.note_in_chain(
            state,
            &key,
            size,
            sha256,
            file.events,
            file.earliest_ms,
            file.latest_ms,
        );
        let mark = state.done.entry(day).or_default();
        *mark = (*mark).max(file.end);
        state.pending = None;
        state.pos = open.batcher.cursor(read).max(state.pos);
        *state = self.spool.commit(&self.spec.name, state)?;
        self.delivered(key, file.events, &received);
        Ok(Written::Yes)
    }

    fn key(&self, file: &OpenFile) -> String {
        object_key(&FileId {
            prefix: &self.spec.prefix,
            cluster: &self.id.cluster,
            tracker: &self.spec.name,
            writer: &self.id.writer,
            epoch: self.spool.epoch(),
            start: file.start,
            earliest_ms: file.earliest_ms,
            compression: self.spec.compression,
        })
    }

    /// Rebuilds and writes the file an earlier run cut but did not confirm: the
    /// same entries under the same key, so it overwrites, never duplicates.
    fn recover(
        &self,
        intent: &Intent,
        state: &mut TrackerCursor,
        sink: &mut Option<Store>,
    ) -> Result<Written, PipelineError> {
        let suffix = tracker_suffix(&self.spec.name);
        let mut reader = self.spool.reader(intent.start);
        let mut batch = Batch::new(self.spec.compression);
        let mut events = 0u64;
        let mut complete = true;
        let mut first = true;
        while let Some(rec) = reader.next_record()? {
            if first && rec.seq != intent.start.seq {
                complete = false;
                break;
            }
            first = false;
            if rec.seq > intent.end.seq {
                break;
            }
            for (i, (meta, line)) in entries::iter(&rec.payload).enumerate() {
                let here = Position {
                    seq: rec.seq,
                    idx: i as u32,
                };
                if here < intent.start {
                    continue;
                }
                if here >= intent.end {
                    break;
                }
                let Ok(meta) = serde_json::from_slice::<RouteMeta<'_>>(meta) else {
                    continue;
                };
                if !self.spec.filter.matches(&meta)
                    || day_of(trace_time(&meta, rec.received_ms)) != intent.day
                {
                    continue;
                }
                let redacted = redact_for(&self.spec.redaction, &meta, line);
                batch
                    .push(redacted.as_deref().unwrap_or(line), &suffix)
                    .map_err(PipelineError::Compress)?;
                events += 1;
            }
        }
        if first || !complete {
            tracing::warn!(key = %intent.key, "the spool no longer holds an interrupted file; it is left as written");
        } else {
            tracing::info!(key = %intent.key, events, "rewriting a file interrupted by a restart");
            let body = batch.finish().map_err(PipelineError::Compress)?;
            let (size, sha256) = (body.len() as u64, digest_file::sha256_hex(&body));
            if self.put(&intent.key, body, &Object::Trace, sink) == Written::Abandoned {
                return Ok(Written::Abandoned);
            }
            self.note_in_chain(
                state,
                &intent.key,
                size,
                sha256,
                events,
                intent.earliest_ms,
                intent.latest_ms,
            );
            self.delivered(intent.key.clone(), events, &[]);
        }
        let mark = state.done.entry(intent.day).or_default();
        *mark = (*mark).max(intent.end);
        state.pending = None;
        *state = self.spool.commit(&self.spec.name, state)?;
        Ok(Written::Yes)
    }

    /// Writes an object, retrying with backoff until it is written or the drain
    /// deadline has passed.
    fn put(&self, key: &str, body: Vec<u8>, what: &Object<'_>, sink: &mut Option<Store>) -> Written {
        let size = body.len();
        let mut attempt = 0u32;
        loop {
            if self.control.expired() {
                tracing::warn!(%key, "drain deadline reached; the file stays in the spool for the next start");
                return Written::Abandoned;
            }
            attempt += 1;
            let control = self.control.clone();
            let outcome: Option<Result<(), WriteFailure>> = self.handle.block_on(async {
                let attempt = async {
                    let s = open_sink(&self.spec.sink, sink).await?;
                    let written = match what {
                        Object::Trace => s.put(key, body.clone(), self.spec.compression).await,
                        Object::Digest {
                            previous,
                            fingerprint,
                        } => {
                            s.put_object(
                                key,
                                body.clone(),
                                "application/json",
                                &[
                                    ("kubetrail-signature", previous.signature.as_str()),
                                    ("kubetrail-key-fingerprint", fingerprint),
                                ],
                            )
                            .await
                        }
                    };
                    written.map_err(|e: DestinationError| WriteFailure::written(&e))
                };
                // A write in flight when the drain deadline passes is given up:
                // the file stays in the spool (with its intent) for the next start.
                let deadline = async {
                    while !control.expired() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    r = attempt => Some(r),
                    _ = deadline => None,
                }
            });
            let Some(result) = outcome else {
                tracing::warn!(%key, "drain deadline reached during a write; the file stays in the spool for the next start");
                return Written::Abandoned;
            };
            match result {
                Ok(()) => {
                    tracing::debug!(%key, bytes = size, attempt, "object written");
                    return Written::Yes;
                }
                Err(WriteFailure { problem, transient }) => {
                    self.metrics
                        .delivery_errors
                        .get_or_create(&crate::telemetry::ReasonLabels {
                            reason: problem.reason.to_string(),
                        })
                        .inc();
                    tracing::warn!(%key, attempt, reason = %problem.reason, error = %problem.message, "writing trace file failed; will retry");
                    self.stats(|s| {
                        s.last_error = Some(problem);
                        s.failing_since.get_or_insert_with(jiff::Timestamp::now);
                    });
                    // A lasting error (credentials, permissions, a missing bucket)
                    // may be fixed by a new Secret: build the client again.
                    if !transient {
                        *sink = None;
                    }
                    let until = Instant::now() + retry_delay(attempt);
                    while Instant::now() < until && !self.control.expired() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    self.note_drops();
                }
            }
        }
    }

    /// Records a delivered file in the open period of the digest chain; the
    /// caller's next commit persists it together with the delivery.
    #[allow(clippy::too_many_arguments)]
    fn note_in_chain(
        &self,
        state: &mut TrackerCursor,
        key: &str,
        size: u64,
        sha256: String,
        events: u64,
        earliest_ms: i64,
        latest_ms: i64,
    ) {
        if self.spec.integrity.is_none() {
            return;
        }
        let chain = state.chain.get_or_insert_with(|| Chain {
            period_start_ms: now_ms(),
            ..Chain::default()
        });
        // A file rewritten after a restart replaces its earlier entry.
        chain.files.retain(|d| d.file.key != key);
        chain.files.push(Delivered {
            file: DigestFile {
                key: key.to_string(),
                size,
                sha256,
                events,
                earliest: digest_file::rfc3339(earliest_ms),
                latest: digest_file::rfc3339(latest_ms),
            },
            delivered_ms: now_ms(),
        });
    }

    /// Picks up the writer's chain: from the cursor file, or else from its
    /// published head (Tracker status, `serve`'s chain-head file) and the
    /// verified digests that follow it, or else (no head published) from its
    /// newest digest in the bucket if that verifies, or else starts a new chain
    /// now. Digests turned off: the chain is dropped, and turned on again it
    /// resumes from the head, its first digest covering the time they were off.
    fn resume_chain(&self, state: &mut TrackerCursor, sink: &mut Option<Store>) -> Result<(), PipelineError> {
        let Some(spec) = &self.spec.integrity else {
            if state.chain.take().is_some() {
                *state = self.spool.commit(&self.spec.name, state)?;
            }
            return Ok(());
        };
        if let Some(chain) = &state.chain {
            // Report the head at once: a new process starts with no report.
            if let Some(previous) = &chain.previous {
                let head = crate::integrity::head_of(
                    &self.id.writer,
                    previous,
                    "",
                    chain.period_start_ms,
                    spec.period,
                );
                self.stats(|s| s.chain_head = Some(head));
            }
            return Ok(());
        }
        let mut keys = spec.anchor.keys.clone();
        keys.push(
            crate::integrity::PublicKey::parse(&spec.signer.public_key_b64())
                .map_err(|e| PipelineError::Chain(e.to_string()))?,
        );
        let found = self.handle.block_on(async {
            let store = open_sink(&self.spec.sink, sink)
                .await
                .map_err(|f| f.problem.to_string())?;
            let trail = crate::store::Trail::new(
                store.clone(),
                &self.spec.prefix,
                &self.id.cluster,
                &self.spec.name,
            );
            crate::integrity::verify::resume_point(
                &trail,
                &self.id.writer,
                spec.anchor.head.as_ref(),
                &keys,
                now_ms(),
            )
            .await
            .map_err(|e| e.to_string())
        });
        // An unreachable bucket must not hold up delivery (nor the backlog
        // accounting): the chain goes on from the head if there is one, else
        // starts anew, and `verify` shows where.
        let found = found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the digests after the chain head failed");
            crate::integrity::verify::Resume {
                from: spec.anchor.head.as_ref().and_then(|h| {
                    digest_file::parse_time(&h.period_end).map(|end| (crate::integrity::previous_of(h), end))
                }),
                untrusted: Vec::new(),
            }
        });
        for why in &found.untrusted {
            tracing::warn!(digest = %why, "a digest in the bucket is not trusted; the chain does not follow it");
            self.metrics.digests_untrusted.get_or_create(&self.labels).inc();
        }
        let chain = match found.from {
            Some((previous, end)) => {
                tracing::info!(key = %previous.key, from_head = spec.anchor.head.is_some(), "digest chain resumed");
                let head = crate::integrity::head_of(&self.id.writer, &previous, "", end, spec.period);
                self.stats(|s| s.chain_head = Some(head));
                Chain {
                    period_start_ms: end.min(now_ms()),
                    previous: Some(previous),
                    files: Vec::new(),
                }
            }
            None => {
                tracing::info!("new digest chain");
                Chain {
                    period_start_ms: now_ms(),
                    ..Chain::default()
                }
            }
        };
        state.chain = Some(chain);
        *state = self.spool.commit(&self.spec.name, state)?;
        Ok(())
    }

    /// Writes the digest of the open period, ending it at `end_ms`, and opens
    /// the next period.
    fn write_digest(
        &self,
        state: &mut TrackerCursor,
        end_ms: i64,
        sink: &mut Option<Store>,
    ) -> Result<Written, PipelineError> {
        let (Some(spec), Some(chain)) = (&self.spec.integrity, state.chain.clone()) else {
            return Ok(Written::Yes);
        };
        if end_ms <= chain.period_start_ms {
            return Ok(Written::Yes);
        }
        let end_ms = sealed_end(chain.period_start_ms, end_ms);
        let wait = end_ms - now_ms();
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait as u64));
        }
        let (files, later): (Vec<Delivered>, Vec<Delivered>) =
            chain.files.into_iter().partition(|d| d.delivered_ms < end_ms);
        let key = digest_file::digest_key(
            &self.spec.prefix,
            &self.id.cluster,
            &self.spec.name,
            &self.id.writer,
            chain.period_start_ms,
        );
        let digest = crate::integrity::Digest {
            version: digest_file::VERSION,
            cluster: self.id.cluster.clone(),
            tracker: self.spec.name.clone(),
            writer: self.id.writer.clone(),
            period_start: digest_file::rfc3339(chain.period_start_ms),
            period_end: digest_file::rfc3339(end_ms),
            key_fingerprint: spec.signer.fingerprint().to_string(),
            previous: chain.previous.clone(),
            files: files.into_iter().map(|d| d.file).collect(),
        };
        let (body, signed) = spec
            .signer
            .sign(&digest, &key)
            .map_err(|e| PipelineError::Chain(e.to_string()))?;
        let what = Object::Digest {
            previous: &signed,
            fingerprint: spec.signer.fingerprint(),
        };
        if self.put(&key, body, &what, sink) == Written::Abandoned {
            return Ok(Written::Abandoned);
        }
        tracing::info!(%key, files = digest.files.len(), "digest written");
        self.metrics.digests_written.get_or_create(&self.labels).inc();
        let head = crate::integrity::head_of(
            &self.id.writer,
            &signed,
            spec.signer.fingerprint(),
            end_ms,
            spec.period,
        );
        self.stats(|s| s.chain_head = Some(head));
        state.chain = Some(Chain {
            period_start_ms: end_ms,
            previous: Some(signed),
            files: later,
        });
        *state = self.spool.commit(&self.spec.name, state)?;
        Ok(Written::Yes)
    }

    /// Counts a written file.
    fn delivered(&self, key: String, events: u64, received: &[i64]) {
        let now = jiff::Timestamp::now();
        self.metrics
            .events_delivered
            .get_or_create(&self.labels)
            .inc_by(events);
        self.metrics.files_delivered.get_or_create(&self.labels).inc();
        let now_ms = now.as_millisecond();
        {
            let mut lat = guard(&self.latencies);
            for r in received {
                let ms = (now_ms - r).max(0);
                self.metrics.delivery_latency.observe(ms as f64 / 1000.0);
                if lat.len() == MAX_LATENCY_SAMPLES {
                    lat.pop_front();
                }
                lat.push_back(ms);
            }
        }
        tracing::info!(%key, events, "trace file delivered");
        self.stats(|s| {
            s.last_key = Some(key);
            s.last_time = Some(now);
            s.last_events = events;
            s.events += events;
            s.files += 1;
            s.last_error = None;
            s.failing_since = None;
        });
    }
}

/// 1 s doubling to 30 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A tracker's own redaction (`spec.redaction.fields`, beyond the built-in
/// rules applied at ingest), applied only to traces it concerns, with the same
/// engine and over the same body shapes. `None`: the line stays as it is.
fn redact_for(r: &Redaction, meta: &RouteMeta<'_>, line: &[u8]) -> Option<Vec<u8>> {
    let rules = r.rules();
    let fields = crate::redact::fields_for(&rules, &meta.group, &meta.resource);
    if fields.is_empty() {
        return None;
    }
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(line) else {
        // A body nested deeper than the parser goes: it loses its bodies rather
        // than pass through unredacted.
        return Some(without_bodies(line));
    };
    for body in ["request", "response"] {
        if let Some(obj) = v.get_mut(body) {
            crate::redact::redact_body(obj, &fields);
        }
    }
    serde_json::to_vec(&v).ok()
}

/// The line with its request and response bodies replaced by `[redacted]`,
/// read without building the bodies (whatever their depth).
fn without_bodies(line: &[u8]) -> Vec<u8> {
    use serde_json::value::RawValue;
    let redacted = || RawValue::from_string(format!("\"{}\"", crate::redact::REDACTED)).ok();
    match serde_json::from_slice::<std::collections::BTreeMap<String, Box<RawValue>>>(line) {
        Ok(mut fields) => {
            for body in ["request", "response"] {
                if fields.contains_key(body)
                    && let Some(r) = redacted()
                {
                    fields.insert(body.to_string(), r);
                }
            }
            serde_json::to_vec(&fields).unwrap_or_default()
        }
        Err(e) => {
            tracing::error!(error = %e, "a spooled trace is not JSON; replaced");
            br#"{"trace_name":"unreadable trace","trace_rating":"warning"}"#.to_vec()
        }
    }
}

/// Why a write attempt failed, and whether the same client may succeed later.
#[derive(Debug)]
struct WriteFailure {
    problem: Problem,
    transient: bool,
}

impl WriteFailure {
    /// The store could not be opened: its own reason (a credentials Secret
    /// missing or incomplete, the API server unreachable), and the next attempt
    /// opens it again.
    fn opening(problem: Problem) -> Self {
        Self {
            problem,
            transient: false,
        }
    }

    /// The store refused or lost a write.
    fn written(e: &DestinationError) -> Self {
        Self {
            problem: e.problem(),
            transient: e.is_transient(),
        }
    }
}

/// The open store, opened first if there is none (or the last one was dropped
/// after a lasting error).
async fn open_sink<'a>(
    factory: &StoreFactory,
    sink: &'a mut Option<Store>,
) -> Result<&'a Store, WriteFailure> {
    let store = match sink.take() {
        Some(store) => store,
        None => factory().await.map_err(WriteFailure::opening)?,
    };
    Ok(sink.insert(store))
}

/// When a period may end. A digest's key names its period's start to the second,
/// and the next period starts where this one ends: a period ended within the
/// second it began (a tracker edited right after a start drains at once) would
/// give the next digest the same key and be overwritten by it. Such a period
/// ends at the next whole second instead (the writer waits that long).
fn sealed_end(period_start_ms: i64, end_ms: i64) -> i64 {
    end_ms.max((period_start_ms.div_euclid(1000) + 1) * 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_period_never_ends_in_the_second_it_began() {
        use crate::integrity::digest::digest_key;
        let key = |ms| digest_key("p", "c", "t", "w", ms);
        // Started at .774, drained at .990 of the same second: ends at the next second.
        let start = 1_796_279_983_774;
        let end = sealed_end(start, start + 216);
        assert_eq!(end, 1_796_279_984_000);
        assert_ne!(key(start), key(end), "the next period's digest gets its own key");
        // A period that already spans a second boundary ends where asked.
        assert_eq!(sealed_end(start, start + 60_000), start + 60_000);
        assert_eq!(
            sealed_end(1_796_279_983_000, 1_796_279_984_000),
            1_796_279_984_000
        );
    }

    use super::*;
    use crate::api::FieldRedaction;
    use futures::FutureExt as _;

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(6), Duration::from_secs(30));
        assert_eq!(retry_delay(100), Duration::from_secs(30));
    }

    #[test]
    fn tracker_redaction_applies_only_where_configured() {
        let meta = |group: &'static str, resource: &'static str| RouteMeta {
            verb: "create".into(),
            group: group.into(),
            resource: resource.into(),
            namespace: "d".into(),
            user: "u".into(),
            groups: vec![],
            stage: "ResponseComplete".into(),
            time_ms: 0,
            key: 0,
            malformed: false,
            code: 0,
            name: "".into(),
            impersonated: false,
        };
        let r = Redaction {
            fields: vec![FieldRedaction {
                api_group: "core".into(),
                resource: "configmaps".into(),
                paths: vec!["data".into()],
            }],
        };
        let cm = br#"{"request":{"data":{"k":"v1"},"metadata":{}},"response":{"kind":"ConfigMapList","items":[{"data":{"k":"v2"}}]}}"#;
        let out = String::from_utf8(redact_for(&r, &meta("", "configmaps"), cm).unwrap()).unwrap();
        assert!(!out.contains("v1") && !out.contains("v2"), "{out}");
        assert!(redact_for(&r, &meta("", "secrets"), cm).is_none());
        assert!(redact_for(&r, &meta("apps", "configmaps"), cm).is_none());
        assert!(redact_for(&Redaction::default(), &meta("", "configmaps"), cm).is_none());
        // Deeper than the parser goes: the bodies go, the rest stays.
        let deep = format!(
            r#"{{"trace_id":"t","request":{{"data":{}"v3"{}}}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let out =
            String::from_utf8(redact_for(&r, &meta("", "configmaps"), deep.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, r#"{"request":"[redacted]","trace_id":"t"}"#);
    }

    /// A store that cannot be opened fails the write with the store's own
    /// reason (a missing credentials Secret is `CredentialsNotFound`), not a
    /// generic one, and is opened again on the next attempt.
    #[test]
    fn a_store_that_cannot_open_keeps_its_reason() {
        let missing = crate::store::StoreError::CredentialsNotFound {
            namespace: "kubetrail".into(),
            name: "s3".into(),
        };
        let problem = missing.problem();
        let factory: StoreFactory = {
            let problem = problem.clone();
            Arc::new(move || futures::future::ready(Err(problem.clone())).boxed())
        };
        let mut sink = None;
        let failure = futures::executor::block_on(open_sink(&factory, &mut sink)).unwrap_err();
        assert_eq!(failure.problem.reason, Reason::CredentialsNotFound);
        assert_eq!(failure.problem, problem);
        assert!(!failure.transient);
        assert!(sink.is_none());
        // An open store is kept.
        let dir: StoreFactory = Arc::new(|| {
            futures::future::ready(Ok(Store::Dir(std::path::PathBuf::from("/nonexistent")))).boxed()
        });
        let mut sink = None;
        assert!(futures::executor::block_on(open_sink(&dir, &mut sink)).is_ok());
        assert!(matches!(sink, Some(Store::Dir(_))));
    }
}
