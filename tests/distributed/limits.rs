//! One limit across processes: three processes admit exactly the limit under concurrent
//! checks, and reserve-and-settle from many workers never exceeds the token limit.

use super::{all_see, fleet};
use crate::common::{Client, RedisServer};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Three tollgate processes, one Redis, request limit 50: 300 concurrent checks admit 50,
/// with checks coalesced into shared script calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let procs = fleet(&redis, 3).await;
    let id = procs[0]
        .create(json!({"model_name": "gpt-4o", "rate_limit": {"request_max_limit": 50, "request_reset_duration": "1h"}}))
        .await;
    all_see(&procs, &id).await;
    let clients: Vec<Client> = procs.iter().map(|p| p.client.clone()).collect();
    let start = Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = clients[i % 3].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            client
                .check(json!({"model": "gpt-4o", "virtual_key": format!("vk-{i}")}))
                .await
                .status
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    let denied = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (allowed, denied),
        (50, 250),
        "exactly the limit is admitted across 3 processes"
    );
    // Coalescing was on: some script call carried more than one check.
    let mut calls = 0.0;
    let mut ops = 0.0;
    let mut remembered = 0.0;
    for p in &procs {
        let text = reqwest::get(p.client.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        };
        calls += value("tollgate_store_batch_size_count");
        ops += value("tollgate_store_batch_size_sum");
        remembered += value("tollgate_refusals_remembered_total");
    }
    // Checks refused while the limit was known full never reached the store.
    assert!(
        ops + remembered >= 300.0 && calls < ops,
        "{ops} ops in {calls} calls, {remembered} refusals remembered"
    );
    for p in &procs {
        assert_eq!(
            p.config(&id).await["rate_limit"]["request_current_usage"],
            50
        );
    }
}

/// Reserve an estimate at check time, settle the actual afterwards, from many workers on
/// three processes at once: the window never holds more than the limit, and ends holding
/// exactly what was really used.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_and_settle_never_exceeds_the_token_limit() {
    const LIMIT: i64 = 20_000;
    const ESTIMATE: i64 = 500;
    let redis = RedisServer::start();
    let procs = fleet(&redis, 3).await;
    let id = procs[0]
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": LIMIT, "token_reset_duration": "1h"}}))
        .await;
    all_see(&procs, &id).await;
    let used_for_real = Arc::new(AtomicI64::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..24 {
        let client = procs[w % 3].client.clone();
        let used_for_real = used_for_real.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..12 {
                let a = client.check(json!({"model": "m", "tokens": ESTIMATE})).await;
                if a.status != 200 {
                    assert_eq!(a.status, 429, "{}", a.body);
                    continue;
                }
                // The upstream call used somewhere between 20% and 100% of the estimate.
                let actual = ESTIMATE * (1 + ((w * 7 + n * 13) % 5) as i64) / 5;
                tokio::time::sleep(Duration::from_millis(((w + n) % 4) as u64)).await;
                let report = json!({"model": "m", "tokens": actual, "reserved_tokens": ESTIMATE, "request_id": format!("w{w}-n{n}"),
                                    "reserved_at_ms": a.body["reserved_at_ms"]});
                let r = client.post("/v1/usage", &report).await;
                assert_eq!(r.status, 200, "{}", r.body);
                used_for_real.fetch_add(actual, Ordering::SeqCst);
            }
        }));
    }
    // Watch the shared counter while the workers run.
    let watcher = {
        let client = procs[1].client.clone();
        let running = running.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while running.load(Ordering::SeqCst) {
                let used = client.config(&id).await["rate_limit"]["token_current_usage"]
                    .as_i64()
                    .unwrap();
                peak = peak.max(used);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    running.store(false, Ordering::SeqCst);
    let peak = watcher.await.unwrap();
    let real = used_for_real.load(Ordering::SeqCst);
    let counted = procs[2].config(&id).await["rate_limit"]["token_current_usage"]
        .as_i64()
        .unwrap();
    assert!(peak <= LIMIT, "the window held {peak} > {LIMIT}");
    assert_eq!(
        counted, real,
        "after settlement the window holds exactly the real usage"
    );
    assert!(real <= LIMIT);
    assert!(real > LIMIT / 2, "the test exercised the limit ({real})");
}
