//! Turning create/update bodies into valid configs, with a 400-worthy message for
//! everything that is wrong. Create lives here; `update` applies a `PUT`, `budgets` and
//! `rate_limit` build those parts for both.

mod budgets;
mod rate_limit;
mod update;

pub use update::update_config;

use super::config::{CreateModelConfig, ModelConfig, Scope};
use super::duration::parse_duration_ms;
use super::id::Id;
use budgets::{budget_inputs, build_budgets};
use chrono::{DateTime, Utc};
use rate_limit::build_rate_limit;
use std::fmt;

/// Largest request/token limit: Lua numbers are doubles, exact below 2^53.
pub const MAX_COUNT_LIMIT: u64 = (1 << 53) - 1;
/// Largest budget in dollars (kept in nano-dollars in the counters).
pub const MAX_BUDGET_DOLLARS: f64 = 1e9;
pub const MAX_BUDGETS: usize = 16;
pub const MAX_NAME_LEN: usize = 256;
/// Alert thresholds per config at most, and the largest (a shadow limit may pass its max).
pub const MAX_THRESHOLDS: usize = 8;
pub const MAX_THRESHOLD: f64 = 10.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(pub String);

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValidationError {}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError(msg.into()))
}

pub fn new_id() -> Id {
    Id::from(uuid::Uuid::new_v4().to_string())
}

fn check_name(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return invalid(format!("{field} must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return invalid(format!("{field} must be at most {MAX_NAME_LEN} characters"));
    }
    // Checks match names exactly, so " gpt-4o" would be a config nothing ever matches.
    if value.trim() != value {
        return invalid(format!(
            "{field} must not start or end with whitespace (got {value:?})"
        ));
    }
    Ok(())
}

/// Absent or `""`: `global`, as Bifrost's `createModelConfig` and its model-config
/// `BeforeSave` hook default it.
fn parse_scope(scope: Option<&str>) -> Result<Scope, ValidationError> {
    match scope {
        None | Some("") => Ok(Scope::Global),
        Some(s) => Scope::parse(s).ok_or_else(|| {
            ValidationError(format!(
                "scope must be one of global, virtual_key, user (got {s:?})"
            ))
        }),
    }
}

fn check_provider(provider: Option<String>) -> Result<Option<String>, ValidationError> {
    if let Some(p) = &provider {
        check_name("provider", p)?;
    }
    Ok(provider)
}

/// Alert thresholds, sorted: each a fraction of a limit's max, 0 < t <= 10, no two equal.
pub fn check_thresholds(field: &str, list: &[f64]) -> Result<Vec<f64>, ValidationError> {
    if list.len() > MAX_THRESHOLDS {
        return invalid(format!(
            "{field} may list at most {MAX_THRESHOLDS} thresholds (got {})",
            list.len()
        ));
    }
    for (i, t) in list.iter().enumerate() {
        if !t.is_finite() || *t <= 0.0 || *t > MAX_THRESHOLD {
            return invalid(format!(
                "{field}[{i}] must be a fraction of the limit's max, > 0 and <= {MAX_THRESHOLD} (got {t})"
            ));
        }
    }
    let mut sorted = list.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return invalid(format!("{field} lists a threshold twice"));
    }
    Ok(sorted)
}

fn check_duration(field: &str, value: &str) -> Result<u64, ValidationError> {
    parse_duration_ms(value).map_err(|e| ValidationError(format!("{field}: {e}")))
}

pub fn create_config(
    req: CreateModelConfig,
    now: DateTime<Utc>,
) -> Result<ModelConfig, ValidationError> {
    let Some(model_name) = req.model_name else {
        return invalid("model_name is required (use \"*\" for all models)");
    };
    check_name("model_name", &model_name)?;
    let provider = check_provider(req.provider)?;
    let scope = parse_scope(req.scope.as_deref())?;
    let scope_id = match scope {
        Scope::Global => None,
        _ => match req.scope_id {
            None => {
                return invalid(format!(
                    "scope_id is required when scope is {}",
                    scope.as_str()
                ));
            }
            Some(id) => {
                check_name("scope_id", &id)?;
                Some(id)
            }
        },
    };
    let budgets = match budget_inputs(req.budgets, req.budget)? {
        Some(list) => build_budgets(list, &[], now)?,
        None => Vec::new(),
    };
    let rate_limit = match req.rate_limit {
        Some(rl) => build_rate_limit(rl, None, now)?,
        None => None,
    };
    let alert_thresholds = match &req.alert_thresholds {
        Some(list) => Some(check_thresholds("alert_thresholds", list)?),
        None => None,
    };
    Ok(ModelConfig {
        id: new_id(),
        model_name: model_name.into(),
        provider: provider.map(Into::into),
        scope,
        scope_id: scope_id.map(Id::from),
        calendar_aligned: req.calendar_aligned.unwrap_or(false),
        budgets,
        rate_limit,
        created_at: now,
        updated_at: now,
        revision: 1,
        managed_by: None,
        enforcement: req.enforcement.unwrap_or_default(),
        alert_thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: serde_json::Value) -> Result<ModelConfig, ValidationError> {
        create_config(serde_json::from_value(body).unwrap(), Utc::now())
    }

    fn err(body: serde_json::Value) -> String {
        create(body).unwrap_err().0
    }

    #[test]
    fn minimal_create_is_global_for_all_providers() {
        let c = create(json!({"model_name": "*"})).unwrap();
        assert_eq!(
            (c.scope, c.scope_id, c.provider),
            (Scope::Global, None, None)
        );
        assert!(c.budgets.is_empty() && c.rate_limit.is_none());
    }

    #[test]
    fn scope_id_rules() {
        assert!(err(json!({"model_name": "m", "scope": "user"})).contains("scope_id is required"));
        assert!(
            err(json!({"model_name": "m", "scope": "team", "scope_id": "x"}))
                .contains("scope must be one of")
        );
        let g = create(json!({"model_name": "m", "scope_id": "ignored"})).unwrap();
        assert_eq!(g.scope_id, None);
        let blank = create(json!({"model_name": "m", "scope": "", "scope_id": "x"})).unwrap();
        assert_eq!((blank.scope, blank.scope_id), (Scope::Global, None));
    }

    #[test]
    fn rejects_bad_fields_with_their_names() {
        assert!(err(json!({})).contains("model_name is required"));
        assert!(err(json!({"model_name": ""})).contains("model_name must not be empty"));
        assert!(
            err(json!({"model_name": "m", "provider": ""})).contains("provider must not be empty")
        );
        assert!(
            err(json!({"model_name": "m", "budgets": [{"max_limit": -1, "reset_duration": "1d"}]}))
                .contains("budgets[0].max_limit")
        );
        assert!(
            err(json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "0s"}]}))
                .contains("budgets[0].reset_duration")
        );
        assert!(
            err(json!({"model_name": "m", "budgets": [{"max_limit": 1}]}))
                .contains("reset_duration is required")
        );
        assert!(err(json!({"model_name": "m", "rate_limit": {"token_max_limit": 0, "token_reset_duration": "1m"}})).contains("token_max_limit must be greater than 0"));
        assert!(
            err(json!({"model_name": "m", "rate_limit": {"request_max_limit": 5}}))
                .contains("needs rate_limit.request_reset_duration")
        );
        assert!(err(json!({"model_name": "m", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "soon"}})).contains("request_reset_duration"));
    }

    #[test]
    fn equal_budget_durations_are_rejected_even_when_spelled_differently() {
        let e = err(json!({"model_name": "m", "budgets": [
            {"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "24h"}]}));
        assert!(e.contains("budgets[1].reset_duration"), "{e}");
    }

    #[test]
    fn enforcement_and_thresholds() {
        use crate::model::config::Enforcement;
        let c = create(json!({"model_name": "m"})).unwrap();
        assert_eq!(
            (c.enforcement, c.alert_thresholds),
            (Enforcement::Enforce, None)
        );
        let c = create(json!({"model_name": "m", "enforcement": "shadow",
                              "alert_thresholds": [0.9, 0.5]}))
        .unwrap();
        assert_eq!(c.enforcement, Enforcement::Shadow);
        assert_eq!(c.alert_thresholds, Some(vec![0.5, 0.9]), "sorted");
        assert!(
            err(json!({"model_name": "m", "alert_thresholds": [0.0]}))
                .contains("alert_thresholds[0]")
        );
        assert!(err(json!({"model_name": "m", "alert_thresholds": [11]})).contains("<= 10"));
        assert!(err(json!({"model_name": "m", "alert_thresholds": [0.5, 0.5]})).contains("twice"));
        let none = create(json!({"model_name": "m", "alert_thresholds": []})).unwrap();
        assert_eq!(none.alert_thresholds, Some(vec![]));
    }

    #[test]
    fn legacy_budget_becomes_budgets() {
        let c = create(
            json!({"model_name": "m", "budget": {"max_limit": 5.5, "reset_duration": "monthly"}}),
        )
        .unwrap();
        assert_eq!(c.budgets.len(), 1);
        assert_eq!(c.budgets[0].max_limit, 5.5);
        assert!(err(json!({"model_name": "m", "budget": {"max_limit": 1, "reset_duration": "1d"}, "budgets": []})).contains("either"));
    }

    #[test]
    fn names_with_surrounding_whitespace_are_rejected() {
        for (field, body) in [
            ("model_name", json!({"model_name": " gpt-4o"})),
            (
                "provider",
                json!({"model_name": "m", "provider": "openai\t"}),
            ),
            (
                "scope_id",
                json!({"model_name": "m", "scope": "user", "scope_id": "u1 "}),
            ),
        ] {
            let e = err(body);
            assert!(e.contains(field) && e.contains("whitespace"), "{e}");
        }
        assert!(
            create(json!({"model_name": "gpt 4o"})).is_ok(),
            "inner blanks are fine"
        );
    }
}
