//! Redis down: killed during a stream of checks (answered by the store or by
//! `--on-store-error`, never anything else, and quickly), down while usage reports,
//! management calls and readiness probes arrive, down when tollgate starts; and a Redis
//! that lost its data under several replicas (they restore it). Every Redis here is a
//! real `redis-server` the test starts, kills and restarts itself.

mod common;
#[path = "common/faults.rs"]
mod faults;

use common::{Backend, Client, RedisServer, Tollgate, eventually};
use faults::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate::settings::StoreErrorPolicy;

// --- Redis killed during a stream of checks ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_allow() {
    redis_killed_mid_stream(StoreErrorPolicy::Allow).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_deny() {
    redis_killed_mid_stream(StoreErrorPolicy::Deny).await
}

async fn redis_killed_mid_stream(policy: StoreErrorPolicy) {
    let mut t = start(policy).await;
    t.create(json!({"model_name": "m-stream", "rate_limit": limited(1_000_000, "1h")}))
        .await;
    let log = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(stream(
                t.client.clone(),
                json!({"model": "m-stream", "tokens": 10}),
                log.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started_after = |at: Instant| {
        let log = log.clone();
        move || {
            let n = log.lock().unwrap().iter().filter(|s| s.start >= at).count();
            async move { n >= 30 }
        }
    };
    assert!(eventually(Duration::from_secs(10), started_after(Instant::now())).await);

    redis(&mut t).kill();
    let down = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), started_after(down)).await,
        "the stream stalled while Redis was down"
    );
    let restarting = Instant::now();
    tokio::task::block_in_place(|| redis(&mut t).restart());
    let up = Instant::now();
    let recovered = {
        let log = log.clone();
        move || {
            let ok = log
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.start >= up && classify(policy, &s.answer) == Ok(Kind::Real));
            async move { ok }
        }
    };
    assert!(
        eventually(Duration::from_secs(10), recovered).await,
        "checks did not recover after Redis came back"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let mut down_latencies = Vec::new();
    let mut real_before = 0;
    for s in log.iter() {
        let kind = classify(policy, &s.answer).unwrap_or_else(|e| panic!("{e}"));
        if s.end <= down {
            real_before += (kind == Kind::Real) as usize;
        }
        if s.start >= down && s.end <= restarting {
            assert_eq!(kind, Kind::Fallback, "Redis was down: {}", s.answer.body);
            down_latencies.push(s.end - s.start);
        }
    }
    assert!(
        real_before >= 30,
        "real decisions before the kill: {real_before}"
    );
    assert!(down_latencies.len() >= 30);
    let worst = *down_latencies.iter().max().unwrap();
    assert!(
        worst < DOWN_BOUND,
        "a check took {worst:?} while Redis was down"
    );
    let first_real = log
        .iter()
        .filter(|s| s.start >= up && classify(policy, &s.answer) == Ok(Kind::Real))
        .map(|s| s.end)
        .min()
        .unwrap();
    eprintln!(
        "[{}] while down: {} checks, median {:?}, max {worst:?}; first real decision {:?} after restart",
        policy.as_str(),
        down_latencies.len(),
        median(down_latencies.clone()),
        first_real - up
    );

    // The restarted Redis is empty: the replica knows Redis lost its data (the epoch
    // marker is gone), keeps enforcing its snapshot and restores it (configs outlive
    // Redis's data)...
    let restored = || async {
        let list = t.get(CONFIGS).await.body;
        list["total_count"] == 1 && list["model_configs"][0]["model_name"] == "m-stream"
    };
    assert!(
        eventually(Duration::from_secs(10), restored).await,
        "configs were not restored into the empty Redis"
    );
    let kept: i64 = t.redis.as_ref().unwrap().cmd(&["HLEN", "tollgate:configs"]);
    assert_eq!(kept, 2, "the config and the epoch marker are back in Redis");
    // ...and configs created on it are enforced by real counting, no restart needed.
    t.create(
        json!({"model_name": "m-stream", "scope": "user", "scope_id": "u-after",
                    "rate_limit": limited(3, "1h")}),
    )
    .await;
    let body = json!({"model": "m-stream", "user": "u-after"});
    for i in 0..3 {
        let a = t.check(body.clone()).await;
        assert_eq!(a.status, 200, "check {i}: {}", a.body);
        assert!(a.body.get("fallback").is_none());
        // The restored global m-stream config applies too; this is the user's limit.
        let users = a.body["limits"].as_array().unwrap().iter();
        let mine: Vec<_> = users.filter(|l| l["scope"] == "user").collect();
        assert_eq!(mine.len(), 1, "{}", a.body);
        assert_eq!(mine[0]["used"], i + 1);
    }
    let a = t.check(body).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["reason"], "request_limited");
}

// --- usage, management and readiness while Redis is down; down at start; data lost --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_management_and_ready_while_redis_is_down() {
    let mut t = start(StoreErrorPolicy::Deny).await;
    let id = t
        .create(json!({"model_name": "m-down", "rate_limit": limited(100, "1h")}))
        .await;
    assert_eq!(t.get("/ready").await.status, 200);
    let usage = json!({"model": "m-down", "tokens": 5, "request_id": "r-down"});
    redis(&mut t).kill();

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/v1/usage".into(), Some(usage.clone())),
        (
            Method::POST,
            CONFIGS.into(),
            Some(json!({"model_name": "m-new"})),
        ),
        (
            Method::PUT,
            format!("{CONFIGS}/{id}"),
            Some(json!({"model_name": "m-renamed"})),
        ),
        (Method::DELETE, format!("{CONFIGS}/{id}"), None),
        (Method::GET, format!("{CONFIGS}/{id}"), None),
        (Method::GET, CONFIGS.into(), None),
    ];
    for (method, path, body) in &attempts {
        let mut req = t.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        let a = t.send(req).await;
        assert_eq!(a.status, 503, "{method} {path}: {}", a.body);
        assert!(a.message().contains("retry"), "{}", a.message());
        assert!(
            started.elapsed() < DOWN_BOUND,
            "{method} {path} took {:?}",
            started.elapsed()
        );
    }
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["status"], "not_ready");
    assert_eq!(
        t.get("/health").await.status,
        200,
        "the process is still up"
    );
    // This replica's snapshot survives the outage.
    let mem = t.get(&format!("{CONFIGS}?from_memory=true")).await;
    assert_eq!(mem.status, 200);
    assert_eq!(mem.body["model_configs"][0]["id"], id.as_str());

    tokio::task::block_in_place(|| redis(&mut t).restart());
    let ready = || async { t.get("/ready").await.status == 200 };
    assert!(
        eventually(Duration::from_secs(10), ready).await,
        "not ready after restart"
    );
    let a = t.post("/v1/usage", &usage).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["recorded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_redis_down_and_becomes_ready() {
    let mut r = RedisServer::start();
    r.kill();
    let url = r.url();
    let t = Tollgate::start_with(Backend::Memory, |s| {
        s.redis_url = Some(url);
        s.store_timeout_ms = 100;
        s.on_store_error = StoreErrorPolicy::Deny;
    })
    .await;
    assert_eq!(t.get("/health").await.status, 200);
    assert_eq!(t.get("/ready").await.status, 503);
    assert_eq!(
        t.post(CONFIGS, &json!({"model_name": "m"})).await.status,
        503
    );
    // No config is known yet, so "no config matches" cannot be concluded: the policy
    // decides, and says so (fail-closed must not fail open at start-up).
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(
        classify(StoreErrorPolicy::Deny, &a),
        Ok(Kind::Fallback),
        "{}",
        a.body
    );
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 5, "request_id": "r"}),
        )
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    tokio::task::block_in_place(|| r.restart());
    let ready = || async { t.get("/ready").await.status == 200 };
    assert!(eventually(Duration::from_secs(10), ready).await);
    t.create(json!({"model_name": "m", "rate_limit": limited(1, "1h")}))
        .await;
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
}

/// Redis lost its data (FLUSHALL here: no restart, no message) and a config is created
/// on the empty Redis: the write is fenced by the store epoch, so the writer first
/// restores its snapshot; every replica ends with both configs, even one that only hears
/// of changes by pub/sub and polls rarely, and the old config is still enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restore_a_redis_that_lost_its_data() {
    let t = start(StoreErrorPolicy::Allow).await;
    t.create(json!({"model_name": "m-old", "rate_limit": limited(1, "1h")}))
        .await;
    let b = t
        .replica(|s| {
            s.config_poll_ms = 60_000;
            s.store_timeout_ms = 100;
        })
        .await;
    let b = Client::new(format!("http://{}", b.addr));
    let models_on_b = |want: &'static [&'static str]| {
        let b = b.clone();
        move || {
            let b = b.clone();
            async move {
                let list = b.get(&format!("{CONFIGS}?from_memory=true")).await.body;
                let mut names: Vec<_> = list["model_configs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["model_name"].as_str().unwrap().to_string())
                    .collect();
                names.sort();
                names == want
            }
        }
    };
    assert!(eventually(Duration::from_secs(5), models_on_b(&["m-old"])).await);
    let _: () = t.redis.as_ref().unwrap().cmd(&["FLUSHALL"]);
    t.create(json!({"model_name": "m-new", "rate_limit": limited(1, "1h")}))
        .await;
    assert!(
        eventually(Duration::from_secs(5), models_on_b(&["m-new", "m-old"])).await,
        "the replica did not end with the restored and the new config"
    );
    let stored: i64 = t.redis.as_ref().unwrap().cmd(&["HLEN", "tollgate:configs"]);
    assert_eq!(stored, 3, "both configs and the epoch marker are in Redis");
    for model in ["m-new", "m-old"] {
        let body = json!({"model": model});
        assert_eq!(b.check(body.clone()).await.status, 200, "{model}");
        assert_eq!(b.check(body).await.status, 429, "{model} is still limited");
    }
}
