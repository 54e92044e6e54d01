//! What the fault tests share (each includes it by path): a tollgate on its own Redis
//! with the production store timeout, a stream of checks, and the test of an answer:
//! decided by the store, or by `--on-store-error` exactly as that policy says; and the
//! samples of a `/metrics` text.
#![allow(dead_code)]

use crate::common::{Answer, Backend, Client, RedisServer, Tollgate};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate::settings::StoreErrorPolicy;

pub const CONFIGS: &str = "/api/governance/model-configs";

/// Correctness bound on one check while Redis is down or stalled (the store timeout is
/// 100 ms); generous so a loaded machine does not fail it. Not a performance target.
pub const DOWN_BOUND: Duration = Duration::from_secs(1);

/// A tollgate on its own Redis with the production store timeout (the harness default
/// is patient, for behaviour tests) and the given `--on-store-error`.
pub async fn start(policy: StoreErrorPolicy) -> Tollgate {
    Tollgate::start_with(Backend::Redis, |s| {
        s.store_timeout_ms = 100;
        s.on_store_error = policy;
    })
    .await
}

pub fn limited(requests: u64, window: &str) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": window})
}

/// What kind of answer a check got; anything else fails the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decided by the store (or by the snapshot, when no config has limits).
    Real,
    /// Decided by `--on-store-error`.
    Fallback,
}

pub fn classify(policy: StoreErrorPolicy, a: &Answer) -> Result<Kind, String> {
    let b = &a.body;
    let bad = |why: &str| Err(format!("{why}: {} {b}", a.status));
    if b.get("fallback").is_none() {
        return match (a.status.as_u16(), &b["allowed"], b["reason"].as_str()) {
            (200, Value::Bool(true), None) => Ok(Kind::Real),
            (
                429,
                Value::Bool(false),
                Some("request_limited" | "token_limited" | "budget_exceeded"),
            ) => Ok(Kind::Real),
            _ => bad("not a valid decision"),
        };
    }
    let f = &b["fallback"];
    if f["policy"] != policy.as_str() || f["error"].as_str().is_none_or(str::is_empty) {
        return bad("fallback must name the policy and the error");
    }
    match policy {
        StoreErrorPolicy::Allow if a.status == 200 && b["allowed"] == true => Ok(Kind::Fallback),
        StoreErrorPolicy::Deny
            if a.status == 429
                && b["allowed"] == false
                && b["reason"] == "store_unavailable"
                && a.header("retry-after").is_some() =>
        {
            Ok(Kind::Fallback)
        }
        _ => bad("fallback answer does not follow the policy"),
    }
}

pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    pub answer: Answer,
}

/// Sends `body` to /v1/check back to back until `stop`, logging every answer.
pub async fn stream(
    client: Client,
    body: Value,
    log: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let answer = client.check(body.clone()).await;
        let end = Instant::now();
        log.lock().unwrap().push(Sample { start, end, answer });
    }
}

pub fn redis(t: &mut Tollgate) -> &mut RedisServer {
    t.redis.as_mut().expect("redis backend")
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One sample of the Prometheus text: name, labels, value.
pub type PromSample = (String, Vec<(String, String)>, f64);

pub fn samples(text: &str) -> Vec<PromSample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => value.push(chars.next().unwrap().1),
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            }
            rest = &inner[end..];
        }
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        out.push((name, labels, value));
    }
    out
}

/// Sum of the samples of `name` whose labels include all of `want`.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.2)
        .sum()
}
