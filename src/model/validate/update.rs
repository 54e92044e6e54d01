//! `PUT`: applying an update to a config. A field that is absent or null is unchanged
//! (Go clients send `null` for every unset pointer field, as Bifrost's
//! `UpdateModelConfigRequest` pointers do: `if req.X != nil` is its only test).

use super::budgets::{budget_inputs, build_budgets, legacy_budget_update};
use super::rate_limit::build_rate_limit;
use super::{ValidationError, check_name, check_provider, check_thresholds, invalid, parse_scope};
use crate::model::config::{ModelConfig, Scope, ThresholdsInput, UpdateModelConfig};
use chrono::{DateTime, Utc};

/// `scope`/`scope_id` are identity: a different value is a 400 (`""` and null are
/// "not sent").
fn check_identity_unchanged(
    current: &ModelConfig,
    req: &UpdateModelConfig,
) -> Result<(), ValidationError> {
    if let Some(scope) = req.scope.as_deref().filter(|s| !s.is_empty()) {
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
        && Some(scope_id.as_str()) != current.scope_id.as_deref()
    {
        return invalid(format!(
            "scope_id is part of a config's identity and cannot change (is {:?}, got {scope_id:?})",
            current.scope_id.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}

/// Applies an update to `current`, returning the new config.
pub fn update_config(
    current: &ModelConfig,
    req: UpdateModelConfig,
    now: DateTime<Utc>,
) -> Result<ModelConfig, ValidationError> {
    check_identity_unchanged(current, &req)?;
    let mut next = current.clone();
    if let Some(model_name) = req.model_name {
        check_name("model_name", &model_name)?;
        next.model_name = model_name.into();
    }
    match req.provider {
        None => {}
        // Bifrost stores "" and then refuses it in its BeforeSave hook (a 500); here it
        // widens the config to every provider, the one thing "" can mean.
        Some(p) if p.is_empty() => next.provider = None,
        Some(p) => next.provider = check_provider(Some(p))?.map(Into::into),
    }
    if let Some(aligned) = req.calendar_aligned {
        next.calendar_aligned = aligned;
    }
    match (req.budgets, req.budget) {
        (None, Some(legacy)) => {
            let list = legacy_budget_update(legacy, &current.budgets)?;
            // The client sent `budget`, so name that in errors about the first entry.
            next.budgets = build_budgets(list, &current.budgets, now)
                .map_err(|e| ValidationError(e.0.replacen("budgets[0]", "budget", 1)))?;
        }
        (budgets, budget) => {
            if let Some(list) = budget_inputs(budgets, budget)? {
                next.budgets = build_budgets(list, &current.budgets, now)?;
            }
        }
    }
    if let Some(rl) = req.rate_limit {
        next.rate_limit = build_rate_limit(rl, current.rate_limit.as_ref(), now)?;
    }
    if let Some(enforcement) = req.enforcement {
        next.enforcement = enforcement;
    }
    match req.alert_thresholds {
        None => {}
        Some(ThresholdsInput::List(list)) => {
            next.alert_thresholds = Some(check_thresholds("alert_thresholds", &list)?);
        }
        Some(ThresholdsInput::Default(word)) if word == "default" => next.alert_thresholds = None,
        Some(ThresholdsInput::Default(word)) => {
            return invalid(format!(
                "alert_thresholds must be a list of fractions or \"default\" (got {word:?})"
            ));
        }
    }
    next.updated_at = now;
    next.revision = current.revision + 1;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use serde_json::json;

    fn create(body: serde_json::Value) -> ModelConfig {
        create_config(serde_json::from_value(body).unwrap(), Utc::now()).unwrap()
    }

    fn update(c: &ModelConfig, body: serde_json::Value) -> Result<ModelConfig, ValidationError> {
        update_config(c, serde_json::from_value(body).unwrap(), Utc::now())
    }

    #[test]
    fn update_keeps_matched_budget_ids_and_rejects_identity_changes() {
        let c = create(
            json!({"model_name": "m", "scope": "user", "scope_id": "u1", "budgets": [
            {"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1w"}]}),
        );
        let by_id = c.budgets[1].id.clone();
        let by_duration = c.budgets[0].id.clone();
        let u = update(
            &c,
            json!({"budgets": [
            {"id": by_id, "max_limit": 9, "reset_duration": "2w"},
            {"max_limit": 3, "reset_duration": "24h"},
            {"max_limit": 4, "reset_duration": "1h"}]}),
        )
        .unwrap();
        assert_eq!(u.budgets[0].id, by_id);
        assert_eq!(u.budgets[1].id, by_duration);
        assert!(u.budgets[2].id != by_id && u.budgets[2].id != by_duration);

        let e = update(&c, json!({"scope_id": "u2"})).unwrap_err().0;
        assert!(e.contains("scope_id"), "{e}");
        let e = update(&c, json!({"scope": "global"})).unwrap_err().0;
        assert!(e.contains("scope"), "{e}");
        assert!(update(&c, json!({"scope": "user", "scope_id": "u1"})).is_ok());
        // Unset Go fields: null, or "" for a non-pointer string.
        assert!(update(&c, json!({"scope": "", "scope_id": null})).is_ok());
    }

    #[test]
    fn a_budget_moved_by_id_frees_its_old_duration_in_either_order() {
        let c = create(
            json!({"model_name": "m", "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}),
        );
        let b = c.budgets[0].id.clone();
        let moved = json!({"id": b, "max_limit": 9, "reset_duration": "2d"});
        let added = json!({"max_limit": 7, "reset_duration": "1d"});
        for budgets in [json!([moved, added]), json!([added, moved])] {
            let u = update(&c, json!({ "budgets": budgets })).unwrap();
            let by_duration = |d: &str| u.budgets.iter().find(|x| x.reset_duration == d).unwrap();
            assert_eq!(by_duration("2d").id, b, "the moved budget keeps its id");
            assert_ne!(
                by_duration("1d").id,
                b,
                "the one at the old duration is new"
            );
        }
        let twice = json!({"budgets": [
            {"id": b, "max_limit": 1, "reset_duration": "2d"},
            {"id": b, "max_limit": 1, "reset_duration": "3d"}]});
        assert!(update(&c, twice).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn rate_limit_null_keeps_and_empty_removes() {
        let c = create(
            json!({"model_name": "m", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}),
        );
        let rl_id = c.rate_limit.as_ref().unwrap().id.clone();
        for keep in [json!({"model_name": "n"}), json!({"rate_limit": null})] {
            let kept = update(&c, keep).unwrap();
            assert_eq!(kept.rate_limit.as_ref().unwrap().id, rl_id);
        }
        for remove in [
            json!({"rate_limit": {}}),
            json!({"rate_limit": {"request_max_limit": null, "token_max_limit": null}}),
        ] {
            assert!(update(&c, remove).unwrap().rate_limit.is_none());
        }
        let r = update(
            &c,
            json!({"rate_limit": {"token_max_limit": 7, "token_reset_duration": "1h"}}),
        )
        .unwrap()
        .rate_limit
        .unwrap();
        assert_eq!((r.token_max_limit, r.request_max_limit), (Some(7), None));
        assert_eq!(r.id, rl_id);
    }

    #[test]
    fn provider_null_keeps_and_empty_clears() {
        let c = create(json!({"model_name": "m", "provider": "openai"}));
        for keep in [json!({}), json!({"provider": null})] {
            assert_eq!(
                update(&c, keep).unwrap().provider.as_deref(),
                Some("openai")
            );
        }
        assert_eq!(update(&c, json!({"provider": ""})).unwrap().provider, None);
        let u = update(&c, json!({"provider": "anthropic"})).unwrap();
        assert_eq!(u.provider.as_deref(), Some("anthropic"));
        assert!(
            update(&c, json!({"provider": " x"}))
                .unwrap_err()
                .0
                .contains("whitespace")
        );
    }

    #[test]
    fn every_null_field_changes_nothing() {
        let c = create(
            json!({"model_name": "m", "provider": "openai", "calendar_aligned": true,
            "budgets": [{"max_limit": 1, "reset_duration": "1d"}],
            "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}),
        );
        let u = update(
            &c,
            json!({"model_name": null, "provider": null, "scope": null, "scope_id": null,
                   "calendar_aligned": null, "budgets": null, "budget": null, "rate_limit": null}),
        )
        .unwrap();
        let same = |m: &ModelConfig| {
            (
                m.model_name.clone(),
                m.provider.clone(),
                m.calendar_aligned,
                m.budgets.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
                m.rate_limit.as_ref().map(|r| r.id.clone()),
            )
        };
        assert_eq!(same(&u), same(&c));
    }

    #[test]
    fn legacy_budget_updates_the_first_budget_or_creates_it() {
        let c = create(json!({"model_name": "m", "budgets": [
            {"max_limit": 1, "reset_duration": "1d"}, {"max_limit": 2, "reset_duration": "1w"}]}));
        let u = update(&c, json!({"budget": {"max_limit": 120}})).unwrap();
        assert_eq!(u.budgets.len(), 2, "the other budgets stay");
        assert_eq!(
            u.budgets[0].id, c.budgets[0].id,
            "the first keeps its id (usage)"
        );
        assert_eq!(
            (u.budgets[0].max_limit, u.budgets[0].reset_duration.as_str()),
            (120.0, "1d")
        );
        assert_eq!(u.budgets[1].id, c.budgets[1].id);
        let u = update(&c, json!({"budget": {"reset_duration": "2d"}})).unwrap();
        assert_eq!(
            (u.budgets[0].max_limit, u.budgets[0].reset_duration.as_str()),
            (1.0, "2d")
        );
        let e = update(&c, json!({"budget": {"reset_duration": "1w"}}))
            .unwrap_err()
            .0;
        assert!(e.contains("equals the duration"), "{e}");
        let u = update(&c, json!({"budget": {}})).unwrap();
        assert_eq!(
            u.budgets.iter().map(|b| &b.id).collect::<Vec<_>>(),
            [&c.budgets[1].id]
        );

        let bare = create(json!({"model_name": "m"}));
        let u = update(
            &bare,
            json!({"budget": {"max_limit": 120, "reset_duration": "monthly"}}),
        )
        .unwrap();
        assert_eq!(u.budgets.len(), 1);
        assert_eq!(u.budgets[0].max_limit, 120.0);
        let e = update(&bare, json!({"budget": {"max_limit": 120}}))
            .unwrap_err()
            .0;
        assert!(e.contains("budget.reset_duration is required"), "{e}");
        let e = update(&bare, json!({"budget": {"reset_duration": "1d"}}))
            .unwrap_err()
            .0;
        assert!(e.contains("budget.max_limit is required"), "{e}");
        assert!(
            update(&bare, json!({"budget": {}}))
                .unwrap()
                .budgets
                .is_empty()
        );
        let e = update(&c, json!({"budget": {"max_limit": 1}, "budgets": []}))
            .unwrap_err()
            .0;
        assert!(e.contains("either"), "{e}");
        // `budgets: null` next to a legacy budget: the legacy form applies.
        let u = update(&c, json!({"budgets": null, "budget": {"max_limit": 3}})).unwrap();
        assert_eq!(u.budgets[0].max_limit, 3.0);
    }
}
