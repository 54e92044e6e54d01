//! The connection every store call goes through: one Redis (a `ConnectionManager`) or a
//! Redis Cluster (redis-rs's cluster connection, which routes each command by the slot
//! of its first key, follows `MOVED` and `ASK`, and refreshes its slot map on `MOVED`).
//!
//! The cluster connection is made on first use and re-made after a failed attempt, so
//! tollgate starts (not ready) while the cluster is down and recovers by itself, as the
//! standalone store does.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    /// `seeds`: any nodes of the cluster (the others are found from their slot map).
    pub(crate) fn new(
        seeds: &[String],
        timeout: Duration,
        bulk_timeout: Duration,
    ) -> Result<Self, String> {
        let client = ClusterClient::builder(seeds.iter().map(String::as_str))
            .connection_timeout(timeout.max(Duration::from_millis(500)))
            .response_timeout(bulk_timeout)
            // A few quick retries: enough to follow MOVED/ASK and to wait out a failover
            // or slot migration step; a caller whose --store-timeout-ms passes meanwhile
            // answers by --on-store-error.
            .retries(6)
            .min_retry_wait(20)
            .max_retry_wait(200)
            .build()
            .map_err(|e| format!("invalid redis cluster URLs: {e}"))?;
        Ok(LazyCluster {
            client,
            conn: OnceCell::new(),
        })
    }

    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(cmd, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}
