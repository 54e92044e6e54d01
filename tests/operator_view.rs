//! Shadow configs and threshold events, on the memory store and on a real Redis, through
//! the HTTP API: a shadow config counts like any other and never refuses (the answer
//! says what it would have refused); `--shadow-all` makes every config so; each alert
//! threshold a limit reaches is announced once per period or window length, to a real
//! webhook receiver.

#[macro_use]
mod common;
#[path = "common/webhook_receiver.rs"]
mod webhook_receiver;

use common::{Answer, Backend, Client, Tollgate, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use webhook_receiver::{Mode, Receiver};

const CONFIGS: &str = "/api/governance/model-configs";

on_every_store!(
    shadow_limits_count_and_never_refuse,
    shadow_all_makes_every_config_shadow,
    enforcement_is_shown_and_updated,
    thresholds_fire_once_per_period,
    window_thresholds_fire_once_per_window_and_on_usage_reports,
    denied_and_dry_run_checks_fire_nothing,
);

fn requests(n: u64) -> Value {
    json!({"request_max_limit": n, "request_reset_duration": "1h"})
}

async fn check(t: &Client) -> Answer {
    t.check(json!({"model": "m", "virtual_key": "vk"})).await
}

fn kinds_of(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["enforcement"].as_str().unwrap_or("?").to_string(),
                        e["kind"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An enforcing limit of 5 and a shadow limit of 2 on the same traffic: the shadow one
/// is passed, listed in `shadow_denied` and counted past its max; the enforcing one
/// refuses the 6th (nothing consumed, shadow counters included); headers describe the
/// enforcing limit only.
async fn shadow_limits_count_and_never_refuse(b: Backend) {
    let t = Tollgate::start(b).await;
    t.create(json!({"model_name": "m", "rate_limit": requests(5)}))
        .await;
    let shadow = t
        .create(
            json!({"model_name": "m", "scope": "virtual_key", "scope_id": "vk",
                       "enforcement": "shadow", "rate_limit": requests(2)}),
        )
        .await;
    for i in 1..=5 {
        let a = check(&t).await;
        assert_eq!(a.status, 200, "check {i}: {}", a.body);
        assert_eq!(a.header("x-ratelimit-limit-requests"), Some("5"));
        let denied = &a.body["shadow_denied"];
        if i <= 2 {
            assert!(denied.is_null(), "check {i}: {}", a.body);
        } else {
            assert_eq!(kinds_of(denied), vec![("shadow".into(), "requests".into())]);
            assert_eq!(denied[0]["config_id"], shadow.as_str());
            assert_eq!(
                denied[0]["used"], i,
                "after this check, counted past its max"
            );
        }
        let mut seen = kinds_of(&a.body["limits"]);
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("enforce".to_string(), "requests".to_string()),
                ("shadow".to_string(), "requests".to_string())
            ]
        );
    }
    let sixth = check(&t).await;
    assert_eq!(sixth.status, 429, "{}", sixth.body);
    assert_eq!(sixth.body["reason"], "request_limited");
    let shown = t.config(&shadow).await;
    assert_eq!(
        shown["rate_limit"]["request_current_usage"], 5,
        "the shadow limit counted the 5 admitted checks, not the refused 6th"
    );
}

/// With `--shadow-all`, nothing refuses: a limit of 1 passes 3 checks, each past the
/// first listing it in `shadow_denied`, and answers carry no limit headers.
async fn shadow_all_makes_every_config_shadow(b: Backend) {
    let t = Tollgate::start_with(b, |s| s.policy.shadow_all = true).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": requests(1)}))
        .await;
    for i in 1..=3 {
        let a = check(&t).await;
        assert_eq!(a.status, 200, "check {i}: {}", a.body);
        assert_eq!(a.body["limits"][0]["enforcement"], "shadow");
        assert_eq!(a.body["shadow_denied"].is_array(), i > 1, "{}", a.body);
        assert!(a.header("ratelimit-policy").is_none());
    }
    assert_eq!(
        t.config(&id).await["rate_limit"]["request_current_usage"],
        3
    );
}

/// `enforcement` is shown on every view, kept by an update that does not send it, and
/// switched by one that does: a shadow limit that is enforced refuses at once.
async fn enforcement_is_shown_and_updated(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "enforcement": "shadow", "rate_limit": requests(1)}))
        .await;
    assert_eq!(t.config(&id).await["enforcement"], "shadow");
    let bad = t
        .post(CONFIGS, &json!({"model_name": "n", "enforcement": "soft"}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.message().contains("enforcement"), "{}", bad.body);
    let kept = t
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"enforcement": null, "calendar_aligned": true}),
        )
        .await;
    assert_eq!(kept.body["model_config"]["enforcement"], "shadow");
    for _ in 0..2 {
        assert_eq!(check(&t).await.status, 200);
    }
    let enforced = t
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"enforcement": "enforce"}),
        )
        .await;
    assert_eq!(enforced.body["model_config"]["enforcement"], "enforce");
    let list = t.get(&format!("{CONFIGS}?from_memory=true")).await;
    assert_eq!(list.body["model_configs"][0]["enforcement"], "enforce");
    let a = check(&t).await;
    assert_eq!(a.status, 429, "{}", a.body);
}

/// A webhook receiver and a tollgate sending it its events.
async fn with_receiver(b: Backend) -> (Tollgate, Receiver) {
    let receiver = Receiver::up(Mode::Up).await;
    let url = receiver.url();
    let t = Tollgate::start_with(b, |s| s.alert_webhook = Some(url)).await;
    (t, receiver)
}

/// The events received so far, as JSON (each delivery: the receiver answers 200 at once,
/// so a duplicate would show twice), waiting up to 3 s for at least `n`.
async fn events(r: &Receiver, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(3), || async {
        r.answered_ok().len() >= n
    })
    .await;
    // Anything more still on its way would show within a short while.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut all: Vec<Value> = r
        .hits()
        .iter()
        .filter_map(|h| serde_json::from_slice(&h.body).ok())
        .collect();
    let key = |e: &Value| {
        (
            e["kind"].as_str().map(str::to_string),
            e["threshold"].as_f64().unwrap_or(0.0),
        )
    };
    all.sort_by(|a, b| {
        let (ka, ta) = key(a);
        let (kb, tb) = key(b);
        ka.cmp(&kb).then(ta.total_cmp(&tb))
    });
    all
}

/// A $1 daily budget with thresholds 0.5, 0.8 and 1.0: checks costing $0.30 each cross
/// them at the 2nd, 3rd and 4th (the last one refused: it crosses nothing); each fires
/// once, with the event JSON of the budget and its period.
async fn thresholds_fire_once_per_period(b: Backend) {
    let (t, r) = with_receiver(b).await;
    let id = t
        .create(
            json!({"model_name": "m", "alert_thresholds": [0.5, 0.8, 1.0],
                       "budgets": [{"max_limit": 1.0, "reset_duration": "1d"}]}),
        )
        .await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(
            t.check(json!({"model": "m", "cost": 0.3}))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(answers, vec![200, 200, 200, 429, 429]);
    // 0.9 of the budget: 0.5 and 0.8 crossed, 1.0 not yet.
    let got = events(&r, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got.iter()
            .map(|e| e["threshold"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        vec![0.5, 0.8]
    );
    let e = &got[1];
    assert_eq!(e["type"], "threshold_crossed");
    assert_eq!(e["config_id"], id.as_str());
    assert_eq!(
        (
            e["kind"].as_str(),
            e["scope"].as_str(),
            e["enforcement"].as_str()
        ),
        (Some("budget"), Some("global"), Some("enforce"))
    );
    assert_eq!(
        (e["used"].as_f64(), e["max"].as_f64()),
        (Some(0.9), Some(1.0))
    );
    assert!(e["period_start"].is_string() && e["at"].is_string(), "{e}");
    // A usage report reaching the max crosses 1.0, once.
    for _ in 0..2 {
        let a = t
            .post(
                "/v1/usage",
                &json!({"model": "m", "cost": 0.2, "request_id": "r1"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let got = events(&r, 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[2]["threshold"], 1.0);
}

/// A window of 10 requests per hour, default thresholds (0.8, 1.0): the 8th check fires
/// 0.8 and the 10th 1.0; a usage report of tokens past 0.8 of a token limit fires too;
/// nothing fires twice within the window.
async fn window_thresholds_fire_once_per_window_and_on_usage_reports(b: Backend) {
    let (t, r) = with_receiver(b).await;
    t.create(json!({"model_name": "m", "rate_limit": {
        "request_max_limit": 10, "request_reset_duration": "1h",
        "token_max_limit": 1000, "token_reset_duration": "1h"}}))
        .await;
    for _ in 0..12 {
        t.check(json!({"model": "m"})).await;
    }
    let got = events(&r, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got.iter()
            .all(|e| e["kind"] == "requests" && e["period_start"].is_null())
    );
    assert_eq!(
        (got[0]["used"].as_i64(), got[1]["used"].as_i64()),
        (Some(8), Some(10))
    );
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 850, "request_id": "x"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let got = events(&r, 3).await;
    let tokens: Vec<&Value> = got.iter().filter(|e| e["kind"] == "tokens").collect();
    assert_eq!(tokens.len(), 1, "{got:#?}");
    assert_eq!(tokens[0]["threshold"], 0.8);
}

/// Denied checks consume nothing and dry runs neither: neither crosses a threshold; and
/// `alert_thresholds: []` turns a config's events off.
async fn denied_and_dry_run_checks_fire_nothing(b: Backend) {
    let (t, r) = with_receiver(b).await;
    t.create(json!({"model_name": "m", "rate_limit": requests(2)}))
        .await;
    t.create(json!({"model_name": "quiet", "alert_thresholds": [], "rate_limit": requests(1)}))
        .await;
    for _ in 0..3 {
        t.check(json!({"model": "m", "dry_run": true})).await;
    }
    assert_eq!(t.check(json!({"model": "quiet"})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.hits().is_empty(), "nothing fired yet: {:?}", r.hits());
    // A check asking for 3 of a limit of 2 is refused: nothing consumed, nothing fired.
    let big = t.check(json!({"model": "m", "requests": 3})).await;
    assert_eq!(big.status, 429);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.hits().is_empty(), "a refused check fires nothing");
    assert_eq!(
        t.check(json!({"model": "m", "requests": 2})).await.status,
        200
    );
    let got = events(&r, 2).await;
    assert_eq!(
        got.iter()
            .map(|e| e["threshold"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        vec![0.8, 1.0],
        "one check jumping over both fires both"
    );
}
