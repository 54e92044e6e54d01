//! Whether a store can serve, and its clock. Redis: `redis/health.rs`; memory:
//! `memory/mod.rs`.

use super::StoreError;
use chrono::{DateTime, Utc};
use std::future::Future;

pub trait Health {
    /// Reachable, ready to run its scripts, and accepting writes.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The store's time (Redis `TIME`). Configs are stamped with it, so a budget grid
    /// anchored at a config's creation runs on the clock the scripts count with, whatever
    /// the clock of the replica that wrote it.
    fn clock(&self) -> impl Future<Output = Result<DateTime<Utc>, StoreError>> + Send;

    /// Announces replica `id` as alive for `ttl_ms`, and counts the replicas alive
    /// (this one included): what each replica's share of a limit is divided by while the
    /// store does not answer (`--on-store-error local`). The embedded store has one.
    fn announce_replica(
        &self,
        _id: &str,
        _ttl_ms: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async { Ok(1) }
    }

    /// Why writes are not confirmed on the replicas asked for (`--redis-wait-replicas`),
    /// while that is so: the store works, with less protection against a failover.
    fn replication_shortfall(&self) -> Option<String> {
        None
    }
}
