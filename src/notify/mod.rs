//! Key event notifications: every replica matches the traces of its own spool
//! against each KeyEventNotification, from a cursor of its own (like a
//! tracker's), groups the matches, and sends them to a webhook and/or as
//! Kubernetes Events. The cursor moves only past messages that were delivered
//! (or given up after their last attempt): at least once, nothing skipped.

pub mod channel;
pub mod message;
pub mod select;
pub mod send;

use crate::spool::cursor::TrackerCursor;
use crate::spool::record::entries;
use crate::spool::{Position, Spool};
use crate::telemetry::{Metrics, NotificationLabels};
use crate::trace::RouteMeta;
use crate::trace::View;
use channel::{Channel, Delivery, Outcome};
use message::{Matched, Message};
use select::Selection;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The spool cursor name of a notification (apart from trackers').
pub fn cursor_name(notification: &str) -> String {
    format!("notify/{notification}")
}

/// One notification, as this replica runs it.
#[derive(Clone)]
pub struct NotifierSpec {
    pub name: String,
    pub selection: Arc<Selection>,
    /// Where its messages go, in this order (Kubernetes Events, the webhook).
    pub channels: Vec<Arc<dyn Channel>>,
    pub window: Duration,
    /// Least time between two messages, full ones included (the rate limit).
    pub min_interval: Duration,
    pub max_traces: usize,
    /// Changes when anything above changes (the notifier is restarted).
    pub fingerprint: String,
}

/// This process's counters for one notification.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotifyStats {
    pub matched: u64,
    pub sent: u64,
    pub failed: u64,
    pub last_sent: Option<jiff::Timestamp>,
    pub last_error: Option<String>,
    /// The latest message has not been delivered yet, or was given up.
    pub failing: bool,
}

struct Running {
    fingerprint: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The notifiers of this replica.
pub struct Notifiers {
    spool: Spool,
    cluster: String,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, Running>>,
    pub stats: Arc<Mutex<BTreeMap<String, NotifyStats>>>,
    /// Recent acknowledgement→delivery latencies in ms (one per trace),
    /// bounded; for `kubetrail bench`.
    pub latencies: crate::deliver::pipeline::Latencies,
}

const MAX_LATENCY_SAMPLES: usize = 100_000;

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Notifiers {
    /// `stats` is where counters go (the replica's report reads them).
    pub fn new(
        spool: Spool,
        cluster: String,
        metrics: Arc<Metrics>,
        stats: Arc<Mutex<BTreeMap<String, NotifyStats>>>,
    ) -> Arc<Notifiers> {
        Arc::new(Notifiers {
            spool,
            cluster,
            metrics,
            running: Mutex::new(HashMap::new()),
            stats,
            latencies: Default::default(),
        })
    }

    /// Runs exactly `desired`: new ones start (at the spool's head, or where
    /// their cursor is), changed ones restart from their cursor, removed ones
    /// stop and give up their cursor. Those in `paused` (they exist but cannot
    /// run now: a missing Secret) stop and keep their cursor, so what matches
    /// meanwhile is sent once they run again.
    pub fn apply(&self, desired: Vec<NotifierSpec>, paused: &[String]) {
        let mut running = guard(&self.running);
        let wanted: HashMap<&str, &NotifierSpec> = desired.iter().map(|d| (d.name.as_str(), d)).collect();
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, r)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|d| d.fingerprint != r.fingerprint)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                let _ = r.stop.send(true);
                r.task.abort();
            }
            if !wanted.contains_key(name.as_str()) && !paused.contains(&name) {
                guard(&self.stats).remove(&name);
                if let Err(e) = self.spool.deactivate(&cursor_name(&name)) {
                    tracing::warn!(notification = %name, error = %e, "releasing the notification cursor failed");
                }
            }
        }
        for spec in desired {
            if running.contains_key(&spec.name) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let worker = Worker {
                spec: spec.clone(),
                spool: self.spool.clone(),
                cluster: self.cluster.clone(),
                metrics: self.metrics.clone(),
                stats: self.stats.clone(),
                latencies: self.latencies.clone(),
                stop: stop_rx,
            };
            let name = spec.name.clone();
            let task = tokio::spawn(async move {
                loop {
                    match worker.run().await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::error!(notification = %worker.spec.name, error = %e, "notifier failed; restarting");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            running.insert(
                name,
                Running {
                    fingerprint: spec.fingerprint,
                    stop,
                    task,
                },
            );
        }
    }

    /// Stops every notifier. What was matched and not yet delivered stays
    /// behind the cursors and is sent after the restart.
    pub async fn shutdown(&self) {
        let stopping: Vec<Running> = guard(&self.running).drain().map(|(_, r)| r).collect();
        for r in &stopping {
            let _ = r.stop.send(true);
        }
        for r in stopping {
            if tokio::time::timeout(Duration::from_secs(2), r.task)
                .await
                .is_err()
            {
                tracing::warn!("a notifier did not stop within 2 s");
            }
        }
    }

    pub fn names(&self) -> Vec<String> {
        guard(&self.running).keys().cloned().collect()
    }
}

struct Worker {
    spec: NotifierSpec,
    spool: Spool,
    cluster: String,
    metrics: Arc<Metrics>,
    stats: Arc<Mutex<BTreeMap<String, NotifyStats>>>,
    latencies: crate::deliver::pipeline::Latencies,
    stop: watch::Receiver<bool>,
}

impl Worker {
    fn stat(&self, f: impl FnOnce(&mut NotifyStats)) {
        f(guard(&self.stats).entry(self.spec.name.clone()).or_default())
    }

    fn labels(&self) -> NotificationLabels {
        NotificationLabels {
            notification: self.spec.name.clone(),
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    #[tracing::instrument(name = "notifier", skip_all, fields(notification = %self.spec.name))]
    async fn run(&self) -> std::io::Result<()> {
        let key = cursor_name(&self.spec.name);
        let state = self.spool.activate(&key)?;
        let mut read = state.pos;
        let mut committed = state.pos;
        let mut reader = self.spool.reader(read);
        let mut head = self.spool.subscribe();
        let mut stop = self.stop.clone();
        // Matches waiting for their message, each with the position after it.
        let mut queue: VecDeque<(Matched, Position)> = VecDeque::new();
        let mut last_sent: Option<Instant> = None;
        let mut last_commit = Instant::now();
        let buffer = self.spec.max_traces.saturating_mul(4).max(1000);
        tracing::info!(seq = read.seq, idx = read.idx, "notifier started");
        loop {
            if self.stopped() {
                return Ok(());
            }
            head.borrow_and_update();
            if let Some(floor) = self.spool.floor(&key)
                && floor > read
            {
                tracing::warn!(
                    from = read.seq,
                    to = floor.seq,
                    "skipping segments dropped over the backlog budget"
                );
                reader = self.spool.reader(floor);
                read = floor;
            }
            let mut exhausted = false;
            // A message is due when the window since the last one has passed,
            // or, for a full message, the rate limit allows it.
            let max = self.spec.max_traces.max(1);
            let due = |last: Option<Instant>, queued: usize| {
                last.is_none_or(|t| {
                    t.elapsed() >= self.spec.window
                        || (queued >= max && t.elapsed() >= self.spec.min_interval)
                })
            };
            // Read until a message is due (so a backlog never delays it).
            while queue.len() < buffer && (queue.is_empty() || !due(last_sent, queue.len())) {
                let Some(rec) = reader.next_record()? else {
                    exhausted = true;
                    break;
                };
                let skip = if rec.seq == read.seq { read.idx as usize } else { 0 };
                let n = self.match_record(&rec, skip, &mut queue);
                read = Position {
                    seq: rec.seq,
                    idx: n.max(skip as u32),
                };
            }

            if !queue.is_empty() {
                if due(last_sent, queue.len()) {
                    let n = queue.len().min(self.spec.max_traces.max(1));
                    let batch: Vec<(Matched, Position)> = queue.drain(..n).collect();
                    let after = batch.last().map(|(_, p)| *p).unwrap_or(read);
                    let traces: Vec<Matched> = batch.into_iter().map(|(m, _)| m).collect();
                    let msg = Message::new(&self.cluster, &self.spec.name, traces);
                    let outcome = self.deliver(&msg).await;
                    if outcome == Outcome::Stopped {
                        return Ok(());
                    }
                    self.count(&msg, outcome);
                    last_sent = Some(Instant::now());
                    committed = if queue.is_empty() { read } else { after };
                    self.spool.commit(&key, &TrackerCursor::at(committed))?;
                    last_commit = Instant::now();
                    continue;
                }
            } else if read != committed && last_commit.elapsed() >= Duration::from_secs(1) {
                // Nothing waiting: what was read matched nothing, the cursor
                // may pass it (so the spool can drop its segments).
                committed = read;
                self.spool.commit(&key, &TrackerCursor::at(committed))?;
                last_commit = Instant::now();
            }

            let wait = match (queue.is_empty(), last_sent) {
                (false, Some(t)) if queue.len() >= max => self.spec.min_interval.saturating_sub(t.elapsed()),
                (false, Some(t)) => self.spec.window.saturating_sub(t.elapsed()),
                _ if !exhausted => Duration::ZERO,
                _ => Duration::from_secs(1),
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = head.changed(), if queue.len() < max => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Queues the matches among a record's traces from entry `skip` on, each
    /// with the position after it; returns the record's number of entries.
    fn match_record(
        &self,
        rec: &crate::spool::Record,
        skip: usize,
        queue: &mut VecDeque<(Matched, Position)>,
    ) -> u32 {
        let mut n = 0u32;
        for (i, (meta, line)) in entries::iter(&rec.payload).enumerate() {
            n = i as u32 + 1;
            if i < skip {
                continue;
            }
            let Some(m) = self.match_line(meta, line, rec.received_ms) else {
                continue;
            };
            queue.push_back((
                m,
                Position {
                    seq: rec.seq,
                    idx: i as u32 + 1,
                },
            ));
            self.stat(|s| s.matched += 1);
            self.metrics.notify_matched.get_or_create(&self.labels()).inc();
        }
        n
    }

    /// The trace, when the selection matches it: decided from the routing
    /// metadata where it carries the facts (only matches are parsed), else from
    /// the line.
    fn match_line(&self, meta: &[u8], line: &[u8], received_ms: i64) -> Option<Matched> {
        let meta = serde_json::from_slice::<RouteMeta<'_>>(meta).ok()?;
        if !self.spec.selection.prefilter(&meta) {
            return None;
        }
        // Older records lack the facts in their metadata: parse first.
        let early = if meta.code < 0 {
            Some(View::parse(line).ok()?)
        } else {
            None
        };
        let matched = match &early {
            Some(v) => self
                .spec
                .selection
                .matches(&meta, &select::Facts::from_view(v), line),
            None => {
                select::Facts::from_meta(&meta).is_some_and(|f| self.spec.selection.matches(&meta, &f, line))
            }
        };
        if !matched {
            return None;
        }
        let view = match early {
            Some(v) => v,
            None => View::parse(line).ok()?,
        };
        let mut m = Matched::new(&meta, &view, received_ms);
        kind_of(line, &mut m);
        Some(m)
    }

    /// Counts how a message ended (delivered or given up), with latencies.
    fn count(&self, msg: &Message, outcome: Outcome) {
        match outcome {
            Outcome::Stopped => {}
            Outcome::Delivered => {
                self.stat(|s| {
                    s.sent += 1;
                    s.last_sent = Some(jiff::Timestamp::now());
                    s.failing = false;
                });
                self.metrics.notify_sent.get_or_create(&self.labels()).inc();
                let now = jiff::Timestamp::now().as_millisecond();
                let mut lat = guard(&self.latencies);
                for t in &msg.traces {
                    let ms = (now - t.received_ms).max(0);
                    self.metrics.notify_latency.observe(ms as f64 / 1000.0);
                    if lat.len() >= MAX_LATENCY_SAMPLES {
                        lat.pop_front();
                    }
                    lat.push_back(ms);
                }
            }
            Outcome::Failed(e) => {
                tracing::warn!(message = %msg.id, traces = msg.traces.len(), error = %e, "notification given up after its last attempt");
                self.stat(|s| {
                    s.failed += 1;
                    s.last_error = Some(e.chars().take(512).collect());
                    s.failing = true;
                });
                self.metrics.notify_failed.get_or_create(&self.labels()).inc();
            }
        }
    }

    /// Hands one message to each channel in turn; the first that does not
    /// deliver it ends the message that way.
    async fn deliver(&self, msg: &Message) -> Outcome {
        let on_retry = |error: &str| {
            self.stat(|s| {
                s.last_error = Some(error.chars().take(512).collect());
                s.failing = true;
            })
        };
        for channel in &self.spec.channels {
            let d = Delivery {
                cluster: &self.cluster,
                notification: &self.spec.name,
                stop: self.stop.clone(),
                on_retry: &on_retry,
            };
            match channel.send(msg, d).await {
                Outcome::Delivered => {}
                other => return other,
            }
        }
        Outcome::Delivered
    }
}

/// The operated object's kind and apiVersion, when the response (or request)
/// body is that object: for its Kubernetes Event.
fn kind_of(line: &[u8], m: &mut Matched) {
    #[derive(serde::Deserialize)]
    struct Obj {
        #[serde(default)]
        kind: String,
        #[serde(default, rename = "apiVersion")]
        api_version: String,
    }
    #[derive(serde::Deserialize)]
    struct Bodies {
        #[serde(default)]
        response: Option<Obj>,
        #[serde(default)]
        request: Option<Obj>,
    }
    if m.resource_name.is_empty()
        || m.resource_type.contains('/')
        || !matches!(m.verb.as_str(), "create" | "update" | "patch")
    {
        return;
    }
    if let Ok(b) = serde_json::from_slice::<Bodies>(line)
        && let Some(o) = b
            .response
            .or(b.request)
            .filter(|o| !o.kind.is_empty() && o.kind != "Status")
    {
        m.kind = Some(o.kind);
        m.api_version = o.api_version;
    }
}
