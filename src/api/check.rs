//! The hot path: `POST /v1/check` (atomic check-and-consume) and `POST /v1/usage`
//! (settlement after the upstream call).

use super::error::ApiError;
use super::extract::JsonBody;
use crate::app::{App, timed};
use crate::limits::{CompiledConfig, LimitKind, LimitSpec, MatchKey};
use crate::log_throttle::LogThrottle;
use crate::metrics as m;
use crate::model::validate::MAX_COUNT_LIMIT;
use crate::model::{dollars_to_nanos, nanos_to_dollars};
use crate::settings::StoreErrorPolicy;
use crate::store::{Amounts, LimitOutcome, Store, StoreError, UsageDelta, UsageOutcome};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Until the first snapshot load, no config is known, so "nothing matches" cannot be
/// concluded: the store has been unreachable since start.
const NO_SNAPSHOT: &str =
    "no config snapshot loaded yet: the store has been unreachable since start";

/// Largest cost accepted in one check or report, in dollars.
const MAX_COST_DOLLARS: f64 = 1e6;
const MAX_ID_LEN: usize = 256;

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

fn check_model(model: &str) -> Result<(), ApiError> {
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

fn count(field: &str, value: Option<u64>, default: u64) -> Result<i64, ApiError> {
    let v = value.unwrap_or(default);
    if v > MAX_COUNT_LIMIT {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_COUNT_LIMIT}"
        )));
    }
    Ok(v as i64)
}

fn dollars(field: &str, value: Option<f64>) -> Result<i64, ApiError> {
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
fn ident<'a>(field: &str, v: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
    match v.as_deref() {
        Some(s) if s.len() > MAX_ID_LEN => Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_ID_LEN} bytes"
        ))),
        Some("") | None => Ok(None),
        Some(s) => Ok(Some(s)),
    }
}

/// An answer without limits: no config matched, or the store failed. (Answers with
/// limits are written by `write_answer`.)
#[derive(Debug, Serialize)]
pub struct CheckResponse {
    pub allowed: bool,
    pub reason: Option<&'static str>,
    pub retry_after_ms: Option<i64>,
    /// Always empty here.
    pub limits: [(); 0],
    /// Present only when the store failed and `--on-store-error` decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

#[derive(Debug, Serialize)]
pub struct Fallback {
    pub policy: &'static str,
    pub error: String,
}

/// Which limit the RateLimit headers describe: when denied, the one that blocks longest;
/// when allowed, the one with the smallest fraction left.
fn most_restrictive(limits: &[(&LimitSpec, LimitOutcome)], allowed: bool) -> Option<usize> {
    let idx = 0..limits.len();
    if allowed {
        idx.min_by(|&a, &b| {
            let frac = |i: usize| {
                let (s, o) = limits[i];
                (s.max - o.used).max(0) as f64 / s.max.max(1) as f64
            };
            frac(a).total_cmp(&frac(b))
        })
    } else {
        idx.filter(|&i| !limits[i].1.admitted)
            .max_by_key(|&i| (limits[i].1.retry_after_ms, std::cmp::Reverse(i)))
    }
}

fn ceil_secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

/// IETF draft `RateLimit-Policy` / `RateLimit` fields for one limit. Budgets are
/// expressed in whole cents.
fn ratelimit_headers(headers: &mut HeaderMap, spec: &LimitSpec, outcome: &LimitOutcome) {
    let (quota, remaining) = match spec.kind {
        LimitKind::Budget => (
            spec.max / 10_000_000,
            (spec.max - outcome.used).max(0) / 10_000_000,
        ),
        _ => (spec.max, (spec.max - outcome.used).max(0)),
    };
    let name = spec.kind.as_str();
    let unit = match spec.kind {
        LimitKind::Requests => "",
        LimitKind::Tokens => ";qu=\"tokens\"",
        LimitKind::Budget => ";qu=\"usd-cents\"",
    };
    let policy = format!("\"{name}\";q={quota};w={}{unit}", ceil_secs(spec.len_ms));
    let state = format!(
        "\"{name}\";r={remaining};t={}",
        ceil_secs(outcome.reset_after_ms)
    );
    if let (Ok(p), Ok(s)) = (
        HeaderValue::from_str(&policy),
        HeaderValue::from_str(&state),
    ) {
        headers.insert("ratelimit-policy", p);
        headers.insert("ratelimit", s);
    }
}

/// The answer with its limits, in the shape of `CheckResponse`. Each limit's fixed
/// fields come pre-serialized from the snapshot (`LimitSpec::answer_head`); only the
/// counts are written per check. `reserved_at_ms`: when the check consumed (the store's
/// clock), for the gateway to pass back in its usage report.
pub fn write_answer(
    allowed: bool,
    reason: Option<&str>,
    retry_after_ms: Option<i64>,
    reserved_at_ms: Option<i64>,
    limits: &[(&LimitSpec, LimitOutcome)],
) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(
        64 + limits
            .iter()
            .map(|(s, _)| s.answer_head.len() + 64)
            .sum::<usize>(),
    );
    let _ = write!(out, "{{\"allowed\":{allowed},\"reason\":");
    match reason {
        Some(r) => {
            let _ = write!(out, "\"{r}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    match retry_after_ms {
        Some(ms) => {
            let _ = write!(out, ",\"retry_after_ms\":{ms}");
        }
        None => out.extend_from_slice(b",\"retry_after_ms\":null"),
    }
    out.extend_from_slice(b",\"limits\":[");
    for (i, (spec, o)) in limits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(spec.answer_head.as_bytes());
        out.extend_from_slice(b",\"used\":");
        let _ = serde_json::to_writer(&mut out, &spec.kind.quantity(o.used));
        out.extend_from_slice(b",\"remaining\":");
        let _ = serde_json::to_writer(&mut out, &spec.kind.quantity((spec.max - o.used).max(0)));
        let _ = write!(out, ",\"reset_after_ms\":{}}}", o.reset_after_ms);
    }
    out.push(b']');
    if let Some(at) = reserved_at_ms {
        let _ = write!(out, ",\"reserved_at_ms\":{at}");
    }
    out.push(b'}');
    out
}

fn record_check(started: Instant, allowed: bool, reason: Option<&'static str>) {
    let decision = if allowed { "allowed" } else { "denied" };
    metrics::counter!(m::CHECKS, "decision" => decision, "reason" => reason.unwrap_or("none"))
        .increment(1);
    metrics::histogram!(m::CHECK_DURATION).record(started.elapsed().as_secs_f64());
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
    if !app.snapshot_loaded() {
        return Ok(fallback(&app, started, NO_SNAPSHOT.to_string()));
    }
    let snapshot = app.snapshot();
    let matched: Vec<&CompiledConfig> = snapshot.matching(&key).into_iter().map(|c| &**c).collect();
    if matched.iter().all(|c| c.limits.is_empty()) {
        record_check(started, true, None);
        let body = CheckResponse {
            allowed: true,
            reason: None,
            retry_after_ms: None,
            limits: [],
            fallback: None,
        };
        return Ok(Json(body).into_response());
    }

    let outcome = match timed("check", app.store.check(&matched, amounts, dry_run)).await {
        Ok(o) => o,
        Err(e) => return Ok(fallback(&app, started, e.to_string())),
    };

    let pairs: Vec<(&LimitSpec, LimitOutcome)> = matched
        .iter()
        .flat_map(|c| c.limits.iter())
        .zip(outcome.limits.iter().copied())
        .collect();
    let deciding = most_restrictive(&pairs, outcome.allowed);
    let reason = (!outcome.allowed)
        .then(|| deciding.map(|i| pairs[i].0.kind.denial_reason()))
        .flatten();
    let retry_after_ms = (!outcome.allowed).then(|| {
        pairs
            .iter()
            .filter(|(_, o)| !o.admitted)
            .map(|(_, o)| o.retry_after_ms)
            .max()
            .unwrap_or(0)
    });
    let mut headers = HeaderMap::new();
    if let Some(i) = deciding {
        ratelimit_headers(&mut headers, pairs[i].0, &pairs[i].1);
    }
    let status = if outcome.allowed {
        StatusCode::OK
    } else {
        let secs = ceil_secs(retry_after_ms.unwrap_or(0)).max(1);
        headers.insert("retry-after", HeaderValue::from(secs));
        StatusCode::TOO_MANY_REQUESTS
    };
    record_check(started, outcome.allowed, reason);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let consumed = outcome.allowed && !dry_run;
    let body = write_answer(
        outcome.allowed,
        reason,
        retry_after_ms,
        consumed.then_some(outcome.now_ms),
        &pairs,
    );
    Ok((status, headers, body).into_response())
}

/// The store failed: answer by policy, and say so.
fn fallback<S: Store>(app: &App<S>, started: Instant, error: String) -> Response {
    let policy = app.on_store_error;
    metrics::counter!(m::STORE_FALLBACKS, "policy" => policy.as_str()).increment(1);
    static THROTTLE: LogThrottle = LogThrottle::new(1_000);
    if let Some(more) = THROTTLE.allow(chrono::Utc::now().timestamp_millis()) {
        tracing::warn!(%error, policy = policy.as_str(), also_since_last_line = more,
            "store failed during check; answering by policy");
    }
    let allowed = policy == StoreErrorPolicy::Allow;
    let reason = (!allowed).then_some("store_unavailable");
    // The metric says why for both policies: an allowed check that no limit decided is
    // not the same as one that passed them.
    record_check(started, allowed, Some("store_unavailable"));
    let body = CheckResponse {
        allowed,
        reason,
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
    let snapshot = app.snapshot();
    let matched: Vec<&CompiledConfig> = snapshot.matching(&key).into_iter().map(|c| &**c).collect();
    let scoped_id = request_id.map(|id| crate::store::scoped_request_id(&key, id));
    let result = if app.snapshot_loaded() {
        timed(
            "usage",
            app.store
                .record_usage(&matched, delta, scoped_id.as_deref()),
        )
        .await
    } else {
        Err(StoreError::Unavailable(NO_SNAPSHOT.to_string()))
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            metrics::counter!(m::USAGE_REPORTS, "outcome" => "error").increment(1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{e}; usage not recorded, retry (with the same request_id it is recorded once)"
                ),
            ));
        }
    };
    let (label, duplicate) = match outcome {
        UsageOutcome::Applied => ("applied", false),
        UsageOutcome::Duplicate => ("duplicate", true),
    };
    metrics::counter!(m::USAGE_REPORTS, "outcome" => label).increment(1);
    let body = serde_json::json!({
        "recorded": !duplicate,
        "duplicate": duplicate,
        "matched_configs": matched.len(),
        "token_delta": delta.tokens,
        "cost_delta": nanos_to_dollars(delta.cost_nanos),
    });
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::create_config;
    use serde_json::{Value, json};

    #[test]
    fn written_answer_is_the_documented_json() {
        let config = create_config(
            serde_json::from_value(json!({
                "model_name": "gpt-4o", "provider": "openai", "scope": "user", "scope_id": "u-1",
                "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1m"},
                "budgets": [{"max_limit": 2.5, "reset_duration": "1d"}]
            }))
            .unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
        let compiled = CompiledConfig::compile(config).unwrap();
        let outcome = |used, admitted| LimitOutcome {
            admitted,
            used,
            reset_after_ms: 1200,
            retry_after_ms: 0,
        };
        let pairs = vec![
            (&compiled.limits[0], outcome(990, false)),
            (&compiled.limits[1], outcome(250_000_000, true)),
        ];
        let body = write_answer(false, Some("token_limited"), Some(1200), None, &pairs);
        let got: Value = serde_json::from_slice(&body).expect("valid JSON");
        let (id, budget_id) = (&compiled.config.id, &compiled.config.budgets[0].id);
        let expected = json!({
            "allowed": false, "reason": "token_limited", "retry_after_ms": 1200,
            "limits": [
                {"config_id": id, "scope": "user", "scope_id": "u-1", "model_name": "gpt-4o", "provider": "openai",
                 "kind": "tokens", "reset_duration": "1m", "max": 1000, "used": 990, "remaining": 10, "reset_after_ms": 1200},
                {"config_id": id, "scope": "user", "scope_id": "u-1", "model_name": "gpt-4o", "provider": "openai",
                 "kind": "budget", "budget_id": budget_id, "reset_duration": "1d", "max": 2.5, "used": 0.25,
                 "remaining": 2.25, "reset_after_ms": 1200}
            ]
        });
        assert_eq!(got, expected);
        let allowed: Value = serde_json::from_slice(&write_answer(
            true,
            None,
            None,
            Some(1_795_000_000_123),
            &pairs[..1],
        ))
        .unwrap();
        assert_eq!(
            (allowed["reason"].clone(), allowed["retry_after_ms"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(allowed["reserved_at_ms"], 1_795_000_000_123i64);
        assert!(
            got.get("reserved_at_ms").is_none(),
            "nothing reserved, nothing to say"
        );
    }

    #[test]
    fn answer_without_limits_has_an_empty_list() {
        let body = serde_json::to_value(CheckResponse {
            allowed: true,
            reason: None,
            retry_after_ms: None,
            limits: [],
            fallback: None,
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"allowed": true, "reason": null, "retry_after_ms": null, "limits": []})
        );
    }
}
