//! A check answered by the fallback is not charged (a denied request costs nothing),
//! even when Redis ran it in time and only its reply came too late. A latency proxy of
//! the test's own sits between tollgate and a real `redis-server`, delaying each
//! direction.

mod common;

use common::{RedisServer, eventually, free_port};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tollgate::limits::CompiledConfig;
use tollgate::store::redis::{RedisOptions, RedisStore};
use tollgate::store::{Amounts, Counters, StoreError};

/// Forwards `from` to `to`, each chunk `delay` after it was read, in order.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin + Send + 'static,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            return;
        }
    }
}

/// A TCP proxy to `target` that delays each direction by `delay`; its port.
async fn latency_proxy(target: u16, delay: Duration) -> u16 {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, delay));
            tokio::spawn(pump(sr, cw, delay));
        }
    });
    port
}

fn store(url: String, timeout_ms: u64) -> RedisStore {
    RedisStore::connect(RedisOptions {
        url,
        key_prefix: "t:".into(),
        timeout: Duration::from_millis(timeout_ms),
        bulk_timeout: Duration::from_secs(5),
        allow_evicting: false,
        topology: tollgate::store::redis::Topology::Standalone,
        wait_replicas: 0,
    })
    .unwrap()
}

fn give_backs(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("tollgate_store_give_backs_total"))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_answered_by_the_fallback_end_up_uncharged() {
    let metrics = tollgate::metrics::handle();
    let redis = RedisServer::start();
    // 60 ms each way against a 100 ms timeout: Redis runs every check well within its
    // deadline, but every reply arrives after tollgate has answered by policy.
    let port = latency_proxy(redis.port, Duration::from_millis(60)).await;
    let slow = store(format!("redis://127.0.0.1:{port}"), 100);
    let direct = store(redis.url(), 5_000);
    let req = serde_json::from_value(json!({"model_name": "m",
        "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1h",
                       "token_max_limit": 10000, "token_reset_duration": "1h"},
        "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}))
    .unwrap();
    let cfg = CompiledConfig::compile(
        tollgate::model::validate::create_config(req, chrono::Utc::now()).unwrap(),
    )
    .unwrap();
    let amounts = Amounts {
        requests: 1,
        tokens: 100,
        cost_nanos: 100_000_000,
    };
    let uncharged = || async {
        let (_, usage) = direct.read_usage(&[&cfg]).await.unwrap();
        usage[0].iter().all(|l| l.used == 0)
    };
    for k in 1..=6 {
        let answer = slow.check(&[&cfg], amounts, false).await;
        assert!(matches!(answer, Err(StoreError::Timeout(_))), "{answer:?}");
        // Redis ran it in time and charged it; the late reply led to a give-back, of
        // everything it consumed, requests included.
        assert!(
            eventually(Duration::from_secs(10), || async {
                give_backs(&metrics.render()) == k as f64 && uncharged().await
            })
            .await,
            "check {k} was not given back: {:?}",
            direct.read_usage(&[&cfg]).await.unwrap().1
        );
    }
    // Without the latency, the same store counts normally.
    let fast = store(redis.url(), 100);
    assert!(fast.check(&[&cfg], amounts, false).await.unwrap().allowed);
    let (_, usage) = direct.read_usage(&[&cfg]).await.unwrap();
    assert_eq!(usage[0][0].used, 1);
}
