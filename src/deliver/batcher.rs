//! When to cut trace files: a pure state machine, no I/O.
//!
//! A tracker keeps one open file per UTC day it sees, so every trace in a file
//! lies in the day of the file's key, and the file is named after its earliest
//! trace (a long request that ends hours after it began is still in its own day's
//! file, under its own hour). A file is cut when it reaches its event or byte
//! limit, when it is older than the age limit, or when the pipeline drains.
//!
//! Because several files can be open at once, the tracker's cursor may only move
//! up to the first entry of its oldest open file; [`Batcher::cursor`] says where.

use crate::spool::Position;
use std::collections::BTreeMap;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of a Unix-milliseconds time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// Limits of one file.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_events: u64,
    pub max_bytes: u64,
    pub max_age_ms: i64,
}

/// What is known of an open file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFile {
    pub day: i64,
    /// Position of its first entry (names the object).
    pub start: Position,
    /// Position just after its last entry.
    pub end: Position,
    /// When it was opened (wall clock, Unix ms): the age limit counts from it, so a
    /// backlog replayed after an outage still fills whole files.
    pub opened_ms: i64,
    pub events: u64,
    pub bytes: u64,
    /// Earliest and latest trace time in it (Unix ms).
    pub earliest_ms: i64,
    pub latest_ms: i64,
}

/// The open files of one tracker.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    open: BTreeMap<i64, OpenFile>,
}

/// What adding a trace did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    pub day: i64,
    /// The trace opened a new file.
    pub opened: bool,
    /// The file reached a size limit: cut it now.
    pub full: bool,
}

impl Batcher {
    pub fn new(limits: Limits) -> Batcher {
        Batcher {
            limits,
            open: BTreeMap::new(),
        }
    }

    /// Adds the trace at entry `pos`, of trace time `time_ms` and `bytes` long.
    pub fn add(&mut self, pos: Position, time_ms: i64, bytes: u64, now_ms: i64) -> Added {
        let day = day_of(time_ms);
        let end = Position {
            seq: pos.seq,
            idx: pos.idx + 1,
        };
        let mut opened = false;
        let f = self.open.entry(day).or_insert_with(|| {
            opened = true;
            OpenFile {
                day,
                start: pos,
                end,
                opened_ms: now_ms,
                events: 0,
                bytes: 0,
                earliest_ms: time_ms,
                latest_ms: time_ms,
            }
        });
        f.end = end;
        f.events += 1;
        f.bytes += bytes;
        f.earliest_ms = f.earliest_ms.min(time_ms);
        f.latest_ms = f.latest_ms.max(time_ms);
        let full = f.events >= self.limits.max_events || f.bytes >= self.limits.max_bytes;
        Added { day, opened, full }
    }

    /// Days whose file is older than the age limit.
    pub fn aged(&self, now_ms: i64) -> Vec<i64> {
        self.open
            .values()
            .filter(|f| now_ms - f.opened_ms >= self.limits.max_age_ms)
            .map(|f| f.day)
            .collect()
    }

    /// Every open day, oldest first.
    pub fn days(&self) -> Vec<i64> {
        self.open.keys().copied().collect()
    }

    /// Closes the file of `day`.
    pub fn take(&mut self, day: i64) -> Option<OpenFile> {
        self.open.remove(&day)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// How far the cursor may move when everything up to `read` was examined:
    /// to the first entry of the oldest open file, or to `read` when none is open.
    pub fn cursor(&self, read: Position) -> Position {
        self.open
            .values()
            .map(|f| f.start)
            .min()
            .unwrap_or(read)
            .min(read)
    }

    /// When the next file becomes due by age (Unix ms).
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.open
            .values()
            .map(|f| f.opened_ms + self.limits.max_age_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = DAY_MS;

    fn p(seq: u64, idx: u32) -> Position {
        Position { seq, idx }
    }

    fn limits() -> Limits {
        Limits {
            max_events: 3,
            max_bytes: 1000,
            max_age_ms: 60_000,
        }
    }

    #[test]
    fn days_are_utc_and_negative_times_round_down() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY - 1), 0);
        assert_eq!(day_of(DAY), 1);
        assert_eq!(day_of(-1), -1);
        // 2026-11-24T23:59:59.999Z and 2026-11-25T00:00:00Z
        assert_eq!(day_of(1_796_169_599_999) + 1, day_of(1_796_169_600_000));
    }

    #[test]
    fn interleaved_clocks_around_midnight_make_one_file_per_day() {
        let mut b = Batcher::new(Limits {
            max_events: 100,
            ..limits()
        });
        let before = 20_000 * DAY - 1_000;
        let after = 20_000 * DAY + 1_000;
        for i in 0..10u32 {
            let t = if i % 2 == 0 { before } else { after + i as i64 };
            let a = b.add(p(1, i), t, 10, 0);
            assert_eq!(a.opened, i < 2, "only the first trace of each day opens a file");
            assert!(!a.full);
        }
        assert_eq!(b.days(), [19_999, 20_000]);
        let old = b.take(19_999).unwrap();
        assert_eq!((old.start, old.end, old.events), (p(1, 0), p(1, 9), 5));
        let new = b.take(20_000).unwrap();
        assert_eq!((new.start, new.end, new.events), (p(1, 1), p(1, 10), 5));
        assert_eq!(new.earliest_ms, after + 1, "named after its earliest trace");
    }

    #[test]
    fn the_file_is_named_after_its_earliest_trace_not_its_first() {
        let mut b = Batcher::new(limits());
        let day = 20_000 * DAY;
        // An exec session that began at 10:15 and ended at 12:15 arrives after 12:00 traces.
        b.add(p(0, 0), day + 12 * 3_600_000, 10, 0);
        b.add(p(0, 1), day + 10 * 3_600_000 + 15 * 60_000, 10, 0);
        let f = b.take(20_000).unwrap();
        assert_eq!(f.earliest_ms, day + 10 * 3_600_000 + 15 * 60_000);
        assert_eq!(f.latest_ms, day + 12 * 3_600_000);
    }

    #[test]
    fn size_limits_and_age_cut_files() {
        let mut b = Batcher::new(limits());
        assert!(!b.add(p(0, 0), 0, 10, 0).full);
        assert!(!b.add(p(0, 1), 0, 10, 0).full);
        assert!(b.add(p(0, 2), 0, 10, 0).full, "third event reaches max_events");
        b.take(0);
        assert!(b.add(p(1, 0), 0, 1000, 5).full, "bytes reach max_bytes");
        b.take(0);
        b.add(p(2, 0), 0, 1, 10_000);
        assert!(b.aged(69_999).is_empty());
        assert_eq!(b.aged(70_000), [0]);
        assert_eq!(b.next_deadline_ms(), Some(70_000));
    }

    #[test]
    fn the_cursor_stays_at_the_oldest_open_file() {
        let mut b = Batcher::new(limits());
        assert_eq!(b.cursor(p(5, 0)), p(5, 0), "nothing open: all read is handled");
        b.add(p(5, 2), 0, 1, 0);
        b.add(p(6, 0), DAY, 1, 0);
        assert_eq!(b.cursor(p(7, 0)), p(5, 2));
        b.take(0);
        assert_eq!(b.cursor(p(7, 0)), p(6, 0));
        b.take(1);
        assert_eq!(b.cursor(p(7, 0)), p(7, 0));
        assert!(b.is_empty());
    }
}
