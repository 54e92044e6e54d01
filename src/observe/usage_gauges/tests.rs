//! The ranking, the window and period rules, and the exact text of the usage gauges.

use super::*;
use crate::model::validate::create_config;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

const HOUR_MS: i64 = 3_600_000;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn t0_ms() -> i64 {
    t0().timestamp_millis()
}

fn snapshot(bodies: Vec<Value>) -> Snapshot {
    let configs = bodies
        .into_iter()
        .map(|b| create_config(serde_json::from_value(b).unwrap(), t0()).unwrap())
        .collect();
    Snapshot::build(1, configs)
}

/// The config of model `model` in `s`.
fn by_model<'a>(s: &'a Snapshot, model: &str) -> &'a Arc<CompiledConfig> {
    s.newest_first()
        .find(|c| c.config.model_name == model)
        .unwrap()
}

fn requests(model: &str, max: u64) -> Value {
    json!({"model_name": model, "rate_limit": {"request_max_limit": max, "request_reset_duration": "1h"}})
}

fn ranked_models(s: &Snapshot, n: usize, now_ms: i64) -> Vec<(String, f64)> {
    top(s, n, now_ms)
        .into_iter()
        .map(|(r, c)| (c.config.model_name.to_string(), r))
        .collect()
}

#[test]
fn keeps_the_n_highest_ratios_highest_first() {
    let s = snapshot(
        (0..50)
            .map(|i| requests(&format!("m{i:02}"), 100))
            .collect(),
    );
    for i in 0..50 {
        // m00 at 0%, …, m49 at 49%.
        by_model(&s, &format!("m{i:02}"))
            .seen()
            .record(0, i, t0_ms());
    }
    let now = t0_ms() + 1000;
    let top3 = ranked_models(&s, 3, now);
    assert_eq!(
        top3,
        [
            ("m49".to_string(), 0.49),
            ("m48".to_string(), 0.48),
            ("m47".to_string(), 0.47)
        ]
    );
    assert_eq!(ranked_models(&s, 1000, now).len(), 50, "every seen config");
    assert_eq!(
        ranked_models(&s, usize::MAX, now).len(),
        50,
        "no bound at all"
    );
    assert!(top(&s, 0, now).is_empty());
}

#[test]
fn only_configs_seen_count_and_ties_go_by_id() {
    let s = snapshot((0..6).map(|i| requests(&format!("m{i}"), 10)).collect());
    for i in [1, 3, 4] {
        by_model(&s, &format!("m{i}")).seen().record(0, 5, t0_ms());
    }
    let top = top(&s, 2, t0_ms());
    let mut ids: Vec<&str> = [1, 3, 4]
        .iter()
        .map(|i| by_model(&s, &format!("m{i}")).config.id.as_str())
        .collect();
    ids.sort();
    let got: Vec<&str> = top.iter().map(|(_, c)| c.config.id.as_str()).collect();
    assert_eq!(got, ids[..2], "equal ratios: the smaller ids, in order");
}

#[test]
fn the_largest_ratio_of_a_config_ranks_it() {
    let s = snapshot(vec![
        json!({"model_name": "both", "rate_limit": {
            "request_max_limit": 100, "request_reset_duration": "1h",
            "token_max_limit": 1000, "token_reset_duration": "1h"}}),
        requests("one", 100),
    ]);
    let both = by_model(&s, "both");
    both.seen().record(0, 10, t0_ms()); // 10%
    both.seen().record(1, 900, t0_ms()); // 90%
    by_model(&s, "one").seen().record(0, 50, t0_ms());
    let ranked = ranked_models(&s, 2, t0_ms());
    assert_eq!(ranked[0], ("both".to_string(), 0.9));
    assert_eq!(ranked[1], ("one".to_string(), 0.5));
}

#[test]
fn usage_seen_in_a_window_or_period_that_is_over_does_not_count() {
    let s = snapshot(vec![
        json!({"model_name": "w", "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1h"}}),
        json!({"model_name": "b", "budgets": [{"max_limit": 2.0, "reset_duration": "1d"}]}),
    ]);
    let (w, b) = (by_model(&s, "w"), by_model(&s, "b"));
    let seen_at = t0_ms() + HOUR_MS;
    w.seen().record(0, 8, seen_at);
    b.seen().record(0, 1_500_000_000, seen_at); // $1.50
    assert_eq!(usage_ratio(w, seen_at + 1), Some(0.8));
    assert_eq!(usage_ratio(b, seen_at + 1), Some(0.75));
    // The window slid past everything seen; the budget is still in its day.
    assert_eq!(usage_ratio(w, seen_at + HOUR_MS), None);
    assert_eq!(usage_ratio(b, seen_at + HOUR_MS), Some(0.75));
    // The budget's day (anchored at its creation, t0) ends at t0 + 24 h.
    assert_eq!(usage_ratio(b, t0_ms() + 24 * HOUR_MS - 1), Some(0.75));
    assert_eq!(usage_ratio(b, t0_ms() + 24 * HOUR_MS), None);
    assert!(top(&s, 10, t0_ms() + 24 * HOUR_MS).is_empty());
}

#[test]
fn a_zero_limit_is_full() {
    assert_eq!(ratio(0, 0), 1.0);
    assert_eq!(ratio(3, 0), f64::INFINITY);
    assert_eq!(ratio(3, 4), 0.75);
}

#[test]
fn renders_both_gauges_per_limit_with_escaped_config_fields() {
    let s = snapshot(vec![
        json!({"model_name": "gpt-4o \"mini\"\\x\nnext", "scope": "virtual_key", "scope_id": "vk-1",
               "rate_limit": {"token_max_limit": 1000, "token_reset_duration": "1m"},
               "budgets": [{"max_limit": 2.5, "reset_duration": "30d"}]}),
        json!({"model_name": "*", "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1h"}}),
        requests("unseen", 10),
    ]);
    let vk = by_model(&s, "gpt-4o \"mini\"\\x\nnext");
    let global = by_model(&s, "*");
    vk.seen().record(0, 900, t0_ms()); // tokens 90%
    vk.seen().record(1, 250_000_000, t0_ms()); // $0.25
    global.seen().record(0, 1, t0_ms()); // 10%
    let mut text = String::from("# earlier exporter output\n");
    append(&mut text, &s, 10, t0_ms() + 1);
    let vk_labels = |kind: &str, reset: &str| {
        format!(
            r#"{{config_id="{}",scope="virtual_key",scope_id="vk-1",model_name="gpt-4o \"mini\"\\x\nnext",kind="{kind}",reset_duration="{reset}"}}"#,
            vk.config.id
        )
    };
    let global_labels = format!(
        r#"{{config_id="{}",scope="global",scope_id="",model_name="*",kind="requests",reset_duration="1h"}}"#,
        global.config.id
    );
    let expected = format!(
        "# earlier exporter output\n\
         # HELP tollgate_limit_used {LIMIT_USED_HELP}\n\
         # TYPE tollgate_limit_used gauge\n\
         tollgate_limit_used{} 900\n\
         tollgate_limit_used{} 0.25\n\
         tollgate_limit_used{global_labels} 1\n\
         # HELP tollgate_limit_max {LIMIT_MAX_HELP}\n\
         # TYPE tollgate_limit_max gauge\n\
         tollgate_limit_max{} 1000\n\
         tollgate_limit_max{} 2.5\n\
         tollgate_limit_max{global_labels} 10\n",
        vk_labels("tokens", "1m"),
        vk_labels("budget", "30d"),
        vk_labels("tokens", "1m"),
        vk_labels("budget", "30d"),
    );
    assert_eq!(text, expected);
}

#[test]
fn a_limit_past_its_window_shows_zero_beside_one_still_current() {
    let s = snapshot(vec![json!({"model_name": "m", "rate_limit": {
        "request_max_limit": 10, "request_reset_duration": "1m",
        "token_max_limit": 100, "token_reset_duration": "1h"}})]);
    let c = by_model(&s, "m");
    c.seen().record(0, 9, t0_ms());
    c.seen().record(1, 20, t0_ms());
    let mut text = String::new();
    append(&mut text, &s, 10, t0_ms() + 120_000);
    let used: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_limit_used{"))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(used, ["0", "20"], "{text}");
}

#[test]
fn nothing_when_off_or_nothing_seen() {
    let s = snapshot(vec![requests("m", 10)]);
    let mut text = String::new();
    append(&mut text, &s, 10, t0_ms());
    assert_eq!(text, "", "never seen");
    by_model(&s, "m").seen().record(0, 1, t0_ms());
    append(&mut text, &s, 0, t0_ms());
    assert_eq!(text, "", "--usage-metrics 0");
    append(&mut text, &s, 1, t0_ms());
    assert!(text.contains("tollgate_limit_used{"), "{text}");
}

/// A label value as Prometheus reads it back from the text format.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => panic!("a dangling backslash in {text:?}"),
            },
            (c, false) => {
                assert_ne!(c, '"', "an unescaped quote in {text:?}");
                assert_ne!(c, '\n', "a raw newline in {text:?}");
                out.push(c)
            }
        }
    }
    out
}

#[test]
fn label_values_read_back_exactly() {
    for value in [
        "plain",
        r#"we"ird"#,
        r"one\backslash",
        r"two\\backslashes",
        r#"escaped\"quote"#,
        "line\nbreak",
        r"literal\n",
        r"trailing\",
        "ünïcødé *",
        "",
    ] {
        assert_eq!(
            unescape(&escape(value)),
            value,
            "{value:?} → {:?}",
            escape(value)
        );
    }
}
