//! Unit tests of the flags: defaults, refusals, parsing.

use super::*;

fn parse(args: &[&str]) -> Settings {
    let mut all = vec!["tollgate"];
    all.extend_from_slice(args);
    Settings::try_parse_from(all).unwrap()
}

#[test]
fn defaults() {
    let s = parse(&[]);
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.key_prefix, "tollgate:");
    assert_eq!(s.on_store_error, StoreErrorPolicy::Allow);
    assert_eq!(s.usage_metrics, 1000);
    assert!(s.redis_url.is_none() && s.api_keys().is_empty());
    assert!(s.validate().is_ok());
}

#[test]
fn api_keys_repeat_or_comma_separate() {
    let s = parse(&["--api-key", "a,b", "--api-key", "c", "--api-key", " "]);
    assert_eq!(s.api_keys(), ["a", "b", "c"]);
}

#[test]
fn non_loopback_needs_a_key_or_explicit_insecurity() {
    let err = parse(&["--listen", "0.0.0.0:8080"]).validate().unwrap_err();
    assert!(
        err.contains("--api-key") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    assert!(
        parse(&["--listen", "0.0.0.0:8080", "--api-key", "k"])
            .validate()
            .is_ok()
    );
    assert!(
        parse(&["--listen", "0.0.0.0:8080", "--insecure-no-auth"])
            .validate()
            .is_ok()
    );
    assert!(parse(&["--listen", "[::1]:8080"]).validate().is_ok());
}

#[test]
fn listen_takes_a_host_name() {
    let s = parse(&["--listen", "localhost:9001"]);
    assert!(s.listen.ip().is_loopback(), "{}", s.listen);
    assert_eq!(s.listen.port(), 9001);
    assert!(s.validate().is_ok(), "localhost needs no key");
    let err = Settings::try_parse_from(["tollgate", "--listen", "8080"]).unwrap_err();
    assert!(err.to_string().contains("ip:port or host:port"), "{err}");
}

#[test]
fn contradictions_are_refused() {
    assert!(
        parse(&["--redis-url", "redis://x", "--state-file", "/tmp/s"])
            .validate()
            .is_ok(),
        "a replica's local copy of its snapshot"
    );
    assert!(parse(&["--redis-url", "http://x"]).validate().is_err());
    assert!(Settings::try_parse_from(["tollgate", "--on-store-error", "maybe"]).is_err());
    assert!(Settings::try_parse_from(["tollgate", "--store-timeout-ms", "0"]).is_err());
}

#[test]
fn envoy_rls_is_off_unless_asked_for() {
    let s = parse(&[]);
    assert!(s.grpc_listen.is_none());
    assert_eq!(
        [
            &s.rls_model_key,
            &s.rls_provider_key,
            &s.rls_virtual_key_key,
            &s.rls_user_key
        ],
        ["model", "provider", "virtual_key", "user"]
    );
    assert!(s.rls_token_domains.is_empty());
    let s = parse(&[
        "--grpc-listen",
        "127.0.0.1:8081",
        "--rls-token-domains",
        "llm-tokens,other",
        "--rls-user-key",
        "x-user",
    ]);
    assert_eq!(s.grpc_listen.unwrap().port(), 8081);
    assert_eq!(s.rls_token_domains, ["llm-tokens", "other"]);
    assert!(s.validate().is_ok());
    let err = parse(&["--rls-user-key", "model"]).validate().unwrap_err();
    assert!(
        err.contains("--rls-model-key") && err.contains("--rls-user-key"),
        "{err}"
    );
    assert!(parse(&["--rls-model-key", ""]).validate().is_err());
}

#[test]
fn the_alert_webhook_is_checked_at_start() {
    let s = parse(&[]);
    assert!(s.alert_webhook().unwrap().is_none());
    let s = parse(&[
        "--alert-webhook",
        "https://h/x",
        "--alert-webhook-secret",
        "k",
    ]);
    assert!(s.validate().is_ok());
    assert!(s.alert_webhook().unwrap().unwrap().is_signed());
    assert!(
        parse(&["--alert-webhook", " "])
            .alert_webhook()
            .unwrap()
            .is_none()
    );
    let err = parse(&["--alert-webhook", "h/x"]).validate().unwrap_err();
    assert!(err.contains("--alert-webhook must be"), "{err}");
    let err = parse(&["--alert-webhook-secret", "k"])
        .validate()
        .unwrap_err();
    assert!(err.contains("no --alert-webhook"), "{err}");
    assert!(parse(&["--alert-webhook-secret", ""]).validate().is_ok());
}
