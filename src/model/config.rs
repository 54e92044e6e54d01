//! Model configs as stored, and the request bodies that create and update them.

use super::id::Id;
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Global,
    VirtualKey,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::VirtualKey => "virtual_key",
            Scope::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "global" => Some(Scope::Global),
            "virtual_key" => Some(Scope::VirtualKey),
            "user" => Some(Scope::User),
            _ => None,
        }
    }
}

/// Whether a config's limits refuse checks, or only count and say what they would have
/// refused: a new limit can be tried on real traffic before it is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    #[default]
    Enforce,
    Shadow,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Shadow => "shadow",
        }
    }

    pub fn is_enforce(&self) -> bool {
        *self == Enforcement::Enforce
    }
}

/// A config's own alert thresholds on update: a list (`[]`: none), or `"default"`: back
/// to the replica's `--alert-thresholds` (null on `PUT` means unchanged, so it cannot).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ThresholdsInput {
    List(Vec<f64>),
    Default(String),
}

/// A model config as kept in the store. Usage is not part of it: counters live apart
/// and are joined in when a config is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub id: Id,
    pub model_name: CompactString,
    pub provider: Option<CompactString>,
    pub scope: Scope,
    pub scope_id: Option<Id>,
    pub calendar_aligned: bool,
    pub budgets: Vec<Budget>,
    pub rate_limit: Option<RateLimit>,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; writes compare it to refuse lost updates.
    #[serde(default)]
    pub revision: u64,
    /// `shadow`: counted, never refusing (kept out of the stored JSON when `enforce`).
    #[serde(default, skip_serializing_if = "Enforcement::is_enforce")]
    pub enforcement: Enforcement,
    /// Fractions of each limit's max at which a threshold event is emitted, ascending;
    /// None: the replica's `--alert-thresholds`; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_thresholds: Option<Vec<f64>>,
    /// The configs file (`--configs-file`) this config is managed by: every replica
    /// refuses management-API writes to it. Kept in the store, so a replica started
    /// without the file refuses too. Not part of `config_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<CompactString>,
}

impl ModelConfig {
    /// The uniqueness key: at most one config per (scope, scope_id, model_name, provider).
    pub fn identity(&self) -> String {
        serde_json::to_string(&(
            self.scope,
            self.scope_id.as_deref().unwrap_or(""),
            &self.model_name,
            self.provider.as_deref(),
        ))
        .expect("identity tuple serializes")
    }

    /// Drops the spare room parsing leaves in lists (serde gives a one-element
    /// `budgets` room for four): a replica holds a million configs, and a full load
    /// holds all of them parsed at once.
    pub fn shrink_to_fit(&mut self) {
        self.budgets.shrink_to_fit();
        if let Some(t) = &mut self.alert_thresholds {
            t.shrink_to_fit();
        }
    }

    /// Sort key of the list endpoint.
    pub fn list_order(&self) -> (DateTime<Utc>, &str) {
        (self.created_at, &self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub id: Id,
    /// Dollars.
    pub max_limit: f64,
    /// As the operator wrote it; parsed again when compiled.
    pub reset_duration: CompactString,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub id: Id,
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub token_max_limit: Option<u64>,
    pub token_reset_duration: Option<CompactString>,
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub request_max_limit: Option<u64>,
    pub request_reset_duration: Option<CompactString>,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::model::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /api/governance/model-configs`. Unknown fields are ignored (wire compatibility).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CreateModelConfig {
    /// The model, or `"*"` for all models. No surrounding whitespace.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 256)]
    pub model_name: Option<String>,
    /// Absent or null: all providers. `""` is a 400 here (on update it clears).
    #[schema(min_length = 1, max_length = 256)]
    pub provider: Option<String>,
    #[schema(schema_with = crate::model::schema::scope_input)]
    pub scope: Option<String>,
    /// Required unless the scope is global (ignored then); at most 256 characters.
    pub scope_id: Option<String>,
    pub calendar_aligned: Option<bool>,
    /// At most 16, each with its own reset duration.
    pub budgets: Option<Vec<BudgetInput>>,
    /// Legacy single budget: accepted as a one-element `budgets`.
    pub budget: Option<BudgetInput>,
    pub rate_limit: Option<RateLimitInput>,
    /// `enforce` (absent or null) or `shadow`: counted like any config, never refusing;
    /// checks it would have refused list it in `shadow_denied`.
    pub enforcement: Option<Enforcement>,
    /// Fractions of each limit's max (0 < t <= 10, at most 8) at which a threshold event
    /// is emitted. Absent or null: the replica's `--alert-thresholds`; `[]`: none.
    #[schema(max_items = 8, value_type = Option<Vec<f64>>)]
    pub alert_thresholds: Option<Vec<f64>>,
}

/// `PUT /api/governance/model-configs/{id}`. A field that is absent **or null** is left
/// unchanged: Go clients serialize every unset pointer field as `null`, so `null` cannot
/// mean "remove" without silently dropping limits a client never meant to touch.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateModelConfig {
    #[schema(min_length = 1, max_length = 256)]
    pub model_name: Option<String>,
    /// A string: that provider; `""`: all providers.
    #[schema(max_length = 256)]
    pub provider: Option<String>,
    /// Identity: must equal the config's (`""` counts as not sent).
    #[schema(schema_with = crate::model::schema::scope_input)]
    pub scope: Option<String>,
    /// Identity: must equal the config's (ignored for a global config).
    pub scope_id: Option<String>,
    pub calendar_aligned: Option<bool>,
    /// `[]`: remove all; a list replaces the set.
    /// At most 16, each with its own reset duration.
    pub budgets: Option<Vec<BudgetInput>>,
    /// Legacy single budget (when `budgets` is not sent): updates the first budget's
    /// given fields, or creates it; `{}` removes the first budget.
    pub budget: Option<BudgetInput>,
    /// Replaced as a whole (counters kept); `{}` or both maxes null removes it.
    pub rate_limit: Option<RateLimitInput>,
    pub enforcement: Option<Enforcement>,
    #[schema(schema_with = crate::model::schema::thresholds_update)]
    pub alert_thresholds: Option<ThresholdsInput>,
}

/// A budget as sent. On create both fields are required; on update an entry may name an
/// existing budget by `id` (it keeps its usage).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct BudgetInput {
    pub id: Option<String>,
    /// Dollars.
    #[schema(minimum = 0.0, maximum = 1e9)]
    pub max_limit: Option<f64>,
    #[schema(schema_with = crate::model::schema::duration_or_null)]
    pub reset_duration: Option<String>,
}

/// A rate limit as sent: each max needs its duration; `{}` or both maxes null means no
/// rate limit (on update: removes it).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RateLimitInput {
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub token_max_limit: Option<u64>,
    #[schema(schema_with = crate::model::schema::duration_or_null)]
    pub token_reset_duration: Option<String>,
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub request_max_limit: Option<u64>,
    #[schema(schema_with = crate::model::schema::duration_or_null)]
    pub request_reset_duration: Option<String>,
}
