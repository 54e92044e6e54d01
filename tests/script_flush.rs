//! Redis forgetting tollgate's scripts (`SCRIPT FLUSH`, as after a restart or a
//! failover) during a stream of checks: every check is still decided by the store, and
//! exactly the limit is admitted.

mod common;
#[path = "common/faults.rs"]
mod faults;

use faults::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tollgate::settings::StoreErrorPolicy;

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
