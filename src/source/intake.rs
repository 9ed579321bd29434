//! The intake: where every source (the audit webhook, the audit log file,
//! admission capture) hands its audit bodies. It parses and encodes a body into
//! one spool record, stores it once (a batch stored before is a retry, see
//! [`super::dedupe`]), counts it, and says how storing ended, so each source
//! only decides how to answer its caller.

use super::dedupe::{Admit, Window};
use crate::audit;
use crate::spool::{AppendError, Spool, entries};
use crate::telemetry::Metrics;
use crate::trace;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether the webhook takes batches, and how many it is handling. It takes
/// them only while the process is ready (its trackers listen: a batch accepted
/// before would be behind a new tracker's starting point) and not stopping.
#[derive(Clone, Default)]
pub struct Lifecycle {
    ready: crate::telemetry::Readiness,
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Lifecycle {
    /// Takes batches while `ready` says so.
    pub fn new(ready: crate::telemetry::Readiness) -> Lifecycle {
        Lifecycle {
            ready,
            ..Lifecycle::default()
        }
    }

    /// Takes batches from now on (benchmarks and tests without a readiness gate).
    pub fn open() -> Lifecycle {
        let l = Lifecycle::default();
        l.ready.set_ready(true);
        l
    }

    pub(super) fn accepting(&self) -> bool {
        self.ready.is_ready() && !self.is_draining()
    }

    /// From now on new batches get 503 with `Retry-After`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Waits (at most `limit`) until no batch is being handled, so everything
    /// acknowledged is in the spool before delivery drains it.
    pub async fn settled(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a batch in flight for as long as it lives.
pub(super) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(super) fn new(l: &Lifecycle) -> InFlight {
        l.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(l.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a batch waits for an identical one being stored by another request.
const DEDUPE_WAIT: Duration = Duration::from_secs(10);

/// How storing a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Appended (and fsynced) as spool record `seq`.
    Spooled(u64),
    /// Stored before (a retry): not stored again.
    Copy,
    /// No events in it.
    Empty,
}

/// Why a body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Not an `audit.k8s.io/v1` `EventList` (nothing of it stored).
    #[error("{0}")]
    Malformed(#[from] audit::ParseError),
    /// An identical batch is still being stored by someone else.
    #[error("an identical batch is still being stored; send it again")]
    Busy,
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Where every source hands its bodies: it encodes them as traces of this
/// cluster, stores each batch once, and counts what it took.
#[derive(Clone)]
pub struct Intake {
    spool: Spool,
    dedupe: Arc<Window>,
    metrics: Arc<Metrics>,
    cluster: Arc<str>,
    max_event_bytes: usize,
    lifecycle: Lifecycle,
}

impl Intake {
    /// An intake spooling into `spool`; events over `max_event_bytes` lose
    /// their bodies.
    pub fn new(
        spool: Spool,
        dedupe: Arc<Window>,
        metrics: Arc<Metrics>,
        cluster: &str,
        max_event_bytes: usize,
        lifecycle: Lifecycle,
    ) -> Intake {
        Intake {
            spool,
            dedupe,
            metrics,
            cluster: cluster.into(),
            max_event_bytes,
            lifecycle,
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What was stored lately, to tell a retry.
    pub fn dedupe(&self) -> &Window {
        &self.dedupe
    }

    /// Whether batches are taken now, and how many are being handled.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Takes one `EventList` body of `source`, received at `received`. `key`
    /// names the batch for de-duplication: the hash of what the caller sent,
    /// so the same batch sent again is a retry.
    pub async fn take(
        &self,
        body: &[u8],
        source: trace::Source,
        received: jiff::Timestamp,
        key: u64,
    ) -> Result<Stored, IntakeError> {
        let _busy = InFlight::new(&self.lifecycle);
        let encoded = encode(body, &self.cluster, source, received, key, self.max_event_bytes)?;
        self.store(encoded, key, received.as_millisecond()).await
    }

    /// Stores an encoded batch once: a batch stored before (same
    /// de-duplication `key`) is a retry and is acknowledged without storing it
    /// again; one being stored right now by another caller is waited for.
    async fn store(&self, encoded: Encoded, key: u64, received_ms: i64) -> Result<Stored, IntakeError> {
        let (spool, dedupe, metrics) = (&self.spool, &self.dedupe, &self.metrics);
        let events = encoded.events;
        metrics.events_received.inc_by(u64::from(events));
        let waited = Instant::now();
        loop {
            match dedupe.admit(key) {
                Admit::New => break,
                Admit::Copy => {
                    metrics.events_deduplicated.inc_by(u64::from(events));
                    tracing::debug!(events, "batch stored already (a retry); not stored again");
                    return Ok(Stored::Copy);
                }
                Admit::Wait if waited.elapsed() < DEDUPE_WAIT => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Admit::Wait => return Err(IntakeError::Busy),
            }
        }
        if events == 0 {
            dedupe.release(key);
            return Ok(Stored::Empty);
        }
        match spool
            .append(encoded.payload, events, Some(key), received_ms)
            .await
        {
            Ok(seq) => {
                dedupe.confirm(key, events, received_ms);
                metrics.events_spooled.inc_by(u64::from(events));
                metrics.events_malformed.inc_by(u64::from(encoded.malformed));
                metrics.events_truncated.inc_by(u64::from(encoded.truncated));
                metrics.spool_bytes.set(spool.bytes() as i64);
                if encoded.malformed > 0 || encoded.truncated > 0 {
                    tracing::warn!(
                        seq,
                        events,
                        malformed = encoded.malformed,
                        truncated = encoded.truncated,
                        "audit batch spooled with malformed or oversized events"
                    );
                } else {
                    tracing::debug!(seq, events, "audit batch spooled");
                }
                Ok(Stored::Spooled(seq))
            }
            Err(e) => {
                dedupe.release(key);
                Err(IntakeError::Append(e))
            }
        }
    }
}

/// A batch's traces encoded as one spool record payload.
pub struct Encoded {
    pub payload: Vec<u8>,
    pub events: u32,
    /// Items kept as malformed-event traces.
    pub malformed: u32,
    /// Events whose bodies were dropped for size.
    pub truncated: u32,
}

/// Parses a batch and encodes its traces as one spool record payload; every
/// trace's routing metadata carries the batch's de-duplication `key`. An item
/// that is not a readable event is kept as a malformed-event trace; an event
/// over `max_event_bytes` loses its bodies (and, if still too big, is kept as a
/// malformed-event trace).
pub fn encode(
    body: &[u8],
    cluster: &str,
    source: trace::Source,
    received: jiff::Timestamp,
    key: u64,
    max_event_bytes: usize,
) -> Result<Encoded, audit::ParseError> {
    let list = audit::parse_event_list(body, max_event_bytes)?;
    let record_time = received.to_string();
    let received_ms = received.as_millisecond();
    let mut payload = Vec::with_capacity(body.len() + body.len() / 8);
    let mut line = Vec::with_capacity(4096);
    let mut meta = Vec::with_capacity(256);
    let mut malformed = 0;
    for item in &list.items {
        line.clear();
        meta.clear();
        let mut m = match item {
            audit::Item::Event(event) => {
                let m = trace::build(event, cluster, source, &record_time, &mut line);
                // Room for the `tracker` field routing adds.
                if line.len() > max_event_bytes.max(4096) {
                    let too_big = audit::Malformed {
                        reason: format!(
                            "event of {} bytes is over the limit of {max_event_bytes} even without its bodies",
                            line.len()
                        ),
                        hash: blake3::hash(&line).to_hex().to_string(),
                        bytes: line.len(),
                    };
                    line.clear();
                    malformed += 1;
                    trace::build_malformed(&too_big, cluster, source, &record_time, received_ms, &mut line)
                } else {
                    m
                }
            }
            audit::Item::Malformed(bad) => {
                malformed += 1;
                trace::build_malformed(bad, cluster, source, &record_time, received_ms, &mut line)
            }
        };
        m.key = key;
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut meta, &m);
        entries::push(&mut payload, &meta, &line);
    }
    let truncated = list
        .items
        .iter()
        .filter(|i| matches!(i, audit::Item::Event(e) if e.truncated))
        .count() as u32;
    Ok(Encoded {
        payload,
        events: list.items.len() as u32,
        malformed,
        truncated,
    })
}

/// The sources' tests' intake: a spool of `max_bytes` in `dir` (no fsync), a
/// 15-minute window, cluster `c`, taking batches.
#[cfg(test)]
pub(crate) fn test_intake(dir: &std::path::Path, max_bytes: u64, max_event_bytes: usize) -> Intake {
    let spool = Spool::open(crate::spool::Config {
        dir: dir.into(),
        max_bytes,
        segment_bytes: 1 << 20,
        fsync: false,
        tracker_budget: 0,
        dedupe_window_ms: 900_000,
        dedupe_max: 1000,
    })
    .unwrap();
    let dedupe = Arc::new(Window::new(Duration::from_secs(900), 1000, vec![], 0));
    Intake::new(
        spool,
        dedupe,
        Arc::new(Metrics::default()),
        "c",
        max_event_bytes,
        Lifecycle::open(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake(dir: &std::path::Path) -> Intake {
        test_intake(dir, 1 << 20, 1 << 20)
    }

    /// Every source's body ends one of four ways: spooled, a retry not stored
    /// again, nothing to store, or refused whole; only the first writes.
    #[tokio::test]
    async fn a_body_is_stored_once_and_a_bad_one_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let i = intake(dir.path());
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
            {"auditID":"a1","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"2026-12-01T00:00:00Z"}]}"#;
        let now = jiff::Timestamp::now();
        let key = super::super::dedupe::batch_key(body);
        let first = i.take(body, trace::Source::AuditLog, now, key).await.unwrap();
        assert!(matches!(first, Stored::Spooled(_)), "{first:?}");
        let again = i.take(body, trace::Source::AuditLog, now, key).await.unwrap();
        assert_eq!(again, Stored::Copy);
        let empty = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#;
        let got = i.take(empty, trace::Source::Webhook, now, 7).await.unwrap();
        assert_eq!(got, Stored::Empty);
        let bad = i.take(b"[1,2]", trace::Source::Webhook, now, 8).await;
        assert!(matches!(bad, Err(IntakeError::Malformed(_))), "{bad:?}");
        assert_eq!(i.spool().head(), 1, "only the first body was written");
        assert_eq!(i.metrics().events_deduplicated.get(), 1);
        assert_eq!(
            i.lifecycle().in_flight.load(Ordering::SeqCst),
            0,
            "nothing left in flight"
        );
    }
}
