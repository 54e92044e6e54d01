//! Reading requests and answering errors: bodies parsed as JSON whatever their
//! Content-Type, an empty scope, duration words in any case, the error shape, and the bad
//! input Bifrost answers 500 for.

use super::{CONFIGS, path};
use crate::common::{Backend, Tollgate};
use serde_json::{Value, json};

on_every_store!(
    bodies_are_json_whatever_the_content_type,
    create_with_empty_scope_is_global,
    duration_words_in_any_letter_case,
    errors_carry_extra_fields,
    bad_input_bifrost_answers_500_for_is_a_4xx_here,
);

/// governance.go `createModelConfig`/`updateModelConfig`: `json.Unmarshal(ctx.PostBody(),
/// &req)` never looks at Content-Type (so `curl -d` without `-H` works); bad JSON is
/// "Invalid JSON", a 400.
async fn bodies_are_json_whatever_the_content_type(b: Backend) {
    let t = Tollgate::start(b).await;
    let send = |method: reqwest::Method, path: &str, ct: Option<&str>, body: &str| {
        let mut req = t.request(method, path).body(body.to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        t.send(req)
    };
    let mut ids = Vec::new();
    for (i, ct) in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"model_name": "m{i}"}}"#);
        let a = send(reqwest::Method::POST, CONFIGS, ct, &body).await;
        assert_eq!(a.status, 200, "{ct:?}: {}", a.body);
        ids.push(a.body["model_config"]["id"].as_str().unwrap().to_string());
    }
    let a = send(
        reqwest::Method::PUT,
        &path(&ids[0]),
        Some("text/plain"),
        r#"{"model_name": "renamed"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["model_name"], "renamed");
    for (body, needle) in [
        ("model_name=m", "JSON object"),
        (r#"["m"]"#, "JSON object"),
        (r#"{"model_name": "#, "invalid JSON"),
        ("", "empty"),
    ] {
        let a = send(reqwest::Method::POST, CONFIGS, Some("text/plain"), body).await;
        assert_eq!(a.status, 400, "{body:?}: {}", a.body);
        assert!(a.message().contains(needle), "{body:?}: {}", a.message());
    }
}

/// governance.go `createModelConfig`: `if req.Scope == "" { req.Scope = global }`, and a
/// global config's scope_id is dropped (also tables/modelconfig.go `BeforeSave`).
async fn create_with_empty_scope_is_global(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "m", "scope": "", "scope_id": "ignored"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["model_config"]["scope"], "global");
    assert_eq!(a.body["model_config"]["scope_id"], Value::Null);
    // Same identity as an explicit global one.
    let a = t
        .post(CONFIGS, &json!({"model_name": "m", "scope": "global"}))
        .await;
    assert_eq!(a.status, 409, "{}", a.body);
}

/// tables/utils.go `ParseDuration`: `switch strings.ToLower(duration)` maps
/// daily|weekly|monthly|yearly in any case; units stay case-sensitive (`m` ≠ `M`).
async fn duration_words_in_any_letter_case(b: Backend) {
    let t = Tollgate::start(b).await;
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "m",
                "budgets": [{"max_limit": 1, "reset_duration": "DAILY"},
                            {"max_limit": 2, "reset_duration": "Monthly"}],
                "rate_limit": {"request_max_limit": 1, "request_reset_duration": "Weekly"}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["model_config"]["budgets"][0]["reset_duration"],
        "DAILY"
    );
    let a = t.check(json!({"model": "m"})).await;
    assert_eq!(a.status, 200);
    let week_ms = 7 * 86_400_000;
    let reset = a.body["limits"][0]["reset_after_ms"].as_i64().unwrap();
    assert!(
        (week_ms - 60_000..=week_ms).contains(&reset),
        "`Weekly` is 7 days: {}",
        a.body
    );
    // `daily` and `1d` are one duration.
    let a = t
        .post(
            CONFIGS,
            &json!({"model_name": "n", "budgets": [{"max_limit": 1, "reset_duration": "Daily"},
                                                   {"max_limit": 1, "reset_duration": "1d"}]}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.message().contains("budgets[1].reset_duration"));
}

/// handlers/utils.go `SendError` writes a `schemas.BifrostError`, whose `extra_fields`
/// Bifrost's own API contract tests expect.
async fn errors_carry_extra_fields(b: Backend) {
    let t = Tollgate::start(b).await;
    let answers = [
        t.get(&path("nope")).await,
        t.post(CONFIGS, &json!({})).await,
        t.get(&format!("{CONFIGS}?limit=-1")).await,
        t.get("/api/unknown").await,
    ];
    for a in answers {
        assert!(a.status.is_client_error(), "{}", a.body);
        assert!(!a.message().is_empty());
        assert_eq!(a.body["extra_fields"], json!({}), "{}", a.body);
    }
}

/// Bifrost validates rate limits and budgets inside its transaction
/// (governance.go `validateRateLimit`/`validateBudget` in `ExecuteTransaction`) and
/// answers every such failure with `SendError(ctx, 500, …)`; its BeforeSave hooks
/// (tables/ratelimit.go, tables/modelconfig.go) likewise. tollgate answers 400, naming
/// the field.
async fn bad_input_bifrost_answers_500_for_is_a_4xx_here(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t.create(json!({"model_name": "m"})).await;
    let creates = [
        (
            json!({"model_name": "m2", "rate_limit": {"token_max_limit": 0, "token_reset_duration": "1m"}}),
            "token_max_limit",
        ),
        (
            json!({"model_name": "m2", "rate_limit": {"request_max_limit": 5}}),
            "request_reset_duration",
        ),
        (
            json!({"model_name": "m2", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "soon"}}),
            "request_reset_duration",
        ),
    ];
    for (body, needle) in creates {
        let a = t.post(CONFIGS, &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.message().contains(needle), "{body}: {}", a.message());
    }
    let updates = [
        (json!({"provider": " openai"}), "provider"),
        (json!({"model_name": ""}), "model_name"),
        (
            json!({"budgets": [{"max_limit": -1, "reset_duration": "1d"}]}),
            "budgets[0].max_limit",
        ),
        (
            json!({"rate_limit": {"request_max_limit": 1, "request_reset_duration": "0s"}}),
            "request_reset_duration",
        ),
    ];
    for (body, needle) in updates {
        let a = t.put(&path(&id), &body).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(a.message().contains(needle), "{body}: {}", a.message());
    }
    assert_eq!(
        t.config(&id).await["model_name"],
        "m",
        "refused updates change nothing"
    );
}
