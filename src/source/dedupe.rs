//! The de-duplication window: a re-sent batch is stored once.
//!
//! The kube-apiserver re-sends a batch whose answer it did not see (a timeout, a
//! restart or stop of this replica), and it re-sends it as it was: the same
//! `EventList`, serialised the same way. A batch's key is the BLAKE3 hash of its
//! whole body — every byte of every event, never the client-chosen `auditID` —
//! and the keys of the batches stored in the last `window` (or covering the last
//! `max` events) are remembered; a batch whose key is known is acknowledged and
//! not stored again. Two different operations that share an `Audit-ID` differ in
//! their bytes, so they are both kept. Hashing the body as one input lets BLAKE3
//! work on many chunks at once: a few percent of ingest, where a hash per event
//! cost about ten (see `docs/benchmarks.md`). The keys survive a restart through
//! the spool ([`crate::spool::Spool::take_recovered_hashes`]). What the window does
//! not see (an identical event in a different batch) the query engine still shows
//! once: it de-duplicates by content too.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// The key of a batch body: 64 bits of its BLAKE3 hash (about one chance in
/// 10^13 per batch of taking a new batch for a copy; nobody can aim for it).
pub fn batch_key(body: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    blake3::Hasher::new().update(body).finalize_xof().fill(&mut out);
    // 0 means "no key" in spooled metadata.
    u64::from_le_bytes(out).max(1)
}

/// Keys are already uniform (BLAKE3 of content nobody can grind offline: the
/// apiserver stamps the times), so they are their own hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Keys = HashSet<u64, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
struct Inner {
    /// Stored batches.
    stored: Keys,
    /// Being appended by a request: its outcome decides.
    pending: Keys,
    /// Stored keys in the order they were stored, with their events and
    /// receive time.
    order: VecDeque<(u64, u32, i64)>,
    /// Events of the batches in `order`.
    events: u64,
}

/// Keys of recently stored batches.
pub struct Window {
    inner: Mutex<Inner>,
    window_ms: i64,
    max: u64,
}

/// The answer of [`Window::admit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// New: reserved; store it, then [`Window::confirm`] or [`Window::release`].
    New,
    /// Stored already: acknowledge it without storing it again.
    Copy,
    /// An identical batch is being stored by another request right now: ask
    /// again when it is done.
    Wait,
}

impl Window {
    /// A window of `window` or `max` events, whichever is smaller, starting with
    /// the keys recovered from the spool (one per spooled event). `max == 0`
    /// turns de-duplication off.
    pub fn new(window: Duration, max: usize, recovered: Vec<(u64, i64)>, now_ms: i64) -> Window {
        let w = Window {
            inner: Mutex::default(),
            window_ms: window.as_millis() as i64,
            max: max as u64,
        };
        if max > 0 {
            let mut recovered = recovered;
            recovered.sort_by_key(|(_, ms)| *ms);
            let mut inner = w.lock();
            for (k, ms) in recovered {
                if inner.stored.insert(k) {
                    inner.order.push_back((k, 1, ms));
                } else if let Some(last) = inner.order.back_mut().filter(|(lk, _, _)| *lk == k) {
                    last.1 += 1;
                }
                inner.events += 1;
            }
            w.evict(&mut inner, now_ms);
        }
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether a batch is new, and reserves it if it is.
    pub fn admit(&self, key: u64) -> Admit {
        if self.max == 0 {
            return Admit::New;
        }
        let mut inner = self.lock();
        if inner.pending.contains(&key) {
            Admit::Wait
        } else if inner.stored.contains(&key) {
            Admit::Copy
        } else {
            inner.pending.insert(key);
            Admit::New
        }
    }

    /// The reserved batch of `events` events is durable.
    pub fn confirm(&self, key: u64, events: u32, received_ms: i64) {
        if self.max == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.pending.remove(&key);
        if inner.stored.insert(key) {
            inner.order.push_back((key, events, received_ms));
            inner.events += u64::from(events);
        }
        self.evict(&mut inner, received_ms);
    }

    /// The reserved batch could not be stored: a retry must store it.
    pub fn release(&self, key: u64) {
        self.lock().pending.remove(&key);
    }

    fn evict(&self, inner: &mut Inner, now_ms: i64) {
        while let Some(&(k, n, ms)) = inner.order.front() {
            if inner.events <= self.max && ms >= now_ms - self.window_ms {
                break;
            }
            inner.order.pop_front();
            inner.stored.remove(&k);
            inner.events -= u64::from(n);
        }
    }

    /// Events of the batches in the window.
    pub fn events(&self) -> u64 {
        self.lock().events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_known_and_a_different_body_is_not() {
        let w = Window::new(Duration::from_secs(60), 100, vec![], 0);
        let a = batch_key(br#"{"items":[{"auditID":"x","verb":"get"}]}"#);
        let b = batch_key(br#"{"items":[{"auditID":"x","verb":"delete"}]}"#);
        assert_ne!(a, b, "same auditID, different operation");
        assert_eq!(w.admit(a), Admit::New);
        w.confirm(a, 1, 0);
        assert_eq!(w.admit(a), Admit::Copy);
        assert_eq!(w.admit(b), Admit::New);
    }

    #[test]
    fn a_copy_of_a_batch_being_stored_waits_and_a_failed_one_is_retried() {
        let w = Window::new(Duration::from_secs(60), 100, vec![], 0);
        assert_eq!(w.admit(7), Admit::New);
        assert_eq!(w.admit(7), Admit::Wait, "outcome of the first not known yet");
        w.release(7);
        assert_eq!(w.admit(7), Admit::New, "the failed one is new again");
    }

    #[test]
    fn the_window_is_bounded_by_age_and_events_and_survives_a_restart() {
        let w = Window::new(Duration::from_secs(60), 10, vec![], 0);
        for k in 1..=5 {
            w.admit(k);
            w.confirm(k, 3, 1000);
        }
        assert_eq!(w.events(), 9, "at most 10 events: the oldest batches went");
        assert_eq!(w.admit(1), Admit::New, "evicted by count");
        w.release(1);
        assert_eq!(w.admit(5), Admit::Copy);
        w.admit(9);
        w.confirm(9, 1, 70_000);
        assert_eq!(w.events(), 1, "older than 60 s evicted");
        // Keys come back one per spooled event.
        let restarted = Window::new(
            Duration::from_secs(60),
            10,
            vec![(9, 70_000), (4, 1_000), (9, 70_000)],
            70_000,
        );
        assert_eq!(restarted.events(), 2);
        assert_eq!(restarted.admit(9), Admit::Copy);
        assert_eq!(restarted.admit(4), Admit::New);
    }

    #[test]
    fn off_when_max_is_zero() {
        let w = Window::new(Duration::from_secs(60), 0, vec![(1, 0)], 0);
        assert_eq!(w.admit(1), Admit::New);
        w.confirm(1, 1, 0);
        assert_eq!(w.admit(1), Admit::New);
    }
}
