//! Bad input and unknown routes: a clear 400 for bad checks and usage reports (415 and 413
//! for the wrong type or size), 404/405 for unknown paths and methods; health and readiness.

use super::{CONFIGS, limited};
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    bad_check_and_usage_input_is_a_clear_400,
    unknown_paths_and_methods,
);

async fn bad_check_and_usage_input_is_a_clear_400(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "*", "rate_limit": limited(1000, "1h")}))
        .await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/check", json!({}), "model"),
        ("/v1/check", json!({"model": ""}), "model"),
        ("/v1/check", json!({"model": 7}), "model"),
        (
            "/v1/check",
            json!({"model": "m", "requests": -1}),
            "requests",
        ),
        ("/v1/check", json!({"model": "m", "tokens": 1.5}), "tokens"),
        ("/v1/check", json!({"model": "m", "tokens": "10"}), "tokens"),
        (
            "/v1/check",
            json!({"model": "m", "tokens": 18446744073709551615u64}),
            "tokens",
        ),
        ("/v1/check", json!({"model": "m", "cost": -0.01}), "cost"),
        ("/v1/check", json!({"model": "m", "cost": 1e300}), "cost"),
        (
            "/v1/check",
            json!({"model": "m", "dry_run": "yes"}),
            "dry_run",
        ),
        ("/v1/check", json!({"model": "m", "user": ["u"]}), "user"),
        ("/v1/usage", json!({"tokens": 1}), "model"),
        (
            "/v1/usage",
            json!({"model": "m", "reserved_tokens": -3}),
            "reserved_tokens",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "reserved_cost": -3}),
            "reserved_cost",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "request_id": ""}),
            "request_id",
        ),
        (
            "/v1/usage",
            json!({"model": "m", "request_id": 5}),
            "request_id",
        ),
    ];
    for (path, body, needle) in cases {
        let a = t.post(path, &body).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert!(
            a.message().contains(needle),
            "{path} {body}: {:?} should mention {needle}",
            a.message()
        );
    }
    let raw = |ct: &'static str, body: &'static str| {
        t.request(reqwest::Method::POST, "/v1/check")
            .header("content-type", ct)
            .body(body)
    };
    let a = t.send(raw("application/json", "{\"model\": \"m\", ")).await;
    assert_eq!(a.status, 400);
    let a = t.send(raw("application/json", "")).await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("empty"));
    // /v1/* is tollgate's own API and keeps requiring JSON's content type (only the
    // Bifrost-compatible management API parses bodies whatever the header says).
    let a = t.send(raw("text/plain", "{\"model\": \"m\"}")).await;
    assert_eq!(a.status, 415);
    assert!(a.message().contains("application/json"));
    let huge = format!("{{\"model\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let a = t
        .send(
            t.request(reqwest::Method::POST, "/v1/check")
                .header("content-type", "application/json")
                // The server answers before reading the body and closes the
                // connection; the next request must not race that close on it.
                .header("connection", "close")
                .body(huge),
        )
        .await;
    assert_eq!(a.status, 413);
    // The rejected requests consumed nothing.
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(a.body["limits"][0]["used"], 1, "{}: {}", a.status, a.body);
}

async fn unknown_paths_and_methods(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t.get("/v2/whatever").await;
    assert_eq!(a.status, 404);
    assert!(a.message().contains("/v2/whatever"));
    let a = t.get("/v1/check").await;
    assert_eq!(a.status, 405);
    assert!(a.message().contains("GET"));
    let a = t.send(t.request(reqwest::Method::PATCH, CONFIGS)).await;
    assert_eq!(a.status, 405);
    assert!(a.message().contains(CONFIGS), "{}", a.body);
    // Inside /api the message names the path the client sent, prefix included.
    let a = t.get("/api/unknown").await;
    assert_eq!(a.status, 404);
    assert!(a.message().contains("/api/unknown"), "{}", a.body);
    assert_eq!(t.get("/health").await.status, 200);
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");
}
