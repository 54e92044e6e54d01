//! Threshold-event delivery against a real HTTP receiver of the test's own (down, slow,
//! failing, holding, up), driven through the public `tollgate::alerts` API with
//! millisecond timings; and the binary's refusal of a bad `--alert-webhook`.
//!
//! This file holds the events, pacing and signature check the modules share.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/webhook_receiver.rs"]
mod webhook_receiver;

mod binary;
mod delivery;
mod shutdown;

use common::eventually;
use hmac::{Hmac, Mac};
use std::time::Duration;
use tollgate::alerts::{
    AlertSink, AlertStats, DeliveryOptions, Enforcement, RetryPolicy, ThresholdEvent, Webhook,
};
use tollgate::limits::LimitKind;
use tollgate::model::Scope;
use webhook_receiver::Receiver;

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
