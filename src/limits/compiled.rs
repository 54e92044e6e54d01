//! A config turned into the list of limits a check evaluates. How a store or an answer
//! encodes them is theirs (`layer_cache`): no wire format here.

use super::layer_cache::LayerCache;
use super::period::PeriodGrid;
use crate::model::{ModelConfig, dollars_to_nanos, duration::parse_duration_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Budget,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Budget => "budget",
        }
    }

    pub fn denial_reason(self) -> &'static str {
        match self {
            LimitKind::Requests => "request_limited",
            LimitKind::Tokens => "token_limited",
            LimitKind::Budget => "budget_exceeded",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    pub kind: LimitKind,
    /// Name of this limit's counter inside its config's counters (`r`, `t`, `b:<id>`).
    pub field: String,
    /// Requests, tokens, or nano-dollars.
    pub max: i64,
    /// Window length, or period length for budgets.
    pub len_ms: i64,
    /// Budgets only.
    pub grid: Option<PeriodGrid>,
    pub reset_duration: String,
    pub budget_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub config: ModelConfig,
    pub limits: Vec<LimitSpec>,
    /// Each limit's usage as this replica last saw it (`from_memory=true` lists).
    pub seen: super::seen::SeenUsage,
    /// What the store and the answer derive from the limits, once per compiled config.
    pub cache: LayerCache,
}

impl CompiledConfig {
    /// `max_counter_lifetime_ms` of a config about to be written (stores extend kept
    /// counters to it on update).
    pub fn counter_lifetime_of(config: &ModelConfig) -> Result<i64, String> {
        Ok(Self::compile(config.clone())?.max_counter_lifetime_ms())
    }

    /// How long this config's counters can matter after a write, at most: a window's
    /// length plus one sub-bucket, a budget's longest possible period. Used when a config
    /// changes, so counters kept across the change outlive what the old limits needed.
    pub fn max_counter_lifetime_ms(&self) -> i64 {
        use crate::model::duration::DAY_MS;
        self.limits
            .iter()
            .map(|l| match l.grid {
                None => l.len_ms + super::window::granularity_ms(l.len_ms),
                Some(PeriodGrid::Fixed { len_ms, .. }) => len_ms,
                Some(PeriodGrid::Months { n }) => n * 31 * DAY_MS as i64,
                Some(PeriodGrid::Years { n }) => n * 366 * DAY_MS as i64,
            })
            .max()
            .unwrap_or(0)
            + 1000
    }

    /// Fails only for data that bypassed validation (e.g. edited by hand in Redis).
    pub fn compile(config: ModelConfig) -> Result<Self, String> {
        let mut limits = Vec::new();
        let parse =
            |d: &str| parse_duration_ms(d).map_err(|e| format!("config {}: {e}", config.id));
        if let Some(rl) = &config.rate_limit {
            if let (Some(max), Some(d)) = (rl.request_max_limit, &rl.request_reset_duration) {
                limits.push(LimitSpec {
                    kind: LimitKind::Requests,
                    field: "r".into(),
                    max: max as i64,
                    len_ms: parse(d)? as i64,
                    grid: None,
                    reset_duration: d.clone(),
                    budget_id: None,
                });
            }
            if let (Some(max), Some(d)) = (rl.token_max_limit, &rl.token_reset_duration) {
                limits.push(LimitSpec {
                    kind: LimitKind::Tokens,
                    field: "t".into(),
                    max: max as i64,
                    len_ms: parse(d)? as i64,
                    grid: None,
                    reset_duration: d.clone(),
                    budget_id: None,
                });
            }
        }
        for b in &config.budgets {
            let len = parse(&b.reset_duration)?;
            limits.push(LimitSpec {
                kind: LimitKind::Budget,
                field: budget_field(&b.id),
                max: dollars_to_nanos(b.max_limit),
                len_ms: len as i64,
                grid: Some(PeriodGrid::new(
                    len,
                    config.calendar_aligned,
                    b.created_at.timestamp_millis(),
                )),
                reset_duration: b.reset_duration.clone(),
                budget_id: Some(b.id.clone()),
            });
        }
        Ok(CompiledConfig {
            config,
            seen: super::seen::SeenUsage::new(limits.len()),
            limits,
            cache: LayerCache::default(),
        })
    }
}

pub fn budget_field(budget_id: &str) -> String {
    format!("b:{budget_id}")
}
