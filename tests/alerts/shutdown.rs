//! Shutdown of the sink: it returns within its grace whatever the receiver does, logs
//! every event it could not deliver, and delivers what is queued when it can.

use super::{event, options, sink};
use crate::common::eventually;
use crate::webhook_receiver::{Mode, Receiver};
use std::time::{Duration, Instant};
use tollgate::alerts::{DeliveryOptions, RetryPolicy};
use tollgate::limits::LimitKind;

/// Shutdown returns within its grace although the receiver holds requests, and logs
/// every event still held (parked for a retry, or in flight) as not delivered.
#[tokio::test]
async fn shutdown_logs_every_pending_event_and_does_not_hang() {
    let logs = LogCapture::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let receiver = Receiver::up(Mode::Fail).await;
    let sink = sink(
        &receiver,
        DeliveryOptions {
            retry: RetryPolicy {
                first: Duration::from_secs(30),
                max: Duration::from_secs(60),
                retry_for: Duration::from_secs(600),
            },
            ..options(2, Duration::from_secs(60), Duration::from_secs(600))
        },
    );
    sink.emit(event("parked", LimitKind::Budget));
    assert!(
        eventually(Duration::from_secs(5), || async {
            !receiver.hits_of("parked").is_empty()
        })
        .await
    );
    receiver.set_mode(Mode::Hold);
    sink.emit(event("held-1", LimitKind::Tokens));
    sink.emit(event("held-2", LimitKind::Tokens));
    assert!(
        eventually(Duration::from_secs(5), || async {
            receiver.in_flight() == 2
        })
        .await
    );

    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        sink.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown returns");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let s = sink.stats();
    assert_eq!(
        (s.crossings, s.delivered, s.dropped, s.pending),
        (3, 0, 3, 0)
    );
    sink.emit(event("late", LimitKind::Requests));
    assert_eq!(sink.stats().dropped, 4);

    let text = logs.text();
    for id in ["parked", "held-1", "held-2"] {
        let crossed = format!(
            "tollgate::alert: threshold crossed event_id={id} event={{\"event_id\":\"{id}\""
        );
        assert!(text.contains(&crossed), "no log of {id} crossing:\n{text}");
        assert!(
            text.lines().any(|l| l.contains("WARN")
                && l.contains("not delivered")
                && l.contains(&format!("event_id={id} "))),
            "{id} not logged as not delivered:\n{text}"
        );
    }
    assert!(
        text.contains("event_id=late") && text.contains("shutting down"),
        "{text}"
    );
}

/// Events still queued at shutdown get an attempt within the grace: a healthy receiver
/// gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_queued_within_its_grace() {
    let receiver = Receiver::up(Mode::Up).await;
    let sink = sink(
        &receiver,
        options(1, Duration::from_secs(5), Duration::from_secs(60)),
    );
    for i in 0..20 {
        sink.emit(event(&format!("last-{i}"), LimitKind::Tokens));
    }
    sink.shutdown(Duration::from_secs(5)).await;
    let s = sink.stats();
    assert_eq!((s.delivered, s.dropped, s.pending), (20, 0, 0), "{s:?}");
    assert_eq!(receiver.answered_ok().len(), 20);
}

/// Logs written to memory, for the test to read.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
