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

    /// Why writes are not confirmed on the replicas asked for (`--redis-wait-replicas`),
    /// while that is so: the store works, with less protection against a failover.
    fn replication_shortfall(&self) -> Option<String> {
        None
    }
}
