//! The management API's side of a store: read one config, create, replace and delete
//! configs, each atomic with the uniqueness rule and fenced by the writer's epoch.
//! Redis: `redis/config_plane.rs`; memory: `memory/mod.rs`.

use super::{StoreError, WriteError, Written};
use crate::model::ModelConfig;
use std::future::Future;

pub trait ConfigWrites {
    fn get_config(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ModelConfig>, StoreError>> + Send;

    /// Atomic with the uniqueness rule. Every write is fenced by `epoch`, the epoch of
    /// the writer's snapshot.
    fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> impl Future<Output = Result<Written, WriteError>> + Send;

    /// Replaces `old` (as read, compared by revision) with `new`; counters of budgets
    /// that `new` no longer has are dropped, all others are kept, and a budget that `new`
    /// adds starts with the current usage of `old`'s closest shorter budget
    /// ([`budget_seeds`](super::budget_seeds)), in the same atomic step.
    fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
        epoch: Option<&str>,
    ) -> impl Future<Output = Result<Written, WriteError>> + Send;

    /// Deletes `old` (as read, compared by revision) and its counters.
    fn delete_config(
        &self,
        old: &ModelConfig,
        epoch: Option<&str>,
    ) -> impl Future<Output = Result<Written, WriteError>> + Send;
}
