//! `--usage-metrics N` on a running tollgate: with many more configs than N, `/metrics`
//! carries the gauges of exactly the N configs with the highest usage ratio; a config
//! that overtakes one takes its place and the other vanishes; 0 turns them off; the
//! variable sets it.

mod common;

use common::{Backend, Client, Process, Tollgate};
use futures_util::future::join_all;
use serde_json::json;
use std::collections::BTreeMap;

const CONFIGS: usize = 2_000;
const N: usize = 50;

/// config_id → value of each `name` sample on `/metrics` (the samples counted too).
async fn gauges(c: &Client, name: &str) -> (BTreeMap<String, f64>, usize) {
    let text = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    let mut samples = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        samples += 1;
        let id = rest
            .strip_prefix("config_id=\"")
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("config_id first: {line}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        out.insert(id.to_string(), value);
    }
    (out, samples)
}

/// Config `i` of model `m{i}`, at most `i + 1` requests an hour: one check puts it at
/// 1 / (i + 1), so config 0 ranks first and config 1999 last.
async fn create_and_check_each_once(t: &Tollgate) -> Vec<String> {
    let mut ids = Vec::with_capacity(CONFIGS);
    for chunk in (0..CONFIGS).collect::<Vec<_>>().chunks(25) {
        let created = join_all(chunk.iter().map(|&i| {
            t.create(json!({"model_name": format!("m{i}"),
                "rate_limit": {"request_max_limit": i + 1, "request_reset_duration": "1h"}}))
        }))
        .await;
        ids.extend(created);
        let checked = join_all(
            chunk
                .iter()
                .map(|&i| t.check(json!({"model": format!("m{i}")}))),
        )
        .await;
        assert!(checked.iter().all(|a| a.status == 200));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_configs_export_only_the_n_fullest_and_leavers_vanish() {
    let t = Tollgate::start_with(Backend::Memory, |s| s.usage_metrics = N).await;
    let ids = create_and_check_each_once(&t).await;
    let (used, samples) = gauges(&t, "tollgate_limit_used").await;
    assert_eq!(samples, N, "one series per limit of {N} configs");
    let expected: Vec<&String> = ids[..N].iter().collect();
    assert_eq!(used.keys().collect::<Vec<_>>().len(), N);
    assert!(
        expected.iter().all(|id| used.get(*id) == Some(&1.0)),
        "the {N} highest ratios: {used:?}"
    );
    let (max, max_samples) = gauges(&t, "tollgate_limit_max").await;
    assert_eq!(max_samples, N);
    assert_eq!(max[&ids[0]], 1.0);
    assert_eq!(max[&ids[N - 1]], N as f64);

    // Config 1999 climbs to 45 / 2000 = 2.25 %, past config 49's 1 / 50: it enters,
    // config 49 leaves.
    let last = CONFIGS - 1;
    for _ in 0..44 {
        let a = t.check(json!({"model": format!("m{last}")})).await;
        assert_eq!(a.status, 200);
    }
    let (used, samples) = gauges(&t, "tollgate_limit_used").await;
    assert_eq!(samples, N);
    assert_eq!(used.get(&ids[last]), Some(&45.0), "{used:?}");
    assert!(!used.contains_key(&ids[N - 1]), "config 49 left the top");
    assert!(ids[..N - 1].iter().all(|id| used.contains_key(id)));
    let (max, _) = gauges(&t, "tollgate_limit_max").await;
    assert_eq!(
        max.keys().collect::<Vec<_>>(),
        used.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_gauges_off() {
    let t = Tollgate::start_with(Backend::Memory, |s| s.usage_metrics = 0).await;
    t.create(json!({"model_name": "m", "rate_limit": {"request_max_limit": 2, "request_reset_duration": "1h"}}))
        .await;
    assert_eq!(t.check(json!({"model": "m"})).await.status, 200);
    let text = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tollgate_checks_total"), "{text}");
    assert!(!text.contains("tollgate_limit_"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_variable_sets_the_bound_of_a_process() {
    let p = Process::spawn(&[], &[("TOLLGATE_USAGE_METRICS", "2")]).await;
    for i in 0..3 {
        p.create(json!({"model_name": format!("m{i}"),
            "rate_limit": {"request_max_limit": 10 * (i + 1), "request_reset_duration": "1h"}}))
            .await;
        assert_eq!(p.check(json!({"model": format!("m{i}")})).await.status, 200);
    }
    let (used, samples) = gauges(&p, "tollgate_limit_used").await;
    assert_eq!(samples, 2, "{used:?}");
    let mut values: Vec<f64> = used.values().copied().collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [1.0, 1.0]);
}
