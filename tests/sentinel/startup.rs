//! Starting in sentinel mode: checks and management through the named master, not ready
//! (saying why) when no master is found, sentinels and master over TLS, and the flags the
//! binary refuses.

use super::{Outcome, check, limited_config, outcome, request_usage, tollgate};
use crate::common::eventually;
use crate::common::sentinel::SentinelSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_mode_serves_checks_and_management() {
    let set = SentinelSet::start().await;
    let (_running, t) = tollgate(&set, |_| {}).await;
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let id = t.create(limited_config(3)).await;
    for _ in 0..3 {
        assert_eq!(outcome(&t.check(check()).await), Outcome::Admitted);
    }
    assert_eq!(outcome(&t.check(check()).await), Outcome::Limited);
    assert_eq!(request_usage(&t, &id).await, 3);
    let listed = t.get("/api/governance/model-configs").await;
    assert_eq!(listed.body["total_count"], 1, "{}", listed.body);
    // The state is on the master the sentinels name, and replicated.
    let keys: i64 = set.primary.cmd(&["DBSIZE"]);
    assert!(keys > 0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            set.replica.cmd::<i64>(&["DBSIZE"]) == keys
        })
        .await,
        "replica has the keys"
    );
}

/// A master name the sentinels do not know, or a master password that is wrong: tollgate
/// starts, not ready, and `/ready` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_says_why_no_master_was_found() {
    let set = SentinelSet::start().await;
    let (unknown, wrong_password) = tokio::join!(
        tollgate(&set, |s| s.sentinel_master = Some("nobody".into())),
        tollgate(&set, |s| s.redis_master_password = Some("wrong".into())),
    );
    let ready = unknown.1.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .body
            .to_string()
            .contains("does not monitor a master named"),
        "{}",
        ready.body
    );
    let ready = wrong_password.1.get("/ready").await;
    assert_eq!(ready.status, 503);
    let why = ready.body.to_string();
    assert!(
        why.contains(&set.primary.port.to_string()) && why.matches("authentication").count() == 1,
        "{why}"
    );
}

/// `rediss://` sentinels: the master they name is reached over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinels_and_master_over_tls() {
    let set = SentinelSet::start_tls().await;
    assert!(set.urls().starts_with("rediss://"));
    let (_running, t) = tollgate(&set, |_| {}).await;
    let ready = t.get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let id = t.create(limited_config(2)).await;
    for _ in 0..2 {
        assert_eq!(outcome(&t.check(check()).await), Outcome::Admitted);
    }
    assert_eq!(outcome(&t.check(check()).await), Outcome::Limited);
    assert_eq!(request_usage(&t, &id).await, 2);
}

/// The binary refuses what it cannot do, saying why, from flags and from variables.
#[test]
fn refuses_wait_in_cluster_mode_and_sentinel_without_a_master_name() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} {envs:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(
        &[
            "--redis-mode",
            "cluster",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-wait-replicas",
            "1",
        ],
        &[],
    );
    assert!(err.contains("--redis-wait-replicas"), "{err}");
    let err = run(
        &["--redis-url", "redis://127.0.0.1:1,redis://127.0.0.1:2"],
        &[("TOLLGATE_REDIS_MODE", "sentinel")],
    );
    assert!(err.contains("--sentinel-master"), "{err}");
    let err = run(
        &["--redis-url", "redis://127.0.0.1:1,redis://127.0.0.1:2"],
        &[("TOLLGATE_SENTINEL_MASTER", "m")],
    );
    assert!(err.contains("--redis-mode"), "{err}");
}
