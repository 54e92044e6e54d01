//! Where configs and counters live: one trait per concern, two backends.
//!
//! `Counters` (checks, usage reports, live usage), `ConfigWrites` (the management API's
//! reads and writes), `ConfigLog` (what replicas follow: state, changes, full scans,
//! re-seeds) and `Health` (readiness, the store's clock); `Store` is all four. `redis`
//! shares everything between replicas (every counter operation is one Lua script call);
//! `memory` is the embedded single-instance store. Both implement the same semantics
//! and run the same scenario suite (`tests/scenarios/`), each concern in the file that
//! owns it.

pub mod config_log;
pub mod config_writes;
pub mod counters;
pub mod health;
pub mod memory;
pub mod redis;

use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use crate::model::ModelConfig;
use std::time::Duration;

pub use self::config_log::{
    ConfigChanges, ConfigLog, ConfigState, Prepare, ReseedOutcome, Seeding, Written, all_configs,
    parse_configs, parse_configs_with,
};
pub use self::config_writes::ConfigWrites;
pub use self::counters::Counters;
pub use self::health::Health;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOutcome {
    pub admitted: bool,
    pub used: i64,
    pub reset_after_ms: i64,
    pub retry_after_ms: i64,
}

/// `allowed` is decided by the enforcing configs alone: a shadow config's limit may
/// refuse (`admitted: false`) in an allowed check, which then consumed on every limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub allowed: bool,
    pub limits: Vec<LimitOutcome>,
    /// The store's time of the decision (Unix ms): what a settling usage report passes
    /// back as `reserved_at_ms`.
    pub now_ms: i64,
    /// The alert thresholds this check made a limit reach (the store decided them, for
    /// the whole fleet at once).
    pub crossings: Vec<Crossing>,
}

/// A check that also asks for a lease (`Counters::check_leasing`, SPEC §12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseAsk {
    /// Per limit of the check's configs, in order: what this replica asks leased (0:
    /// none), and what it holds of that limit already, unspent.
    pub per_limit: Vec<[i64; 2]>,
    /// The replicas alive (N): no replica leases more than (max − used) / (2N).
    pub replicas: i64,
    /// The longest a lease may live, ms.
    pub ahead_ms: i64,
}

/// What a check that asked for a lease was granted, per limit of its configs in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    pub per_limit: Vec<LimitGrant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitGrant {
    /// What the check added to this limit, its own amount and the lease together, at
    /// the lease's end; 0 with no lease.
    pub added: i64,
    /// When the lease ends, on the store's clock (ms); 0: no lease.
    pub until_ms: i64,
    /// How long the lease lives from the store's decision (ms).
    pub life_ms: i64,
}

impl Granted {
    /// From a store's answer: the lease's end (0: none) and what each limit added.
    pub fn decode(until_ms: i64, added: &[i64], now_ms: i64) -> Self {
        let leased = until_ms > 0;
        Granted {
            per_limit: added
                .iter()
                .map(|&a| LimitGrant {
                    added: if leased { a } else { 0 },
                    until_ms: if leased { until_ms } else { 0 },
                    life_ms: if leased { until_ms - now_ms } else { 0 },
                })
                .collect(),
        }
    }

    /// No lease on any of `n` limits.
    pub fn none(n: usize) -> Self {
        Granted {
            per_limit: vec![LimitGrant::default(); n],
        }
    }

    /// The latest end of a lease granted here, if any was.
    pub fn until_ms(&self) -> Option<i64> {
        self.per_limit
            .iter()
            .map(|g| g.until_ms)
            .max()
            .filter(|&u| u > 0)
    }
}

/// A limit reaching one of its config's alert thresholds, as the store saw it happen:
/// once per budget period, or per window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    /// The limit: its position among the limits of the op's configs, in order.
    pub limit: usize,
    /// The threshold: its position in the limit's config's thresholds.
    pub threshold: usize,
    /// Usage after the op (requests, tokens or nano-dollars).
    pub used: i64,
    /// A budget's period start (ms); None for a window.
    pub period_start_ms: Option<i64>,
    /// The store's time of the op (ms).
    pub at_ms: i64,
}

/// A usage report as recorded: applied or a duplicate, and the thresholds it made a
/// limit reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub outcome: UsageOutcome,
    pub crossings: Vec<Crossing>,
}

impl Recorded {
    pub fn plain(outcome: UsageOutcome) -> Self {
        Recorded {
            outcome,
            crossings: Vec::new(),
        }
    }
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

/// Everything a backend provides, by concern: its counters (the hot path), config
/// writes, the config log replicas follow, and its health. Implemented by every type
/// that implements the four, so `S: Store` bounds need nothing else.
pub trait Store: Counters + ConfigWrites + ConfigLog + Health + Send + Sync + 'static {}

impl<T> Store for T where T: Counters + ConfigWrites + ConfigLog + Health + Send + Sync + 'static {}

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
        c.limits()
            .iter()
            .filter(|l| l.kind == LimitKind::Budget)
            .cloned()
            .collect()
    };
    let existing = budgets(&old);
    Ok(budgets(&new)
        .into_iter()
        .filter(|t| !existing.iter().any(|o| o.budget_id() == t.budget_id()))
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
