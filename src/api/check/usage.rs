//! `POST /v1/usage`: what the upstream call really used, recorded after the fact.

use super::{MAX_ID_LEN, NO_SNAPSHOT, check_model, count, dollars, ident};
use crate::api::error::ApiError;
use crate::api::extract::JsonBody;
use crate::app::{App, timed};
use crate::limits::{CompiledConfig, MatchKey};
use crate::metrics as m;
use crate::model::nanos_to_dollars;
use crate::store::{Store, StoreError, UsageDelta, UsageOutcome};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub struct UsageRequest {
    pub model: String,
    pub provider: Option<String>,
    pub virtual_key: Option<String>,
    pub user: Option<String>,
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
    pub reserved_tokens: Option<u64>,
    pub reserved_cost: Option<f64>,
    pub request_id: Option<String>,
    /// The check answer's `reserved_at_ms`: a refund then only returns what that
    /// reservation still holds.
    pub reserved_at_ms: Option<i64>,
}

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
        Some(id) if id.len() > MAX_ID_LEN => {
            return Err(ApiError::bad_request(format!(
                "request_id must be at most {MAX_ID_LEN} bytes"
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
    let body = serde_json::json!({
        "recorded": !duplicate,
        "duplicate": duplicate,
        "matched_configs": matched,
        "token_delta": delta.tokens,
        "cost_delta": nanos_to_dollars(delta.cost_nanos),
    });
    Ok(Json(body).into_response())
}

/// Records a settlement on every config matching any of `keys` (each once), shared by
/// `POST /v1/usage` and Envoy's token domains. Counts `tollgate_usage_reports_total`.
/// Returns the outcome and how many configs matched.
pub async fn record<S: Store>(
    app: &App<S>,
    keys: &[MatchKey<'_>],
    delta: UsageDelta,
    request_id: Option<&str>,
) -> Result<(UsageOutcome, usize), StoreError> {
    let (configs, _) = super::decide::matching(app, keys);
    let refs: Vec<&CompiledConfig> = configs.iter().map(|c| &**c).collect();
    // Scoped by the report's identity: two tenants' equal ids never collide.
    let scoped_id = request_id
        .zip(keys.first())
        .map(|(id, key)| crate::store::scoped_request_id(key, id));
    let result = if app.snapshot_loaded() {
        timed(
            "usage",
            app.store.record_usage(&refs, delta, scoped_id.as_deref()),
        )
        .await
    } else {
        Err(StoreError::Unavailable(NO_SNAPSHOT.to_string()))
    };
    let label = match &result {
        Ok(UsageOutcome::Applied) => "applied",
        Ok(UsageOutcome::Duplicate) => "duplicate",
        Err(_) => "error",
    };
    metrics::counter!(m::USAGE_REPORTS, "outcome" => label).increment(1);
    result.map(|o| (o, refs.len()))
}
