//! Config sync between replicas: incremental (10,000 configs, one change applied, no
//! reload), and a pub/sub subscription whose connection goes silent is re-made.

use super::{CONFIGS, addr, limited, metric, replica, tenant};
use crate::common::{RedisServer, eventually};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Incremental sync: with 10,000 configs, another replica's write costs this replica
/// one changed config, not a reload (counted by its metrics, not timed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_applies_only_what_changed() {
    let redis = RedisServer::start();
    let url = redis.url();
    seed(&url, 10_000).await;
    let (a, b) = (replica(&url, &[]).await, replica(&url, &[]).await);
    assert_eq!(
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"],
        10_000
    );
    let full_before = metric(&b, "tollgate_config_syncs_total{kind=\"full\"}").await;
    let applied_before = metric(&b, "tollgate_config_changes_applied_total").await;
    let id = a.create(tenant(0).0).await;
    let seen = || async {
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"]
            == 10_001
    };
    assert!(eventually(Duration::from_secs(5), seen).await);
    assert_eq!(a.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    let gone = || async {
        b.get(&format!("{CONFIGS}?from_memory=true&limit=1"))
            .await
            .body["total_count"]
            == 10_000
    };
    assert!(eventually(Duration::from_secs(5), gone).await);
    let full_after = metric(&b, "tollgate_config_syncs_total{kind=\"full\"}").await;
    let applied_after = metric(&b, "tollgate_config_changes_applied_total").await;
    assert_eq!(full_after, full_before, "no full reload for one change");
    assert_eq!(
        applied_after - applied_before,
        2.0,
        "one create and one delete applied"
    );
}

/// 10,000 configs written as a re-seed would (chunks of 1,000), before any replica runs.
async fn seed(url: &str, n: usize) {
    use tollgate::store::ConfigLog;
    let store = tollgate::store::RedisStore::connect(tollgate::store::redis::RedisOptions {
        bulk_timeout: Duration::from_secs(60),
        ..tollgate::store::redis::RedisOptions::standalone(url, "tollgate:", Duration::from_secs(5))
    })
    .unwrap();
    let now = chrono::Utc::now();
    let configs = (0..n)
        .map(|i| {
            let body = json!({"model_name": format!("filler-{i}"), "scope": "virtual_key",
                              "scope_id": format!("vk-{i}"), "rate_limit": limited(10)});
            tollgate::model::validate::create_config(serde_json::from_value(body).unwrap(), now)
                .unwrap()
        })
        .collect();
    let outcome = store.reseed(None, configs, 0).await.unwrap();
    assert!(matches!(
        outcome,
        tollgate::store::ReseedOutcome::Seeded { .. }
    ));
}

/// A proxy that, once frozen, silences the pub/sub connections open at that moment (no
/// RST, as when a host or a NAT entry vanishes); everything else passes.
struct FreezingProxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let accept = {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        continue;
                    };
                    // Only connections older than the freeze can be frozen.
                    let silenced = Arc::new(AtomicBool::new(frozen.load(Ordering::SeqCst)));
                    let subscriber = Arc::new(AtomicBool::new(false));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let gate = Gate {
                        frozen: frozen.clone(),
                        born_frozen: silenced,
                        subscriber,
                    };
                    tokio::spawn(pump(cr, sw, gate.clone(), true));
                    tokio::spawn(pump(sr, cw, gate, false));
                }
            })
        };
        FreezingProxy {
            addr,
            frozen,
            accept,
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[derive(Clone)]
struct Gate {
    frozen: Arc<AtomicBool>,
    born_frozen: Arc<AtomicBool>,
    subscriber: Arc<AtomicBool>,
}

impl Gate {
    fn closed(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
            && !self.born_frozen.load(Ordering::SeqCst)
            && self.subscriber.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Gate,
    upstream: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream
            && buf[..n]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
        {
            gate.subscriber.store(true, Ordering::SeqCst);
        }
        while gate.closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A subscription whose connection goes silent is noticed and re-made within a few
/// seconds, whatever the poll: changes keep arriving by pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_remade() {
    let redis = RedisServer::start();
    let a = replica(&redis.url(), &[]).await;
    let proxy = FreezingProxy::start(addr(&redis)).await;
    // b polls once a minute: only pub/sub can tell it of changes in time.
    let b = replica(
        &format!("redis://{}", proxy.addr),
        &["--config-poll-ms", "60000"],
    )
    .await;
    let has = |n: u64| {
        let b = &b;
        move || async move {
            b.get(&format!("{CONFIGS}?from_memory=true")).await.body["total_count"] == n
        }
    };
    a.create(tenant(0).0).await;
    assert!(eventually(Duration::from_secs(5), has(1)).await);
    proxy.frozen.store(true, Ordering::SeqCst);
    a.create(tenant(1).0).await;
    assert!(
        eventually(Duration::from_secs(8), has(2)).await,
        "the silent subscription was not re-made: {}",
        b.stderr()
    );
}
