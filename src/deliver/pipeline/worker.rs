//! One run of a tracker's pipeline: the read–filter–cut–write loop, recovery of
//! a file cut but not confirmed, writes with retries, and counting.

use super::*;

/// Why one run of a pipeline ended early; the supervisor restarts it.
#[derive(Debug, thiserror::Error)]
pub(super) enum PipelineError {
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("compressing a trace file: {0}")]
    Compress(std::io::Error),
    #[error("digest chain: {0}")]
    Chain(String),
}

/// What is being written.
pub(super) enum Object<'a> {
    Trace,
    /// A signed digest: its signature also goes into the object's metadata.
    Digest {
        previous: &'a crate::integrity::Previous,
        fingerprint: &'a str,
    },
}

pub(super) struct Worker {
    pub(super) spec: PipelineSpec,
    pub(super) spool: Spool,
    pub(super) id: WriterId,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stats: Stats,
    pub(super) latencies: Latencies,
    pub(super) control: Arc<Control>,
    pub(super) labels: TrackerLabels,
}

/// A record being consumed.
pub(super) struct Current {
    pub(super) seq: u64,
    pub(super) received_ms: i64,
    pub(super) payload: Vec<u8>,
    pub(super) next_idx: u32,
}

/// The files a run holds open.
pub(super) struct Open {
    pub(super) batcher: Batcher,
    pub(super) batches: HashMap<i64, Batch>,
}

/// Whether a file was written, or the pipeline gave up at its drain deadline.
#[derive(PartialEq)]
pub(super) enum Written {
    Yes,
    Abandoned,
}

/// The trace time of an entry; the receive time when the event had none.
pub(super) fn trace_time(meta: &RouteMeta<'_>, received_ms: i64) -> i64 {
    if meta.time_ms != 0 {
        meta.time_ms
    } else {
        received_ms
    }
}

impl Worker {
    /// Runs the pipeline; restarts it with backoff (1 s doubling to 60 s) when
    /// it fails or panics, with the error in the tracker's status.
    pub(super) fn supervise(self) {
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

    pub(super) fn stats<R>(&self, f: impl FnOnce(&mut DeliveryStats) -> R) -> R {
        let mut stats = guard(&self.stats);
        f(stats.entry(self.spec.name.clone()).or_default())
    }

    /// Mirrors the spool's view of this tracker's backlog into stats and metrics;
    /// also called while a write is being retried, when the backlog grows.
    pub(super) fn note_drops(&self) {
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
    pub(super) fn note_backlog(&self, reader_corrupt: &mut u64, reader: &spool::Reader) {
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
    pub(super) fn run(&self) -> Result<(), PipelineError> {
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

            let full_day = match current.as_mut() {
                Some(cur) => self.fill(cur, &mut open, &state, &mut read, &suffix)?,
                None => None,
            };
            if full_day.is_none() {
                // The record is used up (or there was none).
                current = None;
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
                return self.drain(&mut open, &mut state, read, &mut sink, &mut corrupt_seen, &reader);
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

    /// Adds the traces of a record, from its next entry on, to the open files;
    /// stops at the first that fills a file, and returns that file's day.
    fn fill(
        &self,
        cur: &mut Current,
        open: &mut Open,
        state: &TrackerCursor,
        read: &mut Position,
        suffix: &[u8],
    ) -> Result<Option<i64>, PipelineError> {
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
            *read = Position {
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
            batch.push(line, suffix).map_err(PipelineError::Compress)?;
            if batch.received_ms.last() != Some(&cur.received_ms) {
                batch.received_ms.push(cur.received_ms);
            }
            let added = open.batcher.add(here, t, (line.len() + suffix.len()) as u64, now);
            if added.full {
                return Ok(Some(day));
            }
        }
        Ok(None)
    }

    /// Stopping, with everything spooled read: cuts and writes what is open,
    /// commits, and closes the open digest period.
    fn drain(
        &self,
        open: &mut Open,
        state: &mut TrackerCursor,
        read: Position,
        sink: &mut Option<Store>,
        corrupt_seen: &mut u64,
        reader: &spool::Reader,
    ) -> Result<(), PipelineError> {
        for day in open.batcher.days() {
            if self.cut(day, open, state, read, sink)? == Written::Abandoned {
                return Ok(());
            }
        }
        state.pos = read;
        *state = self.spool.commit(&self.spec.name, state)?;
        // Close the open period: whatever becomes of the spool, the files
        // delivered so far are in a signed digest.
        if self.spec.integrity.is_some() && self.write_digest(state, now_ms(), sink)? == Written::Abandoned {
            return Ok(());
        }
        self.note_backlog(corrupt_seen, reader);
        tracing::info!(seq = read.seq, idx = read.idx, "delivery drained");
        Ok(())
    }

    /// Cuts the file of `day`: names it, persists the intent, writes it, then
    /// records it as done and moves the cursor as far as the open files allow.
    pub(super) fn cut(
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

    pub(super) fn key(&self, file: &OpenFile) -> String {
        object_key(&FileId {
            prefix: &self.spec.prefix,
            cluster: &self.id.cluster,
            tracker: &self.spec.name,
            writer: &self.id.writer,
            epoch: self.spool.epoch(),
            start_seq: file.start.seq,
            start_idx: file.start.idx,
            earliest_ms: file.earliest_ms,
            compression: self.spec.compression,
        })
    }

    /// Rebuilds and writes the file an earlier run cut but did not confirm: the
    /// same entries under the same key, so it overwrites, never duplicates.
    pub(super) fn recover(
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
    pub(super) fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        what: &Object<'_>,
        sink: &mut Option<Store>,
    ) -> Written {
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
}

impl Worker {
    /// Counts a written file.
    pub(super) fn delivered(&self, key: String, events: u64, received: &[i64]) {
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
pub(super) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

pub(super) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A tracker's own redaction (`spec.redaction.fields`, beyond the built-in
/// rules applied at ingest), applied only to traces it concerns, with the same
/// engine and over the same body shapes. `None`: the line stays as it is.
pub(super) fn redact_for(r: &Redaction, meta: &RouteMeta<'_>, line: &[u8]) -> Option<Vec<u8>> {
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
pub(super) fn without_bodies(line: &[u8]) -> Vec<u8> {
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
pub(super) struct WriteFailure {
    pub(super) problem: Problem,
    pub(super) transient: bool,
}

impl WriteFailure {
    /// The store could not be opened: its own reason (a credentials Secret
    /// missing or incomplete, the API server unreachable), and the next attempt
    /// opens it again.
    pub(super) fn opening(problem: Problem) -> Self {
        Self {
            problem,
            transient: false,
        }
    }

    /// The store refused or lost a write.
    pub(super) fn written(e: &DestinationError) -> Self {
        Self {
            problem: e.problem(),
            transient: e.is_transient(),
        }
    }
}

/// The open store, opened first if there is none (or the last one was dropped
/// after a lasting error).
pub(super) async fn open_sink<'a>(
    factory: &StoreFactory,
    sink: &'a mut Option<Store>,
) -> Result<&'a Store, WriteFailure> {
    let store = match sink.take() {
        Some(store) => store,
        None => factory().await.map_err(WriteFailure::opening)?,
    };
    Ok(sink.insert(store))
}
