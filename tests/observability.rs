//! What tollgate reports about itself: `/metrics` counts exactly what happened and
//! carries no request input (from a separate process: the recorder is process-global),
//! and the Grafana dashboard only uses metrics tollgate defines.

mod common;
#[path = "common/faults.rs"]
mod faults;

use common::{Process, RedisServer};
use faults::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use tollgate::settings::StoreErrorPolicy;

// --- metrics, from a separate process (the recorder is process-global) --------------

/// A metric family name as `src/metrics.rs` defines it (histograms expose suffixes).
fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && tollgate::metrics::ALL.contains(&base)
        {
            return base;
        }
    }
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_and_carry_no_request_input() {
    const N: usize = 5; // allowed
    const M: usize = 3; // denied
    let mut redis = RedisServer::start();
    let p = Process::spawn(&["--redis-url", &redis.url()], &[]).await;
    let secret = "s3cr3t";
    let (model, provider, vk, user) = (
        format!("model-{secret}"),
        format!("provider-{secret}"),
        format!("vk-{secret}"),
        format!("user-{secret}"),
    );
    p.create(
        json!({"model_name": model, "provider": provider, "scope": "user", "scope_id": user,
                    "rate_limit": limited(N as u64, "1h")}),
    )
    .await;
    p.create(
        json!({"model_name": "*", "scope": "virtual_key", "scope_id": vk,
                    "rate_limit": {"token_max_limit": 1_000_000, "token_reset_duration": "1h"}}),
    )
    .await;
    let check =
        json!({"model": model, "provider": provider, "virtual_key": vk, "user": user, "tokens": 7});
    for i in 0..N + M {
        let a = p.check(check.clone()).await;
        assert_eq!(a.status, if i < N { 200 } else { 429 }, "{}", a.body);
    }
    let usage = |id: &str| {
        json!({"model": model, "provider": provider, "virtual_key": vk, "user": user,
               "tokens": 3, "reserved_tokens": 7, "request_id": format!("{id}-{secret}")})
    };
    for id in ["r1", "r2", "r3", "r1", "r2"] {
        assert_eq!(p.post("/v1/usage", &usage(id)).await.status, 200);
    }
    // Unknown ids and paths carrying request input must not become label values either.
    assert_eq!(p.get(&format!("{CONFIGS}/id-{secret}")).await.status, 404);
    assert_eq!(p.get(&format!("/path-{secret}")).await.status, 404);
    assert_eq!(p.get(&format!("/api/path-{secret}")).await.status, 404);

    redis.kill();
    let a = p.check(check.clone()).await;
    assert_eq!(
        classify(StoreErrorPolicy::Allow, &a),
        Ok(Kind::Fallback),
        "{}",
        a.body
    );
    assert_eq!(p.post("/v1/usage", &usage("r4")).await.status, 503);

    let text = reqwest::get(p.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all = samples(&text);
    let checks = |d, r| {
        metric(
            &text,
            "tollgate_checks_total",
            &[("decision", d), ("reason", r)],
        )
    };
    assert_eq!(checks("allowed", "none"), N as f64, "{text}");
    // The fallback let the check through (the default policy), and says why.
    assert_eq!(checks("allowed", "store_unavailable"), 1.0, "{text}");
    assert_eq!(checks("denied", "request_limited"), M as f64, "{text}");
    assert_eq!(
        metric(&text, "tollgate_checks_total", &[]),
        (N + M + 1) as f64
    );
    assert_eq!(
        metric(&text, "tollgate_check_duration_seconds_count", &[]),
        (N + M + 1) as f64
    );
    let reports = |o| metric(&text, "tollgate_usage_reports_total", &[("outcome", o)]);
    assert_eq!(
        (reports("applied"), reports("duplicate"), reports("error")),
        (3.0, 2.0, 1.0)
    );
    assert_eq!(
        metric(
            &text,
            "tollgate_store_fallbacks_total",
            &[("policy", "allow")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "tollgate_store_fallbacks_total", &[]), 1.0);
    assert!(metric(&text, "tollgate_store_errors_total", &[("op", "check")]) >= 1.0);
    assert!(metric(&text, "tollgate_store_errors_total", &[("op", "usage")]) >= 1.0);
    assert_eq!(metric(&text, "tollgate_configs", &[]), 2.0);
    let store_calls = |op| {
        metric(
            &text,
            "tollgate_store_duration_seconds_count",
            &[("op", op)],
        )
    };
    assert_eq!(
        store_calls("create_config"),
        2.0,
        "config writes are timed too"
    );
    assert_eq!(store_calls("usage"), 6.0);
    for name in [
        "tollgate_check_duration_seconds_bucket",
        "tollgate_store_errors_total",
        "tollgate_store_duration_seconds_bucket",
        "tollgate_store_duration_seconds_count",
        "tollgate_config_snapshot_age_seconds",
        "tollgate_config_reloads_total",
        "tollgate_http_requests_total",
    ] {
        assert!(all.iter().any(|s| s.0 == name), "{name} missing:\n{text}");
    }
    // The usage gauges are labelled with config fields, written by the operator: here they
    // equal the request's strings (or nothing would match), so those, and only in their
    // own labels, may show. Request ids, paths and the provider never do.
    assert_eq!(
        metric(
            &text,
            "tollgate_limit_used",
            &[
                ("model_name", &model),
                ("scope_id", &user),
                ("kind", "requests")
            ]
        ),
        N as f64,
        "{text}"
    );
    let config_field = |name: &str, k: &str, v: &str| {
        ["tollgate_limit_used", "tollgate_limit_max"].contains(&name)
            && ((k == "model_name" && v == model) || (k == "scope_id" && (v == user || v == vk)))
    };
    let known: BTreeSet<&str> = tollgate::metrics::ALL.iter().copied().collect();
    for (name, labels, _) in &all {
        assert!(
            known.contains(family(name)),
            "{name} is exposed but not in metrics::ALL"
        );
        for (k, v) in labels {
            assert!(
                config_field(name, k, v) || (!v.contains(secret) && !k.contains(secret)),
                "request input leaked into a label: {name} {k}={v:?}"
            );
        }
    }
}

// --- the dashboard only uses metrics tollgate defines --------------------------------

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_uses_only_defined_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/tollgate.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("dashboards/tollgate.json is valid JSON");
    assert!(
        dashboard["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus")
    );
    let mut all = Vec::new();
    strings(&dashboard, &mut all);
    let mut used = BTreeSet::new();
    for s in &all {
        let mut rest = s.as_str();
        while let Some(i) = rest.find("tollgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let known: BTreeSet<&str> = tollgate::metrics::ALL.iter().copied().collect();
    for name in &used {
        assert!(
            known.contains(family(name)),
            "dashboard uses {name}, which src/metrics.rs does not define"
        );
    }
    // Every panel's query goes to the templated Prometheus data source.
    let panels = dashboard["panels"].as_array().unwrap();
    let mut exprs = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for target in p["targets"].as_array().unwrap() {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("tollgate_"))
            );
            exprs += 1;
        }
    }
    assert!(exprs >= 10);
    for needed in [
        "tollgate_checks_total",
        "tollgate_check_duration_seconds_bucket",
        "tollgate_usage_reports_total",
        "tollgate_store_errors_total",
        "tollgate_store_duration_seconds_bucket",
        "tollgate_store_fallbacks_total",
        "tollgate_configs",
        "tollgate_config_snapshot_age_seconds",
        "tollgate_limit_used",
        "tollgate_limit_max",
        "tollgate_shadow_denials_total",
        "tollgate_threshold_crossings_total",
        "tollgate_alert_deliveries_total",
    ] {
        assert!(used.contains(needed), "dashboard has no panel on {needed}");
    }
}
