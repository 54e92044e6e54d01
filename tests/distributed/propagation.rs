//! Config propagation: replicas see each other's writes (and deletes) within a second,
//! polling alone propagates them, and key prefixes keep deployments on one Redis apart.

use super::{CONFIGS, sees};
use crate::common::{Backend, Client, Tollgate, eventually};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_others_writes_within_a_second() {
    let a = Tollgate::start(Backend::Redis).await;
    // Poll slowly on B so the pub/sub notification is what makes it fast.
    let b_running = a.replica(|s| s.config_poll_ms = 5_000).await;
    let b = Client::new(format!("http://{}", b_running.addr));
    let within = Duration::from_secs(1);

    let id = a.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    assert!(
        eventually(within, || sees(&b, &id)).await,
        "B saw A's create within 1s"
    );
    assert_eq!(b.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(
        b.check(json!({"model": "m"})).await.status,
        429,
        "B enforces A's config"
    );
    assert_eq!(
        a.check(json!({"model": "m"})).await.status,
        429,
        "one shared counter"
    );

    let put = b
        .put(
            &format!("{CONFIGS}/{id}"),
            &json!({"rate_limit": {"request_max_limit": 3, "request_reset_duration": "1h"}}),
        )
        .await;
    assert_eq!(put.status, 200);
    assert!(
        eventually(within, || async {
            a.check(json!({"model": "m", "dry_run": true})).await.status == 200
        })
        .await,
        "A applied B's update within 1s"
    );
    // The direct GET on A reads the store, so it is current at once.
    assert_eq!(a.config(&id).await["rate_limit"]["request_max_limit"], 3);

    assert_eq!(a.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    assert!(
        eventually(within, || async { !sees(&b, &id).await }).await,
        "B dropped the deleted config within 1s"
    );
    assert_eq!(
        b.check(json!({"model": "m"})).await.body["limits"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_propagates_writes() {
    // Pub/sub is the fast path; the version poll must be enough on its own. Writing the
    // config straight into Redis (no announcement) is what a lost notification looks like.
    let t = Tollgate::start_with(Backend::Redis, |s| s.config_poll_ms = 200).await;
    let redis = t.redis.as_ref().unwrap();
    let other = Tollgate::start_with(Backend::Memory, |_| {}).await;
    let id = other.create(json!({"model_name": "quiet"})).await;
    let config = other.config(&id).await;
    let stored = json!({
        "id": id, "model_name": "quiet", "provider": null, "scope": "global", "scope_id": null,
        "calendar_aligned": false, "budgets": [], "rate_limit": null,
        "created_at": config["created_at"], "updated_at": config["updated_at"], "revision": 1
    });
    let _: () = redis.cmd(&["HSET", "tollgate:configs", &id, &stored.to_string()]);
    let _: i64 = redis.cmd(&["INCR", "tollgate:config_version"]);
    assert!(
        eventually(Duration::from_secs(2), || sees(&t, &id)).await,
        "the poll picked up the change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_separate_deployments_on_one_redis() {
    let a = Tollgate::start_with(Backend::Redis, |s| s.key_prefix = "team-a:".into()).await;
    let b_running = a.replica(|s| s.key_prefix = "team-b:".into()).await;
    let b = Client::new(format!("http://{}", b_running.addr));
    a.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    b.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}})).await;
    assert_eq!(a.check(json!({"model": "m"})).await.status, 200);
    assert_eq!(
        b.check(json!({"model": "m"})).await.status,
        200,
        "b's counter is its own"
    );
    assert_eq!(b.get(CONFIGS).await.body["total_count"], 1);
    let keys: Vec<String> = a.redis.as_ref().unwrap().cmd(&["KEYS", "*"]);
    assert!(
        keys.iter()
            .all(|k| k.starts_with("team-a:") || k.starts_with("team-b:")),
        "{keys:?}"
    );
}
