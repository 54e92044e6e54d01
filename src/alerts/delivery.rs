//! The background delivery loop: takes queued events, POSTs a few at a time, and parks
//! failed ones in a delay queue until their retry is due, so a down or slow receiver
//! holds at most `concurrency` attempts (each bounded by its timeout) and never the
//! events behind them. Fresh events and due retries take turns for free slots.
//!
//! On shutdown (or when its sink is dropped) the loop lets attempts in flight finish and
//! tries queued events once, within the grace it is given, then logs every event it
//! still holds as not delivered (with its JSON, to replay by hand) and counts it dropped.

use super::backoff::RetryPolicy;
use super::stats::Counters;
use super::webhook::{Poster, Webhook};
use crate::log_throttle::LogThrottle;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// An event handed over by `emit`: its id (for logs) and its exact body.
pub(crate) struct Queued {
    pub(crate) event_id: Arc<str>,
    pub(crate) body: Bytes,
}

/// Tells the loop to stop, and how long attempts in flight may still take.
#[derive(Default)]
pub(crate) struct Stop {
    pub(crate) notify: Notify,
    pub(crate) grace_ms: AtomicU64,
}

struct Pending {
    event_id: Arc<str>,
    body: Bytes,
    signature: Option<String>,
    /// Retries started so far (0 while on its first attempt).
    retries: u32,
    first_failure: Option<Instant>,
}

type Attempt = Pin<Box<dyn Future<Output = (u64, Result<(), String>)> + Send>>;

pub(crate) struct Delivery {
    pub(crate) poster: Arc<Poster>,
    pub(crate) webhook: Webhook,
    pub(crate) policy: RetryPolicy,
    pub(crate) concurrency: usize,
    pub(crate) counters: Arc<Counters>,
    pub(crate) stop: Arc<Stop>,
}

struct Loop {
    d: Delivery,
    attempts: FuturesUnordered<Attempt>,
    in_flight: HashMap<u64, Pending>,
    /// Retries by due time (and sequence, so equal times keep their order).
    waiting: BinaryHeap<Reverse<(Instant, u64)>>,
    parked: HashMap<u64, Pending>,
    next_seq: u64,
    retry_next: bool,
    failures: LogThrottle,
}

impl Delivery {
    pub(crate) async fn run(self, mut rx: UnboundedReceiver<Queued>) {
        let stop = self.stop.clone();
        let mut l = Loop {
            d: self,
            attempts: FuturesUnordered::new(),
            in_flight: HashMap::new(),
            waiting: BinaryHeap::new(),
            parked: HashMap::new(),
            next_seq: 0,
            retry_next: false,
            failures: LogThrottle::new(10_000),
        };
        loop {
            l.fill(&mut rx);
            let free = l.attempts.len() < l.d.concurrency;
            let due = l.waiting.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                _ = stop.notify.notified() => break,
                Some((seq, result)) = l.attempts.next(), if !l.attempts.is_empty() => {
                    l.finished(seq, result);
                }
                queued = rx.recv(), if free => match queued {
                    Some(q) => l.start(l.fresh(q)),
                    None => break, // the sink is gone
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if free && due.is_some() => {}
            }
        }
        let grace = Duration::from_millis(stop.grace_ms.load(Ordering::Acquire));
        l.shut_down(rx, grace).await;
    }
}

impl Loop {
    fn fresh(&self, q: Queued) -> Pending {
        Pending {
            signature: self.d.webhook.sign(&q.body),
            event_id: q.event_id,
            body: q.body,
            retries: 0,
            first_failure: None,
        }
    }

    /// Starts attempts while slots are free: fresh events and due retries in turn.
    fn fill(&mut self, rx: &mut UnboundedReceiver<Queued>) {
        while self.attempts.len() < self.d.concurrency {
            let due = self
                .waiting
                .peek()
                .is_some_and(|Reverse((at, _))| *at <= Instant::now());
            let next = if due && self.retry_next {
                self.pop_due()
            } else if let Ok(q) = rx.try_recv() {
                Some(self.fresh(q))
            } else if due {
                self.pop_due()
            } else {
                None
            };
            let Some(p) = next else { break };
            self.retry_next = p.retries == 0;
            self.start(p);
        }
    }

    fn pop_due(&mut self) -> Option<Pending> {
        let Reverse((_, seq)) = self.waiting.pop()?;
        let mut p = self.parked.remove(&seq)?;
        p.retries += 1;
        self.d.counters.retried();
        Some(p)
    }

    fn start(&mut self, p: Pending) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let poster = self.d.poster.clone();
        let (body, signature) = (p.body.clone(), p.signature.clone());
        self.attempts.push(Box::pin(async move {
            (seq, poster.post(body, signature).await)
        }));
        self.in_flight.insert(seq, p);
    }

    fn finished(&mut self, seq: u64, result: Result<(), String>) {
        let Some(mut p) = self.in_flight.remove(&seq) else {
            return;
        };
        let reason = match result {
            Ok(()) => {
                self.d.counters.delivered();
                tracing::debug!(target: "tollgate::alert", event_id = %p.event_id, retries = p.retries, "threshold event delivered");
                return;
            }
            Err(reason) => reason,
        };
        let now = Instant::now();
        let first = *p.first_failure.get_or_insert(now);
        match self.d.policy.next(p.retries, now - first, fastrand::f64()) {
            Some(wait) => {
                if let Some(more) = self.failures.allow(chrono::Utc::now().timestamp_millis()) {
                    tracing::warn!(
                        target: "tollgate::alert", event_id = %p.event_id, error = %reason,
                        retry_in_ms = wait.as_millis() as u64, also_since_last_line = more,
                        "threshold event not delivered yet; will retry"
                    );
                }
                self.waiting.push(Reverse((now + wait, seq)));
                self.parked.insert(seq, p);
            }
            None => {
                self.d.counters.dropped(true);
                tracing::warn!(
                    target: "tollgate::alert", event_id = %p.event_id, error = %reason,
                    attempts = p.retries + 1, failing_for_s = (now - first).as_secs(),
                    event = %String::from_utf8_lossy(&p.body),
                    "threshold event dropped: the webhook kept failing"
                );
            }
        }
    }

    /// Within `grace`: finishes the attempts in flight and tries queued events once
    /// (not parked ones: their receiver just failed). Whatever is left is logged.
    async fn shut_down(mut self, mut rx: UnboundedReceiver<Queued>, grace: Duration) {
        rx.close();
        let deadline = Instant::now() + grace;
        loop {
            while self.attempts.len() < self.d.concurrency && Instant::now() < deadline {
                let Ok(q) = rx.try_recv() else { break };
                let p = self.fresh(q);
                self.start(p);
            }
            if self.attempts.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.attempts.next()).await {
                Ok(Some((seq, Ok(())))) => self.finished(seq, Ok(())),
                Ok(Some((seq, Err(reason)))) => {
                    if let Some(p) = self.in_flight.remove(&seq) {
                        not_delivered(&self.d.counters, p, &reason);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(self.attempts);
        let mut left: Vec<Pending> = self.in_flight.into_values().collect();
        left.extend(self.parked.into_values());
        while let Ok(q) = rx.try_recv() {
            left.push(Pending {
                event_id: q.event_id,
                body: q.body,
                signature: None,
                retries: 0,
                first_failure: None,
            });
        }
        if !left.is_empty() {
            tracing::warn!(target: "tollgate::alert", events = left.len(), "shutting down with threshold events not delivered");
        }
        for p in left {
            not_delivered(&self.d.counters, p, "shutting down");
        }
    }
}

/// Counted dropped and logged with its JSON, so it can be replayed by hand.
fn not_delivered(counters: &Counters, p: Pending, reason: &str) {
    counters.dropped(true);
    tracing::warn!(
        target: "tollgate::alert", event_id = %p.event_id, error = %reason,
        event = %String::from_utf8_lossy(&p.body),
        "threshold event not delivered: tollgate is shutting down"
    );
}
