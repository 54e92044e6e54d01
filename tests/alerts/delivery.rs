//! Delivery while the receiver misbehaves: retries through down, slow and 500 answers
//! (each event delivered once, signed), a bounded queue when the receiver holds every
//! request, giving up after `retry_for`, and fresh events not waiting behind a slow one.

use super::{event, expected_signature, options, sink, until};
use crate::common::eventually;
use crate::webhook_receiver::{Mode, Receiver};
use std::time::{Duration, Instant};
use tollgate::alerts::DeliveryOptions;
use tollgate::limits::LimitKind;

/// Down, then slow, then 500, then up: each event is delivered exactly once, with the
/// same id, body and valid signature on every attempt, and every retry is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_down_slow_and_500_then_delivers_once() {
    let metrics = tollgate::metrics::handle();
    let receiver = Receiver::down();
    let sink = sink(
        &receiver,
        options(2, Duration::from_millis(300), Duration::from_secs(60)),
    );
    let events = [
        event("down-1", LimitKind::Requests),
        event("down-2", LimitKind::Tokens),
        event("down-3", LimitKind::Budget),
    ];
    for e in &events {
        sink.emit(e.clone());
    }
    until("refused connections are retried", &sink, |s| s.retried >= 6).await;
    assert_eq!(sink.stats().delivered, 0);

    receiver.set_mode(Mode::Slow(Duration::from_millis(1500)));
    receiver.listen().await;
    let every_event_met = |mode: Mode| {
        let (receiver, events) = (&receiver, &events);
        move || async move {
            let hits = receiver.hits();
            events.iter().all(|e| {
                hits.iter()
                    .any(|h| h.event_id == e.event_id && h.mode == mode)
            })
        }
    };
    let slow = Mode::Slow(Duration::from_millis(1500));
    assert!(eventually(Duration::from_secs(10), every_event_met(slow)).await);
    assert_eq!(sink.stats().delivered, 0, "a slow answer is a failure");
    receiver.set_mode(Mode::Fail);
    assert!(eventually(Duration::from_secs(10), every_event_met(Mode::Fail)).await);
    assert_eq!(sink.stats().delivered, 0, "a 500 is a failure");
    receiver.set_mode(Mode::Up);
    until("all delivered once up", &sink, |s| {
        s.delivered == 3 && s.pending == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let hits = receiver.hits();
    let mut ok = receiver.answered_ok();
    ok.sort();
    assert_eq!(ok, ["down-1", "down-2", "down-3"], "exactly once each");
    for e in &events {
        let body = e.to_json().unwrap();
        let mine = receiver.hits_of(&e.event_id);
        assert!(mine.len() >= 3, "{}: {} attempts", e.event_id, mine.len());
        for h in &mine {
            assert_eq!(h.body, body.as_bytes(), "the same body on every attempt");
            assert_eq!(
                h.signature.as_deref(),
                Some(&*expected_signature(body.as_bytes()))
            );
            assert_eq!(h.content_type.as_deref(), Some("application/json"));
        }
        assert_eq!(
            mine.last().unwrap().mode,
            Mode::Up,
            "nothing sent after delivery"
        );
    }
    let s = sink.stats();
    assert_eq!((s.crossings, s.dropped), (3, 0));
    assert!(
        s.retried as usize >= hits.len() - 3 + 6,
        "every attempt after the first is a retry: {s:?}, {} hits",
        hits.len()
    );
    let text = metrics.render();
    for line in [
        "tollgate_alert_deliveries_total{result=\"delivered\"}",
        "tollgate_alert_deliveries_total{result=\"retried\"}",
        "tollgate_threshold_crossings_total{kind=\"budget\"}",
        "tollgate_alert_queue",
    ] {
        assert!(text.contains(line), "{line} missing from /metrics:\n{text}");
    }
    sink.shutdown(Duration::ZERO).await;
}

/// While the receiver holds every attempt, 10,000 emits still return at once: the queue
/// fills to its bound, the rest are dropped and counted, and at most `concurrency`
/// requests are ever open. Released, the queued ones are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_never_waits_for_a_receiver_that_holds_every_request() {
    let receiver = Receiver::up(Mode::Hold).await;
    let sink = std::sync::Arc::new(sink(
        &receiver,
        DeliveryOptions {
            capacity: 300,
            ..options(2, Duration::from_secs(60), Duration::from_secs(60))
        },
    ));
    sink.emit(event("first", LimitKind::Requests));
    sink.emit(event("second", LimitKind::Requests));
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.in_flight() == 2
        })
        .await
    );

    let emitter = sink.clone();
    let emits = std::thread::spawn(move || {
        let started = Instant::now();
        for i in 0..10_000 {
            emitter.emit(event(&format!("burst-{i}"), LimitKind::Tokens));
        }
        started.elapsed()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !emits.is_finished() {
        assert!(Instant::now() < deadline, "emit waited for the receiver");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = emits.join().unwrap();
    eprintln!("10,000 emits took {took:?} ({:?} each)", took / 10_000);
    let s = sink.stats();
    assert_eq!(s.crossings, 10_002);
    assert_eq!(s.pending, 300, "the queue holds its bound");
    assert_eq!(
        s.dropped,
        10_002 - 300,
        "everything else is dropped and counted"
    );
    assert_eq!(s.delivered, 0);
    assert_eq!(
        receiver.in_flight(),
        2,
        "still held: the emits did not wait for them"
    );
    assert!(
        receiver.max_in_flight() <= 2,
        "{}",
        receiver.max_in_flight()
    );

    receiver.set_mode(Mode::Up);
    until("the queue drains", &sink, |s| {
        s.delivered == 300 && s.pending == 0
    })
    .await;
    assert!(
        receiver.max_in_flight() <= 2,
        "{}",
        receiver.max_in_flight()
    );
    assert_eq!(receiver.answered_ok().len(), 300);
    assert_eq!(sink.stats().retried, 0);
    sink.shutdown(Duration::ZERO).await;
}

/// A receiver that keeps failing: attempts go on for `retry_for`, then the event is
/// dropped (counted) and never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_retry_for_and_counts_the_drop() {
    let receiver = Receiver::up(Mode::Fail).await;
    let sink = sink(
        &receiver,
        options(2, Duration::from_millis(300), Duration::from_millis(400)),
    );
    let started = Instant::now();
    sink.emit(event("hopeless", LimitKind::Budget));
    until("dropped after retries", &sink, |s| s.dropped == 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let s = sink.stats();
    assert_eq!((s.delivered, s.pending), (0, 0));
    let hits = receiver.hits_of("hopeless");
    assert!(hits.len() >= 4, "{} attempts", hits.len());
    assert_eq!(s.retried as usize, hits.len() - 1);
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.hits_of("hopeless").len(),
        hits.len(),
        "no attempt after giving up"
    );
    sink.shutdown(Duration::ZERO).await;
}

/// With one slot, an event whose receiver is slow keeps being retried, yet fresh events
/// are delivered between its attempts instead of waiting behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_does_not_hold_up_fresh_ones() {
    let receiver = Receiver::up(Mode::Up).await;
    receiver.set_mode_for("stuck", Mode::Slow(Duration::from_secs(2)));
    let sink = sink(
        &receiver,
        options(1, Duration::from_millis(200), Duration::from_secs(60)),
    );
    sink.emit(event("stuck", LimitKind::Requests));
    assert!(
        eventually(Duration::from_secs(5), || async {
            !receiver.hits_of("stuck").is_empty()
        })
        .await
    );
    for i in 0..20 {
        sink.emit(event(&format!("fresh-{i}"), LimitKind::Requests));
    }
    until("fresh events delivered", &sink, |s| s.delivered == 20).await;
    let tries = receiver.hits_of("stuck").len();
    assert!(
        eventually(Duration::from_secs(5), || async {
            receiver.hits_of("stuck").len() > tries
        })
        .await,
        "the slow event is still retried"
    );
    let s = sink.stats();
    assert_eq!((s.pending, s.dropped), (1, 0), "{s:?}");
    sink.shutdown(Duration::ZERO).await;
    assert_eq!(
        sink.stats().dropped,
        1,
        "pending at shutdown: dropped, counted"
    );
}
