//! `--redis-wait-replicas N`: after a write that changed counters, Redis `WAIT N` until
//! that many replicas have it. Redis replication is asynchronous: without this, counts a
//! master acknowledged in the replication lag before it crashed are lost when its
//! replica is promoted (docs/redis-topologies.md, "Failover loss"). With it, a check is
//! answered only once its count is on N replicas; the price is one replica round trip
//! per call.
//!
//! `WAIT` covers every write its own connection sent before it, and Redis holds the
//! whole connection while it waits (it is a blocking command). Tollgate multiplexes all
//! its calls over one connection, so concurrent waits would queue behind one another
//! anyway: instead they share. While one `WAIT` is in flight the next writers queue, and
//! one `WAIT` sent after all of their replies arrived covers them all.
//!
//! **A `WAIT` that falls short** (Redis answers that fewer than N replicas confirmed
//! within the store timeout: a replica is down or lagging, or the master was just
//! promoted) does not undo anything: the master admitted and counted those ops, so they
//! are answered as Redis decided and stay counted. They are exactly as safe as without the option (a failover could lose
//! them), and that is made visible: `tollgate_redis_wait_shortfalls_total`, the gauge
//! `tollgate_redis_wait_short`, a field of `/ready`, a throttled log line. Answering
//! them by `--on-store-error` instead would either let traffic through uncounted
//! (`allow`) or refuse everything while a replica is away (`deny`).
//!
//! A `WAIT` that cannot succeed would hold the connection for the whole timeout at
//! every write, stalling every check behind it. So the first write on a master, and the
//! first after `SHORT_PROBE` of a shortfall, first asks how many replicas are connected
//! (`INFO replication`, which answers at once): with fewer than N, writes are short
//! without a `WAIT` until the next probe; with N, a real `WAIT` tells.
//!
//! **A `WAIT` that fails** (no answer: the connection broke or timed out, the master is
//! likely gone) leaves it unknown whether any replica has the write: those ops are
//! answered as for any store failure (`--on-store-error`), and not given back (the
//! master that counted them is unreachable; if it lives on, they stay counted, which
//! errs on the safe side).

use crate::log_throttle::LogThrottle;
use crate::metrics as m;
use redis::aio::ConnectionLike;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// How long a shortfall is believed before the next `WAIT` probes again.
const SHORT_PROBE: Duration = Duration::from_secs(1);

/// Whether a write is on N replicas.
#[derive(Debug, Clone)]
pub enum Replicated {
    /// N replicas confirmed (or the option is off).
    Confirmed,
    /// Fewer did, for this reason: the write is on the master (and maybe fewer
    /// replicas) only.
    Short(String),
    /// No answer: whether a replica has it is unknown.
    Failed(crate::store::StoreError),
}

pub(super) struct ReplicaWaits {
    replicas: u32,
    timeout: Duration,
    /// Writes answered so far on this connection, numbered from 1.
    written: AtomicU64,
    /// The highest write number that a successful `WAIT` covered.
    covered: AtomicU64,
    /// The highest write number that a failed `WAIT` would have covered: those queued
    /// behind it are short with it instead of each blocking the connection for another
    /// timeout.
    failed: AtomicU64,
    /// While short: local ms until which no `WAIT` is sent (0: not short).
    short_until_ms: AtomicI64,
    /// Whether the master's replicas were counted since the last shortfall (or ever).
    probed: AtomicBool,
    /// Why the last `WAIT` fell short (for `/ready`); None when it did not.
    short_reason: parking_lot::Mutex<Option<String>>,
    /// One `WAIT` at a time.
    sending: tokio::sync::Mutex<()>,
    warned: AtomicBool,
    throttle: LogThrottle,
}

impl ReplicaWaits {
    pub(super) fn new(replicas: u32, timeout: Duration) -> Self {
        ReplicaWaits {
            replicas,
            timeout,
            written: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            short_until_ms: AtomicI64::new(0),
            probed: AtomicBool::new(false),
            short_reason: parking_lot::Mutex::new(None),
            sending: tokio::sync::Mutex::new(()),
            warned: AtomicBool::new(false),
            throttle: LogThrottle::new(10_000),
        }
    }

    /// The longest `after_write` can take: its queue behind other waits and the `WAIT`
    /// itself, with a little slack for Redis's own answer (fewer replicas) to arrive
    /// first. Callers add it to their store timeout once Redis has answered.
    pub(super) fn bound(&self) -> Duration {
        if self.replicas == 0 {
            Duration::ZERO
        } else {
            self.timeout * 2 + Duration::from_millis(50)
        }
    }

    /// Why writes are not confirmed on N replicas now, if they are not.
    pub(super) fn shortfall(&self) -> Option<String> {
        self.short_reason.lock().clone()
    }

    /// Call once the reply of a write arrived on `conn` (a clone of this master's
    /// connection). `Short` when fewer than N replicas confirm within the store
    /// timeout: the write is on the master but a failover may lose it.
    ///
    /// Not covered: `ConnectionManager` re-connecting to the *same* master between the
    /// write's reply and the `WAIT` (a fresh connection has no writes to wait for). A
    /// dead master fails the `WAIT` instead, so a crash is covered.
    pub(super) async fn after_write(&self, conn: &mut (impl ConnectionLike + Send)) -> Replicated {
        if self.replicas == 0 {
            return Replicated::Confirmed;
        }
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(reason) = self.believed_short() {
            self.failed.fetch_max(mine, Ordering::SeqCst);
            return Replicated::Short(reason);
        }
        let wait = async {
            let _turn = self.sending.lock().await;
            if self.covered.load(Ordering::SeqCst) >= mine {
                return Replicated::Confirmed;
            }
            if self.failed.load(Ordering::SeqCst) >= mine {
                return Replicated::Short(self.shortfall().unwrap_or_default());
            }
            if !self.probed.load(Ordering::SeqCst) {
                let through = self.written.load(Ordering::SeqCst);
                match connected_replicas(conn).await {
                    Ok(n) if n < self.replicas => {
                        return self.fell_short(
                            through,
                            format!(
                                "the master has {n} connected replica(s), \
                                 --redis-wait-replicas asks for {}; counts stay on the \
                                 master, a failover may lose them",
                                self.replicas
                            ),
                        );
                    }
                    Ok(_) => self.probed.store(true, Ordering::SeqCst),
                    Err(e) => {
                        self.fell_short(through, format!("cannot count replicas: {e}"));
                        return Replicated::Failed(crate::store::StoreError::Unavailable(format!(
                            "the master did not answer (--redis-wait-replicas): {e}"
                        )));
                    }
                }
            }
            // Every write numbered up to here had its reply before it was numbered, so
            // Redis ran it before the WAIT that follows on the same connection.
            let through = self.written.load(Ordering::SeqCst);
            let acked: redis::RedisResult<i64> = redis::cmd("WAIT")
                .arg(self.replicas)
                .arg(self.timeout.as_millis().max(1) as u64)
                .query_async(conn)
                .await;
            match acked {
                Ok(n) if n >= i64::from(self.replicas) => {
                    self.covered.fetch_max(through, Ordering::SeqCst);
                    self.confirmed();
                    Replicated::Confirmed
                }
                Ok(n) => self.fell_short(
                    through,
                    format!(
                        "only {n} of {} replicas confirmed writes within {:?} \
                         (--redis-wait-replicas {0}); counts stay on the master, a failover \
                         may lose them",
                        self.replicas, self.timeout
                    ),
                ),
                Err(e) => {
                    self.fell_short(through, format!("WAIT failed: {e}"));
                    Replicated::Failed(crate::store::StoreError::Unavailable(format!(
                        "the master did not answer WAIT (--redis-wait-replicas): {e}"
                    )))
                }
            }
        };
        match tokio::time::timeout(self.bound(), wait).await {
            Ok(replicated) => replicated,
            Err(_) => {
                self.fell_short(mine, format!("no answer to WAIT within {:?}", self.bound()));
                Replicated::Failed(crate::store::StoreError::Timeout(self.bound()))
            }
        }
    }

    /// The shortfall still believed (no `WAIT` is worth sending yet), if any.
    fn believed_short(&self) -> Option<String> {
        let until = self.short_until_ms.load(Ordering::SeqCst);
        if until == 0 || now_ms() >= until {
            return None;
        }
        self.shortfall()
    }

    fn fell_short(&self, through: u64, reason: String) -> Replicated {
        self.failed.fetch_max(through, Ordering::SeqCst);
        self.probed.store(false, Ordering::SeqCst);
        let now = now_ms();
        self.short_until_ms
            .store(now + SHORT_PROBE.as_millis() as i64, Ordering::SeqCst);
        if let Some(more) = self.throttle.allow(now) {
            tracing::warn!(%reason, also_since_last_line = more, "writes not confirmed by replicas");
        }
        *self.short_reason.lock() = Some(reason.clone());
        metrics::gauge!(m::REDIS_WAIT_SHORT).set(1.0);
        Replicated::Short(reason)
    }

    fn confirmed(&self) {
        if self.short_until_ms.swap(0, Ordering::SeqCst) != 0 {
            tracing::info!("replicas confirm writes again (--redis-wait-replicas)");
        }
        *self.short_reason.lock() = None;
        metrics::gauge!(m::REDIS_WAIT_SHORT).set(0.0);
    }

    /// Warns (once per master) when the master has fewer replicas than every `WAIT`
    /// asks for: each would fall short.
    pub(super) fn check_replica_count(&self, connected: u32, master: &str) {
        if connected < self.replicas && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                master,
                connected,
                wanted = self.replicas,
                "--redis-wait-replicas {} but the master has {connected} connected replica(s): \
                 writes will not be confirmed (they stay counted on the master; a failover may \
                 lose them) until enough replicas connect",
                self.replicas
            );
        }
    }
}

/// `connected_slaves` of `INFO replication`.
async fn connected_replicas(conn: &mut (impl ConnectionLike + Send)) -> redis::RedisResult<u32> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await?;
    Ok(parse_connected_replicas(&info))
}

pub(super) fn parse_connected_replicas(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connected_replicas() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=x\r\n";
        assert_eq!(parse_connected_replicas(info), 2);
        assert_eq!(parse_connected_replicas("role:slave\r\n"), 0);
    }
}
