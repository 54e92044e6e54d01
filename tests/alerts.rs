//! Threshold-event delivery against a real HTTP receiver of the test's own (down, slow,
//! failing, holding, up), driven through the public `tollgate::alerts` API with
//! millisecond timings; and the binary's refusal of a bad `--alert-webhook`.

mod common;
#[path = "common/webhook_receiver.rs"]
mod webhook_receiver;

use common::{Process, eventually, free_port};
use hmac::{Hmac, Mac};
use std::time::{Duration, Instant};
use tollgate::alerts::{
    AlertSink, AlertStats, DeliveryOptions, Enforcement, RetryPolicy, ThresholdEvent, Webhook,
};
use tollgate::limits::LimitKind;
use tollgate::model::Scope;
use webhook_receiver::{Mode, Receiver};

const SECRET: &str = "test-secret";

fn event(id: &str, kind: LimitKind) -> ThresholdEvent {
    let (used, max, period_start) = match kind {
        LimitKind::Budget => (
            8_000_000_000,
            10_000_000_000,
            Some("2025-06-01T00:00:00Z".parse().unwrap()),
        ),
        _ => (80, 100, None),
    };
    ThresholdEvent {
        event_id: id.into(),
        at: chrono::Utc::now(),
        config_id: "cfg-1".into(),
        model_name: "gpt-4o".into(),
        provider: None,
        scope: Scope::User,
        scope_id: Some("u-1".into()),
        enforcement: Enforcement::Enforce,
        kind,
        reset_duration: "1h".into(),
        threshold: 0.8,
        used,
        max,
        period_start,
    }
}

/// Test-sized pacing: `attempt_timeout` per attempt, retries from 20 ms doubling to 80 ms.
fn options(concurrency: usize, attempt_timeout: Duration, retry_for: Duration) -> DeliveryOptions {
    DeliveryOptions {
        capacity: 1000,
        concurrency,
        attempt_timeout,
        retry: RetryPolicy {
            first: Duration::from_millis(20),
            max: Duration::from_millis(80),
            retry_for,
        },
    }
}

fn sink(receiver: &Receiver, options: DeliveryOptions) -> AlertSink {
    let webhook = Webhook::new(&receiver.url(), Some(SECRET)).unwrap();
    AlertSink::with_webhook(webhook, options).unwrap()
}

/// HMAC-SHA256 of `body`, computed here rather than by tollgate's own signer.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn until(what: &str, sink: &AlertSink, f: impl Fn(AlertStats) -> bool) {
    let ok = eventually(Duration::from_secs(10), || async { f(sink.stats()) }).await;
    assert!(ok, "{what}: {:?}", sink.stats());
}

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

fn tollgate() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// A webhook URL that cannot work stops start-up, from the flag or the variable, and
/// says what is expected; so does a secret without a webhook.
#[test]
fn a_bad_webhook_url_refuses_start_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    for (args, env) in [
        (vec!["--alert-webhook", "ftp://alerts.example.com/x"], None),
        (vec!["--alert-webhook", "alerts.example.com/hook"], None),
        (vec![], Some("http://")),
    ] {
        let mut cmd = tollgate();
        cmd.args(["--listen", &listen]).args(&args);
        if let Some(url) = env {
            cmd.env("TOLLGATE_ALERT_WEBHOOK", url);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} started");
        assert!(
            err.contains("--alert-webhook must be an http:// or https:// URL"),
            "{args:?} {env:?}: {err}"
        );
    }
    let out = tollgate()
        .args(["--listen", &listen, "--alert-webhook-secret", "k"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --alert-webhook"));
}

/// `--help` names both settings and their variables, and never shows their values.
#[test]
fn help_documents_the_webhook_and_hides_its_values() {
    let out = tollgate()
        .arg("--help")
        .env("TOLLGATE_ALERT_WEBHOOK", "https://h/hook?token=tok-in-url")
        .env("TOLLGATE_ALERT_WEBHOOK_SECRET", "very-secret-value")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needed in [
        "--alert-webhook",
        "TOLLGATE_ALERT_WEBHOOK",
        "--alert-webhook-secret",
        "TOLLGATE_ALERT_WEBHOOK_SECRET",
        "X-Tollgate-Signature",
    ] {
        assert!(help.contains(needed), "{needed}:\n{help}");
    }
    assert!(
        !help.contains("tok-in-url") && !help.contains("very-secret-value"),
        "{help}"
    );
}

/// The binary with a webhook (down) starts, logs where events go without the URL's
/// path, and stops promptly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tollgate_with_a_webhook_starts_and_stops_cleanly() {
    let url = format!("http://127.0.0.1:{}/hook?token=tok-in-url", free_port());
    let mut p = Process::spawn(
        &["--alert-webhook", &url],
        &[("TOLLGATE_ALERT_WEBHOOK_SECRET", "s")],
    )
    .await;
    let err = p.stderr();
    assert!(
        err.contains("alert webhook") && err.contains("signed=true"),
        "{err}"
    );
    assert!(
        !err.contains("tok-in-url"),
        "the URL's query stays out of logs: {err}"
    );
    p.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}: {}", p.stderr());
}
