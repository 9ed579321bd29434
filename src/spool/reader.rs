//! Reading records in order from a position, across segments, skipping (and
//! counting) damaged ones rather than stalling.

use super::scan::resync;
use super::*;

/// Reads records in order. Blocking I/O: use it from a blocking thread.
pub struct Reader {
    pub(super) spool: Spool,
    pub(super) next: u64,
    /// (first seq of the open segment, file positioned at record `next`).
    pub(super) file: Option<(u64, File)>,
    /// Damaged records skipped so far.
    pub corrupt: u64,
}

impl Reader {
    /// The next record, or `None` when every durable record has been read. A
    /// damaged record is skipped and counted in [`Reader::corrupt`]: it never
    /// stalls delivery.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            if self.next >= self.spool.head() {
                return Ok(None);
            }
            if self.file.is_none() {
                self.open_at(self.next)?;
            }
            let Some((first, f)) = self.file.as_mut() else {
                return Ok(None);
            };
            let first = *first;
            let at = f.stream_position()?;
            let header = match read_header(f) {
                Ok(h) => h,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    self.skip_damage(first, at)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match header {
                Some(h) => {
                    let mut payload = vec![0u8; h.len as usize];
                    if f.read_exact(&mut payload).is_err()
                        || checksum(h.seq, h.received_ms, &payload) != h.crc
                    {
                        self.skip_damage(first, at)?;
                        continue;
                    }
                    if h.seq < self.next {
                        continue;
                    }
                    self.next = h.seq + 1;
                    return Ok(Some(Record {
                        seq: h.seq,
                        received_ms: h.received_ms,
                        payload,
                    }));
                }
                None => {
                    // End of this segment: move on to the one holding `next`.
                    let later = lock(&self.spool.shared.segments)
                        .range(first + 1..)
                        .next()
                        .map(|(f, _)| *f);
                    match later {
                        Some(l) => {
                            self.next = self.next.max(l);
                            self.file = None;
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }

    /// Counts the damaged record at `at` and moves to the next valid one.
    fn skip_damage(&mut self, first: u64, at: u64) -> io::Result<()> {
        self.corrupt += 1;
        tracing::error!(segment = first, offset = at, "damaged spool record skipped");
        let bytes = std::fs::read(segment_path(&self.spool.shared.dir, first))?;
        let next = resync(&bytes, at as usize + 1);
        match (next, self.file.as_mut()) {
            (Some(n), Some((_, f))) => {
                f.seek(SeekFrom::Start(n as u64))?;
            }
            _ => {
                // Nothing valid after it in this segment: go on with the next one.
                let later = lock(&self.spool.shared.segments)
                    .range(first + 1..)
                    .next()
                    .map(|(f, _)| *f);
                match later {
                    Some(l) => self.next = self.next.max(l),
                    None => self.next = self.spool.head(),
                }
                self.file = None;
            }
        }
        Ok(())
    }

    /// Opens the segment that holds `seq` and skips to it.
    fn open_at(&mut self, seq: u64) -> io::Result<()> {
        let first = {
            let segs = lock(&self.spool.shared.segments);
            segs.range(..=seq)
                .next_back()
                .map(|(f, _)| *f)
                .or_else(|| segs.keys().next().copied())
        };
        let Some(first) = first else {
            return Ok(());
        };
        if first > seq {
            // What was asked for is gone (dropped over budget): start at what is left.
            self.next = first;
        }
        let mut f = File::open(segment_path(&self.spool.shared.dir, first))?;
        // Skip records before `seq` by their headers only.
        loop {
            let pos = f.stream_position()?;
            match read_header(&mut f) {
                Ok(Some(h)) if h.seq < self.next => {
                    f.seek(SeekFrom::Current(h.len as i64))?;
                }
                Ok(_) | Err(_) => {
                    f.seek(SeekFrom::Start(pos))?;
                    break;
                }
            }
        }
        self.file = Some((first, f));
        Ok(())
    }

    /// The sequence number of the next record to be read.
    pub fn next_seq(&self) -> u64 {
        self.next
    }
}
