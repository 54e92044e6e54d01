//! `tollgate_limit_used` and `tollgate_limit_max`: the usage of each limit of the
//! `--usage-metrics N` configs with the highest usage ratio this replica has seen.
//!
//! Computed at scrape time from the usage each compiled config already keeps as last
//! seen (every check answer and live-usage read records it), so the check path does no
//! extra work. The gauges are written here, not through the `metrics` crate, because a
//! series there cannot be deleted: a config that leaves the top N must vanish, and the
//! series must never exceed N configs' worth whatever the number of configs. Label
//! values are config fields written by operators (never request input), escaped with the
//! exporter's own helpers.

use crate::limits::{CompiledConfig, LimitKind, LimitSpec, Snapshot};
use crate::metrics::{LIMIT_MAX, LIMIT_MAX_HELP, LIMIT_USED, LIMIT_USED_HELP};
use crate::model::nanos_to_dollars;
use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Write;
use std::sync::Arc;

/// A limit's usage as this replica knows it at `now_ms`: what it last saw, or 0 once the
/// window or period it saw that in is over (a tenant that went quiet stops alerting).
/// None if it never saw it, or saw it only in a window or period that is over.
fn current(spec: &LimitSpec, last: Option<(i64, i64)>, now_ms: i64) -> Option<i64> {
    let (used, at_ms) = last?;
    let over = match spec.grid() {
        Some(grid) => grid.bounds(now_ms).0 > at_ms,
        None => now_ms - at_ms >= spec.len_ms,
    };
    (!over).then_some(used)
}

/// `used / max`; a zero limit admits nothing, so it is full (or past full once used).
fn ratio(used: i64, max: i64) -> f64 {
    match max {
        m if m > 0 => used as f64 / m as f64,
        _ if used > 0 => f64::INFINITY,
        _ => 1.0,
    }
}

/// The largest usage ratio over a config's limits, if this replica saw any of them in
/// its current window or period.
pub fn usage_ratio(config: &CompiledConfig, now_ms: i64) -> Option<f64> {
    if !config.is_in_use() {
        return None; // never checked here: nothing seen, and nothing to build
    }
    config
        .limits()
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            current(spec, config.last_seen(i), now_ms).map(|used| ratio(used, spec.max))
        })
        .max_by(f64::total_cmp)
}

/// A config in the ranking. Ordered best first: higher ratio, then smaller id, so the
/// top N is the same on every scrape for the same usage.
struct Ranked<'a>(f64, &'a Arc<CompiledConfig>);

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.config.id.cmp(&other.1.config.id))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

/// The `n` configs with the highest usage ratio, highest first, with their ratios.
/// One pass over the snapshot keeping a heap of `n`: O(configs · log n) time, O(n) memory.
pub fn top(snapshot: &Snapshot, n: usize, now_ms: i64) -> Vec<(f64, &Arc<CompiledConfig>)> {
    if n == 0 {
        return Vec::new();
    }
    // A max-heap whose top is the worst kept config, the one a better config replaces.
    let mut kept: BinaryHeap<Ranked<'_>> = BinaryHeap::with_capacity(n.min(snapshot.len()));
    for config in snapshot.newest_first() {
        let Some(r) = usage_ratio(config, now_ms) else {
            continue;
        };
        let candidate = Ranked(r, config);
        if kept.len() < n {
            kept.push(candidate);
        } else if kept.peek().is_some_and(|worst| candidate < *worst) {
            kept.pop();
            kept.push(candidate);
        }
    }
    kept.into_sorted_vec()
        .into_iter()
        .map(|Ranked(r, c)| (r, c))
        .collect()
}

/// A count as exported: requests and tokens as they are, budgets in dollars.
fn quantity(kind: LimitKind, raw: i64) -> f64 {
    match kind {
        LimitKind::Budget => nanos_to_dollars(raw),
        _ => raw as f64,
    }
}

/// A label value in the text format. The exporter's `sanitize_label_value` takes a
/// backslash pair as one escaped backslash (it expects values that may be escaped
/// already), so backslashes are doubled first: every value then reads back exactly.
fn escape(value: &str) -> String {
    if value.contains('\\') {
        sanitize_label_value(&value.replace('\\', "\\\\"))
    } else {
        sanitize_label_value(value)
    }
}

/// `{config_id="…",scope="…",scope_id="…",model_name="…",kind="…",reset_duration="…"}`.
fn labels(config: &CompiledConfig, spec: &LimitSpec) -> String {
    let c = &config.config;
    let pairs = [
        ("config_id", c.id.as_str()),
        ("scope", c.scope.as_str()),
        ("scope_id", c.scope_id.as_deref().unwrap_or("")),
        ("model_name", c.model_name.as_str()),
        ("kind", spec.kind.as_str()),
        ("reset_duration", config.reset_duration(spec)),
    ];
    let mut out = String::with_capacity(160);
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '{' } else { ',' });
        let _ = write!(out, "{key}=\"{}\"", escape(value));
    }
    out.push('}');
    out
}

/// Appends the gauges of the `n` configs of `snapshot` with the highest usage ratio to
/// `out` (Prometheus text, after the exporter's own output). Nothing when `n` is 0 or no
/// config was seen.
pub fn append(out: &mut String, snapshot: &Snapshot, n: usize, now_ms: i64) {
    let top = top(snapshot, n, now_ms);
    if top.is_empty() {
        return;
    }
    // (labels, used, max) per limit, the labels escaped once for both gauges.
    let mut series = Vec::new();
    for (_, config) in &top {
        for (i, spec) in config.limits().iter().enumerate() {
            let used = current(spec, config.last_seen(i), now_ms).unwrap_or(0);
            series.push((
                labels(config, spec),
                quantity(spec.kind, used),
                quantity(spec.kind, spec.max),
            ));
        }
    }
    out.reserve(series.len() * (2 * series[0].0.len() + 80));
    for (name, help, pick) in [
        (LIMIT_USED, LIMIT_USED_HELP, 0),
        (LIMIT_MAX, LIMIT_MAX_HELP, 1),
    ] {
        write_help_line(out, name, None, None, help);
        write_type_line(out, name, None, None, "gauge");
        for (labels, used, max) in &series {
            let value = if pick == 0 { used } else { max };
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
}

#[cfg(test)]
mod tests;
