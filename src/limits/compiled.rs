//! A config turned into the list of limits a check evaluates.

use super::period::PeriodGrid;
use crate::model::{
    ModelConfig, Scope, dollars_to_nanos, duration::parse_duration_ms, nanos_to_dollars,
};
use serde::Serialize;

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

    /// The one-letter kind code of the Lua scripts.
    pub fn code(self) -> &'static str {
        match self {
            LimitKind::Requests => "r",
            LimitKind::Tokens => "t",
            LimitKind::Budget => "b",
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
    /// This limit's fixed fields in a check answer, as JSON: an object without its
    /// closing brace, for the answer to append the counts. Serialized once per snapshot
    /// instead of on every check (it was 11% of tollgate's CPU).
    pub answer_head: String,
}

/// The fixed fields of a limit in a check answer (`answer_head`).
#[derive(Serialize)]
struct AnswerHead<'a> {
    config_id: &'a str,
    scope: Scope,
    scope_id: Option<&'a str>,
    model_name: &'a str,
    provider: Option<&'a str>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_id: Option<&'a str>,
    reset_duration: &'a str,
    max: serde_json::Value,
}

impl LimitKind {
    /// A count as the client sees it: whole requests/tokens, or dollars for budgets.
    pub fn quantity(self, raw: i64) -> serde_json::Value {
        match self {
            LimitKind::Budget => serde_json::Value::from(nanos_to_dollars(raw)),
            _ => serde_json::Value::from(raw),
        }
    }
}

fn answer_head(config: &ModelConfig, spec: &LimitSpec) -> String {
    let head = AnswerHead {
        config_id: &config.id,
        scope: config.scope,
        scope_id: config.scope_id.as_deref(),
        model_name: &config.model_name,
        provider: config.provider.as_deref(),
        kind: spec.kind.as_str(),
        budget_id: spec.budget_id.as_deref(),
        reset_duration: &spec.reset_duration,
        max: spec.kind.quantity(spec.max),
    };
    let mut json = serde_json::to_string(&head).expect("plain data serializes");
    json.pop(); // the closing brace
    json
}

#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub config: ModelConfig,
    pub limits: Vec<LimitSpec>,
    /// The limits as the Lua scripts read them: one binary argument per config, per limit
    /// `struct.pack('<c1Bc0dddd', kind, field, max, length, grid mode, grid param)` (see
    /// `lua/lib.lua`). Built once per snapshot, so a check only adds its amounts.
    /// Shared, so a coalesced call can carry it without copying.
    pub lua_limits: std::sync::Arc<[u8]>,
    /// Each limit's usage as this replica last saw it (`from_memory=true` lists).
    pub seen: super::seen::SeenUsage,
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
                    answer_head: String::new(),
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
                    answer_head: String::new(),
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
                answer_head: String::new(),
            });
        }
        for spec in &mut limits {
            spec.answer_head = answer_head(&config, spec);
        }
        let lua_limits = lua_limits(&limits).into();
        Ok(CompiledConfig {
            config,
            seen: super::seen::SeenUsage::new(limits.len()),
            limits,
            lua_limits,
        })
    }
}

fn lua_limits(limits: &[LimitSpec]) -> Vec<u8> {
    let mut out = Vec::with_capacity(limits.len() * 80);
    for l in limits {
        let (mode, param) = match l.grid {
            Some(grid) => {
                let (mode, param, _) = grid.lua_args();
                (mode, param)
            }
            None => (0, 0),
        };
        out.extend_from_slice(l.kind.code().as_bytes());
        // Fields are "r", "t" or "b:<uuid>": far below the 255-byte length prefix.
        out.push(u8::try_from(l.field.len()).expect("limit field under 256 bytes"));
        out.extend_from_slice(l.field.as_bytes());
        for value in [l.max as f64, l.len_ms as f64, f64::from(mode), param as f64] {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out
}

pub fn budget_field(budget_id: &str) -> String {
    format!("b:{budget_id}")
}
