//! The Redis master tollgate talks to, swappable. Standalone: one fixed address.
//! Sentinel: whatever master the sentinels name, followed through failovers
//! (`sentinel.rs` finds it and calls [`Master::install`]). Cluster: one cluster
//! connection, installed once ([`Master::install_cluster`]), that routes each command
//! to its slot's master itself.
//!
//! Every store call takes its connection from [`RedisStore::connection`] (a cheap clone
//! of the current master's multiplexed connection), so a swap takes effect on
//! the next call and never disturbs calls in flight: those finish, or fail over to the
//! `--on-store-error` answer, on the old master.

use super::RedisStore;
use super::cluster::{Conn, LazyCluster};
use super::replication::{ReplicaWaits, Replicated};
use crate::store::StoreError;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The master in use and what tells its followers it changed.
pub(super) struct Master {
    current: ArcSwapOption<Current>,
    /// Bumped on every swap: the change listener resubscribes on the new master.
    generation: watch::Sender<u64>,
    /// Poked when a call suggests the master moved (connection lost, `READONLY`, a
    /// timeout): the sentinel follower looks again at once instead of at its next poll.
    suspect: Notify,
    /// Why no master is known yet (sentinel mode), for `/ready` and check fallbacks.
    not_found: parking_lot::Mutex<Option<String>>,
    /// How many replicas a budget-changing write waits for (0: none).
    wait_replicas: u32,
    wait_timeout: Duration,
}

struct Current {
    addr: String,
    client: redis::Client,
    conn: Conn,
    /// Per connection: a `WAIT` only covers writes sent on its own connection.
    waits: Arc<ReplicaWaits>,
}

impl Master {
    /// No master yet (sentinel mode, before the first discovery).
    pub(super) fn new(wait_replicas: u32, wait_timeout: Duration) -> Self {
        Master {
            current: ArcSwapOption::empty(),
            generation: watch::Sender::new(0),
            suspect: Notify::new(),
            not_found: parking_lot::Mutex::new(None),
            wait_replicas,
            wait_timeout,
        }
    }

    /// Makes `conn` (to `client`, at `addr`) the master every next call uses.
    pub(super) fn install(&self, addr: String, client: redis::Client, conn: ConnectionManager) {
        self.set(addr, client, Conn::Single(conn));
    }

    /// Cluster mode: every call goes through `cluster` (`addr`: its seed nodes, `client`:
    /// the first seed's).
    pub(super) fn install_cluster(
        &self,
        addr: String,
        client: redis::Client,
        cluster: Arc<LazyCluster>,
    ) {
        self.set(addr, client, Conn::Cluster(cluster));
    }

    fn set(&self, addr: String, client: redis::Client, conn: Conn) {
        let waits = Arc::new(ReplicaWaits::new(self.wait_replicas, self.wait_timeout));
        self.current.store(Some(Arc::new(Current {
            addr,
            client,
            conn,
            waits,
        })));
        self.generation.send_modify(|g| *g += 1);
        *self.not_found.lock() = None;
    }

    /// Records why discovery failed; shown while no master is known.
    pub(super) fn not_found(&self, why: &str) {
        *self.not_found.lock() = Some(why.to_string());
    }

    /// Why writes on the current master are not confirmed by its replicas, if they are
    /// not (`--redis-wait-replicas`).
    pub(super) fn replication_shortfall(&self) -> Option<String> {
        self.current
            .load()
            .as_ref()
            .and_then(|c| c.waits.shortfall())
    }

    /// Warns once per master when it has fewer connected replicas than `WAIT` asks for.
    pub(super) fn check_replica_count(&self, connected: u32) {
        if let Some(c) = self.current.load().as_ref() {
            c.waits.check_replica_count(connected, &c.addr);
        }
    }

    pub(super) fn wait_replicas(&self) -> u32 {
        self.wait_replicas
    }

    pub(super) fn addr(&self) -> Option<String> {
        self.current.load().as_ref().map(|c| c.addr.clone())
    }

    /// The current master's client, for connections of their own (pub/sub).
    pub(super) fn client(&self) -> Option<redis::Client> {
        self.current.load().as_ref().map(|c| c.client.clone())
    }

    /// Changes whenever a new master is installed.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub(super) fn connection(&self) -> Result<MasterConnection, StoreError> {
        match self.current.load().as_ref() {
            Some(c) => Ok(MasterConnection {
                conn: c.conn.clone(),
                waits: c.waits.clone(),
            }),
            None => {
                self.suspect.notify_one();
                let why = self.not_found.lock().clone();
                Err(StoreError::Unavailable(format!(
                    "no Redis master known yet (asking the sentinels): {}",
                    why.as_deref().unwrap_or("no answer yet")
                )))
            }
        }
    }

    /// Resolves when a call suspected the master moved.
    pub(super) async fn suspected(&self) {
        self.suspect.notified().await
    }

    /// Suspects the master moved if `e` is the kind of error a failover causes.
    pub(super) fn observe(&self, e: &RedisError) {
        if moved(e) {
            self.suspect.notify_one();
        }
    }

    pub(super) fn suspect(&self) {
        self.suspect.notify_one();
    }
}

/// Errors after which the master may be elsewhere: it is gone (I/O, refused, dropped),
/// or it is a replica now (`READONLY`: a demoted master; `MASTERDOWN`: a replica that
/// lost its master).
fn moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
        // A write inside a script on a replica comes back as a script error whose
        // message carries the READONLY code.
        || e.to_string().contains("READONLY")
}

/// A connection to the current master (or the cluster connection) that also knows how
/// to wait for this master's replicas.
#[derive(Clone)]
pub struct MasterConnection {
    conn: Conn,
    waits: Arc<ReplicaWaits>,
}

impl MasterConnection {
    /// Call after a script call that changed counters (an admitted check, an applied
    /// usage report), on the same connection: with `--redis-wait-replicas N`, returns
    /// once N replicas hold that write (so a failover cannot lose it), or says it fell
    /// short; without it, returns at once. Concurrent callers share one `WAIT`.
    pub async fn wait_for_replicas(&mut self) -> Replicated {
        let waits = self.waits.clone();
        waits.after_write(&mut self.conn).await
    }

    /// The longest `wait_for_replicas` takes (zero without the option).
    pub fn replication_bound(&self) -> Duration {
        self.waits.bound()
    }
}

impl ConnectionLike for MasterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl RedisStore {
    /// The connection for one store call: `let mut conn = self.connection()?;`. Take it
    /// per call (not once and kept), so that calls follow the master after a failover.
    pub(super) fn connection(&self) -> Result<MasterConnection, StoreError> {
        self.master.connection()
    }

    /// Waits (up to `within`) until a master is known: at start in sentinel mode, so
    /// that the first config load does not fail for want of a discovery.
    pub async fn wait_for_master(&self, within: Duration) -> bool {
        let mut changes = self.master.changes();
        let found = tokio::time::timeout(within, async {
            while self.master.addr().is_none() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        found.is_ok() && self.master.addr().is_some()
    }

    /// Where the master is (`host:port`), if known.
    pub fn master_addr(&self) -> Option<String> {
        self.master.addr()
    }
}
