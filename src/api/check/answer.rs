//! The JSON body of a check answer.

use crate::limits::LimitSpec;
use crate::store::LimitOutcome;
use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CompiledConfig;
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
