//! Rate limits: each max with its duration, or no rate limit at all.

use super::{MAX_COUNT_LIMIT, ValidationError, check_duration, invalid, new_id};
use crate::model::config::{RateLimit, RateLimitInput};
use chrono::{DateTime, Utc};

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

/// `None` when both maxes are absent (`{}` included): no rate limit at all, as in
/// Bifrost's `updateModelConfig` (`rateLimitIsEmpty`). `existing` keeps its id.
pub(super) fn build_rate_limit(
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
        token_reset_duration: token_reset_duration.map(Into::into),
        request_max_limit,
        request_reset_duration: request_reset_duration.map(Into::into),
        created_at: existing.map_or(now, |r| r.created_at),
        updated_at: now,
    }))
}
