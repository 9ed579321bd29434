//! The de-duplication window: an identical audit event is stored once.
//!
//! The kube-apiserver re-sends a batch whose answer it did not see (a timeout, a
//! restart of this replica). Each event's content hash ([`crate::trace::event_hash`])
//! is remembered for `window` or the last `max` events; an event whose hash is in
//! the window is acknowledged and not stored again. The key is the whole event,
//! never the client-chosen `auditID`: two different operations that share an
//! `Audit-ID` are both kept. The hashes survive a restart through the spool
//! ([`crate::spool::Spool::take_recovered_hashes`]).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// Keys are already uniform (truncated BLAKE3 of content nobody can grind
/// offline: the apiserver stamps the times), so they are their own hash.
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
    /// Stored events.
    stored: Keys,
    /// Being appended by a request: its outcome decides.
    pending: Keys,
    /// Stored keys in the order they were stored (8 bytes each) …
    order: VecDeque<u64>,
    /// … and their receive times, as runs of (second, events in it).
    times: VecDeque<(i64, u32)>,
}

impl Inner {
    fn push(&mut self, key: u64, received_ms: i64) {
        self.order.push_back(key);
        let sec = received_ms.div_euclid(1000);
        match self.times.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.times.push_back((sec, 1)),
        }
    }

    fn pop(&mut self) {
        if let Some(k) = self.order.pop_front() {
            self.stored.remove(&k);
        }
        if let Some((_, n)) = self.times.front_mut() {
            *n -= 1;
            if *n == 0 {
                self.times.pop_front();
            }
        }
    }
}

/// Hashes of recently stored events.
pub struct Window {
    inner: Mutex<Inner>,
    window_ms: i64,
    max: usize,
}

/// The answer of [`Window::admit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Per event: `true` if it is new (and now reserved), `false` if it is a copy.
    Decided(Vec<bool>),
    /// An identical event is being stored by another request right now: ask
    /// again when it is done.
    Wait,
}

impl Window {
    /// A window of `window` or `max` events, whichever is smaller, starting with
    /// the hashes recovered from the spool. `max == 0` turns de-duplication off.
    pub fn new(window: Duration, max: usize, recovered: Vec<(u64, i64)>, now_ms: i64) -> Window {
        let w = Window {
            inner: Mutex::default(),
            window_ms: window.as_millis() as i64,
            max,
        };
        if max > 0 {
            let mut recovered = recovered;
            recovered.sort_by_key(|(_, ms)| *ms);
            let mut inner = w.lock();
            for (k, ms) in recovered {
                if inner.stored.insert(k) {
                    inner.push(k, ms);
                }
            }
            w.evict(&mut inner, now_ms);
        }
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides which of a batch's events are new, and reserves those.
    pub fn admit(&self, hashes: &[u64]) -> Admit {
        if self.max == 0 {
            return Admit::Decided(vec![true; hashes.len()]);
        }
        let mut inner = self.lock();
        if hashes.iter().any(|h| inner.pending.contains(h)) {
            return Admit::Wait;
        }
        let mut in_batch: Keys = HashSet::default();
        let fresh: Vec<bool> = hashes
            .iter()
            .map(|h| !inner.stored.contains(h) && in_batch.insert(*h))
            .collect();
        for (h, new) in hashes.iter().zip(&fresh) {
            if *new {
                inner.pending.insert(*h);
            }
        }
        Admit::Decided(fresh)
    }

    /// The reserved events are durable.
    pub fn confirm(&self, hashes: &[u64], received_ms: i64) {
        if self.max == 0 {
            return;
        }
        let mut inner = self.lock();
        for h in hashes {
            inner.pending.remove(h);
            if inner.stored.insert(*h) {
                inner.push(*h, received_ms);
            }
        }
        self.evict(&mut inner, received_ms);
    }

    /// The reserved events could not be stored: a retry must store them.
    pub fn release(&self, hashes: &[u64]) {
        let mut inner = self.lock();
        for h in hashes {
            inner.pending.remove(h);
        }
    }

    fn evict(&self, inner: &mut Inner, now_ms: i64) {
        let oldest_sec = (now_ms - self.window_ms).div_euclid(1000);
        while inner.order.len() > self.max || inner.times.front().is_some_and(|(sec, _)| *sec < oldest_sec) {
            inner.pop();
        }
    }

    /// Stored hashes in the window.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> u64 {
        n
    }

    #[test]
    fn a_copy_is_refused_and_a_different_event_is_not() {
        let w = Window::new(Duration::from_secs(60), 100, vec![], 0);
        assert_eq!(
            w.admit(&[h(1), h(2), h(2)]),
            Admit::Decided(vec![true, true, false])
        );
        w.confirm(&[h(1), h(2)], 0);
        assert_eq!(
            w.admit(&[h(1), h(2), h(3)]),
            Admit::Decided(vec![false, false, true])
        );
    }

    #[test]
    fn a_copy_of_an_event_being_stored_waits_and_a_failed_one_is_retried() {
        let w = Window::new(Duration::from_secs(60), 100, vec![], 0);
        assert_eq!(w.admit(&[h(7)]), Admit::Decided(vec![true]));
        assert_eq!(
            w.admit(&[h(7), h(8)]),
            Admit::Wait,
            "outcome of the first not known yet"
        );
        w.release(&[h(7)]);
        assert_eq!(
            w.admit(&[h(7), h(8)]),
            Admit::Decided(vec![true, true]),
            "the failed one is new again"
        );
    }

    #[test]
    fn the_window_is_bounded_by_age_and_count_and_survives_a_restart() {
        let w = Window::new(Duration::from_secs(60), 3, vec![], 0);
        for n in 1..=5 {
            w.admit(&[h(n)]);
            w.confirm(&[h(n)], 1000);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.admit(&[h(1)]), Admit::Decided(vec![true]), "evicted by count");
        w.release(&[h(1)]);
        w.admit(&[h(9)]);
        w.confirm(&[h(9)], 70_000);
        assert_eq!(w.len(), 1, "older than 60 s evicted");
        let restarted = Window::new(Duration::from_secs(60), 3, vec![(9, 70_000), (4, 1_000)], 70_000);
        assert_eq!(restarted.admit(&[h(9), h(4)]), Admit::Decided(vec![false, true]));
    }

    #[test]
    fn off_when_max_is_zero() {
        let w = Window::new(Duration::from_secs(60), 0, vec![(1, 0)], 0);
        assert_eq!(w.admit(&[h(1), h(1)]), Admit::Decided(vec![true, true]));
    }
}
