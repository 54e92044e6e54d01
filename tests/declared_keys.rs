//! Every key a script touches is declared in its KEYS, on one Redis and on a real Redis
//! Cluster: MONITOR on every master logs each script call with its declared keys and
//! each command the script ran, and the node itself says which keys those commands name
//! (`common/monitor.rs`). The workload runs every script tollgate has: config creates,
//! updates (budgets seeded, dropped), deletes and lists, checks allowed and denied (and
//! on the cluster given back across shards), usage reports with request ids (retried),
//! refunds, live-usage reads, and a re-seed after the data is flushed.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/monitor.rs"]
mod monitor;

use cluster::Cluster;
use common::{Client, Process, RedisServer, eventually};
use monitor::Monitor;
use serde_json::{Value, json};
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

fn limits(requests: i64) -> Value {
    json!({"request_max_limit": requests, "request_reset_duration": "1m",
           "token_max_limit": 100_000, "token_reset_duration": "1h"})
}

/// Runs every kind of script call through `p`; `flush` empties the store (every master).
async fn workload(p: &Client, flush: impl Fn()) {
    let global = p
        .create(json!({"model_name": "m", "rate_limit": limits(1000),
                       "budgets": [{"max_limit": 100, "reset_duration": "1d"}]}))
        .await;
    let mut keys = Vec::new();
    for k in 0..6 {
        keys.push(
            p.create(
                json!({"model_name": "m", "scope": "virtual_key", "scope_id": format!("vk-{k}"),
                            "rate_limit": limits(3)}),
            )
            .await,
        );
    }
    let user = p
        .create(
            json!({"model_name": "*", "scope": "user", "scope_id": "u-1",
                       "budgets": [{"max_limit": 5, "reset_duration": "1h"}]}),
        )
        .await;
    for round in 0..5 {
        for k in 0..6 {
            let check = p
                .check(
                    json!({"model": "m", "virtual_key": format!("vk-{k}"), "user": "u-1",
                              "tokens": 10, "cost": 0.01, "dry_run": round == 0}),
                )
                .await;
            assert!(
                [200, 429].contains(&check.status.as_u16()),
                "{}",
                check.body
            );
            let mut report = json!({"model": "m", "virtual_key": format!("vk-{k}"),
                "user": "u-1", "tokens": 4, "reserved_tokens": 10, "cost": 0.02,
                "reserved_cost": 0.01, "request_id": format!("r-{round}-{k}")});
            if let Some(at) = check.body["reserved_at_ms"].as_i64() {
                report["reserved_at_ms"] = json!(at);
            }
            // Each report twice: the second is a duplicate.
            for _ in 0..2 {
                let usage = p.post("/v1/usage", &report).await;
                assert_eq!(usage.status, 200, "{}", usage.body);
            }
        }
    }
    // Live usage (one read per slot), updates that seed and drop budgets, a delete.
    for id in keys.iter().chain([&global, &user]) {
        assert_eq!(p.get(&format!("{CONFIGS}/{id}")).await.status, 200);
    }
    let update = p
        .put(&format!("{CONFIGS}/{global}"), &json!({"budgets": [
            {"max_limit": 100, "reset_duration": "1d"}, {"max_limit": 500, "reset_duration": "1w"}]}))
        .await;
    assert_eq!(update.status, 200, "{}", update.body);
    let update = p
        .put(&format!("{CONFIGS}/{user}"), &json!({"budgets": []}))
        .await;
    assert_eq!(update.status, 200, "{}", update.body);
    assert_eq!(
        p.delete(&format!("{CONFIGS}/{}", keys[5])).await.status,
        200
    );
    assert_eq!(p.get(&format!("{CONFIGS}?limit=100")).await.status, 200);
    // Data lost: the replica restores its configs (re-seed scripts), then checks flow.
    flush();
    let restored = eventually(Duration::from_secs(10), || async {
        p.get(&format!("{CONFIGS}/{global}")).await.status == 200
    })
    .await;
    assert!(restored, "the configs were re-seeded");
    let check = p.check(json!({"model": "m", "virtual_key": "vk-0"})).await;
    assert_eq!(check.status, 200, "{}", check.body);
}

/// Script calls seen on the nodes, and every undeclared key, as `command key` lines.
fn audit(monitors: &[Monitor]) -> (usize, Vec<String>) {
    let mut scripts = 0;
    let mut found = Vec::new();
    for m in monitors {
        let (n, bad) = monitor::undeclared(m.port, &m.lines());
        scripts += n;
        found.extend(bad.into_iter().map(|u| format!("{} {}", u.command, u.key)));
    }
    found.sort();
    found.dedup();
    (scripts, found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_scripts_touch_only_declared_keys() {
    let redis = RedisServer::start();
    let monitors = [Monitor::start(redis.port)];
    // MONITOR slows every node down: a generous store timeout keeps the workload's
    // answers from the store, not from a timeout.
    let p = Process::spawn(
        &["--redis-url", &redis.url(), "--store-timeout-ms", "2000"],
        &[],
    )
    .await;
    workload(&p.client, || {
        let _: () = redis.cmd(&["FLUSHALL"]);
    })
    .await;
    let (scripts, undeclared) = audit(&monitors);
    assert!(scripts > 50, "the workload ran scripts ({scripts})");
    assert!(undeclared.is_empty(), "undeclared keys: {undeclared:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scripts_touch_only_declared_keys() {
    let c = Cluster::start();
    let masters = c.masters();
    let monitors: Vec<Monitor> = masters.iter().map(|&p| Monitor::start(p)).collect();
    let url = c.url();
    let p = Process::spawn(
        &[
            "--redis-url",
            &url,
            "--redis-mode",
            "cluster",
            "--store-timeout-ms",
            "2000",
        ],
        &[],
    )
    .await;
    workload(&p.client, || {
        for &m in &masters {
            let _: () = cluster::cmd(m, &["FLUSHALL"]).unwrap();
        }
    })
    .await;
    let (scripts, undeclared) = audit(&monitors);
    assert!(scripts > 50, "the workload ran scripts ({scripts})");
    assert!(undeclared.is_empty(), "undeclared keys: {undeclared:#?}");
}
