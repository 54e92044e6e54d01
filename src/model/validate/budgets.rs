//! Budget sets: building them from a request, keeping the identity (and so the counters)
//! of budgets that an update matches, and the legacy single `budget` object.

use super::{MAX_BUDGET_DOLLARS, MAX_BUDGETS, ValidationError, check_duration, invalid, new_id};
use crate::model::config::{Budget, BudgetInput};
use crate::model::duration::parse_duration_ms;
use chrono::{DateTime, Utc};

/// Builds the budget set, keeping the identity (and so the counters) of existing budgets
/// matched by `id` or, failing that, by equal `reset_duration`. Explicit ids claim their
/// budgets first, so one update can move a budget to a new duration and add another at
/// the old one.
pub(super) fn build_budgets(
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
                    reset_duration: reset_duration.as_str().into(),
                    created_at: prev.created_at,
                    updated_at: now,
                },
                None => Budget {
                    id: new_id(),
                    max_limit: *max_limit,
                    reset_duration: reset_duration.as_str().into(),
                    created_at: now,
                    updated_at: now,
                },
            }
        })
        .collect())
}

/// `budgets`, or the legacy `budget` as a one-element `budgets` (create).
pub(super) fn budget_inputs(
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

/// The budget list that a `PUT` with only the legacy `budget` object asks for: the first
/// budget with the given fields changed (it keeps its id, so its usage), or a new first
/// budget when there is none; the other budgets unchanged. `{}` (both fields null)
/// removes the first budget.
///
/// Bifrost's `coerceLegacyBudget` merges the same way, then replaces the whole set with
/// that one budget and refuses the legacy form once a config has several budgets. A
/// single-budget client cannot know about the others, so tollgate keeps them.
pub(super) fn legacy_budget_update(
    input: BudgetInput,
    existing: &[Budget],
) -> Result<Vec<BudgetInput>, ValidationError> {
    let as_input = |b: &Budget| BudgetInput {
        id: Some(b.id.to_string()),
        max_limit: Some(b.max_limit),
        reset_duration: Some(b.reset_duration.to_string()),
    };
    let rest = existing.iter().skip(1).map(as_input);
    if input.max_limit.is_none() && input.reset_duration.is_none() {
        return Ok(rest.collect());
    }
    let first = match existing.first() {
        Some(b) => BudgetInput {
            id: Some(b.id.to_string()),
            max_limit: input.max_limit.or(Some(b.max_limit)),
            reset_duration: input.reset_duration.or(Some(b.reset_duration.to_string())),
        },
        None => {
            if input.max_limit.is_none() {
                return invalid("budget.max_limit is required to create the first budget");
            }
            if input.reset_duration.is_none() {
                return invalid("budget.reset_duration is required to create the first budget");
            }
            BudgetInput { id: None, ..input }
        }
    };
    Ok(std::iter::once(first).chain(rest).collect())
}
