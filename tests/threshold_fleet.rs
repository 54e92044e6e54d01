//! Threshold events are decided where the counters live: three tollgate processes
//! hammering one budget and one window concurrently, on one real Redis and on a real
//! Redis Cluster (with checks whose configs sit on two shards, so that denials on one
//! give back reservations on the other), send each crossing to the webhook exactly once
//! for the whole fleet.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/webhook_receiver.rs"]
mod webhook_receiver;

use common::{Client, Process, RedisServer, eventually};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use webhook_receiver::{Mode, Receiver};

const CONFIGS: &str = "/api/governance/model-configs";

async fn fleet(args: &[&str], receiver: &Receiver) -> Vec<Process> {
    let url = receiver.url();
    let mut all = args.to_vec();
    all.extend(["--alert-webhook", &url, "--store-timeout-ms", "5000"]);
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&all, &[]).await);
    }
    procs
}

/// `n` checks of `body`, spread over the processes, all in flight at once.
async fn hammer(procs: &[Process], n: usize, body: Value) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, body) = (procs[i % procs.len()].client.clone(), body.clone());
            tokio::spawn(async move { client.check(body).await.status == 200 })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    admitted
}

/// Each (config, kind, threshold) announced, with how many distinct events and how
/// many deliveries each had.
async fn announced(r: &Receiver, expect: usize) -> HashMap<(String, String, String), usize> {
    eventually(Duration::from_secs(5), || async {
        r.answered_ok().len() >= expect
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: HashMap<String, (String, String, String)> = HashMap::new();
    for hit in r.hits() {
        let e: Value = serde_json::from_slice(&hit.body).unwrap();
        let what = (
            e["config_id"].as_str().unwrap().to_string(),
            e["kind"].as_str().unwrap().to_string(),
            e["threshold"].to_string(),
        );
        ids.insert(e["event_id"].as_str().unwrap().to_string(), what);
    }
    let mut per: HashMap<(String, String, String), usize> = HashMap::new();
    for what in ids.into_values() {
        *per.entry(what).or_default() += 1;
    }
    per
}

async fn seen_everywhere(procs: &[Process], body: &Value, limits: usize) {
    for p in procs {
        let seen = eventually(Duration::from_secs(3), || async {
            let mut dry = body.clone();
            dry["dry_run"] = json!(true);
            p.check(dry).await.body["limits"]
                .as_array()
                .is_some_and(|l| l.len() == limits)
        })
        .await;
        assert!(seen, "every replica sees the configs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_redis_three_replicas_announce_each_crossing_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::up(Mode::Up).await;
    let procs = fleet(&["--redis-url", &redis.url()], &receiver).await;
    let c: &Client = &procs[0].client;
    let id = c
        .create(
            json!({"model_name": "m", "alert_thresholds": [0.25, 0.5, 0.75, 1.0],
            "rate_limit": {"request_max_limit": 300, "request_reset_duration": "1h"},
            "budgets": [{"max_limit": 3.0, "reset_duration": "1d"}]}),
        )
        .await;
    let body = json!({"model": "m", "cost": 0.01});
    seen_everywhere(&procs, &body, 2).await;
    let admitted = hammer(&procs, 400, body).await;
    assert_eq!(admitted, 300, "exact across the fleet");
    let per = announced(&receiver, 8).await;
    for kind in ["requests", "budget"] {
        for t in ["0.25", "0.5", "0.75", "1.0"] {
            let key = (id.clone(), kind.to_string(), t.to_string());
            assert_eq!(per.get(&key), Some(&1), "{kind} at {t}: {per:?}");
        }
    }
    assert_eq!(per.len(), 8, "nothing else announced: {per:?}");
    // Delivered once each (no replica sent another's event).
    assert_eq!(receiver.answered_ok().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_announces_each_crossing_once_through_compensations() {
    let c = cluster::Cluster::start();
    let receiver = Receiver::up(Mode::Up).await;
    let url = c.url();
    let procs = fleet(&["--redis-url", &url, "--redis-mode", "cluster"], &receiver).await;
    let client: &Client = &procs[0].client;
    // The global limit refuses from the 201st check on; the key's thresholds sit at 100,
    // 150 and 200 of its own counter, which refused checks touch and give back.
    let global = client
        .create(json!({"model_name": "m", "alert_thresholds": [],
            "rate_limit": {"request_max_limit": 200, "request_reset_duration": "1h"}}))
        .await;
    // The key's counters must sit in another counter slot than the global's, so that
    // the global's refusals give back on another shard: recreate it until they do.
    let slot = |id: &str| {
        let key = tollgate::store::redis::Keys::new("tollgate:", true)
            .with_counter_slots(3)
            .counters(id);
        cluster::cmd::<i64>(c.ports()[0], &["CLUSTER", "KEYSLOT", &key]).unwrap()
    };
    let mut key = String::new();
    for _ in 0..30 {
        key = client
            .create(
                json!({"model_name": "m", "scope": "virtual_key", "scope_id": "vk",
                "alert_thresholds": [0.1, 0.15, 0.2],
                "rate_limit": {"request_max_limit": 1000, "request_reset_duration": "1h"}}),
            )
            .await;
        if slot(&key) != slot(&global) {
            break;
        }
        let a = client.delete(&format!("{CONFIGS}/{key}")).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_ne!(
        slot(&key),
        slot(&global),
        "the two configs sit in two counter slots"
    );
    let body = json!({"model": "m", "virtual_key": "vk"});
    seen_everywhere(&procs, &body, 2).await;
    let admitted = hammer(&procs, 320, body).await;
    assert_eq!(admitted, 200, "the global limit holds across shards");
    let per = announced(&receiver, 3).await;
    for t in ["0.1", "0.15", "0.2"] {
        let k = (key.clone(), "requests".to_string(), t.to_string());
        assert_eq!(per.get(&k), Some(&1), "at {t}: {per:?}");
    }
    assert_eq!(per.len(), 3, "nothing else announced: {per:?}");
    let used = client.config(&key).await["rate_limit"]["request_current_usage"].clone();
    assert_eq!(used, 200, "what refused checks reserved was given back");
    assert!(!global.is_empty());
    let _ = CONFIGS;
}
