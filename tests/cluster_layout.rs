//! The counters' layout on a real Redis Cluster (3 masters): counters written one slot
//! per config (earlier releases, `--cluster-counter-slots 0`) are moved into the counter
//! slots when a replica of the default layout starts, added to what it counted meanwhile,
//! and the old hash is deleted; the limits then hold across the move.

mod common;

use common::cluster::{self, Cluster};
use common::{Process, eventually};
use serde_json::json;
use std::time::Duration;

async fn replica(c: &Cluster, counter_slots: &str) -> Process {
    let url = c.url();
    Process::spawn(
        &[
            "--redis-url",
            &url,
            "--redis-mode",
            "cluster",
            "--cluster-counter-slots",
            counter_slots,
            "--store-timeout-ms",
            "5000",
            "--on-store-error",
            "deny",
            "--remember-refusals-ms",
            "0",
        ],
        &[],
    )
    .await
}

/// Whether `key` exists, asked of the master of its slot.
fn exists(c: &Cluster, key: &str) -> bool {
    let slot = cluster::cmd::<i64>(c.ports()[0], &["CLUSTER", "KEYSLOT", key]).unwrap() as u16;
    cluster::cmd::<i64>(c.master_of(slot), &["EXISTS", key]).unwrap() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_of_one_slot_per_config_move_into_the_counter_slots_added_up() {
    let c = Cluster::start_with_replicas(0);
    let old = replica(&c, "0").await;
    let id = old
        .client
        .create(
            json!({"model_name": "m", "scope": "virtual_key", "scope_id": "a",
            "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1h",
                           "token_max_limit": 1000, "token_reset_duration": "1h"},
            "budgets": [{"max_limit": 10.0, "reset_duration": "1d"}]}),
        )
        .await;
    let check = json!({"model": "m", "virtual_key": "a", "tokens": 5, "cost": 0.5});
    for _ in 0..4 {
        assert_eq!(old.check(check.clone()).await.status, 200);
    }
    let earlier = format!("tollgate:c:{{{id}}}");
    assert!(exists(&c, &earlier), "the earlier layout's hash {earlier}");
    drop(old);

    let new = replica(&c, "3").await;
    let here = tollgate::store::redis::Keys::new("tollgate:", true)
        .with_counter_slots(3)
        .counters(&id);
    // Counted here whether the move came before it or after: added either way.
    assert_eq!(new.check(check.clone()).await.status, 200);
    let moved = eventually(Duration::from_secs(10), || async { !exists(&c, &earlier) }).await;
    assert!(
        moved,
        "the earlier hash is deleted once moved: {}",
        new.stderr()
    );
    assert!(exists(&c, &here), "the counters live at {here}");
    let cfg = new.client.config(&id).await;
    assert_eq!(cfg["rate_limit"]["request_current_usage"], 5, "{cfg}");
    assert_eq!(cfg["rate_limit"]["token_current_usage"], 25, "{cfg}");
    assert_eq!(cfg["budgets"][0]["current_usage"], 2.5, "{cfg}");

    // The limit holds across the move: 5 more requests, then 429.
    for _ in 0..5 {
        assert_eq!(new.check(check.clone()).await.status, 200);
    }
    assert_eq!(new.check(check).await.status, 429);

    // A second start finds the layout migrated and leaves the counters as they are.
    drop(new);
    let again = replica(&c, "3").await;
    let cfg = again.client.config(&id).await;
    assert_eq!(cfg["rate_limit"]["request_current_usage"], 10, "{cfg}");
}
