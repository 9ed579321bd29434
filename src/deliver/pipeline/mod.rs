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

mod chain;
mod worker;

use super::batch::{Batch, tracker_suffix};
use super::batcher::{Batcher, Limits, OpenFile, day_of};
use crate::api::{Compression, Problem, Reason, Redaction};
use crate::integrity::digest::{self as digest_file, DigestFile};
use crate::integrity::{Chain, Delivered, IntegritySpec, boundary_before, period_end};
use crate::route::Filter;
use crate::spool::{self, Intent, Position, Spool, TrackerCursor, entries};
use crate::store::DestinationError;
use crate::store::Store;
use crate::store::key::{FileId, object_key};
use crate::telemetry::{Metrics, TrackerLabels};
use crate::trace::RouteMeta;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::Worker;

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

#[cfg(test)]
mod tests;
