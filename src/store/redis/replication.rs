//! `--redis-wait-replicas N`: after a budget-changing write, Redis `WAIT N` until that
//! many replicas have it. Redis replication is asynchronous: without this, counts a
//! master acknowledged in the replication lag before it crashed are lost when its
//! replica is promoted (README, "Failover loss"). With it, a check is answered only once
//! its count is on N replicas; the price is one replica round trip per check.
//!
//! `WAIT` covers every write its own connection sent before it, and Redis holds the
//! whole connection while it waits (it is a blocking command). Tollgate multiplexes all
//! its calls over one connection, so concurrent waits would queue behind one another
//! anyway: instead they share. While one `WAIT` is in flight the next writers queue, and
//! one `WAIT` sent after all of their replies arrived covers them all.

use crate::store::StoreError;
use redis::aio::ConnectionLike;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(super) struct ReplicaWaits {
    replicas: u32,
    timeout: Duration,
    /// Writes answered so far on this connection, numbered from 1.
    written: AtomicU64,
    /// The highest write number that a successful `WAIT` covered.
    covered: AtomicU64,
    /// The highest write number that a failed `WAIT` would have covered: those queued
    /// behind it fail with it instead of each blocking the connection for another
    /// timeout (a replica that is down would otherwise stall every call in turn).
    failed: AtomicU64,
    /// One `WAIT` at a time.
    sending: tokio::sync::Mutex<()>,
}

impl ReplicaWaits {
    pub(super) fn new(replicas: u32, timeout: Duration) -> Self {
        ReplicaWaits {
            replicas,
            timeout,
            written: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    /// Call once the reply of a write arrived on `conn` (a clone of this master's
    /// connection). Fails when fewer than N replicas confirm within the store timeout:
    /// the write happened on the master but may be lost by a failover, so the caller
    /// answers as for any store failure (`--on-store-error`).
    ///
    /// Not covered: `ConnectionManager` re-connecting to the *same* master between the
    /// write's reply and the `WAIT` (a fresh connection has no writes to wait for). A
    /// dead master fails the `WAIT` instead, so a crash is covered.
    pub(super) async fn after_write(
        &self,
        conn: &mut (impl ConnectionLike + Send),
    ) -> Result<(), StoreError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let wait = async {
            let _turn = self.sending.lock().await;
            if self.covered.load(Ordering::SeqCst) >= mine {
                return Ok(());
            }
            if self.failed.load(Ordering::SeqCst) >= mine {
                return Err(StoreError::Unavailable(format!(
                    "replicas did not confirm the write (--redis-wait-replicas {})",
                    self.replicas
                )));
            }
            // Every write numbered up to here had its reply before it was numbered, so
            // Redis ran it before the WAIT that follows on the same connection.
            let through = self.written.load(Ordering::SeqCst);
            let acked: redis::RedisResult<i64> = redis::cmd("WAIT")
                .arg(self.replicas)
                .arg(self.timeout.as_millis().max(1) as u64)
                .query_async(conn)
                .await;
            let error = match acked {
                Ok(n) if n >= i64::from(self.replicas) => {
                    self.covered.fetch_max(through, Ordering::SeqCst);
                    return Ok(());
                }
                Ok(n) => format!(
                    "only {n} of {} replicas confirmed the write within {:?} \
                     (--redis-wait-replicas)",
                    self.replicas, self.timeout
                ),
                Err(e) => e.to_string(),
            };
            self.failed.fetch_max(through, Ordering::SeqCst);
            Err(StoreError::Unavailable(error))
        };
        // Queueing behind other waits counts against the same bound as the WAIT itself;
        // a little slack lets Redis's own answer (fewer replicas) arrive first.
        let bound = self.timeout * 2 + Duration::from_millis(50);
        match tokio::time::timeout(bound, wait).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(bound)),
        }
    }
}
