//! A real Prometheus, scraping two real tollgate processes on one real Redis every
//! second, with the shipped rules evaluated every second. After traffic near and over
//! limits, usage reports and denials, then Redis killed: the rules load without errors,
//! every rule and every dashboard expression evaluates through Prometheus's HTTP API, and
//! the core and tenant ones return data. The tenant-near-limit and store-fallback alerts
//! go pending for exactly the configs and replicas that caused them.

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;
#[path = "common/webhook_receiver.rs"]
mod webhook_receiver;

use common::{Client, Process, RedisServer, eventually};
use prometheus::Prometheus;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use webhook_receiver::{Mode, Receiver};

/// Metrics this test's traffic does not produce: their expressions must parse, but need
/// not return data. (None today: the traffic below makes every metric the rules and
/// panels read.)
const NOT_YET_EMITTED: &[&str] = &[];

/// Grafana's variables, as a dashboard viewer would have them.
fn grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1s")
        .replace("$instance", ".*")
}

/// The `tollgate_*` metric families an expression reads.
fn metrics_of(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tollgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| tollgate::metrics::ALL.contains(base))
            .unwrap_or(name);
        out.insert(family.to_string());
        rest = &tail[end..];
    }
    out
}

fn not_yet(expr: &str) -> bool {
    metrics_of(expr)
        .iter()
        .any(|m| NOT_YET_EMITTED.contains(&m.as_str()))
}

/// Every query of the dashboard: (where, PromQL). `label_values(m, l)` variables become
/// the PromQL that gives the same values.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/tollgate.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let at = format!("panel {} {}", p["title"], t["refId"]);
            out.push((at, grafana(t["expr"].as_str().unwrap())));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let args = q
                .strip_prefix("label_values(")
                .and_then(|a| a.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
            let (metric, label) = args.split_once(',').unwrap();
            let expr = format!("group by ({}) ({metric})", label.trim());
            out.push((format!("variable {}", v["name"]), expr));
        }
    }
    out
}

/// The alerts Prometheus has (pending or firing): (name, labels, state).
async fn alerts(prom: &Prometheus) -> Vec<(String, Value, String)> {
    let a = prom.api("alerts", &[]).await;
    a["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let name = x["labels"]["alertname"].as_str().unwrap().to_string();
            (
                name,
                x["labels"].clone(),
                x["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Label `key` of each sample of `expr`.
async fn label_set(prom: &Prometheus, expr: &str, key: &str) -> BTreeSet<String> {
    prom.samples(expr)
        .await
        .iter()
        .map(|(m, _)| m[key].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_for(prom: &Prometheus, what: &str, expr: &str, ok: impl Fn(&[(Value, f64)]) -> bool) {
    let seen = eventually(Duration::from_secs(15), || async {
        ok(&prom.samples(expr).await)
    })
    .await;
    assert!(seen, "{what}: {expr} = {:?}", prom.samples(expr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_two_tollgates_and_evaluates_every_rule_and_panel() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    // Threshold events (the default 0.8 and 1.0 of every limit) go to a real receiver.
    let receiver = Receiver::up(Mode::Up).await;
    let hook = receiver.url();
    let args = [
        "--redis-url",
        url.as_str(),
        "--store-timeout-ms",
        "2000",
        "--alert-webhook",
        hook.as_str(),
    ];
    let (a, b) = (
        Process::spawn(&args, &[]).await,
        Process::spawn(&args, &[]).await,
    );
    let replicas: [&Client; 2] = [&a, &b];
    let instances: BTreeSet<String> = replicas
        .iter()
        .map(|c| c.base.trim_start_matches("http://").to_string())
        .collect();
    for c in replicas {
        assert!(
            eventually(Duration::from_secs(10), || async {
                c.get("/ready").await.status == 200
            })
            .await
        );
    }
    let prom = Prometheus::start(&instances.iter().cloned().collect::<Vec<_>>()).await;

    // A tenant at 95 % of its requests, one over its limit, a budget paid by usage
    // reports, and ten quiet virtual keys.
    let hot = a
        .create(
            json!({"model_name": "*", "scope": "virtual_key", "scope_id": "vk-hot",
            "rate_limit": {"request_max_limit": 20, "request_reset_duration": "1h"}}),
        )
        .await;
    let over = a
        .create(
            json!({"model_name": "gpt-4o", "scope": "user", "scope_id": "u-over",
            "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1h"}}),
        )
        .await;
    // A shadow limit on the same user's traffic: it would refuse from the second check
    // (and is a tenant past its limit too).
    let shadow = a
        .create(
            json!({"model_name": "*", "scope": "user", "scope_id": "u-over",
        "enforcement": "shadow",
        "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}),
        )
        .await;
    let budget = a
        .create(
            json!({"model_name": "*", "scope": "user", "scope_id": "u-budget",
            "rate_limit": {"token_max_limit": 100000, "token_reset_duration": "1m"},
            "budgets": [{"max_limit": 10.0, "reset_duration": "1d"}]}),
        )
        .await;
    for i in 0..10 {
        a.create(
            json!({"model_name": "*", "scope": "virtual_key", "scope_id": format!("vk-w{i}"),
            "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1h"}}),
        )
        .await;
    }
    // Two rounds a scrape apart, alternating replicas, so that rates have increases.
    let mut denied = 0;
    for round in 0..2 {
        for n in 0..10 {
            let c = replicas[n % 2];
            let hot_check = json!({"model": "gpt-4o", "virtual_key": "vk-hot"});
            if round == 0 || n < 9 {
                assert_eq!(c.check(hot_check).await.status, 200);
            }
            let answer = c.check(json!({"model": "gpt-4o", "user": "u-over"})).await;
            denied += usize::from(answer.status == 429);
            let warm = json!({"model": "m", "virtual_key": format!("vk-w{n}")});
            assert_eq!(c.check(warm).await.status, 200);
            let report = json!({"model": "m", "user": "u-budget", "tokens": 500, "cost": 0.125,
                "reserved_tokens": 0, "reserved_cost": 0.0, "request_id": format!("r{round}-{n}")});
            assert_eq!(c.post("/v1/usage", &report).await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert_eq!(denied, 15, "20 checks of a limit of 5");
    // A check after the reports shows the budget's usage: 20 × $0.125 + $0.5 = $3.
    let paid = json!({"model": "m", "user": "u-budget", "tokens": 1000, "cost": 0.5});
    assert_eq!(b.check(paid).await.status, 200);

    let hot_used = format!(r#"max(tollgate_limit_used{{config_id="{hot}"}})"#);
    wait_for(&prom, "hot tenant scraped", &hot_used, |s| {
        s.len() == 1 && s[0].1 == 19.0
    })
    .await;
    let budget_used = format!(r#"max(tollgate_limit_used{{config_id="{budget}",kind="budget"}})"#);
    wait_for(&prom, "budget in dollars", &budget_used, |s| {
        s.len() == 1 && s[0].1 == 3.0
    })
    .await;
    wait_for(
        &prom,
        "both replicas up",
        r#"up{job="tollgate"} == 1"#,
        |s| s.len() == 2,
    )
    .await;

    // The rules loaded, are evaluated without error, and as many as the file has.
    let rules = prom.api("rules", &[]).await;
    let groups = rules["data"]["groups"].as_array().unwrap();
    let rules: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let in_file = std::fs::read_to_string(prometheus::rules_file())
        .unwrap()
        .matches("- alert: ")
        .count();
    assert_eq!(rules.len(), in_file, "{groups:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["lastError"].as_str().unwrap_or(""), "", "{r}");
    }
    let rule_expr = |name: &str| {
        let r = rules.iter().find(|r| r["name"] == name).unwrap();
        r["query"].as_str().unwrap().to_string()
    };

    // Healthy: the store and snapshot alerts are quiet; the full tenants (the shadow one
    // too), and only they, are near their limit, and that alert is pending.
    for quiet in [
        "TollgateStoreFallbacks",
        "TollgateStoreNotWritable",
        "TollgateStoreDataLoss",
        "TollgateConfigSnapshotStale",
    ] {
        let got = prom.samples(&rule_expr(quiet)).await;
        assert!(got.is_empty(), "{quiet} while healthy: {got:?}");
    }
    let near = label_set(&prom, &rule_expr("TollgateTenantNearLimit"), "config_id").await;
    assert_eq!(
        near,
        BTreeSet::from([hot.clone(), over.clone(), shadow.clone()])
    );
    let pending = eventually(Duration::from_secs(10), || async {
        let got: BTreeSet<String> = alerts(&prom)
            .await
            .into_iter()
            .filter(|(n, _, s)| n == "TollgateTenantNearLimit" && s == "pending")
            .map(|(_, l, _)| l["config_id"].as_str().unwrap().to_string())
            .collect();
        got == BTreeSet::from([hot.clone(), over.clone(), shadow.clone()])
    })
    .await;
    assert!(pending, "{:?}", alerts(&prom).await);

    // Redis gone: both replicas fall back (and count store errors); the fallback alert
    // goes pending for both.
    redis.kill();
    for c in replicas {
        for _ in 0..3 {
            let answer = c.check(json!({"model": "m", "virtual_key": "vk-w1"})).await;
            assert_eq!(
                answer.body["fallback"]["policy"], "allow",
                "{}",
                answer.body
            );
        }
        let report = json!({"model": "m", "user": "u-budget", "tokens": 1, "request_id": "late"});
        assert_eq!(c.post("/v1/usage", &report).await.status, 503);
    }
    let fallbacks = rule_expr("TollgateStoreFallbacks");
    wait_for(&prom, "fallbacks on both", &fallbacks, |s| s.len() == 2).await;
    assert_eq!(label_set(&prom, &fallbacks, "instance").await, instances);
    let pending = eventually(Duration::from_secs(10), || async {
        alerts(&prom)
            .await
            .iter()
            .filter(|(n, _, s)| n == "TollgateStoreFallbacks" && s == "pending")
            .count()
            == 2
    })
    .await;
    assert!(pending, "{:?}", alerts(&prom).await);
    wait_for(
        &prom,
        "store errors scraped",
        "sum by (instance) (tollgate_store_errors_total)",
        |s| s.len() == 2,
    )
    .await;
    // One more scrape, so that every counter has two samples.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every rule and every dashboard expression parses; the core and tenant ones return
    // data; so do the metrics every rule reads.
    let mut checked = 0;
    for r in &rules {
        let expr = r["query"].as_str().unwrap();
        let a = prom.query(expr).await;
        assert_eq!(a["status"], "success", "rule {}: {a}", r["name"]);
        for m in metrics_of(expr) {
            if NOT_YET_EMITTED.contains(&m.as_str()) {
                continue;
            }
            let selector = format!(r#"{{__name__=~"{m}|{m}_bucket"}}"#);
            let got = prom.samples(&selector).await;
            assert!(
                !got.is_empty(),
                "rule {} reads {m}, which has no data",
                r["name"]
            );
        }
        checked += 1;
    }
    let mut returned = Vec::new();
    for (at, expr) in dashboard_exprs() {
        let a = prom.query(&expr).await;
        assert_eq!(a["status"], "success", "{at}: {expr}: {a}");
        if !not_yet(&expr) {
            let got = prom.samples(&expr).await;
            assert!(!got.is_empty(), "{at}: {expr} returned no data");
            returned.push(at);
        }
        checked += 1;
    }
    let dashboard = dashboard_exprs();
    assert_eq!(checked, rules.len() + dashboard.len());
    assert_eq!(
        returned.len(),
        dashboard.len(),
        "every panel returns data: {returned:?}"
    );
    let top = prom
        .samples(
            &dashboard_exprs()
                .iter()
                .find(|(at, _)| at.contains("Top configs"))
                .unwrap()
                .1,
        )
        .await;
    assert!(top.len() <= 10, "{top:?}");
    let best = top.iter().map(|s| s.1).fold(0.0, f64::max);
    assert_eq!(
        best, 5.0,
        "the shadow config, counted past its max, leads: {top:?}"
    );
    assert!(
        top.iter()
            .any(|(l, v)| l["config_id"] == over.as_str() && *v == 1.0),
        "the enforced config at its limit is there: {top:?}"
    );
    let variable = dashboard_exprs()
        .into_iter()
        .find(|(at, _)| at.starts_with("variable"))
        .unwrap();
    assert_eq!(label_set(&prom, &variable.1, "instance").await, instances);
    assert!(
        prom.log().lines().all(|l| !l.contains("level=error")),
        "{}",
        prom.log()
    );
}
