//! `AlertSink`: where the hot path hands over a threshold event. `emit` never waits: it
//! logs and counts the event, and with a webhook puts it on a bounded queue for the
//! delivery loop; when every place is taken the event is dropped (logged, counted).

use super::backoff::RetryPolicy;
use super::delivery::{Delivery, Queued, Stop};
use super::event::ThresholdEvent;
use super::stats::{AlertStats, Counters};
use super::webhook::{Poster, Webhook};
use crate::settings::Settings;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// How webhook deliveries are paced. `Default` is what tollgate runs with; tests pass
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOptions {
    /// Events held at once (queued, being sent, or waiting to retry); more are dropped.
    pub capacity: usize,
    /// Attempts in flight at once: a slow receiver holds at most this many.
    pub concurrency: usize,
    /// Longest wait for one attempt (connecting, sending, and the answer).
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            capacity: 10_000,
            concurrency: 4,
            attempt_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// One replica's outlet for threshold events; shared as `Arc<AlertSink>`.
pub struct AlertSink {
    counters: Arc<Counters>,
    queue: Option<Queue>,
}

struct Queue {
    tx: UnboundedSender<Queued>,
    stop: Arc<Stop>,
    worker: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl AlertSink {
    /// Logs and counts events, sends them nowhere (no `--alert-webhook`).
    pub fn log_only() -> AlertSink {
        AlertSink {
            counters: Arc::new(Counters::new(0)),
            queue: None,
        }
    }

    /// As the settings say. With a webhook, call it inside a tokio runtime: it starts
    /// the delivery loop.
    pub fn from_settings(settings: &Settings) -> Result<AlertSink, String> {
        match settings.alert_webhook()? {
            None => Ok(AlertSink::log_only()),
            Some(webhook) => {
                tracing::info!(
                    target = %webhook.target(), signed = webhook.is_signed(),
                    "threshold events are POSTed to the alert webhook"
                );
                AlertSink::with_webhook(webhook, DeliveryOptions::default())
            }
        }
    }

    /// Delivers to `webhook`, paced by `options`. Starts the delivery loop on the
    /// current tokio runtime (an error outside one).
    pub fn with_webhook(webhook: Webhook, options: DeliveryOptions) -> Result<AlertSink, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the alert webhook's delivery needs a tokio runtime".to_string())?;
        let poster = Arc::new(Poster::new(&webhook, options.attempt_timeout)?);
        let counters = Arc::new(Counters::new(options.capacity));
        let stop = Arc::new(Stop::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let delivery = Delivery {
            poster,
            webhook,
            policy: options.retry,
            concurrency: options.concurrency.max(1),
            counters: counters.clone(),
            stop: stop.clone(),
        };
        let worker = runtime.spawn(delivery.run(rx));
        Ok(AlertSink {
            counters,
            queue: Some(Queue {
                tx,
                stop,
                worker: parking_lot::Mutex::new(Some(worker)),
            }),
        })
    }

    /// Hands an event over. Never blocks or awaits: safe on the check path. Logs it
    /// (target `tollgate::alert`, the JSON in field `event`), counts it, and queues it
    /// for the webhook if there is one and the queue has room.
    pub fn emit(&self, event: ThresholdEvent) {
        self.counters.crossing(event.kind.as_str());
        let json = match event.to_json() {
            Ok(json) => json,
            Err(e) => {
                self.counters.dropped(false);
                tracing::error!(target: "tollgate::alert", event_id = %event.event_id, error = %e, "threshold event dropped: cannot be written as JSON");
                return;
            }
        };
        tracing::info!(target: "tollgate::alert", event_id = %event.event_id, event = %json, "threshold crossed");
        let Some(queue) = &self.queue else {
            return;
        };
        if !self.counters.reserve() {
            self.counters.dropped(false);
            tracing::warn!(
                target: "tollgate::alert", event_id = %event.event_id,
                pending = self.counters.snapshot().pending,
                "threshold event dropped: the alert webhook's queue is full"
            );
            return;
        }
        let queued = Queued {
            event_id: Arc::from(event.event_id),
            body: Bytes::from(json),
        };
        if let Err(e) = queue.tx.send(queued) {
            self.counters.dropped(true);
            tracing::warn!(target: "tollgate::alert", event_id = %e.0.event_id, "threshold event not delivered: tollgate is shutting down");
        }
    }

    pub fn stats(&self) -> AlertStats {
        self.counters.snapshot()
    }

    /// Stops delivering. Within `grace`, attempts in flight may finish and queued events
    /// get one attempt each; every event still held is then logged as not delivered and
    /// counted dropped. Returns within about `grace`, whatever the receiver does. Later
    /// events are dropped (logged).
    pub async fn shutdown(&self, grace: Duration) {
        let Some(queue) = &self.queue else {
            return;
        };
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        queue.stop.grace_ms.store(ms, Ordering::Release);
        queue.stop.notify.notify_one();
        let worker = queue.worker.lock().take();
        if let Some(mut worker) = worker
            && tokio::time::timeout(grace + Duration::from_secs(1), &mut worker)
                .await
                .is_err()
        {
            worker.abort();
            tracing::error!(target: "tollgate::alert", "the alert delivery loop did not stop in time; aborted");
        }
    }
}

impl Default for AlertSink {
    fn default() -> Self {
        AlertSink::log_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::tests::budget_event;

    #[test]
    fn log_only_counts_and_queues_nothing() {
        let sink = AlertSink::log_only();
        sink.emit(budget_event());
        sink.emit(budget_event());
        let s = sink.stats();
        assert_eq!((s.crossings, s.pending, s.dropped), (2, 0, 0));
    }

    #[test]
    fn a_webhook_needs_a_runtime_and_says_so() {
        let w = Webhook::new("http://127.0.0.1:1/", None).unwrap();
        let err = AlertSink::with_webhook(w, DeliveryOptions::default())
            .err()
            .unwrap();
        assert!(err.contains("tokio runtime"), "{err}");
    }

    /// The bound holds while nothing drains: a receiver that never answers.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let options = DeliveryOptions {
            capacity: 5,
            concurrency: 1,
            attempt_timeout: Duration::from_secs(30),
            ..DeliveryOptions::default()
        };
        let sink = AlertSink::with_webhook(Webhook::new(&url, None).unwrap(), options).unwrap();
        for _ in 0..50 {
            sink.emit(budget_event());
        }
        let s = sink.stats();
        assert_eq!((s.crossings, s.pending, s.dropped), (50, 5, 45));
        sink.shutdown(Duration::ZERO).await;
        let s = sink.stats();
        assert_eq!((s.pending, s.dropped, s.delivered), (0, 50, 0));
        sink.emit(budget_event());
        assert_eq!(
            sink.stats().dropped,
            51,
            "after shutdown: dropped, not queued"
        );
        drop(listener);
    }
}
