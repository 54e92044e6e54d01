//! Bad input of any shape, to every endpoint: always a 2xx or a 4xx in the error
//! shape, never a 5xx.

mod common;
#[path = "common/faults.rs"]
mod faults;

use common::{Backend, Tollgate};
use faults::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Mutex;

const FIELDS: &[&str] = &[
    "model",
    "provider",
    "virtual_key",
    "user",
    "requests",
    "tokens",
    "cost",
    "dry_run",
    "reserved_tokens",
    "reserved_cost",
    "request_id",
    "model_name",
    "scope",
    "scope_id",
    "budgets",
    "budget",
    "max_limit",
    "reset_duration",
    "rate_limit",
    "token_max_limit",
    "token_reset_duration",
    "request_max_limit",
    "request_reset_duration",
    "calendar_aligned",
    "id",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..20).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            -1.0,
            1e6,
            1e15,
            1e300,
            9007199254740993.0
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "*",
            "1m",
            "0s",
            "-1h",
            "1.5d",
            "1M",
            "monthly",
            "99999999Y",
            "global",
            "user",
            "virtual_key",
            "gpt-4o",
            "\u{0}",
            "🦀",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => "[a-z_]{0,8}",
    ]
}

/// A valid body for endpoint `e` with one to three fields replaced by anything.
fn mutated(e: usize) -> impl Strategy<Value = Value> {
    let template = match e {
        0 => json!({"model": "gpt-4o", "provider": "openai", "virtual_key": "vk", "user": "u",
                    "requests": 1, "tokens": 10, "cost": 0.01}),
        1 => json!({"model": "gpt-4o", "tokens": 10, "cost": 0.01, "reserved_tokens": 20,
                    "reserved_cost": 0.02, "request_id": "r"}),
        _ => json!({"model_name": "fuzz", "budgets": [{"max_limit": 1, "reset_duration": "1d"}],
                    "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}),
    };
    prop::collection::vec((field(), json_value()), 1..4).prop_map(move |changes| {
        let mut body = template.clone();
        for (k, v) in changes {
            body[k] = v;
        }
        body
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn case() -> impl Strategy<Value = (usize, Body, &'static str)> {
    (0usize..5).prop_flat_map(|e| {
        let body = prop_oneof![
            4 => mutated(e).prop_map(Body::Json),
            2 => json_value().prop_map(Body::Json),
            1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Body::Bytes),
            1 => mutated(e).prop_flat_map(|v| {
                let s = v.to_string().into_bytes();
                let n = s.len();
                (Just(s), 0..n.max(1)).prop_map(|(s, cut)| Body::Bytes(s[..cut].to_vec()))
            }),
        ];
        let ct = prop_oneof![
            8 => Just("application/json"),
            1 => Just("application/json; charset=utf-8"),
            1 => Just("text/plain"),
            1 => Just(""),
        ];
        (Just(e), body, ct)
    })
}

/// A 4xx must be in the error shape, except a check's 429, which is a decision.
fn judge(path: &str, status: u16, body: &Value) -> Result<(), String> {
    match status {
        200..=299 => Ok(()),
        429 if path == "/v1/check" => match (&body["allowed"], body["reason"].as_str()) {
            (Value::Bool(false), Some(_)) => Ok(()),
            _ => Err("a 429 from /v1/check must be a denial".into()),
        },
        400..=499 => {
            let ok = body["is_bifrost_error"] == false
                && body["status_code"] == status
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty());
            if ok {
                Ok(())
            } else {
                Err("a 4xx must be in the error shape".into())
            }
        }
        _ => Err("never a 5xx".into()),
    }
}

#[test]
fn arbitrary_input_never_gets_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(async {
        let t = Tollgate::start(Backend::Redis).await;
        t.create(
            json!({"model_name": "*", "rate_limit": {"request_max_limit": 1_000_000,
                        "request_reset_duration": "1h", "token_max_limit": 1_000_000_000,
                        "token_reset_duration": "1d"},
                        "budgets": [{"max_limit": 1000, "reset_duration": "1d"}]}),
        )
        .await;
        t
    });
    let target = rt.block_on(
        t.create(json!({"model_name": "put-target", "scope": "user",
                                             "scope_id": "u-put", "rate_limit": limited(5, "1m")})),
    );
    let paths = [
        "/v1/check".to_string(),
        "/v1/usage".to_string(),
        CONFIGS.to_string(),
        format!("{CONFIGS}/{target}"),
        format!("{CONFIGS}/no-such-id"),
    ];
    let tally = Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |(e, body, ct)| {
        let path = &paths[e];
        let method = if e >= 3 { Method::PUT } else { Method::POST };
        let mut req = t.request(method, path);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        req = match &body {
            Body::Json(v) => req.body(v.to_string()),
            Body::Bytes(b) => req.body(b.clone()),
        };
        let a = rt.block_on(t.send(req));
        *tally.lock().unwrap().entry(a.status.as_u16()).or_default() += 1;
        judge(path, a.status.as_u16(), &a.body).map_err(|why| {
            TestCaseError::fail(format!("{why}: {path} {body:?} -> {} {}", a.status, a.body))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // A huge body and odd methods too.
    let huge = format!("{{\"model\": \"{}\"}}", "x".repeat(200 * 1024));
    for path in &paths[..3] {
        let a = rt.block_on(
            t.send(
                t.request(Method::POST, path)
                    .header("content-type", "application/json")
                    .body(huge.clone()),
            ),
        );
        assert_eq!(a.status, 413, "{path}");
        a.message();
    }
    let a = rt.block_on(t.send(t.request(Method::PATCH, "/v1/check")));
    assert_eq!(a.status, 405);
    let tally = tally.into_inner().unwrap();
    eprintln!("fuzz answers by status: {tally:?}");
    assert!(
        tally.get(&200).copied().unwrap_or(0) >= 10,
        "too few valid cases: {tally:?}"
    );
    assert!(
        tally.get(&400).copied().unwrap_or(0) >= 10,
        "too few invalid cases: {tally:?}"
    );
    drop(t);
}
