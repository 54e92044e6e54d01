//! --redis-mode, --sentinel-master and the --redis-url list (sentinels, cluster seed
//! nodes): what is refused, and why.

use super::*;

fn parse(args: &[&str]) -> Settings {
    let mut all = vec!["tollgate"];
    all.extend_from_slice(args);
    Settings::try_parse_from(all).unwrap()
}

#[test]
fn redis_modes() {
    let s = parse(&[]);
    assert_eq!(s.redis_mode, RedisMode::Standalone);
    assert_eq!(s.redis_wait_replicas, 0);
    let err = parse(&["--redis-url", "redis://a,redis://b"])
        .validate()
        .unwrap_err();
    assert!(err.contains("--redis-mode sentinel"), "{err}");
    assert!(
        parse(&["--redis-mode", "cluster", "--redis-url", "redis://a"])
            .validate()
            .is_ok()
    );
    let err = parse(&[
        "--redis-mode",
        "cluster",
        "--redis-url",
        "redis://a",
        "--redis-wait-replicas",
        "1",
    ])
    .validate()
    .unwrap_err();
    assert!(err.contains("--redis-wait-replicas"), "{err}");
    let err = parse(&["--redis-mode", "sentinel", "--redis-url", "redis://a"])
        .validate()
        .unwrap_err();
    assert!(err.contains("--sentinel-master"), "{err}");
    let err = parse(&["--redis-mode", "sentinel", "--sentinel-master", "m"])
        .validate()
        .unwrap_err();
    assert!(err.contains("--redis-url"), "{err}");
    let err = parse(&["--redis-url", "redis://a", "--sentinel-master", "m"])
        .validate()
        .unwrap_err();
    assert!(err.contains("only for --redis-mode sentinel"), "{err}");
    let s = parse(&[
        "--redis-mode",
        "sentinel",
        "--sentinel-master",
        "m",
        "--redis-url",
        "redis://:pw@a:26379, rediss://b:26379,",
        "--redis-wait-replicas",
        "1",
    ]);
    assert!(s.validate().is_ok());
    assert_eq!(s.redis_urls(), ["redis://:pw@a:26379", "rediss://b:26379"]);
    assert!(Settings::try_parse_from(["tollgate", "--redis-mode", "ring"]).is_err());
}

#[test]
fn cluster_mode_takes_seed_nodes_and_standalone_one_url() {
    let seeds = "redis://a:7000, redis://b:7000";
    let s = parse(&["--redis-mode", "cluster", "--redis-url", seeds]);
    assert_eq!(s.redis_mode, RedisMode::Cluster);
    assert_eq!(s.redis_urls(), ["redis://a:7000", "redis://b:7000"]);
    assert!(s.validate().is_ok());
    assert!(parse(&["--redis-url", seeds]).validate().is_err());
    assert!(parse(&["--redis-mode", "cluster"]).validate().is_err());
    let bad = parse(&[
        "--redis-mode",
        "cluster",
        "--redis-url",
        "redis://a,http://b",
    ]);
    assert!(bad.validate().is_err());
}

#[test]
fn counter_slots_default_to_three_and_zero_keeps_one_slot_per_config() {
    assert_eq!(parse(&[]).cluster_counter_slots, 3);
    let s = parse(&["--redis-mode", "cluster", "--cluster-counter-slots", "0"]);
    assert_eq!(s.cluster_counter_slots, 0);
    assert!(Settings::try_parse_from(["tollgate", "--cluster-counter-slots", "5000"]).is_err());
}
