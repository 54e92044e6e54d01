//! The hot path: `POST /v1/check` (atomic check-and-consume) and `POST /v1/usage`
//! (settlement after the upstream call). The check itself (`decide`) is shared with
//! Envoy's rate limit service (`api::rls`).

pub mod answer;
pub mod decide;
pub mod headers;
pub mod usage;

pub use answer::{CheckResponse, Fallback, write_answer};
pub use usage::{UsageRequest, usage};

use super::error::ApiError;
use super::extract::JsonBody;
use crate::app::App;
use crate::limits::MatchKey;
use crate::model::dollars_to_nanos;
use crate::model::validate::MAX_COUNT_LIMIT;
use crate::settings::StoreErrorPolicy;
use crate::store::{Amounts, Store};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use decide::{Checked, Decision, decide};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// Until the first snapshot load, no config is known, so "nothing matches" cannot be
/// concluded: the store has been unreachable since start.
pub const NO_SNAPSHOT: &str =
    "no config snapshot loaded yet: the store has been unreachable since start";

/// Largest cost accepted in one check or report, in dollars.
const MAX_COST_DOLLARS: f64 = 1e6;
pub const MAX_ID_LEN: usize = 256;

#[derive(Debug, Deserialize)]
pub struct CheckRequest {
    pub model: String,
    pub provider: Option<String>,
    pub virtual_key: Option<String>,
    pub user: Option<String>,
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

pub fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model must not be empty"));
    }
    if model.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "model must be at most {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

pub fn count(field: &str, value: Option<u64>, default: u64) -> Result<i64, ApiError> {
    let v = value.unwrap_or(default);
    if v > MAX_COUNT_LIMIT {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_COUNT_LIMIT}"
        )));
    }
    Ok(v as i64)
}

pub fn dollars(field: &str, value: Option<f64>) -> Result<i64, ApiError> {
    let v = value.unwrap_or(0.0);
    if !v.is_finite() || v < 0.0 {
        return Err(ApiError::bad_request(format!(
            "{field} must be a number >= 0 (dollars)"
        )));
    }
    if v > MAX_COST_DOLLARS {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_COST_DOLLARS} dollars"
        )));
    }
    Ok(dollars_to_nanos(v))
}

/// Empty or over-long identifiers: empty counts as absent, over-long is refused.
pub fn ident<'a>(field: &str, v: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
    match v.as_deref() {
        Some(s) if s.len() > MAX_ID_LEN => Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_ID_LEN} bytes"
        ))),
        Some("") | None => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

pub async fn check<S: Store>(
    State(app): State<Arc<App<S>>>,
    JsonBody(req): JsonBody<CheckRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    check_model(&req.model)?;
    let dry_run = req.dry_run.unwrap_or(false);
    let amounts = Amounts {
        requests: count("requests", req.requests, 1)?,
        tokens: count("tokens", req.tokens, 0)?,
        cost_nanos: dollars("cost", req.cost)?,
    };
    let key = MatchKey {
        model: &req.model,
        provider: ident("provider", &req.provider)?,
        virtual_key: ident("virtual_key", &req.virtual_key)?,
        user: ident("user", &req.user)?,
    };
    Ok(
        match decide(&app, started, &[key], amounts, dry_run).await {
            Decision::Unlimited => Json(CheckResponse {
                allowed: true,
                reason: None,
                retry_after_ms: None,
                limits: [],
                fallback: None,
            })
            .into_response(),
            Decision::StoreFailed {
                allowed,
                policy,
                error,
            } => fallback(allowed, policy, error),
            Decision::Checked(checked) => checked_answer(&checked, dry_run),
        },
    )
}

/// 200 or 429 with the limits, the IETF and OpenAI headers, and `Retry-After`.
fn checked_answer(checked: &Checked, dry_run: bool) -> Response {
    let pairs = checked.pairs();
    let allowed = checked.outcome.allowed;
    let mut headers = HeaderMap::new();
    if let Some(i) = checked.deciding {
        headers::ratelimit_headers(&mut headers, pairs[i].0, &pairs[i].1);
    }
    headers::openai_headers(&mut headers, &pairs);
    let status = if allowed {
        StatusCode::OK
    } else {
        let secs = headers::ceil_secs(checked.retry_after_ms.unwrap_or(0)).max(1);
        headers.insert("retry-after", HeaderValue::from(secs));
        StatusCode::TOO_MANY_REQUESTS
    };
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let consumed = allowed && !dry_run;
    let body = write_answer(
        allowed,
        checked.reason,
        checked.retry_after_ms,
        consumed.then_some(checked.outcome.now_ms),
        &pairs,
    );
    (status, headers, body).into_response()
}

/// The store failed and `--on-store-error` decided: answer so, and say so.
fn fallback(allowed: bool, policy: StoreErrorPolicy, error: String) -> Response {
    let body = CheckResponse {
        allowed,
        reason: (!allowed).then_some("store_unavailable"),
        retry_after_ms: (!allowed).then_some(1000),
        limits: [],
        fallback: Some(Fallback {
            policy: policy.as_str(),
            error,
        }),
    };
    if allowed {
        Json(body).into_response()
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", HeaderValue::from(1))],
            Json(body),
        )
            .into_response()
    }
}
