//! The one writer thread: appends groups of records, fsyncs once per group,
//! answers each append after its fsync, and rolls segments.

use super::*;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) first: u64,
    pub(super) size: u64,
    pub(super) next_seq: u64,
    pub(super) segment_bytes: u64,
    pub(super) fsync: bool,
    pub(super) dedupe: bool,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, config: &Config, next_seq: u64) -> io::Result<Writer> {
        let last = lock(&shared.segments)
            .iter()
            .next_back()
            .map(|(f, s)| (*f, s.bytes));
        let (first, size) = match last {
            Some(v) => v,
            None => {
                lock(&shared.segments).insert(next_seq, Segment::default());
                (next_seq, 0)
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&config.dir, first))?;
        if config.fsync {
            File::open(&config.dir)?.sync_all()?;
        }
        Ok(Writer {
            shared,
            file,
            first,
            size,
            next_seq,
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            dedupe: config.dedupe_max > 0,
        })
    }

    /// Group commit: takes every waiting append, writes them, syncs once, answers
    /// all; then enforces the trackers' budgets so a stuck tracker never fills
    /// the spool for everyone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Append>, head: watch::Sender<u64>) {
        let mut group = Vec::new();
        let mut buf = Vec::new();
        let mut last_gc = std::time::Instant::now();
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < 256 {
                match rx.try_recv() {
                    Ok(a) => group.push(a),
                    Err(_) => break,
                }
            }
            let result = self.write_group(&group, &mut buf);
            match result {
                Ok(first_seq) => {
                    let _ = head.send(self.next_seq);
                    for (i, a) in group.drain(..).enumerate() {
                        let _ = a.done.send(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool write failed");
                    for a in group.drain(..) {
                        let _ = a
                            .done
                            .send(Err(AppendError::Io(io::Error::new(e.kind(), e.to_string()))));
                    }
                }
            }
            if last_gc.elapsed() >= std::time::Duration::from_millis(100) {
                last_gc = std::time::Instant::now();
                if let Err(e) = self.shared.collect_garbage(self.next_seq) {
                    tracing::warn!(error = %e, "spool garbage collection failed");
                }
            }
        }
    }

    pub(super) fn write_group(&mut self, group: &[Append], buf: &mut Vec<u8>) -> io::Result<u64> {
        if self.size >= self.segment_bytes {
            self.roll()?;
        }
        let first_seq = self.next_seq;
        buf.clear();
        for (i, a) in group.iter().enumerate() {
            record::encode(buf, first_seq + i as u64, a.received_ms, &a.payload);
        }
        if let Err(e) = self
            .file
            .write_all(buf)
            .and_then(|_| if self.fsync { self.file.sync_data() } else { Ok(()) })
        {
            // Cut off whatever part of the group reached the file: those records
            // were not acknowledged and their sequence numbers will be reused.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.next_seq += group.len() as u64;
        {
            let mut segs = lock(&self.shared.segments);
            let seg = segs.entry(self.first).or_default();
            seg.bytes = self.size;
            seg.records.extend(
                group
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (first_seq + i as u64, a.entries)),
            );
        }
        self.shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if self.dedupe {
            // One entry per event (the window counts events).
            let keys: Vec<(u64, i64)> = group
                .iter()
                .filter_map(|a| a.key.map(|k| (k, a.received_ms, a.entries)))
                .flat_map(|(k, ms, n)| std::iter::repeat_n((k, ms), n as usize))
                .collect();
            // Synced before any segment is deleted (see `seen`); a failure here
            // only weakens de-duplication after a restart.
            if let Err(e) = lock(&self.shared.seen).append(&keys) {
                tracing::warn!(error = %e, "appending to the seen log failed");
            }
        }
        Ok(first_seq)
    }

    pub(super) fn roll(&mut self) -> io::Result<()> {
        let first = self.next_seq;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.shared.dir, first))?;
        if self.fsync {
            File::open(&self.shared.dir)?.sync_all()?;
        }
        self.first = first;
        self.size = 0;
        lock(&self.shared.segments).insert(first, Segment::default());
        Ok(())
    }
}
