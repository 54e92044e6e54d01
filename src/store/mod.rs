//! Where configs and counters live: one small trait, two backends.
//!
//! `redis` shares everything between replicas (every counter operation is one Lua script
//! call); `memory` is the embedded single-instance store. Both implement the same
//! semantics and run the same scenario suite (`tests/scenarios.rs`).

pub mod config_log;
pub mod memory;
pub mod redis;

use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use crate::model::ModelConfig;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub use self::config_log::{ConfigChanges, ConfigState, ReseedOutcome, Seeding, Written};
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
    /// The store's data epoch is not the writer's: it must sync (and re-seed what the
    /// store lost) before it writes.
    #[error("the store's data changed epoch; sync first")]
    EpochChanged,
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
    /// The config plane's state, and the configs changed after version `since` (at most
    /// about `limit` of them; `since` = 0: only the state).
    fn config_changes(
        &self,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<ConfigChanges, StoreError>> + Send;

    /// One page of every config: start at cursor 0, stop when it answers 0. Pages may
    /// miss or repeat configs written meanwhile: a full load follows it with
    /// `config_changes` since the version it started at.
    fn scan_configs(
        &self,
        cursor: u64,
    ) -> impl Future<Output = Result<(u64, Vec<ModelConfig>), StoreError>> + Send;

    /// Puts `configs` back into a store that lost them, unless another replica does (or
    /// did): race-safe. `found` is the epoch the caller found (None: none), `min_version`
    /// its snapshot's version.
    fn reseed(
        &self,
        found: Option<&str>,
        configs: Vec<ModelConfig>,
        min_version: u64,
    ) -> impl Future<Output = Result<ReseedOutcome, StoreError>> + Send;

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
    /// ([`budget_seeds`]), in the same atomic step.
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

    /// Reachable, ready to run its scripts, and accepting writes.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Notified when another replica may have changed configs.
    fn changes(&self) -> Arc<Notify>;

    /// Why writes are not confirmed on the replicas asked for (`--redis-wait-replicas`),
    /// while that is so: the store works, with less protection against a failover.
    fn replication_shortfall(&self) -> Option<String> {
        None
    }

    /// The store's time (Redis `TIME`). Configs are stamped with it, so a budget grid
    /// anchored at a config's creation runs on the clock the scripts count with, whatever
    /// the clock of the replica that wrote it.
    fn clock(&self) -> impl Future<Output = Result<DateTime<Utc>, StoreError>> + Send;
}

/// Every config, page by page (not a consistent cut when writes go on meanwhile: a
/// replica's full load follows it with the change log).
pub async fn all_configs<S: Store>(store: &S) -> Result<Vec<ModelConfig>, StoreError> {
    let mut configs = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, page) = store.scan_configs(cursor).await?;
        configs.extend(page);
        if next == 0 {
            return Ok(configs);
        }
        cursor = next;
    }
}

/// Counter fields of a budget that `new` no longer has.
pub fn removed_budget_fields(old: &ModelConfig, new: &ModelConfig) -> Vec<String> {
    old.budgets
        .iter()
        .filter(|b| !new.budgets.iter().any(|n| n.id == b.id))
        .map(|b| crate::limits::compiled::budget_field(&b.id))
        .collect()
}

/// A budget that an update adds, and the existing budget whose current usage it starts
/// with.
#[derive(Debug, Clone)]
pub struct BudgetSeed {
    pub target: LimitSpec,
    pub source: LimitSpec,
}

/// The budgets `new` adds (ids `old` does not have) that have a shorter budget in `old`,
/// each with the closest shorter one (by `old`'s durations): today's spend is also this
/// week's. As Bifrost's `inheritUsageFromClosestShorterBudget`
/// (`transports/bifrost-http/handlers/governance.go`), which reads the config's budgets
/// as they were before the update.
pub fn budget_seeds(old: &ModelConfig, new: &ModelConfig) -> Result<Vec<BudgetSeed>, String> {
    if !new
        .budgets
        .iter()
        .any(|n| !old.budgets.iter().any(|o| o.id == n.id))
    {
        return Ok(Vec::new());
    }
    let (old, new) = (
        CompiledConfig::compile(old.clone())?,
        CompiledConfig::compile(new.clone())?,
    );
    let budgets = |c: &CompiledConfig| -> Vec<LimitSpec> {
        c.limits
            .iter()
            .filter(|l| l.kind == LimitKind::Budget)
            .cloned()
            .collect()
    };
    let existing = budgets(&old);
    Ok(budgets(&new)
        .into_iter()
        .filter(|t| !existing.iter().any(|o| o.budget_id == t.budget_id))
        .filter_map(|target| {
            let source = existing
                .iter()
                .filter(|s| s.len_ms < target.len_ms)
                .max_by_key(|s| s.len_ms)?
                .clone();
            Some(BudgetSeed { target, source })
        })
        .collect())
}
