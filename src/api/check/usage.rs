//! `POST /v1/usage`: what the upstream call really used, recorded after the fact.

use super::{MAX_ID_LEN, check_model, count, dollars, ident, too_long};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::JsonBody;
use crate::app::App;
use crate::app::usage::record;
use crate::limits::MatchKey;
use crate::model::nanos_to_dollars;
use crate::store::{Store, UsageDelta, UsageOutcome};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// `POST /v1/usage`. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageRequest {
    /// The model; not blank, at most 256 characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub model: String,
    #[schema(max_length = 256)]
    pub provider: Option<String>,
    #[schema(max_length = 256)]
    pub virtual_key: Option<String>,
    #[schema(max_length = 256)]
    pub user: Option<String>,
    /// Tokens really used.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub tokens: Option<u64>,
    /// Dollars really spent.
    #[schema(minimum = 0.0, maximum = 1e6)]
    pub cost: Option<f64>,
    /// Tokens reserved at check time (subtracted: the difference may be a refund).
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::model::json_int::opt_u64")]
    pub reserved_tokens: Option<u64>,
    #[schema(minimum = 0.0, maximum = 1e6)]
    pub reserved_cost: Option<f64>,
    /// Makes the report idempotent (applied once however often retried).
    #[schema(min_length = 1, max_length = 256)]
    pub request_id: Option<String>,
    /// The check answer's `reserved_at_ms`: a refund then only returns what that
    /// reservation still holds.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::model::json_int::opt_i64")]
    pub reserved_at_ms: Option<i64>,
}

/// The answer of `POST /v1/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageAnswer {
    /// False when this `request_id` was already recorded.
    pub recorded: bool,
    pub duplicate: bool,
    /// Configs the report was applied to.
    pub matched_configs: usize,
    /// Tokens added (negative: refunded).
    pub token_delta: i64,
    /// Dollars added (negative: refunded).
    pub cost_delta: f64,
}

#[utoipa::path(
    post,
    path = "/v1/usage",
    tag = "hot path",
    request_body(content = UsageRequest, content_type = "application/json",
        description = "Must be sent as `application/json` (or `application/*+json`); otherwise 415."),
    responses(
        (status = 200, description = "Recorded (or a duplicate of a recorded `request_id`)", body = UsageAnswer),
        (status = 400, description = "Invalid field (the message names it) or body not a JSON object", body = ErrorBody),
        (status = 413, description = "Body larger than --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "The store is unreachable; not recorded, retry with the same request_id", body = ErrorBody),
    )
)]
pub async fn usage<S: Store>(
    State(app): State<Arc<App<S>>>,
    JsonBody(req): JsonBody<UsageRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let delta = UsageDelta {
        tokens: count("tokens", req.tokens, 0)? - count("reserved_tokens", req.reserved_tokens, 0)?,
        cost_nanos: dollars("cost", req.cost)? - dollars("reserved_cost", req.reserved_cost)?,
        reserved_at_ms: match req.reserved_at_ms {
            Some(at) if at <= 0 => {
                return Err(ApiError::bad_request(format!(
                    "reserved_at_ms must be the positive reserved_at_ms of the check's answer (got {at})"
                )));
            }
            at => at,
        },
    };
    let request_id = match req.request_id.as_deref() {
        Some("") => {
            return Err(ApiError::bad_request(
                "request_id must not be empty when given",
            ));
        }
        Some(id) if too_long(id) => {
            return Err(ApiError::bad_request(format!(
                "request_id must be at most {MAX_ID_LEN} characters"
            )));
        }
        other => other,
    };
    let key = MatchKey {
        model: &req.model,
        provider: ident("provider", &req.provider)?,
        virtual_key: ident("virtual_key", &req.virtual_key)?,
        user: ident("user", &req.user)?,
    };
    let (outcome, matched) = match record(&app, &[key], delta, request_id).await {
        Ok(o) => o,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{e}; usage not recorded, retry (with the same request_id it is recorded once)"
                ),
            ));
        }
    };
    let duplicate = outcome == UsageOutcome::Duplicate;
    let body = UsageAnswer {
        recorded: !duplicate,
        duplicate,
        matched_configs: matched,
        token_delta: delta.tokens,
        cost_delta: nanos_to_dollars(delta.cost_nanos),
    };
    Ok(Json(body).into_response())
}
