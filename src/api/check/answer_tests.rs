//! The check answer's JSON against its documented shape.

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
    let configs = [&compiled];
    let outcomes = [outcome(990, false), outcome(250_000_000, true)];
    let body = write_answer(
        false,
        Some("token_limited"),
        Some(1200),
        None,
        &configs,
        &outcomes,
        &[],
    );
    let got: Value = serde_json::from_slice(&body).expect("valid JSON");
    let (id, budget_id) = (&compiled.config.id, &compiled.config.budgets[0].id);
    let expected = json!({
        "allowed": false, "reason": "token_limited", "retry_after_ms": 1200,
        "limits": [
            {"config_id": id, "scope": "user", "scope_id": "u-1", "model_name": "gpt-4o", "provider": "openai",
             "kind": "tokens", "reset_duration": "1m", "max": 1000, "enforcement": "enforce",
             "used": 990, "remaining": 10, "reset_after_ms": 1200},
            {"config_id": id, "scope": "user", "scope_id": "u-1", "model_name": "gpt-4o", "provider": "openai",
             "kind": "budget", "budget_id": budget_id, "reset_duration": "1d", "max": 2.5,
             "enforcement": "enforce", "used": 0.25, "remaining": 2.25, "reset_after_ms": 1200}
        ]
    });
    assert_eq!(got, expected);
    let parsed: CheckAnswer = serde_json::from_slice(&body).expect("documented shape");
    assert_eq!(parsed.reason, Some(DenyReason::TokenLimited));
    assert_eq!(parsed.limits[1].kind, LimitKindAnswer::Budget);
    let allowed: Value = serde_json::from_slice(&write_answer(
        true,
        None,
        None,
        Some(1_795_000_000_123),
        &configs,
        &outcomes[..1],
        &[],
    ))
    .unwrap();
    serde_json::from_value::<CheckAnswer>(allowed.clone()).expect("documented shape");
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
fn shadow_limits_that_refused_are_listed_again() {
    let config = create_config(
        serde_json::from_value(json!({"model_name": "m", "enforcement": "shadow",
            "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1m"}}))
        .unwrap(),
        chrono::Utc::now(),
    )
    .unwrap();
    let compiled = CompiledConfig::compile(config).unwrap();
    let refused = LimitOutcome {
        admitted: false,
        used: 2,
        reset_after_ms: 5,
        retry_after_ms: 5,
    };
    let body = write_answer(true, None, None, Some(1), &[&compiled], &[refused], &[0]);
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got["limits"][0]["enforcement"], "shadow");
    assert_eq!(got["shadow_denied"], got["limits"]);
    serde_json::from_value::<CheckAnswer>(got).expect("documented shape");
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
    let fallback = serde_json::to_value(CheckResponse {
        allowed: false,
        reason: Some("store_unavailable"),
        retry_after_ms: Some(1000),
        limits: [],
        fallback: Some(Fallback {
            policy: "deny",
            error: "down".into(),
        }),
    })
    .unwrap();
    for answer in [body, fallback] {
        serde_json::from_value::<CheckAnswer>(answer).expect("documented shape");
    }
}

proptest::proptest! {
    /// Counts written directly read as the `Value` of `quantity` would.
    #[test]
    fn quantities_are_written_as_their_values(raw in 0i64..=crate::model::validate::MAX_COUNT_LIMIT as i64, budget: bool) {
        let kind = if budget { LimitKind::Budget } else { LimitKind::Tokens };
        let mut out = Vec::new();
        write_quantity(&mut out, kind, raw);
        proptest::prop_assert_eq!(out, serde_json::to_vec(&quantity(kind, raw)).unwrap());
    }
}
