//! A tollgate decision as Envoy's `RateLimitResponse`: per-descriptor codes, limits,
//! remaining and reset, from which Envoy writes its `x-ratelimit-*` headers.

use crate::app::check::{Checked, most_restrictive_among};
use crate::limits::{LimitKind, LimitSpec};
use crate::model::duration::{DAY_MS, HOUR_MS, MINUTE_MS, MONTH_MS, SECOND_MS, WEEK_MS, YEAR_MS};
use crate::store::LimitOutcome;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::Duration;

/// Envoy's units, with the lengths Envoy itself gives them in its headers.
const UNITS: [(Unit, u64); 7] = [
    (Unit::Second, SECOND_MS),
    (Unit::Minute, MINUTE_MS),
    (Unit::Hour, HOUR_MS),
    (Unit::Day, DAY_MS),
    (Unit::Week, WEEK_MS),
    (Unit::Month, MONTH_MS),
    (Unit::Year, YEAR_MS),
];

/// A limit of `max` per window of `len_ms` as Envoy's `requests_per_unit` + `unit`:
/// exact when the window is one of Envoy's units; otherwise the nearest unit (by ratio)
/// with `max` restated at the same average rate, rounded, at least 1 when `max` is.
/// (A 90 s window of 10 reads as 7 per minute.)
pub fn envoy_unit(max: i64, len_ms: i64) -> (Unit, u32) {
    let max = max.max(0) as f64;
    let len = len_ms.max(1) as f64;
    let (unit, unit_ms) = UNITS
        .iter()
        .copied()
        .min_by(|a, b| {
            let dist = |u: u64| (len / u as f64).ln().abs();
            dist(a.1).total_cmp(&dist(b.1))
        })
        .expect("units");
    let per_unit = (max * unit_ms as f64 / len).round();
    let per_unit = if max > 0.0 { per_unit.max(1.0) } else { 0.0 };
    (unit, per_unit.min(u32::MAX as f64) as u32)
}

/// In the units of `current_limit`: requests, tokens, or whole cents for budgets.
fn quantity(kind: LimitKind, raw: i64) -> u32 {
    let v = match kind {
        LimitKind::Budget => raw / 10_000_000,
        _ => raw,
    };
    v.clamp(0, u32::MAX as i64) as u32
}

fn limit_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests => "requests",
        LimitKind::Tokens => "tokens",
        LimitKind::Budget => "budget_usd_cents",
    }
}

/// One descriptor's status from its most restrictive limit.
pub fn status_of(spec: &LimitSpec, outcome: &LimitOutcome, over: bool) -> DescriptorStatus {
    let (unit, per_unit) = envoy_unit(quantity(spec.kind, spec.max) as i64, spec.len_ms);
    let reset = outcome.reset_after_ms.max(0);
    DescriptorStatus {
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        current_limit: Some(RateLimit {
            name: limit_name(spec.kind).into(),
            requests_per_unit: per_unit,
            unit: unit as i32,
        }),
        limit_remaining: quantity(spec.kind, spec.max - outcome.used),
        duration_until_reset: Some(Duration {
            seconds: reset / 1000,
            nanos: (reset % 1000) as i32 * 1_000_000,
        }),
        ..Default::default()
    }
}

/// A status without a limit: nothing of tollgate's applies (or the store failed).
pub fn bare(code: Code) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        ..Default::default()
    }
}

/// The answer to a check the store decided. `known[i]`: descriptor `i`'s position among
/// the match keys, `None` for descriptors tollgate does not know.
pub fn from_checked(checked: &Checked, known: &[Option<usize>]) -> RateLimitResponse {
    let pairs = checked.pairs();
    let statuses = known
        .iter()
        .map(|k| {
            let Some(k) = *k else { return bare(Code::Ok) };
            let mine = checked.limits_of_key(k);
            match most_restrictive_among(&pairs, &mine) {
                None => bare(Code::Ok),
                Some(d) => {
                    let over = mine.iter().any(|&i| !pairs[i].1.admitted);
                    status_of(pairs[d].0, &pairs[d].1, over)
                }
            }
        })
        .collect();
    RateLimitResponse {
        overall_code: overall(checked.outcome.allowed),
        statuses,
        ..Default::default()
    }
}

pub fn overall(allowed: bool) -> i32 {
    let code = if allowed { Code::Ok } else { Code::OverLimit };
    code as i32
}

/// Every descriptor answered with the same code and no limit.
pub fn uniform(descriptors: usize, allowed: bool) -> RateLimitResponse {
    let code = if allowed { Code::Ok } else { Code::OverLimit };
    RateLimitResponse {
        overall_code: code as i32,
        statuses: (0..descriptors).map(|_| bare(code)).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_of_envoy_units_are_exact() {
        assert_eq!(envoy_unit(3, 3_600_000), (Unit::Hour, 3));
        assert_eq!(envoy_unit(100, 1_000), (Unit::Second, 100));
        assert_eq!(envoy_unit(1000, 60_000), (Unit::Minute, 1000));
        assert_eq!(envoy_unit(5, DAY_MS as i64), (Unit::Day, 5));
        assert_eq!(envoy_unit(5, WEEK_MS as i64), (Unit::Week, 5));
        assert_eq!(envoy_unit(5, MONTH_MS as i64), (Unit::Month, 5));
        assert_eq!(envoy_unit(5, YEAR_MS as i64), (Unit::Year, 5));
    }

    #[test]
    fn other_windows_keep_their_average_rate_in_the_nearest_unit() {
        assert_eq!(envoy_unit(10, 90_000), (Unit::Minute, 7), "10 per 90 s");
        assert_eq!(envoy_unit(10, 30_000), (Unit::Minute, 20), "10 per 30 s");
        assert_eq!(
            envoy_unit(1, 7_200_000),
            (Unit::Hour, 1),
            "never rounds to 0"
        );
        assert_eq!(envoy_unit(0, 60_000), (Unit::Minute, 0));
        assert_eq!(envoy_unit(i64::MAX, 1_000), (Unit::Second, u32::MAX));
        assert_eq!(envoy_unit(10, 100), (Unit::Second, 100), "10 per 100 ms");
    }

    #[test]
    fn budgets_count_cents_and_remaining_never_goes_negative() {
        assert_eq!(quantity(LimitKind::Budget, 2_500_000_000), 250);
        assert_eq!(quantity(LimitKind::Tokens, -5), 0);
        assert_eq!(quantity(LimitKind::Requests, i64::MAX), u32::MAX);
    }
}
