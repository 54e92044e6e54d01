//! Redis stalled (paused, so it queues commands and runs them when it resumes): what
//! tollgate answered meanwhile, by timeout or by `--on-store-error`, never happens later
//! behind the caller's back: a config write that timed out changes nothing, a check
//! answered by the fallback consumes nothing, and a usage report that got a 503 is
//! applied only by its retry, once.

mod common;
#[path = "common/faults.rs"]
mod faults;

use common::eventually;
use faults::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate::settings::StoreErrorPolicy;

/// Writes that time out must not happen later behind the caller's back: Redis queues
/// commands while paused and runs them when it resumes, long after tollgate answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_time_out_change_nothing() {
    let t = start(StoreErrorPolicy::Allow).await;
    let id = t
        .create(
            json!({"model_name": "m-pause", "rate_limit": limited(10, "1h"),
                       "budgets": [{"max_limit": 5, "reset_duration": "1d"}]}),
        )
        .await;
    let r = t.redis.as_ref().unwrap();
    let stored = || -> (Option<String>, Option<String>, i64, i64) {
        (
            r.cmd(&["HGET", "tollgate:configs", &id]),
            r.cmd(&["GET", "tollgate:config_version"]),
            r.cmd(&["HLEN", "tollgate:configs"]),
            r.cmd(&["HLEN", "tollgate:config_identities"]),
        )
    };
    let before = stored();
    assert!(before.0.is_some());
    // Every script loaded, so the writes below go straight to EVALSHA.
    assert_eq!(t.get("/ready").await.status, 200);

    let writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PUT,
            format!("{CONFIGS}/{id}"),
            Some(json!({"model_name": "m-renamed", "rate_limit": limited(1, "1h"), "budgets": []})),
        ),
        (Method::DELETE, format!("{CONFIGS}/{id}"), None),
        (
            Method::POST,
            CONFIGS.into(),
            Some(json!({"model_name": "m-new"})),
        ),
    ];
    for (method, path, body) in &writes {
        // Reads (the update's GET of the config) still work; every write blocks.
        let _: () = r.cmd(&["CLIENT", "PAUSE", "600", "WRITE"]);
        let mut req = t.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        let a = t.send(req).await;
        let took = started.elapsed();
        let _: () = r.cmd(&["CLIENT", "UNPAUSE"]);
        assert_eq!(a.status, 503, "{method} {path}: {}", a.body);
        assert!(
            a.message().contains("nothing was changed"),
            "{}",
            a.message()
        );
        assert!(
            took < Duration::from_secs(6),
            "{method} {path} took {took:?}"
        );
        // Once tollgate's own connection flows again, whatever it queued has run.
        let flowing = || async { t.get(&format!("{CONFIGS}/{id}")).await.status == 200 };
        assert!(eventually(Duration::from_secs(5), flowing).await);
        assert_eq!(
            stored(),
            before,
            "{method} {path} answered 503 but changed the store"
        );
        let mem = t.get(&format!("{CONFIGS}?from_memory=true")).await;
        assert_eq!(mem.body["total_count"], 1);
        assert_eq!(mem.body["model_configs"][0]["model_name"], "m-pause");
        eprintln!("{method} while writes were paused: 503 after {took:?}");
    }

    // Redis stalled entirely: checks still answer within the bound, by policy.
    let _: () = r.cmd(&["CLIENT", "PAUSE", "400"]);
    let started = Instant::now();
    let a = t.check(json!({"model": "m-pause"})).await;
    let took = started.elapsed();
    assert_eq!(
        classify(StoreErrorPolicy::Allow, &a),
        Ok(Kind::Fallback),
        "{}",
        a.body
    );
    assert!(
        took < DOWN_BOUND,
        "check took {took:?} while Redis was paused"
    );
    let real = || async {
        classify(
            StoreErrorPolicy::Allow,
            &t.check(json!({"model": "m-pause"})).await,
        ) == Ok(Kind::Real)
    };
    assert!(eventually(Duration::from_secs(5), real).await);
    eprintln!("check while Redis was paused: fallback after {took:?}");
}

/// With `deny`, checks answered by the fallback while Redis stalls are not consumed when
/// Redis finally runs them ("a denied request costs nothing"), and a usage report that
/// got a 503 is not applied behind the gateway's back: its retry applies it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_given_while_redis_stalls_are_not_applied_later() {
    let t = start(StoreErrorPolicy::Deny).await;
    let id = t
        .create(json!({"model_name": "m-stall", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1h",
                       "token_max_limit": 1000, "token_reset_duration": "1h"}}))
        .await;
    // One answered check first: tollgate learns Redis's clock from it.
    assert_eq!(
        t.check(json!({"model": "m-stall", "tokens": 100}))
            .await
            .status,
        200
    );
    let r = t.redis.as_ref().unwrap();
    let report = json!({"model": "m-stall", "tokens": 300, "reserved_tokens": 100, "request_id": "stalled-1"});
    let _: () = r.cmd(&["CLIENT", "PAUSE", "800", "WRITE"]);
    for _ in 0..3 {
        let a = t.check(json!({"model": "m-stall", "tokens": 100})).await;
        assert_eq!(a.status, 429, "{}", a.body);
        assert_eq!(a.body["reason"], "store_unavailable");
    }
    let a = t.post("/v1/usage", &report).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let _: () = r.cmd(&["CLIENT", "UNPAUSE"]);
    // Redis now runs the queued scripts, past their deadlines: they change nothing.
    let c = t.config(&id).await;
    assert_eq!(
        c["rate_limit"]["request_current_usage"], 1,
        "the denied checks cost nothing: {c}"
    );
    assert_eq!(
        c["rate_limit"]["token_current_usage"], 100,
        "the 503'd report was not applied: {c}"
    );
    let a = t.post("/v1/usage", &report).await;
    assert_eq!(
        (a.status.as_u16(), a.body["recorded"].clone()),
        (200, json!(true)),
        "{}",
        a.body
    );
    let a = t.post("/v1/usage", &report).await;
    assert_eq!(a.body["duplicate"], true);
    assert_eq!(
        t.config(&id).await["rate_limit"]["token_current_usage"],
        300
    );
}
