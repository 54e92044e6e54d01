//! Response shapes of the management API (Bifrost's model-config objects).

use crate::limits::{CompiledConfig, LimitKind};
use crate::model::hash::{budget_hash, config_hash, rate_limit_hash};
use crate::model::{ModelConfig, Scope, nanos_to_dollars};
use crate::store::LimitUsage;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// `POST` and `PUT` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigWritten {
    pub message: String,
    pub model_config: ModelConfigView,
}

/// `GET /api/governance/model-configs/{mc_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigFound {
    pub model_config: ModelConfigView,
}

/// `DELETE` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub message: String,
}

/// `GET /api/governance/model-configs`: one page, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigList {
    pub model_configs: Vec<ModelConfigView>,
    /// Items on this page.
    pub count: usize,
    /// Configs matching the filters, on all pages.
    pub total_count: usize,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelConfigView {
    pub id: String,
    pub model_name: String,
    pub provider: Option<String>,
    pub scope: Scope,
    pub scope_id: Option<String>,
    pub calendar_aligned: bool,
    pub budgets: Vec<BudgetView>,
    /// Legacy single-budget field: the first budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub budget: Option<BudgetView>,
    pub rate_limit: Option<RateLimitView>,
    /// Stable hash of identity and limits (`model::hash`), for config-sync tools.
    pub config_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Present when a configs file (`--configs-file`) manages this config: its path.
    /// Management-API writes to it are refused (409); change it in that file.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub managed_by: Option<String>,
    /// `enforce`, or `shadow`: counted, never refusing (what `--shadow-all` makes every
    /// config on its replica, whatever this says).
    pub enforcement: crate::model::config::Enforcement,
    /// The config's own alert thresholds; absent: the replica's `--alert-thresholds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub alert_thresholds: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BudgetView {
    pub id: String,
    pub max_limit: f64,
    pub reset_duration: String,
    /// Omitted when usage was not read (`from_memory=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reset: Option<DateTime<Utc>>,
    pub calendar_aligned: bool,
    pub config_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    pub id: String,
    pub token_max_limit: Option<u64>,
    pub token_reset_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_current_usage: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_last_reset: Option<DateTime<Utc>>,
    pub request_max_limit: Option<u64>,
    pub request_reset_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_current_usage: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_last_reset: Option<DateTime<Utc>>,
    pub config_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn at(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// `usage`: one entry per limit of `compiled`, or `None` when usage was not read.
pub fn view(compiled: &CompiledConfig, usage: Option<&[LimitUsage]>) -> ModelConfigView {
    let c: &ModelConfig = &compiled.config;
    let usage_of = |kind: LimitKind, budget_id: Option<&str>| -> Option<LimitUsage> {
        let usage = usage?;
        let pos = compiled
            .limits()
            .iter()
            .position(|l| l.kind == kind && l.budget_id() == budget_id);
        Some(pos.map_or(
            LimitUsage {
                used: 0,
                start_ms: i64::MIN,
            },
            |p| usage[p],
        ))
    };
    let budgets: Vec<BudgetView> = c
        .budgets
        .iter()
        .map(|b| {
            let u = usage_of(LimitKind::Budget, Some(&b.id));
            BudgetView {
                id: b.id.to_string(),
                max_limit: b.max_limit,
                reset_duration: b.reset_duration.to_string(),
                current_usage: u.map(|u| nanos_to_dollars(u.used)),
                last_reset: u.and_then(|u| at(u.start_ms)),
                calendar_aligned: c.calendar_aligned,
                config_hash: budget_hash(b),
                created_at: b.created_at,
                updated_at: b.updated_at,
            }
        })
        .collect();
    let rate_limit = c.rate_limit.as_ref().map(|rl| {
        let tokens = usage_of(LimitKind::Tokens, None);
        let requests = usage_of(LimitKind::Requests, None);
        RateLimitView {
            id: rl.id.to_string(),
            token_max_limit: rl.token_max_limit,
            token_reset_duration: rl.token_reset_duration.as_deref().map(str::to_owned),
            token_current_usage: tokens.map(|u| u.used),
            token_last_reset: tokens.and_then(|u| at(u.start_ms)),
            request_max_limit: rl.request_max_limit,
            request_reset_duration: rl.request_reset_duration.as_deref().map(str::to_owned),
            request_current_usage: requests.map(|u| u.used),
            request_last_reset: requests.and_then(|u| at(u.start_ms)),
            config_hash: rate_limit_hash(rl),
            created_at: rl.created_at,
            updated_at: rl.updated_at,
        }
    });
    ModelConfigView {
        id: c.id.to_string(),
        model_name: c.model_name.to_string(),
        provider: c.provider.as_deref().map(str::to_owned),
        scope: c.scope,
        scope_id: c.scope_id.as_deref().map(str::to_owned),
        calendar_aligned: c.calendar_aligned,
        budget: budgets.first().cloned(),
        budgets,
        rate_limit,
        config_hash: config_hash(c),
        created_at: c.created_at,
        updated_at: c.updated_at,
        managed_by: c.managed_by.as_deref().map(str::to_owned),
        enforcement: c.enforcement,
        alert_thresholds: c.alert_thresholds.clone(),
    }
}
