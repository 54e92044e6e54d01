//! Where configs and counters live: one small trait, two backends.
//!
//! `redis` shares everything between replicas (every counter operation is one Lua script
//! call); `memory` is the embedded single-instance store. Both implement the same
//! semantics and run the same scenario suite (`tests/scenarios.rs`).

pub mod memory;
pub mod redis;

use crate::limits::CompiledConfig;
use crate::model::ModelConfig;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected data from the store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Corrupt(_) => "corrupt",
        }
    }
}

/// Why a config write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("config not found")]
    NotFound,
    /// Another config already has this (scope, scope_id, model_name, provider).
    #[error("config {0} already has this scope, scope_id, model_name and provider")]
    Conflict(String),
    /// The config changed since it was read; read it again and retry.
    #[error("config changed concurrently")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a check asks to consume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub requests: i64,
    pub tokens: i64,
    pub cost_nanos: i64,
}

impl Amounts {
    pub fn for_kind(&self, kind: crate::limits::LimitKind) -> i64 {
        use crate::limits::LimitKind::*;
        match kind {
            Requests => self.requests,
            Tokens => self.tokens,
            Budget => self.cost_nanos,
        }
    }
}

/// One limit's state after a check, in the order of the configs' `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOutcome {
    pub admitted: bool,
    pub used: i64,
    pub reset_after_ms: i64,
    pub retry_after_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub allowed: bool,
    pub limits: Vec<LimitOutcome>,
    /// The store's time of the decision (Unix ms): what a settling usage report passes
    /// back as `reserved_at_ms`.
    pub now_ms: i64,
}

/// Actual minus reserved usage; negative values are refunds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub tokens: i64,
    pub cost_nanos: i64,
    /// When the check reserved (the store's clock, Unix ms), if the gateway says: a
    /// refund then only returns what that reservation still holds.
    pub reserved_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    Applied,
    /// This request id was already recorded; nothing changed.
    Duplicate,
}

/// Live usage of one limit for the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitUsage {
    pub used: i64,
    /// Start of the current window (now − length) or budget period.
    pub start_ms: i64,
}

/// A usage report's `request_id` scoped by the report's identity (model, provider,
/// virtual key, user), so that two tenants' equal ids never collide. What the stores'
/// `record_usage` takes as its request id. Each part is length-prefixed (absent parts
/// marked), so no two identities give the same string.
pub fn scoped_request_id(key: &crate::limits::MatchKey<'_>, request_id: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + request_id.len());
    for part in [
        Some(key.model),
        key.provider,
        key.virtual_key,
        key.user,
        Some(request_id),
    ] {
        match part {
            Some(p) => write!(out, "{}:{p}|", p.len()).expect("writing to a String"),
            None => out.push_str("-|"),
        }
    }
    out
}

/// How long a usage report's request id is remembered.
pub const USAGE_ID_TTL: Duration = Duration::from_secs(25 * 3600);

pub trait Store: Send + Sync + 'static {
    /// Every config, and the config version they were read at.
    fn load_configs(
        &self,
    ) -> impl Future<Output = Result<(u64, Vec<ModelConfig>), StoreError>> + Send;

    /// Cheap: changes whenever any config is written.
    fn config_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn get_config(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ModelConfig>, StoreError>> + Send;

    /// Atomic with the uniqueness rule. Returns the new config version.
    fn create_config(
        &self,
        config: &ModelConfig,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// Replaces `old` (as read, compared by revision) with `new`; counters of budgets
    /// that `new` no longer has are dropped, all others are kept.
    fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// Deletes `old` (as read, compared by revision) and its counters.
    fn delete_config(
        &self,
        old: &ModelConfig,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// Atomic check-and-consume over every limit of `configs`.
    fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> impl Future<Output = Result<CheckOutcome, StoreError>> + Send;

    /// Adds a settlement to the token windows and budgets of `configs`, once per request id
    /// (scoped by the report's identity: `scoped_request_id`). With no configs it writes
    /// nothing, not even the request id.
    fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> impl Future<Output = Result<UsageOutcome, StoreError>> + Send;

    /// Live usage of every limit of `configs` (in order), and the store's time now.
    fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> impl Future<Output = Result<(i64, Vec<Vec<LimitUsage>>), StoreError>> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notified when another replica may have changed configs.
    fn changes(&self) -> Arc<Notify>;

    /// The store's time (Redis `TIME`). Configs are stamped with it, so a budget grid
    /// anchored at a config's creation runs on the clock the scripts count with, whatever
    /// the clock of the replica that wrote it.
    fn clock(&self) -> impl Future<Output = Result<DateTime<Utc>, StoreError>> + Send;
}

/// Counter fields of a budget that `new` no longer has.
pub fn removed_budget_fields(old: &ModelConfig, new: &ModelConfig) -> Vec<String> {
    old.budgets
        .iter()
        .filter(|b| !new.budgets.iter().any(|n| n.id == b.id))
        .map(|b| crate::limits::compiled::budget_field(&b.id))
        .collect()
}
