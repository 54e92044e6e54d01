//! A config turned into the list of limits a check evaluates. How a store or an answer
//! encodes them is theirs (`layer_cache`): no wire format here.

use super::layer_cache::LayerCache;
use super::period::PeriodGrid;
use super::policy::Policy;
use super::seen::SeenUsage;
use crate::model::config::Enforcement;
use crate::model::{ModelConfig, dollars_to_nanos, duration::parse_duration_ms};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Budget,
}

impl LimitKind {
    /// Every kind, in the order of `index`.
    pub const ALL: [LimitKind; 3] = [LimitKind::Requests, LimitKind::Tokens, LimitKind::Budget];

    /// The kind's position in per-kind arrays (requests, tokens, budget), the order of a
    /// check's amounts.
    pub fn index(self) -> usize {
        match self {
            LimitKind::Requests => 0,
            LimitKind::Tokens => 1,
            LimitKind::Budget => 2,
        }
    }

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

/// One limit, packed: a replica holds three per config, a million configs at a time,
/// so what the config itself says (the reset duration as written, the budget's id) is
/// read from it (`CompiledConfig::reset_duration`, `budget_id`) rather than copied here,
/// and a budget's period grid is kept as one number (`grid`).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// Requests, tokens, or nano-dollars.
    pub max: i64,
    /// Window length, or period length for budgets.
    pub len_ms: i64,
    /// The grid's number: a fixed grid's anchor, or the months or years per period.
    grid_param: i64,
    /// Budgets only: `b:<id>`, the counter's name (`field`).
    budget_field: Option<Box<str>>,
    pub kind: LimitKind,
    grid_kind: GridKind,
    /// Budgets: the budget's position in the config's `budgets`.
    budget: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GridKind {
    Window,
    Fixed,
    Months,
    Years,
}

impl LimitSpec {
    /// A request or token window of `len_ms`.
    pub fn window(kind: LimitKind, max: i64, len_ms: i64) -> Self {
        LimitSpec {
            max,
            len_ms,
            grid_param: 0,
            budget_field: None,
            kind,
            grid_kind: GridKind::Window,
            budget: 0,
        }
    }

    /// The budget at position `budget` of its config, with id `id`.
    pub fn budget(budget: u16, id: &str, max: i64, len_ms: i64, grid: PeriodGrid) -> Self {
        let (grid_kind, grid_param) = match grid {
            PeriodGrid::Fixed { anchor_ms, .. } => (GridKind::Fixed, anchor_ms),
            PeriodGrid::Months { n } => (GridKind::Months, n),
            PeriodGrid::Years { n } => (GridKind::Years, n),
        };
        LimitSpec {
            max,
            len_ms,
            grid_param,
            budget_field: Some(budget_field(id).into_boxed_str()),
            kind: LimitKind::Budget,
            grid_kind,
            budget,
        }
    }

    /// Name of this limit's counter inside its config's counters (`r`, `t`, `b:<id>`).
    pub fn field(&self) -> &str {
        match (self.kind, &self.budget_field) {
            (LimitKind::Requests, _) => "r",
            (LimitKind::Tokens, _) => "t",
            (LimitKind::Budget, f) => f.as_deref().unwrap_or_default(),
        }
    }

    /// Budgets only: the grid their periods fall on.
    pub fn grid(&self) -> Option<PeriodGrid> {
        let n = self.grid_param;
        match self.grid_kind {
            GridKind::Window => None,
            GridKind::Fixed => Some(PeriodGrid::Fixed {
                anchor_ms: n,
                len_ms: self.len_ms,
            }),
            GridKind::Months => Some(PeriodGrid::Months { n }),
            GridKind::Years => Some(PeriodGrid::Years { n }),
        }
    }

    /// The budget's id (budgets only), from the counter's name `b:<id>`.
    pub fn budget_id(&self) -> Option<&str> {
        match self.kind {
            LimitKind::Budget => self.field().strip_prefix("b:"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub config: ModelConfig,
    /// Built at the first use (`limits`, `seen`, `cache`), in one allocation: of a
    /// million configs most are never checked on a given replica, and what a check
    /// needs would be a third of what the replica holds.
    in_use: OnceLock<Box<InUse>>,
    /// As this replica applies it (`--shadow-all` makes every config shadow).
    pub enforcement: Enforcement,
    /// The alert thresholds of every limit of this config, ascending (its own, else the
    /// replica's `--alert-thresholds`); empty: no threshold events.
    pub thresholds: Arc<[f64]>,
}

/// What a config holds once it is checked.
#[derive(Debug, Clone)]
struct InUse {
    limits: Box<[LimitSpec]>,
    /// Each limit's usage as this replica last saw it (`from_memory=true` lists).
    seen: SeenUsage,
    /// What the store and the answer derive from the limits, once per compiled config.
    cache: LayerCache,
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
        self.limits()
            .iter()
            .map(|l| match l.grid() {
                None => l.len_ms + super::window::granularity_ms(l.len_ms),
                Some(PeriodGrid::Fixed { len_ms, .. }) => len_ms,
                Some(PeriodGrid::Months { n }) => n * 31 * DAY_MS as i64,
                Some(PeriodGrid::Years { n }) => n * 366 * DAY_MS as i64,
            })
            .max()
            .unwrap_or(0)
            + 1000
    }

    /// `compile_for` the default policy (enforcing, `--alert-thresholds` defaults).
    pub fn compile(config: ModelConfig) -> Result<Self, String> {
        Self::compile_for(config, &Policy::default())
    }

    /// The config as a replica with `policy` applies it. Fails only for data that
    /// bypassed validation (e.g. edited by hand in Redis).
    pub fn compile_for(mut config: ModelConfig, policy: &Policy) -> Result<Self, String> {
        each_limit(&config, |_| ())?;
        config.shrink_to_fit();
        Ok(CompiledConfig {
            enforcement: policy.enforcement(&config),
            thresholds: policy.thresholds(&config),
            config,
            in_use: OnceLock::new(),
        })
    }

    fn in_use(&self) -> &InUse {
        self.in_use.get_or_init(|| {
            let mut limits = Vec::new();
            each_limit(&self.config, |l| limits.push(l))
                .expect("a compiled config's limits compile");
            Box::new(InUse {
                seen: SeenUsage::new(limits.len()),
                limits: limits.into_boxed_slice(),
                cache: LayerCache::default(),
            })
        })
    }

    /// Every limit of the config, in check order: requests, tokens, then each budget.
    pub fn limits(&self) -> &[LimitSpec] {
        &self.in_use().limits
    }

    /// Each limit's usage as this replica last saw it, to record into.
    pub fn seen(&self) -> &SeenUsage {
        &self.in_use().seen
    }

    /// Limit `i` as this replica last saw it: (used, when in Unix ms), or None if never.
    /// Builds nothing for a config never checked.
    pub fn last_seen(&self, i: usize) -> Option<(i64, i64)> {
        self.in_use.get()?.seen.last(i)
    }

    /// Whether the config was ever checked or shown here (its limits are built).
    pub fn is_in_use(&self) -> bool {
        self.in_use.get().is_some()
    }

    /// What the store and the answer derive from the limits, once per compiled config.
    pub fn cache(&self) -> &LayerCache {
        &self.in_use().cache
    }
}

/// Each limit `config` sets, in check order, to `f`; how many. Fails on what validation
/// would have refused (hand-edited store data).
fn each_limit(config: &ModelConfig, mut f: impl FnMut(LimitSpec)) -> Result<usize, String> {
    let mut count = 0;
    let parse = |d: &str| parse_duration_ms(d).map_err(|e| format!("config {}: {e}", config.id));
    if let Some(rl) = &config.rate_limit {
        let windows = [
            (
                LimitKind::Requests,
                rl.request_max_limit,
                &rl.request_reset_duration,
            ),
            (
                LimitKind::Tokens,
                rl.token_max_limit,
                &rl.token_reset_duration,
            ),
        ];
        for (kind, max, d) in windows {
            if let (Some(max), Some(d)) = (max, d) {
                f(LimitSpec::window(kind, max as i64, parse(d)? as i64));
                count += 1;
            }
        }
    }
    for (i, b) in config.budgets.iter().enumerate() {
        let len = parse(&b.reset_duration)?;
        let at = u16::try_from(i).map_err(|_| format!("config {}: too many budgets", config.id))?;
        let grid = PeriodGrid::new(
            len,
            config.calendar_aligned,
            b.created_at.timestamp_millis(),
        );
        f(LimitSpec::budget(
            at,
            &b.id,
            dollars_to_nanos(b.max_limit),
            len as i64,
            grid,
        ));
        count += 1;
    }
    Ok(count)
}

impl CompiledConfig {
    pub fn is_shadow(&self) -> bool {
        self.enforcement == Enforcement::Shadow
    }

    /// `spec`'s reset duration as the operator wrote it (one of this config's limits).
    pub fn reset_duration(&self, spec: &LimitSpec) -> &str {
        let c = &self.config;
        let rl = c.rate_limit.as_ref();
        match spec.kind {
            LimitKind::Requests => rl.and_then(|r| r.request_reset_duration.as_deref()),
            LimitKind::Tokens => rl.and_then(|r| r.token_reset_duration.as_deref()),
            LimitKind::Budget => c
                .budgets
                .get(usize::from(spec.budget))
                .map(|b| b.reset_duration.as_str()),
        }
        .unwrap_or_default()
    }
}

pub fn budget_field(budget_id: &str) -> String {
    format!("b:{budget_id}")
}
