//! The shipped alerting rules pass `promtool check rules` and their unit tests
//! (`deploy/prometheus/tollgate-rules.test.yml`), and every alert has a test that fires it
//! and one that keeps it quiet, a `for:` and a severity.

mod common;
#[path = "common/prometheus.rs"]
mod prometheus;

use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    let out = Command::new(prometheus::promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn read(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/deploy/prometheus/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The rules of the shipped file: (alert name, its lines up to the next alert).
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            out.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "tollgate-rules.yml"]);
    let rules = read("tollgate-rules.yml");
    let alerts = alerts(&rules);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "tollgate-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_for_severity_and_tests_that_fire_and_do_not() {
    let alerts = alerts(&read("tollgate-rules.yml"));
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "TollgateStoreFallbacks",
        "TollgateStoreNotWritable",
        "TollgateStoreDataLoss",
        "TollgateConfigSnapshotStale",
        "TollgateSlowChecks",
        "TollgateTenantNearLimit",
        "TollgateAlertDeliveriesRetried",
        "TollgateAlertsDropped",
    ] {
        assert!(names.contains(&needed), "no alert {needed}: {names:?}");
    }
    let tests = read("tollgate-rules.test.yml");
    for (name, body) in &alerts {
        assert!(body.contains("\n        for: "), "{name} has no `for:`");
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{name} has no severity"
        );
        assert!(
            body.contains("{{ $labels."),
            "{name}'s summary names no instance or tenant"
        );
        assert!(
            tests.contains(&format!("alertname: {name}, exp_alerts: []}}")),
            "no test keeps {name} quiet"
        );
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - "
            )),
            "no test fires {name}"
        );
    }
}
