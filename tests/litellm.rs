//! Two real LiteLLM proxies, each with the tollgate hook of `clients/python` and its own
//! tollgate, the two tollgates sharing one Redis, in front of an OpenAI-compatible
//! upstream of the test's own. A request limit, a token limit and a dollar budget hold
//! exactly across both proxies; LiteLLM's own per-process `rpm` does not; streamed
//! usage is settled; a failed upstream call gives its reservation back; and with
//! tollgate down each proxy follows its hook's `fail_open`.

mod common;
#[path = "common/litellm.rs"]
mod litellm;
#[path = "common/litellm_fleet.rs"]
mod litellm_fleet;
#[path = "common/openai_upstream.rs"]
mod openai_upstream;

use common::eventually;
use futures_util::future::join_all;
use litellm::{KEY_A, KEY_B};
use litellm_fleet::{
    DEFAULT_COMPLETION, Fleet, PRICE_IN, PRICE_OUT, assert_denial, chat, statuses,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// 5 requests a minute, 12 at once over both proxies: exactly 5 go through.
async fn request_limit_holds_across_both_proxies(f: &Fleet) {
    // Scoped to provider `openai`: it matches only if the hook sends LiteLLM's provider.
    f.create(json!({"model_name": "req", "provider": "openai",
        "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}))
        .await;
    let replies = f
        .burst(12, KEY_A, chat("req", json!({"max_tokens": 5})))
        .await;
    assert_eq!(statuses(&replies), (5, 7), "one limit for the fleet");
    for r in replies.iter().filter(|r| r.status == 429) {
        assert_denial(r, "requests", 60);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
        let reset = r
            .header("x-ratelimit-reset-requests")
            .expect("reset header");
        assert!(reset.ends_with('s'), "a duration: {reset}");
    }
    let ok = replies.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(
        f.up.calls("req"),
        5,
        "a refused request never reaches the upstream"
    );
    assert_eq!(
        f.used(json!({"model": "req", "provider": "openai"}), "requests")
            .await,
        5.0
    );
}

/// Room for 3½ estimates: exactly 3 of 8 go through, and their real usage is counted.
async fn token_limit_holds_across_both_proxies(f: &Fleet) {
    let each = f.prompt + 10; // what the hook reserves, and what the upstream reports
    let limit = 3 * each + each / 2;
    f.create(json!({"model_name": "tok",
        "rate_limit": {"token_max_limit": limit, "token_reset_duration": "1h"}}))
        .await;
    let replies = f
        .burst(8, KEY_A, chat("tok", json!({"max_tokens": 10})))
        .await;
    assert_eq!(statuses(&replies), (3, 5), "one token limit for the fleet");
    for r in replies.iter().filter(|r| r.status == 429) {
        assert_denial(r, "tokens", 3600);
        assert_eq!(
            r.header("x-ratelimit-limit-tokens"),
            Some(&*limit.to_string())
        );
    }
    f.settles_to(json!({"model": "tok"}), "tokens", (3 * each) as f64)
        .await;
}

/// A budget of 3½ estimated costs: exactly 3 of 8 go through, charged LiteLLM's cost.
async fn budget_holds_across_both_proxies(f: &Fleet) {
    let each = f.prompt as f64 * PRICE_IN + 10.0 * PRICE_OUT;
    let id = f
        .create(json!({"model_name": "bud",
            "budgets": [{"max_limit": 3.5 * each, "reset_duration": "1d"}]}))
        .await;
    let replies = f
        .burst(8, KEY_A, chat("bud", json!({"max_tokens": 10})))
        .await;
    assert_eq!(statuses(&replies), (3, 5), "one budget for the fleet");
    for r in replies.iter().filter(|r| r.status == 429) {
        assert_denial(r, "budget_exceeded", 86_400);
    }
    let ok = replies.iter().find(|r| r.status == 200).unwrap();
    let cost: f64 = ok
        .header("x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (cost - each).abs() < 1e-9,
        "LiteLLM's cost {cost}, estimate {each}"
    );
    let spent = eventually(Duration::from_secs(10), || async {
        let c = f.b.config(&id).await;
        (c["budgets"][0]["current_usage"].as_f64().unwrap() - 3.0 * each).abs() < 1e-6
    });
    assert!(spent.await, "{}", f.b.config(&id).await);
}

/// Limits of one virtual key (LiteLLM's key alias) and of one user hold across proxies.
async fn key_and_user_limits_hold_across_both_proxies(f: &Fleet) {
    let once_an_hour = |n: u64| json!({"request_max_limit": n, "request_reset_duration": "1h"});
    f.create(
        json!({"model_name": "vk", "scope": "virtual_key", "scope_id": "key-b",
        "rate_limit": once_an_hour(2)}),
    )
    .await;
    f.create(
        json!({"model_name": "vk", "scope": "user", "scope_id": "carol",
        "rate_limit": once_an_hour(1)}),
    )
    .await;
    let body = chat("vk", json!({}));
    let b = [&f.p1, &f.p2, &f.p1].map(|p| p.chat(KEY_B, &body));
    let b: Vec<u16> = join_all(b).await.iter().map(|r| r.status).collect();
    assert_eq!(b.iter().filter(|s| **s == 200).count(), 2, "key-b: {b:?}");
    assert_eq!(
        f.p2.chat(KEY_A, &body).await.status,
        200,
        "key-a has no limit"
    );
    let carol = chat("vk", json!({"user": "carol"}));
    assert_eq!(f.p2.chat(KEY_A, &carol).await.status, 200);
    assert_denial(&f.p1.chat(KEY_A, &carol).await, "requests", 3600);
}

/// Streamed and plain answers without `max_tokens` reserve the default completion and
/// settle to the upstream's real usage, once each.
async fn streamed_usage_is_settled(f: &Fleet) {
    f.create(json!({"model_name": "stream",
        "rate_limit": {"token_max_limit": 100_000, "token_reset_duration": "1h"}}))
        .await;
    for p in [&f.p1, &f.p2] {
        let r = p
            .chat(KEY_A, &chat("stream", json!({"stream": true})))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            r.text.contains("\"Hel\"") && r.text.contains("[DONE]"),
            "{}",
            r.text
        );
    }
    assert_eq!(
        f.p2.chat(KEY_A, &chat("stream", json!({}))).await.status,
        200
    );
    let real = f.prompt + openai_upstream::DEFAULT_COMPLETION;
    assert!(
        real < f.prompt + DEFAULT_COMPLETION,
        "settling must change the count"
    );
    f.settles_to(json!({"model": "stream"}), "tokens", (3 * real) as f64)
        .await;
}

/// A failing upstream call holds its reservation while in flight, then gives it back.
/// Returns the prompt tokens the hook reserved (the reservation less `max_tokens`).
async fn upstream_error_gives_the_reservation_back(f: &Fleet) -> u64 {
    let id = f
        .create(json!({"model_name": "fail",
            "rate_limit": {"token_max_limit": 100_000, "token_reset_duration": "1h"},
            "budgets": [{"max_limit": 10, "reset_duration": "1d"}]}))
        .await;
    let body = chat("fail", json!({"max_tokens": 10}));
    // The upstream takes FAIL_AFTER to fail, after the hook reserved: watch meanwhile.
    let call = f.p1.chat(KEY_A, &body);
    tokio::pin!(call);
    let mut held = 0;
    let reply = loop {
        tokio::select! {
            reply = &mut call => break reply,
            _ = tokio::time::sleep(Duration::from_millis(20)), if held == 0 => {
                held = f.used(json!({"model": "fail"}), "tokens").await as u64;
            }
        }
    };
    assert!(
        held > 10,
        "the estimate (prompt + max_tokens 10) is reserved in flight: {held}"
    );
    assert_eq!(reply.status, 500, "{}", reply.text);
    f.settles_to(json!({"model": "fail"}), "tokens", 0.0).await;
    let budget = f.b.config(&id).await["budgets"][0]["current_usage"].as_f64();
    assert_eq!(budget, Some(0.0), "the reserved dollars come back too");
    held - 10
}

/// LiteLLM's own `rpm: 3` on the deployment, without tollgate: each proxy counts alone.
async fn litellm_own_rpm_lets_each_proxy_through(f: &Fleet) -> usize {
    // LiteLLM keys some of its counts by the UTC minute: stay clear of a boundary.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    let mut admitted = [0, 0];
    for i in 0..10 {
        if f.proxy(i).chat(KEY_A, &chat("rpm", json!({}))).await.status == 200 {
            admitted[i % 2] += 1;
        }
    }
    assert_eq!(admitted, [3, 3], "each proxy enforces rpm 3 on its own");
    eprintln!(
        "without tollgate: rpm 3 on two proxies admitted {} of 10",
        admitted[0] + admitted[1]
    );
    admitted[0] + admitted[1]
}

/// With both tollgates stopped, p1 (fail_open: true) serves and p2 (false) refuses.
async fn tollgate_down_follows_fail_open(mut f: Fleet) {
    let body = chat("down", json!({}));
    assert_eq!(f.p1.chat(KEY_A, &body).await.status, 200);
    assert_eq!(f.p2.chat(KEY_A, &body).await.status, 200);
    let grace = Duration::from_secs(5);
    f.tollgate_a
        .running
        .take()
        .unwrap()
        .stop(grace)
        .await
        .unwrap();
    f.tollgate_b.take().unwrap().stop(grace).await.unwrap();
    let open = f.p1.chat(KEY_A, &body).await;
    assert_eq!(
        open.status, 200,
        "fail_open: true lets it through: {}",
        open.text
    );
    let closed = f.p2.chat(KEY_A, &body).await;
    assert_eq!(
        closed.status, 503,
        "fail_open: false refuses: {}",
        closed.text
    );
    assert!(closed.text.contains("fail_open"), "{}", closed.text);
    assert_eq!(closed.header("retry-after"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_litellm_proxies_share_one_set_of_limits_through_tollgate() {
    let started = Instant::now();
    let mut f = Fleet::start().await;
    f.prompt = upstream_error_gives_the_reservation_back(&f).await;
    f.up.set_prompt_tokens(f.prompt);
    request_limit_holds_across_both_proxies(&f).await;
    token_limit_holds_across_both_proxies(&f).await;
    budget_holds_across_both_proxies(&f).await;
    key_and_user_limits_hold_across_both_proxies(&f).await;
    streamed_usage_is_settled(&f).await;
    let without = litellm_own_rpm_lets_each_proxy_through(&f).await;
    assert_eq!(
        without, 6,
        "LiteLLM alone: twice its limit across two proxies"
    );
    tollgate_down_follows_fail_open(f).await;
    eprintln!("whole fleet test: {:?}", started.elapsed());
}
