//! `/v1/usage` reports: settling reservations, refunds, idempotency by request id (scoped
//! by identity), and saturating counters.

use crate::common::{Backend, Tollgate};
use serde_json::json;

on_every_store!(
    usage_settles_refunds_and_is_idempotent,
    usage_request_ids_are_scoped_by_identity,
    usage_reports_saturate_and_leave_nothing_behind,
);

/// However much usage reports add, counters saturate (no overflow into negative usage
/// that would admit again), and a refund on counters that hold nothing stores nothing
/// (in Redis, a hash without a TTL would stay forever).
async fn usage_reports_saturate_and_leave_nothing_behind(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 100, "token_reset_duration": "1h"}}))
        .await;
    let refund = json!({"model": "m", "tokens": 0, "reserved_tokens": 50});
    assert_eq!(t.post("/v1/usage", &refund).await.status, 200);
    if let Some(r) = &t.redis {
        let keys: Vec<String> = r.cmd(&["KEYS", "*c:*"]);
        assert!(keys.is_empty(), "a refund of nothing stored {keys:?}");
    }
    let huge = json!({"model": "m", "tokens": (1u64 << 53) - 1});
    for _ in 0..1030 {
        assert_eq!(t.post("/v1/usage", &huge).await.status, 200);
    }
    let a = t.check(json!({"model": "m", "tokens": 50})).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(
        a.body["limits"][0]["used"],
        1u64 << 62,
        "saturated: {}",
        a.body
    );
    assert_eq!(
        t.config(&id).await["rate_limit"]["token_current_usage"],
        1u64 << 62
    );
    if let Some(r) = &t.redis {
        let key = format!("tollgate:c:{id}");
        let ttl: i64 = r.cmd(&["PTTL", &key]);
        assert!(ttl > 0, "counters expire when idle (PTTL {ttl})");
    }
}

async fn usage_settles_refunds_and_is_idempotent(b: Backend) {
    let t = Tollgate::start(b).await;
    let id = t
        .create(json!({"model_name": "m", "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"},
                       "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}))
        .await;
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 800, "cost": 0.5}))
            .await
            .status,
        200
    );
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 300})).await.status,
        429
    );
    // The call used less than reserved: the difference comes back.
    let report = json!({"model": "m", "tokens": 500, "reserved_tokens": 800, "cost": 0.2, "reserved_cost": 0.5, "request_id": "req-1"});
    for attempt in 0..5 {
        let a = t.post("/v1/usage", &report).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["duplicate"], attempt > 0);
    }
    let c = t.config(&id).await;
    assert_eq!(
        c["rate_limit"]["token_current_usage"], 500,
        "applied once, not five times"
    );
    assert_eq!(c["budgets"][0]["current_usage"], 0.2);
    assert_eq!(
        t.check(json!({"model": "m", "tokens": 300})).await.status,
        200
    );
    // Using more than reserved adds, and usage reports never deny (even past the limit).
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 900, "reserved_tokens": 0, "cost": 2.0}),
        )
        .await;
    assert_eq!(a.status, 200);
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["token_current_usage"], 1700);
    assert_eq!(c["budgets"][0]["current_usage"], 2.2);
    assert_eq!(t.check(json!({"model": "m"})).await.status, 429);
    // Refunds never push usage below zero.
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "m", "tokens": 0, "reserved_tokens": 100000, "reserved_cost": 100.0}),
        )
        .await;
    assert_eq!(a.status, 200);
    let c = t.config(&id).await;
    assert_eq!(c["rate_limit"]["token_current_usage"], 0);
    assert_eq!(c["budgets"][0]["current_usage"], 0.0);
    // No matching config is fine too.
    let a = t
        .post(
            "/v1/usage",
            &json!({"model": "unknown", "tokens": 5, "request_id": "req-2"}),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.body["matched_configs"].as_u64()),
        (200, Some(0))
    );
}

/// Two tenants' equal request ids never collide, and a report that matches no config
/// leaves no marker behind (its id is not taken).
async fn usage_request_ids_are_scoped_by_identity(b: Backend) {
    let t = Tollgate::start(b).await;
    let mut ids = Vec::new();
    for vk in ["vk-1", "vk-2"] {
        ids.push(
            t.create(
                json!({"model_name": "m", "scope": "virtual_key", "scope_id": vk,
                            "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}),
            )
            .await,
        );
    }
    let report = |vk: &str, user: Option<&str>| json!({"model": "m", "virtual_key": vk, "user": user, "tokens": 10, "request_id": "same"});
    for (vk, user, duplicate) in [
        ("vk-1", None, false),
        ("vk-2", None, false),
        ("vk-1", None, true),
        // Another user of vk-1 is another identity: its "same" is its own.
        ("vk-1", Some("u-9"), false),
        ("vk-1", Some("u-9"), true),
    ] {
        let a = t.post("/v1/usage", &report(vk, user)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["duplicate"], duplicate, "{vk} {user:?}: {}", a.body);
    }
    assert_eq!(
        t.config(&ids[0]).await["rate_limit"]["token_current_usage"],
        20
    );
    assert_eq!(
        t.config(&ids[1]).await["rate_limit"]["token_current_usage"],
        10
    );
    // vk-3 has no config yet: its report records nothing, not even its id...
    let a = t.post("/v1/usage", &report("vk-3", None)).await;
    assert_eq!(
        (a.status.as_u16(), a.body["duplicate"].clone()),
        (200, json!(false))
    );
    let id = t
        .create(
            json!({"model_name": "m", "scope": "virtual_key", "scope_id": "vk-3",
                        "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1h"}}),
        )
        .await;
    // ...so once a config matches, the same report is applied, not taken for a retry.
    let a = t.post("/v1/usage", &report("vk-3", None)).await;
    assert_eq!(a.body["duplicate"], false, "{}", a.body);
    assert_eq!(t.config(&id).await["rate_limit"]["token_current_usage"], 10);
}
