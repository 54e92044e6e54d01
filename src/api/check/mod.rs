//! The hot path over HTTP: `POST /v1/check` (atomic check-and-consume) and
//! `POST /v1/usage` (settlement after the upstream call). Each handler parses the
//! request, lets `app::check` / `app::usage` decide (as Envoy's rate limit service,
//! `api::rls`, does), and formats the answer.

pub mod answer;
pub mod headers;
pub mod usage;

pub use answer::{CheckAnswer, CheckResponse, Fallback, write_answer};
pub use usage::{UsageAnswer, UsageRequest, usage};

use super::error::{ApiError, ErrorBody};
use super::extract::JsonBody;
use crate::app::App;
use crate::app::check::{Checked, Decision, decide};
use crate::limits::MatchKey;
use crate::model::dollars_to_nanos;
use crate::model::validate::MAX_COUNT_LIMIT;
use crate::settings::StoreErrorPolicy;
use crate::store::{Amounts, Store};
use axum::Json;
use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use utoipa::ToSchema;

/// Largest cost accepted in one check or report, in dollars.
const MAX_COST_DOLLARS: f64 = 1e6;
pub const MAX_ID_LEN: usize = 256;

/// `POST /v1/check`. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckRequest {
    /// The model; not blank, at most 256 characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub model: String,
    /// Absent, null or `""`: none.
    #[schema(max_length = 256)]
    pub provider: Option<String>,
    #[schema(max_length = 256)]
    pub virtual_key: Option<String>,
    #[schema(max_length = 256)]
    pub user: Option<String>,
    /// Requests to charge (default 1).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub requests: Option<u64>,
    /// Tokens to charge or reserve (default 0).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub tokens: Option<u64>,
    /// Dollars to charge or reserve (default 0).
    #[schema(minimum = 0.0, maximum = 1e6)]
    pub cost: Option<f64>,
    /// Evaluate without consuming.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

pub fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model must not be empty"));
    }
    if too_long(model) {
        return Err(ApiError::bad_request(format!(
            "model must be at most {MAX_ID_LEN} characters"
        )));
    }
    Ok(())
}

/// Longer than `MAX_ID_LEN` characters (as JSON Schema's `maxLength` counts).
pub fn too_long(s: &str) -> bool {
    s.len() > MAX_ID_LEN && s.chars().count() > MAX_ID_LEN
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
        Some(s) if too_long(s) => Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_ID_LEN} characters"
        ))),
        Some("") | None => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/check",
    tag = "hot path",
    request_body(content = CheckRequest, content_type = "application/json",
        description = "Must be sent as `application/json` (or `application/*+json`); otherwise 415."),
    responses(
        (status = 200, description = "Allowed (and consumed unless `dry_run`)", body = CheckAnswer, headers(
            ("RateLimit-Policy" = String, description = "IETF draft: the most restrictive limit's policy"),
            ("RateLimit" = String, description = "IETF draft: its remaining quota and reset"),
            ("x-ratelimit-limit-requests" = String, description = "OpenAI style: the most restrictive request limit"),
            ("x-ratelimit-remaining-requests" = String),
            ("x-ratelimit-reset-requests" = String, description = "A duration such as `6m0s` or `1s`"),
            ("x-ratelimit-limit-tokens" = String),
            ("x-ratelimit-remaining-tokens" = String),
            ("x-ratelimit-reset-tokens" = String),
        )),
        (status = 429, description = "Denied; nothing consumed", body = CheckAnswer, headers(
            ("Retry-After" = String, description = "Seconds, rounded up"),
            ("RateLimit-Policy" = String),
            ("RateLimit" = String),
        )),
        (status = 400, description = "Invalid field (the message names it) or body not a JSON object", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    )
)]
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
                reason,
            } => fallback(allowed, policy, error, reason),
            Decision::Checked(checked) => checked_answer(&checked, dry_run),
        },
    )
}

/// 200 or 429 with the limits, the IETF and OpenAI headers, and `Retry-After`. The
/// headers go straight into the response's own map (a map of our own, merged in by
/// `IntoResponseParts`, hashed every name twice).
fn checked_answer(checked: &Checked, dry_run: bool) -> Response {
    let allowed = checked.outcome.allowed;
    let consumed = allowed && !dry_run;
    let body = write_answer(
        allowed,
        checked.reason,
        checked.retry_after_ms,
        consumed.then_some(checked.outcome.now_ms),
        &checked.configs,
        &checked.outcome.limits,
        &checked.shadow_denied,
    );
    let mut response = Response::new(axum::body::Body::from(body));
    let pairs = checked.pairs();
    let headers = response.headers_mut();
    headers.reserve(headers::MOST);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(i) = checked.deciding {
        headers::ratelimit_headers(headers, pairs[i].0, &pairs[i].1);
    }
    headers::openai_headers(headers, &pairs, &checked.enforced);
    if !allowed {
        let secs = headers::ceil_secs(checked.retry_after_ms.unwrap_or(0)).max(1);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    response
}

/// The store failed and `--on-store-error` decided: answer so, and say so.
fn fallback(
    allowed: bool,
    policy: StoreErrorPolicy,
    error: String,
    reason: &'static str,
) -> Response {
    let body = CheckResponse {
        allowed,
        reason: (!allowed).then_some(reason),
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
