//! What happened to the events of one sink, counted twice: in the process-wide Prometheus
//! metrics, and in this sink's own counters (`AlertSink::stats`), which tests and
//! embedders can read without scraping.
//!
//! The bound on pending events lives here too: an event holds its place from `emit`
//! until it is delivered or dropped, whether it waits in the queue, is being sent, or
//! waits for a retry, so memory stays bounded whatever the receiver does.

use crate::metrics::{ALERT_DELIVERIES, ALERT_QUEUE, THRESHOLD_CROSSINGS};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A sink's counts since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlertStats {
    /// Events emitted (every one is logged).
    pub crossings: u64,
    /// Events a webhook answered with a 2xx.
    pub delivered: u64,
    /// Attempts after a first failed one.
    pub retried: u64,
    /// Events given up on: queue full, retries exhausted, or pending at shutdown.
    pub dropped: u64,
    /// Events not yet delivered or dropped (queued, being sent, or waiting to retry).
    pub pending: usize,
}

pub(crate) struct Counters {
    capacity: usize,
    pending: AtomicUsize,
    crossings: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn new(capacity: usize) -> Counters {
        Counters {
            capacity,
            pending: AtomicUsize::new(0),
            crossings: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn crossing(&self, kind: &'static str) {
        self.crossings.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(THRESHOLD_CROSSINGS, "kind" => kind).increment(1);
    }

    /// Takes a place for a new event; false when all `capacity` places are taken.
    pub(crate) fn reserve(&self) -> bool {
        let taken = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if taken {
            metrics::gauge!(ALERT_QUEUE).increment(1.0);
        }
        taken
    }

    /// Gives back a place taken by `reserve`.
    fn release(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(ALERT_QUEUE).decrement(1.0);
    }

    pub(crate) fn delivered(&self) {
        self.release();
        self.delivered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ALERT_DELIVERIES, "result" => "delivered").increment(1);
    }

    pub(crate) fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ALERT_DELIVERIES, "result" => "retried").increment(1);
    }

    /// `reserved`: the event held a place (it was queued), which is given back.
    pub(crate) fn dropped(&self, reserved: bool) {
        if reserved {
            self.release();
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ALERT_DELIVERIES, "result" => "dropped").increment(1);
    }

    pub(crate) fn snapshot(&self) -> AlertStats {
        AlertStats {
            crossings: self.crossings.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back() {
        let c = Counters::new(3);
        assert!(c.reserve() && c.reserve() && c.reserve());
        assert!(!c.reserve(), "the fourth finds no place");
        c.dropped(false);
        assert_eq!(c.snapshot().pending, 3);
        c.delivered();
        assert!(c.reserve(), "a delivered event frees its place");
        c.dropped(true);
        c.dropped(true);
        let s = c.snapshot();
        assert_eq!((s.pending, s.delivered, s.dropped), (1, 1, 3));
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_bound() {
        let c = std::sync::Arc::new(Counters::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).filter(|_| c.reserve()).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(taken, 1000);
        assert_eq!(c.snapshot().pending, 1000);
    }
}
