//! `--configs-file`: tollgate processes watching one file reconcile their store to it at
//! start and within 2 s of every change (an edit in place, an atomic rename, a
//! Kubernetes ConfigMap `..data` swap), converge without duplicates or retry storms,
//! keep usage on updates, keep their configs through an invalid edit
//! (`tollgate_configs_file_ok 0`), refuse API writes to the configs the file names
//! (409 naming the file), delete only with prune, and wait out a store that is down.

mod common;

use common::configs::{CONFIGS, ConfigMapDir, metric, metrics_text, of_model, write_by_rename};
use common::{Client, Process, RedisServer, eventually};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The bound the product promises for a change of the file.
const WITHIN: Duration = Duration::from_secs(2);

fn file(limit: u32) -> String {
    format!(
        r#"configs:
  - model_name: gpt-4o
    scope: virtual_key
    scope_id: vk-1
    rate_limit: {{request_max_limit: {limit}, request_reset_duration: 1h}}
  - model_name: "*"
    budgets: [{{max_limit: 100, reset_duration: 1d}}]
  - model_name: claude
    scope: user
    scope_id: u-1
    rate_limit: {{token_max_limit: 1000, token_reset_duration: 1m}}
"#
    )
}

/// The request limit of gpt-4o in the replica's snapshot (what its checks enforce).
async fn enforced_limit(c: &Client) -> Option<u64> {
    let a = c
        .get(&format!("{CONFIGS}?from_memory=true&limit=100"))
        .await;
    a.body["model_configs"]
        .as_array()?
        .iter()
        .find(|v| v["model_name"] == "gpt-4o")?["rate_limit"]["request_max_limit"]
        .as_u64()
}

/// Waits until every replica enforces `limit`; the time it took.
async fn all_enforce(replicas: &[&Client], limit: u64, within: Duration) -> Duration {
    let start = Instant::now();
    for r in replicas {
        let ok = eventually(within, || async { enforced_limit(r).await == Some(limit) }).await;
        assert!(ok, "{} does not enforce {limit} after {within:?}", r.base);
    }
    start.elapsed()
}

async fn sum_metric(replicas: &[&Client], name: &str, label: &str) -> f64 {
    let mut total = 0.0;
    for r in replicas {
        let text = metrics_text(r).await;
        total += text
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

fn spawn_args<'a>(redis: Option<&'a str>, path: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--configs-file", path];
    if let Some(url) = redis {
        args.extend(["--redis-url", url]);
    }
    args.extend_from_slice(more);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_converge_on_every_kind_of_change() {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let mut cm = ConfigMapDir::new(dir.path(), "configs.yaml", &file(5));
    let path = cm.path().display().to_string();
    let args = spawn_args(Some(&url), &path, &["--store-timeout-ms", "10000"]);
    let (a, b, c) = tokio::join!(
        Process::spawn(&args, &[]),
        Process::spawn(&args, &[]),
        Process::spawn(&args, &[])
    );
    let replicas = [&a.client, &b.client, &c.client];
    all_enforce(&replicas, 5, Duration::from_secs(10)).await;
    let stored = common::configs::stored(&a).await;
    assert_eq!(
        stored.len(),
        3,
        "one config per entry, no duplicates: {stored:#?}"
    );
    assert!(
        stored.iter().all(|v| v["managed_by"] == path.as_str()),
        "{stored:#?}"
    );
    assert_eq!(
        sum_metric(&replicas, "tollgate_configs_file_writes_total", "create").await,
        3.0
    );

    let mut took = Vec::new();
    cm.publish(&file(6));
    took.push(("..data swap", all_enforce(&replicas, 6, WITHIN).await));
    write_by_rename(&cm.path(), &file(7));
    took.push(("rename", all_enforce(&replicas, 7, WITHIN).await));
    std::fs::write(cm.path(), file(8)).unwrap();
    took.push(("edit in place", all_enforce(&replicas, 8, WITHIN).await));
    eprintln!("reconciled on all three replicas after: {took:?}");

    // An invalid edit changes nothing and says so; a valid one brings the file back.
    std::fs::write(cm.path(), file(9).replace("1d", "one day")).unwrap();
    for r in replicas {
        let bad = eventually(WITHIN, || async {
            metric(&metrics_text(r).await, "tollgate_configs_file_ok") == Some(0.0)
        });
        assert!(bad.await, "{} still reports the file ok", r.base);
        assert_eq!(enforced_limit(r).await, Some(8), "configs kept");
    }
    assert!(
        a.stderr()
            .contains("configs[1] (global *): budgets[0].reset_duration"),
        "{}",
        a.stderr()
    );
    std::fs::write(cm.path(), file(9)).unwrap();
    all_enforce(&replicas, 9, WITHIN).await;
    for r in replicas {
        // Another replica may have applied it first: each one reads the file itself.
        let ok = eventually(WITHIN, || async {
            metric(&metrics_text(r).await, "tollgate_configs_file_ok") == Some(1.0)
        });
        assert!(ok.await, "{} does not report the file ok again", r.base);
    }
    assert_eq!(
        common::configs::stored(&a).await.len(),
        3,
        "still no duplicates"
    );
    let updates = sum_metric(&replicas, "tollgate_configs_file_writes_total", "update").await;
    assert_eq!(
        updates, 4.0,
        "one write per change across the fleet, no storm"
    );

    // The API refuses writes to the file's configs: on these replicas, and on one
    // started without the file (the marker is in the store).
    let plain = Process::spawn(&["--redis-url", &url], &[]).await;
    let gpt = &of_model(&plain, "gpt-4o").await[0];
    let at = format!("{CONFIGS}/{}", gpt["id"].as_str().unwrap());
    let expected = format!("is managed by the configs file {path}; change it there");
    for r in [&a.client, &plain.client] {
        let put = r.put(&at, &json!({"rate_limit": {}})).await;
        assert_eq!(put.status, 409, "{}", put.body);
        assert!(put.message().contains(&expected), "{}", put.body);
        let del = r.delete(&at).await;
        assert_eq!(del.status, 409, "{}", del.body);
    }
    let dup = plain
        .post(
            CONFIGS,
            &json!({"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-1"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert!(dup.message().contains(&expected), "{}", dup.body);
    assert_eq!(enforced_limit(&plain).await, Some(9));

    // Redis loses everything: the replicas re-seed it, markers included.
    let _: () = redis.cmd(&["FLUSHALL"]);
    let restored = eventually(Duration::from_secs(10), || async {
        let all = common::configs::stored(&plain).await;
        all.len() == 3 && all.iter().all(|v| v["managed_by"] == path.as_str())
    });
    assert!(
        restored.await,
        "{:#?}",
        common::configs::stored(&plain).await
    );
    let gpt = &of_model(&plain, "gpt-4o").await[0];
    let at = format!("{CONFIGS}/{}", gpt["id"].as_str().unwrap());
    assert_eq!(plain.put(&at, &json!({"rate_limit": {}})).await.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_what_the_file_does_not_name_and_without_it_configs_are_released() {
    let redis = RedisServer::start();
    let url = redis.url();
    let plain = Process::spawn(&["--redis-url", &url], &[]).await;
    plain.create(json!({"model_name": "api-made"})).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs.json");
    let two = json!({"configs": [{"model_name": "a"}, {"model_name": "b"}]});
    std::fs::write(&path, two.to_string()).unwrap();
    let p = path.display().to_string();
    let keeper = Process::spawn(&spawn_args(Some(&url), &p, &[]), &[]).await;
    let managed = |model: &'static str| {
        let c = &keeper.client;
        async move {
            of_model(c, model)
                .await
                .first()
                .is_some_and(|v| v["managed_by"].is_string())
        }
    };
    assert!(eventually(Duration::from_secs(5), || managed("a")).await);
    assert!(eventually(Duration::from_secs(5), || managed("b")).await);

    // Without prune, a config the file stops naming stays and is the API's again.
    write_by_rename(
        &path,
        &json!({"configs": [{"model_name": "a"}]}).to_string(),
    );
    let released = eventually(WITHIN + Duration::from_secs(1), || async {
        of_model(&keeper, "b")
            .await
            .first()
            .is_some_and(|v| v.get("managed_by").is_none())
    });
    assert!(released.await, "b released");
    let b = &of_model(&keeper, "b").await[0];
    let put = keeper
        .put(
            &format!("{CONFIGS}/{}", b["id"].as_str().unwrap()),
            &json!({"calendar_aligned": true}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        of_model(&keeper, "api-made").await.len(),
        1,
        "kept without prune"
    );

    // With prune, every config the file does not name goes, and the API may not add one.
    let pruner = Process::spawn(&spawn_args(Some(&url), &p, &["--configs-file-prune"]), &[]).await;
    let pruned = eventually(Duration::from_secs(5), || async {
        let models: Vec<Value> = common::configs::stored(&pruner).await;
        models.len() == 1 && models[0]["model_name"] == "a"
    });
    assert!(
        pruned.await,
        "{:#?}",
        common::configs::stored(&pruner).await
    );
    let add = pruner.post(CONFIGS, &json!({"model_name": "c"})).await;
    assert_eq!(add.status, 409, "{}", add.body);
    assert!(
        add.message().contains("--configs-file-prune") && add.message().contains(&p),
        "{}",
        add.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_store_updates_keep_usage_and_invalid_edits_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs.yml");
    std::fs::write(&path, file(2)).unwrap();
    let p = path.display().to_string();
    let t = Process::spawn(&spawn_args(None, &p, &[]), &[]).await;
    all_enforce(&[&t.client], 2, Duration::from_secs(5)).await;
    let check = json!({"model": "gpt-4o", "virtual_key": "vk-1"});
    assert_eq!(t.check(check.clone()).await.status, 200);
    let id = of_model(&t, "gpt-4o").await[0]["id"].clone();

    write_by_rename(&path, &file(3));
    all_enforce(&[&t.client], 3, WITHIN).await;
    let gpt = &of_model(&t, "gpt-4o").await[0];
    assert_eq!(gpt["id"], id, "updated in place");
    assert_eq!(gpt["rate_limit"]["request_current_usage"], 1, "usage kept");

    write_by_rename(&path, "configs:\n  - model_name: [\n");
    let bad = eventually(WITHIN, || async {
        metric(&metrics_text(&t).await, "tollgate_configs_file_ok") == Some(0.0)
    });
    assert!(bad.await);
    assert_eq!(enforced_limit(&t).await, Some(3));
    assert!(t.stderr().contains("invalid YAML"), "{}", t.stderr());
    let named = t
        .post(
            CONFIGS,
            &json!({"model_name": "claude", "scope": "user", "scope_id": "u-1"}),
        )
        .await;
    assert_eq!(
        named.status, 409,
        "the last valid file still owns its configs: {}",
        named.body
    );
    assert_eq!(
        t.post(CONFIGS, &json!({"model_name": "other"}))
            .await
            .status,
        200
    );
    write_by_rename(&path, &file(4));
    all_enforce(&[&t.client], 4, WITHIN).await;
    assert_eq!(
        metric(&metrics_text(&t).await, "tollgate_configs_file_ok"),
        Some(1.0)
    );
    assert_eq!(t.check(check).await.status, 200, "1 + 1 of 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_at_start_gets_the_file_once_it_is_up() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs.yaml");
    std::fs::write(&path, file(7)).unwrap();
    let p = path.display().to_string();
    let t = Process::spawn(
        &spawn_args(Some(&url), &p, &["--store-timeout-ms", "200"]),
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(t.get("/ready").await.status, 503);
    redis.restart();
    all_enforce(&[&t.client], 7, Duration::from_secs(15)).await;
    // The reconcile may still be writing the others (each write is retried).
    let all = eventually(Duration::from_secs(10), || async {
        common::configs::stored(&t).await.len() == 3
    })
    .await;
    assert!(all, "{:?}", common::configs::stored(&t).await);
    assert!(
        t.stderr().contains("configs file not reconciled yet"),
        "{}",
        t.stderr()
    );
}
