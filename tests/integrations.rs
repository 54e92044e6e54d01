//! Envoy's rate limit service without Envoy in the way: the gRPC service spoken to
//! directly (descriptors, all-or-nothing across them, malformed requests, store
//! failure), and the OpenAI-style headers of `/v1/check`.

mod common;

use common::{Backend, Tollgate};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use serde_json::json;
use std::time::Duration;
use tollgate::settings::StoreErrorPolicy;
use tonic::transport::Channel;

fn with_rls(s: &mut tollgate::Settings) {
    s.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
}

async fn rls(running: &tollgate::Running) -> RateLimitServiceClient<Channel> {
    let addr = running.grpc_addr.expect("--grpc-listen given");
    RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connects")
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "llm".into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_are_one_check_all_or_nothing() {
    let t = Tollgate::start_with(Backend::Memory, with_rls).await;
    for (model, max) in [("m1", 1), ("m2", 5)] {
        t.create(json!({"model_name": model, "rate_limit": {"request_max_limit": max, "request_reset_duration": "1m"}}))
            .await;
    }
    let mut client = rls(t.running.as_ref().unwrap()).await;
    let both = || {
        request(vec![
            descriptor(&[("model", "m1"), ("user", "u")]),
            descriptor(&[("model", "m2")]),
            descriptor(&[("generic_key", "not-ours")]),
        ])
    };

    let first = ask(&mut client, both()).await.unwrap();
    assert_eq!(first.overall_code, Code::Ok as i32);
    let codes: Vec<i32> = first.statuses.iter().map(|s| s.code).collect();
    assert_eq!(codes, [Code::Ok as i32; 3]);
    let m2 = first.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!((m2.requests_per_unit, m2.unit), (5, Unit::Minute as i32));
    assert_eq!(first.statuses[1].limit_remaining, 4);
    assert!(first.statuses[2].current_limit.is_none(), "not tollgate's");

    let second = ask(&mut client, both()).await.unwrap();
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    let codes: Vec<i32> = second.statuses.iter().map(|s| s.code).collect();
    assert_eq!(
        codes,
        [Code::OverLimit as i32, Code::Ok as i32, Code::Ok as i32]
    );
    let reset = second.statuses[0].duration_until_reset.unwrap();
    assert!((1..=60).contains(&reset.seconds), "{reset:?}");
    assert_eq!(
        second.statuses[1].limit_remaining, 4,
        "a refused request consumed nothing from m2"
    );
    let m2 = t
        .check(json!({"model": "m2", "requests": 0, "dry_run": true}))
        .await;
    assert_eq!(m2.body["limits"][0]["used"], 1);

    // hits_addend is the amount.
    let mut heavy = request(vec![descriptor(&[("model", "m2")])]);
    heavy.hits_addend = 4;
    assert_eq!(
        ask(&mut client, heavy.clone()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut client, heavy).await.unwrap().overall_code,
        Code::OverLimit as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_arguments_and_unknown_ones_ok() {
    let t = Tollgate::start_with(Backend::Memory, with_rls).await;
    let mut client = rls(t.running.as_ref().unwrap()).await;
    let mut no_domain = request(vec![descriptor(&[("model", "m")])]);
    no_domain.domain.clear();
    let long = "x".repeat(300);
    for bad in [
        request(vec![]),
        no_domain,
        request(vec![descriptor(&[("model", &long)])]),
        request(vec![descriptor(&[("model", "a"), ("model", "b")])]),
    ] {
        let err = ask(&mut client, bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(!err.message().is_empty());
    }
    let unknown = ask(&mut client, request(vec![descriptor(&[("path", "/x")])]))
        .await
        .unwrap();
    assert_eq!(unknown.overall_code, Code::Ok as i32);
    let no_config = ask(&mut client, request(vec![descriptor(&[("model", "m")])]))
        .await
        .unwrap();
    assert_eq!(no_config.overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_answers_by_on_store_error() {
    let fast = |policy| {
        move |s: &mut tollgate::Settings| {
            with_rls(s);
            s.store_timeout_ms = 300;
            s.on_store_error = policy;
        }
    };
    let mut deny = Tollgate::start_with(Backend::Redis, fast(StoreErrorPolicy::Deny)).await;
    let allow = deny.replica(fast(StoreErrorPolicy::Allow)).await;
    deny.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1m"}}))
        .await;
    let (mut closed, mut open) = (rls(deny.running.as_ref().unwrap()).await, rls(&allow).await);
    let req = || request(vec![descriptor(&[("model", "m")])]);
    assert_eq!(
        ask(&mut closed, req()).await.unwrap().overall_code,
        Code::Ok as i32
    );

    deny.redis.as_mut().unwrap().kill();
    let refused = ask(&mut closed, req()).await.unwrap();
    assert_eq!(refused.overall_code, Code::OverLimit as i32);
    assert_eq!(refused.statuses.len(), 1);
    let let_through = ask(&mut open, req()).await.unwrap();
    assert_eq!(let_through.overall_code, Code::Ok as i32);
    allow.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_carry_openai_headers_for_requests_and_tokens() {
    let t = Tollgate::start(Backend::Memory).await;
    t.create(json!({"model_name": "m", "rate_limit": {
        "request_max_limit": 3, "request_reset_duration": "6m",
        "token_max_limit": 1000, "token_reset_duration": "1s"}}))
        .await;
    t.create(json!({"model_name": "*", "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1h"}}))
        .await;
    let a = t.check(json!({"model": "m", "tokens": 10})).await;
    assert_eq!(a.status, 200);
    // Of the two request limits, 2/3 left is more restrictive than 99/100.
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("2"));
    assert_eq!(a.header("x-ratelimit-reset-requests"), Some("6m0s"));
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("990"));
    assert_eq!(a.header("x-ratelimit-reset-tokens"), Some("1s"));
    assert!(a.header("ratelimit-policy").is_some() && a.header("ratelimit").is_some());

    for _ in 0..2 {
        t.check(json!({"model": "m"})).await;
    }
    let denied = t.check(json!({"model": "m"})).await;
    assert_eq!(denied.status, 429);
    assert_eq!(denied.header("x-ratelimit-remaining-requests"), Some("0"));

    let other = t.check(json!({"model": "other"})).await;
    assert_eq!(other.header("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(
        other.header("x-ratelimit-limit-tokens"),
        None,
        "no token limit applies"
    );
}
