//! Several tollgates sharing one Redis enforce one set of limits: configs propagate,
//! concurrent checks across processes admit exactly the limit, reservations settle
//! without overshoot, and replicas with skewed clocks agree (time comes from Redis).
//!
//! This file holds the fleets and the sync wait the modules share.

#[path = "../common/mod.rs"]
mod common;

mod clocks;
mod limits;
mod propagation;

use common::{Client, Process, RedisServer, eventually};
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";

/// Correctness runs must not depend on machine speed: a slow Redis call waits instead of
/// falling back, and a fallback could never admit.
const PATIENT: [&str; 4] = ["--store-timeout-ms", "10000", "--on-store-error", "deny"];

/// Waits until `client`'s replica has config `id` in its snapshot.
async fn sees(client: &Client, id: &str) -> bool {
    let a = client
        .get(&format!("{CONFIGS}?from_memory=true&limit=100"))
        .await;
    a.body["model_configs"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
}

/// `n` tollgate processes on `redis`, patient and fail-closed.
async fn fleet(redis: &RedisServer, n: usize) -> Vec<Process> {
    let url = redis.url();
    let args = [&["--redis-url", url.as_str()][..], &PATIENT].concat();
    let mut procs = Vec::new();
    for _ in 0..n {
        procs.push(Process::spawn(&args, &[]).await);
    }
    procs
}

async fn all_see(procs: &[Process], id: &str) {
    for p in procs {
        assert!(
            eventually(Duration::from_secs(2), || sees(p, id)).await,
            "replica never saw {id}"
        );
    }
}
