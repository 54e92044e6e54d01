//! Turning create/update bodies into valid configs, with a 400-worthy message for
//! everything that is wrong.

use super::config::{
    Budget, BudgetInput, CreateModelConfig, ModelConfig, RateLimit, RateLimitInput, Scope,
    UpdateModelConfig,
};
use super::duration::parse_duration_ms;
use chrono::{DateTime, Utc};
use std::fmt;

/// Largest request/token limit: Lua numbers are doubles, exact below 2^53.
pub const MAX_COUNT_LIMIT: u64 = (1 << 53) - 1;
/// Largest budget in dollars (kept in nano-dollars in the counters).
pub const MAX_BUDGET_DOLLARS: f64 = 1e9;
pub const MAX_BUDGETS: usize = 16;
pub const MAX_NAME_LEN: usize = 256;

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

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
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

fn parse_scope(scope: Option<&str>) -> Result<Scope, ValidationError> {
    match scope {
        None => Ok(Scope::Global),
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

fn check_duration(field: &str, value: &str) -> Result<u64, ValidationError> {
    parse_duration_ms(value).map_err(|e| ValidationError(format!("{field}: {e}")))
}

/// Builds the budget set, keeping the identity (and so the counters) of existing budgets
/// matched by `id` or, failing that, by equal `reset_duration`. Explicit ids claim their
/// budgets first, so one update can move a budget to a new duration and add another at
/// the old one.
fn build_budgets(
    inputs: Vec<BudgetInput>,
    existing: &[Budget],
    now: DateTime<Utc>,
) -> Result<Vec<Budget>, ValidationError> {
    if inputs.len() > MAX_BUDGETS {
        return invalid(format!("at most {MAX_BUDGETS} budgets per config"));
    }
    // (duration in ms, the existing budget claimed by an explicit id, the input)
    let mut parsed: Vec<(u64, Option<&Budget>, f64, String)> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let field = format!("budgets[{i}]");
        let Some(max_limit) = input.max_limit else {
            return invalid(format!("{field}.max_limit is required"));
        };
        if !max_limit.is_finite() || max_limit < 0.0 {
            return invalid(format!("{field}.max_limit must be a number >= 0 (dollars)"));
        }
        if max_limit > MAX_BUDGET_DOLLARS {
            return invalid(format!(
                "{field}.max_limit must be at most {MAX_BUDGET_DOLLARS} dollars"
            ));
        }
        let Some(reset_duration) = input.reset_duration else {
            return invalid(format!("{field}.reset_duration is required"));
        };
        let ms = check_duration(&format!("{field}.reset_duration"), &reset_duration)?;
        if let Some((_, _, _, other)) = parsed.iter().find(|(other_ms, ..)| *other_ms == ms) {
            return invalid(format!(
                "{field}.reset_duration {reset_duration:?} equals the duration of another budget ({other:?}); each budget needs its own reset_duration"
            ));
        }
        let claimed = match &input.id {
            Some(id) => match existing.iter().find(|b| &b.id == id) {
                Some(b)
                    if parsed
                        .iter()
                        .any(|(_, c, ..)| c.is_some_and(|c| c.id == b.id)) =>
                {
                    return invalid(format!("{field} refers to budget {id:?} twice"));
                }
                Some(b) => Some(b),
                None => {
                    return invalid(format!("{field}.id {id:?} is not a budget of this config"));
                }
            },
            None => None,
        };
        parsed.push((ms, claimed, max_limit, reset_duration));
    }
    let claimed_by_id = |b: &Budget| {
        parsed
            .iter()
            .any(|(_, c, ..)| c.is_some_and(|c| c.id == b.id))
    };
    let by_duration = |ms: u64| {
        existing
            .iter()
            .find(|b| parse_duration_ms(&b.reset_duration).ok() == Some(ms) && !claimed_by_id(b))
    };
    Ok(parsed
        .iter()
        .map(|(ms, claimed, max_limit, reset_duration)| {
            match claimed.or_else(|| by_duration(*ms)) {
                Some(prev) => Budget {
                    id: prev.id.clone(),
                    max_limit: *max_limit,
                    reset_duration: reset_duration.clone(),
                    created_at: prev.created_at,
                    updated_at: now,
                },
                None => Budget {
                    id: new_id(),
                    max_limit: *max_limit,
                    reset_duration: reset_duration.clone(),
                    created_at: now,
                    updated_at: now,
                },
            }
        })
        .collect())
}

/// Validates one max/duration pair of a rate limit. A duration without a max is dropped.
fn limit_pair(
    name: &str,
    max: Option<u64>,
    duration: Option<String>,
) -> Result<(Option<u64>, Option<String>), ValidationError> {
    let field = format!("rate_limit.{name}_max_limit");
    let dfield = format!("rate_limit.{name}_reset_duration");
    if let Some(d) = &duration {
        check_duration(&dfield, d)?;
    }
    match max {
        None => Ok((None, None)),
        Some(0) => invalid(format!("{field} must be greater than 0")),
        Some(m) if m > MAX_COUNT_LIMIT => {
            invalid(format!("{field} must be at most {MAX_COUNT_LIMIT}"))
        }
        Some(m) => match duration {
            None => invalid(format!("{field} needs {dfield}")),
            Some(d) => Ok((Some(m), Some(d))),
        },
    }
}

/// `None` when both maxes are absent: no rate limit at all.
fn build_rate_limit(
    input: RateLimitInput,
    existing: Option<&RateLimit>,
    now: DateTime<Utc>,
) -> Result<Option<RateLimit>, ValidationError> {
    let (token_max_limit, token_reset_duration) =
        limit_pair("token", input.token_max_limit, input.token_reset_duration)?;
    let (request_max_limit, request_reset_duration) = limit_pair(
        "request",
        input.request_max_limit,
        input.request_reset_duration,
    )?;
    if token_max_limit.is_none() && request_max_limit.is_none() {
        return Ok(None);
    }
    Ok(Some(RateLimit {
        id: existing.map_or_else(new_id, |r| r.id.clone()),
        token_max_limit,
        token_reset_duration,
        request_max_limit,
        request_reset_duration,
        created_at: existing.map_or(now, |r| r.created_at),
        updated_at: now,
    }))
}

fn budget_inputs(
    budgets: Option<Vec<BudgetInput>>,
    budget: Option<BudgetInput>,
) -> Result<Option<Vec<BudgetInput>>, ValidationError> {
    match (budgets, budget) {
        (Some(_), Some(_)) => invalid("give either budgets or the legacy budget, not both"),
        (Some(list), None) => Ok(Some(list)),
        (None, Some(one)) => Ok(Some(vec![one])),
        (None, None) => Ok(None),
    }
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
    Ok(ModelConfig {
        id: new_id(),
        model_name,
        provider,
        scope,
        scope_id,
        calendar_aligned: req.calendar_aligned.unwrap_or(false),
        budgets,
        rate_limit,
        created_at: now,
        updated_at: now,
        revision: 1,
    })
}

/// Applies an update to `current`, returning the new config.
pub fn update_config(
    current: &ModelConfig,
    req: UpdateModelConfig,
    now: DateTime<Utc>,
) -> Result<ModelConfig, ValidationError> {
    if let Some(scope) = &req.scope {
        let scope = parse_scope(Some(scope))?;
        if scope != current.scope {
            return invalid(format!(
                "scope is part of a config's identity and cannot change (is {}, got {})",
                current.scope.as_str(),
                scope.as_str()
            ));
        }
    }
    if current.scope != Scope::Global
        && let Some(scope_id) = &req.scope_id
        && Some(scope_id) != current.scope_id.as_ref()
    {
        return invalid(format!(
            "scope_id is part of a config's identity and cannot change (is {:?}, got {scope_id:?})",
            current.scope_id.as_deref().unwrap_or_default()
        ));
    }
    let mut next = current.clone();
    if let Some(model_name) = req.model_name {
        check_name("model_name", &model_name)?;
        next.model_name = model_name;
    }
    if let Some(provider) = req.provider {
        next.provider = check_provider(provider)?;
    }
    if let Some(aligned) = req.calendar_aligned {
        next.calendar_aligned = aligned;
    }
    if let Some(list) = budget_inputs(req.budgets, req.budget)? {
        next.budgets = build_budgets(list, &current.budgets, now)?;
    }
    match req.rate_limit {
        None => {}
        Some(None) => next.rate_limit = None,
        Some(Some(rl)) => next.rate_limit = build_rate_limit(rl, current.rate_limit.as_ref(), now)?,
    }
    next.updated_at = now;
    next.revision = current.revision + 1;
    Ok(next)
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
    fn update_keeps_matched_budget_ids_and_rejects_identity_changes() {
        let c = create(
            json!({"model_name": "m", "scope": "user", "scope_id": "u1", "budgets": [
            {"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1w"}]}),
        )
        .unwrap();
        let by_id = c.budgets[1].id.clone();
        let by_duration = c.budgets[0].id.clone();
        let req: UpdateModelConfig = serde_json::from_value(json!({"budgets": [
            {"id": by_id, "max_limit": 9, "reset_duration": "2w"},
            {"max_limit": 3, "reset_duration": "24h"},
            {"max_limit": 4, "reset_duration": "1h"}]}))
        .unwrap();
        let u = update_config(&c, req, Utc::now()).unwrap();
        assert_eq!(u.budgets[0].id, by_id);
        assert_eq!(u.budgets[1].id, by_duration);
        assert!(u.budgets[2].id != by_id && u.budgets[2].id != by_duration);

        let bad: UpdateModelConfig = serde_json::from_value(json!({"scope_id": "u2"})).unwrap();
        assert!(
            update_config(&c, bad, Utc::now())
                .unwrap_err()
                .0
                .contains("scope_id")
        );
        let bad: UpdateModelConfig = serde_json::from_value(json!({"scope": "global"})).unwrap();
        assert!(
            update_config(&c, bad, Utc::now())
                .unwrap_err()
                .0
                .contains("scope")
        );
        let same: UpdateModelConfig =
            serde_json::from_value(json!({"scope": "user", "scope_id": "u1"})).unwrap();
        assert!(update_config(&c, same, Utc::now()).is_ok());
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

    #[test]
    fn a_budget_moved_by_id_frees_its_old_duration_in_either_order() {
        let c = create(
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}),
        )
        .unwrap();
        let b = c.budgets[0].id.clone();
        let moved = json!({"id": b, "max_limit": 9, "reset_duration": "2d"});
        let added = json!({"max_limit": 7, "reset_duration": "1d"});
        for budgets in [json!([moved, added]), json!([added, moved])] {
            let req: UpdateModelConfig =
                serde_json::from_value(json!({ "budgets": budgets })).unwrap();
            let u = update_config(&c, req, Utc::now()).unwrap();
            let by_duration = |d: &str| u.budgets.iter().find(|x| x.reset_duration == d).unwrap();
            assert_eq!(
                by_duration("2d").id,
                b,
                "the moved budget keeps its id (and counters)"
            );
            assert_ne!(
                by_duration("1d").id,
                b,
                "the one at the old duration is new"
            );
        }
        let twice: UpdateModelConfig = serde_json::from_value(json!({"budgets": [
            {"id": b, "max_limit": 1, "reset_duration": "2d"},
            {"id": b, "max_limit": 1, "reset_duration": "3d"}]}))
        .unwrap();
        assert!(
            update_config(&c, twice, Utc::now())
                .unwrap_err()
                .0
                .contains("twice")
        );
    }

    #[test]
    fn update_rate_limit_null_removes_and_absent_keeps() {
        let c = create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}})).unwrap();
        let keep: UpdateModelConfig = serde_json::from_value(json!({"model_name": "n"})).unwrap();
        let kept = update_config(&c, keep, Utc::now()).unwrap();
        assert_eq!(
            kept.rate_limit.as_ref().unwrap().id,
            c.rate_limit.as_ref().unwrap().id
        );
        let remove: UpdateModelConfig =
            serde_json::from_value(json!({"rate_limit": null})).unwrap();
        assert!(
            update_config(&c, remove, Utc::now())
                .unwrap()
                .rate_limit
                .is_none()
        );
        let both_null: UpdateModelConfig =
            serde_json::from_value(json!({"rate_limit": {"request_max_limit": null}})).unwrap();
        assert!(
            update_config(&c, both_null, Utc::now())
                .unwrap()
                .rate_limit
                .is_none()
        );
        let replace: UpdateModelConfig = serde_json::from_value(
            json!({"rate_limit": {"token_max_limit": 7, "token_reset_duration": "1h"}}),
        )
        .unwrap();
        let r = update_config(&c, replace, Utc::now())
            .unwrap()
            .rate_limit
            .unwrap();
        assert_eq!((r.token_max_limit, r.request_max_limit), (Some(7), None));
        assert_eq!(r.id, c.rate_limit.as_ref().unwrap().id);
    }

    #[test]
    fn provider_null_clears_and_absent_keeps() {
        let c = create(json!({"model_name": "m", "provider": "openai"})).unwrap();
        let keep: UpdateModelConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            update_config(&c, keep, Utc::now())
                .unwrap()
                .provider
                .as_deref(),
            Some("openai")
        );
        let clear: UpdateModelConfig = serde_json::from_value(json!({"provider": null})).unwrap();
        assert_eq!(update_config(&c, clear, Utc::now()).unwrap().provider, None);
    }
}
