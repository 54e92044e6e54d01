//! Operating tollgate when things go wrong (SPEC §5): Redis killed, paused, restarted
//! empty or flushing its scripts; SIGTERM under load; what `/metrics` reports; and bad
//! input of any shape. Every Redis here is a real `redis-server` the test starts, kills
//! and restarts itself.

mod common;

use common::{Answer, Backend, Client, Process, RedisServer, Tollgate, eventually};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate::settings::StoreErrorPolicy;

const CONFIGS: &str = "/api/governance/model-configs";

/// Correctness bound on one check while Redis is down or stalled (the store timeout is
/// 100 ms); generous so a loaded machine does not fail it. Not a performance target.
const DOWN_BOUND: Duration = Duration::from_secs(1);

/// A tollgate on its own Redis with the production store timeout (the harness default
/// is patient, for behaviour tests) and the given `--on-store-error`.
async fn start(policy: StoreErrorPolicy) -> Tollgate {
    Tollgate::start_with(Backend::Redis, |s| {
        s.store_timeout_ms = 100;
        s.on_store_error = policy;
    })
    .await
}

fn limited(requests: u64, window: &str) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": window})
}

/// What kind of answer a check got; anything else fails the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Decided by the store (or by the snapshot, when no config has limits).
    Real,
    /// Decided by `--on-store-error`.
    Fallback,
}

fn classify(policy: StoreErrorPolicy, a: &Answer) -> Result<Kind, String> {
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

struct Sample {
    start: Instant,
    end: Instant,
    answer: Answer,
}

/// Sends `body` to /v1/check back to back until `stop`, logging every answer.
async fn stream(client: Client, body: Value, log: Arc<Mutex<Vec<Sample>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let answer = client.check(body.clone()).await;
        let end = Instant::now();
        log.lock().unwrap().push(Sample { start, end, answer });
    }
}

fn redis(t: &mut Tollgate) -> &mut RedisServer {
    t.redis.as_mut().expect("redis backend")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

// --- a. Redis killed during a stream of checks --------------------------------------

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
    // marker is gone), keeps enforcing its snapshot and restores it (SPEC §5)...
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

// --- b. usage, management and readiness while Redis is down or stalled --------------

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

// --- c. SCRIPT FLUSH during a stream of checks --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_stream() {
    const LIMIT: usize = 300;
    const SENT: usize = 400;
    let t = start(StoreErrorPolicy::Allow).await;
    let id = t
        .create(json!({"model_name": "m-flush", "rate_limit": limited(LIMIT as u64, "1h")}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicUsize::new(0));
    let flusher = {
        let (stop, flushes) = (stop.clone(), flushes.clone());
        let mut conn = t.redis.as_ref().unwrap().conn();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
                flushes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, next) = (t.client.clone(), next.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < SENT {
                    answers.push(client.check(json!({"model": "m-flush"})).await);
                }
                answers
            })
        })
        .collect();
    let mut allowed = 0;
    let mut denied = 0;
    for w in workers {
        for a in w.await.unwrap() {
            assert_eq!(
                classify(StoreErrorPolicy::Allow, &a),
                Ok(Kind::Real),
                "{}",
                a.body
            );
            if a.status == 200 {
                allowed += 1;
            } else {
                assert_eq!(a.body["reason"], "request_limited");
                denied += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    flusher.join().unwrap();
    assert_eq!((allowed, denied), (LIMIT, SENT - LIMIT));
    let used = &t.config(&id).await["rate_limit"]["request_current_usage"];
    assert_eq!(used, LIMIT);
    let info: String = t.redis.as_ref().unwrap().cmd(&["INFO", "errorstats"]);
    let noscript = info
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let flushes = flushes.load(Ordering::Relaxed);
    assert!(flushes >= 10, "only {flushes} flushes happened");
    assert!(noscript >= 1, "no NOSCRIPT was ever hit:\n{info}");
    eprintln!("{SENT} checks through {flushes} SCRIPT FLUSHes ({noscript} NOSCRIPT reloads)");
    assert_eq!(t.get("/ready").await.status, 200);
}

// --- d. SIGTERM to a tollgate process under load ------------------------------------

#[derive(Default)]
struct WorkerLog {
    /// (when the whole answer was read, status, body)
    answers: Vec<(Instant, u16, Value)>,
    /// A response whose body was cut off: that is a lost answer.
    cut: Vec<String>,
    /// Why the worker stopped (the server stopped taking requests).
    ended: Option<String>,
}

async fn term_worker(url: String) -> WorkerLog {
    let http = reqwest::Client::new();
    let mut log = WorkerLog::default();
    loop {
        match http
            .post(&url)
            .json(&json!({"model": "m-term", "tokens": 1}))
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(b) => log.answers.push((
                        Instant::now(),
                        status,
                        serde_json::from_slice(&b).unwrap_or(Value::Null),
                    )),
                    Err(e) => {
                        log.cut.push(format!("{e:?}"));
                        return log;
                    }
                }
            }
            Err(e) => {
                log.ended = Some(if e.is_connect() {
                    "refused".into()
                } else {
                    format!("{e:?}")
                });
                return log;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut p = Process::spawn(
        &[
            "--redis-url",
            &url,
            "--store-timeout-ms",
            "3000",
            "--shutdown-grace-secs",
            "10",
        ],
        &[],
    )
    .await;
    let id = p
        .create(json!({"model_name": "m-term", "rate_limit": limited(10_000_000, "1h")}))
        .await;
    let check_url = p.url("/v1/check");
    let workers: Vec<_> = (0..6)
        .map(|_| tokio::spawn(term_worker(check_url.clone())))
        .collect();
    // Load is flowing...
    let http = reqwest::Client::new();
    let metrics_url = p.url("/metrics");
    let flowing = || async {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric(&text, "tollgate_checks_total", &[("decision", "allowed")]) >= 100.0
    };
    assert!(eventually(Duration::from_secs(10), flowing).await);
    // ...then Redis stalls so that checks are in flight inside tollgate when it is told
    // to stop: they must still be answered.
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "600"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sigterm = Instant::now();
    p.signal("TERM");

    let mut logs = Vec::new();
    for w in workers {
        logs.push(w.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = sigterm.elapsed();
    assert!(status.success(), "exit status {status}: {}", p.stderr());

    let mut allowed = 0u64;
    let mut after_term = 0;
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for log in &logs {
        assert!(log.cut.is_empty(), "answers cut off: {:?}", log.cut);
        for (at, status, body) in &log.answers {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["allowed"], true, "{body}");
            assert!(body.get("fallback").is_none(), "{body}");
            allowed += 1;
            after_term += (*at > sigterm) as usize;
        }
        *endings
            .entry(log.ended.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        after_term >= 1,
        "no check was in flight at SIGTERM; the test proved nothing"
    );

    // Every check Redis counted got its answer, and every answer was counted.
    let mut s = common::settings();
    s.redis_url = Some(url);
    let reader = tollgate::start(s).await.unwrap();
    let c = Client::new(format!("http://{}", reader.addr));
    let used = c.config(&id).await["rate_limit"]["request_current_usage"].clone();
    assert_eq!(
        used, allowed,
        "Redis counted {used}, clients were answered {allowed}"
    );
    eprintln!(
        "SIGTERM: {allowed} checks answered ({after_term} finished after the signal), exit 0 after {exited:?}; workers ended by {endings:?}"
    );
}

// --- e. metrics, from a separate process (the recorder is process-global) -----------

/// One sample of the Prometheus text: name, labels, value.
type PromSample = (String, Vec<(String, String)>, f64);

fn samples(text: &str) -> Vec<PromSample> {
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
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
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

// --- f. bad input of any shape: always a 2xx/4xx, never a 5xx -----------------------

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

// --- the dashboard only uses metrics tollgate defines -------------------------------

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
