//! Failovers behind a "virtual IP" (a TCP proxy of the test's own whose backend switches):
//! to a replica that missed the last writes, then to an empty one.

use super::{MAX, addr, admitted, fill, replica, restored, stored_configs, tenant};
use crate::common::{RedisServer, eventually};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy with a switchable backend: the "virtual IP" in front of Redis. Switching
/// cuts every open connection, as a failover does.
struct Proxy {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (backend, conns) = (backend.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *backend.lock().unwrap();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().unwrap().push(conn);
                }
            })
        };
        Proxy {
            addr,
            backend,
            conns,
            accept,
        }
    }

    fn switch(&self, to: SocketAddr) {
        *self.backend.lock().unwrap() = to;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A failover to a replica that missed the last writes (its data is older: same epoch,
/// lower version) and then to an empty one: the configs written after the replica fell
/// behind are restored, and the full tenant stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_or_empty_replica_restores_configs() {
    let primary = RedisServer::start();
    let lagging = RedisServer::start();
    let empty = RedisServer::start();
    let proxy = Proxy::start(addr(&primary)).await;
    let url = format!("redis://{}", proxy.addr);
    let (a, b) = (replica(&url, &[]).await, replica(&url, &[]).await);
    a.create(tenant(0).0).await;
    let port = primary.port.to_string();
    let _: () = lagging.cmd(&["REPLICAOF", "127.0.0.1", &port]);
    let synced = || async {
        let info: String = lagging.cmd(&["INFO", "replication"]);
        info.contains("master_link_status:up") && stored_configs(&lagging) == 1
    };
    assert!(eventually(Duration::from_secs(10), synced).await);
    let _: () = lagging.cmd(&["REPLICAOF", "NO", "ONE"]);
    // Written after the replica stopped following.
    for i in 1..3 {
        a.create(tenant(i).0).await;
    }
    fill(&a, 2).await;

    proxy.switch(addr(&lagging));
    let again = admitted(&[&a, &b], 2, 4 * MAX).await;
    assert!(
        again <= MAX,
        "{again} admitted after the failover (max {MAX})"
    );
    assert!(
        restored(&lagging, 3).await,
        "configs written after the replica fell behind were not restored"
    );

    fill(&b, 1).await;
    proxy.switch(addr(&empty));
    let again = admitted(&[&a, &b], 1, 4 * MAX).await;
    assert!(
        again <= MAX,
        "{again} admitted after a failover to an empty replica"
    );
    assert!(restored(&empty, 3).await);
}
