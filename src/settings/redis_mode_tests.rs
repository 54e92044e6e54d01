//! --redis-mode, --sentinel-master and the --redis-url list: what is refused, and why.

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
    let err = parse(&["--redis-mode", "cluster", "--redis-url", "redis://a"])
        .validate()
        .unwrap_err();
    assert!(err.contains("not yet supported"), "{err}");
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
