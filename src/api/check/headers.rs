//! Rate-limit headers of a check answer: the IETF draft `RateLimit-Policy` / `RateLimit`
//! for the most restrictive limit, and OpenAI's `x-ratelimit-*-requests` /
//! `x-ratelimit-*-tokens` for the most restrictive request and token limits.

use crate::app::check::most_restrictive_of;
use crate::limits::{LimitKind, LimitSpec};
use crate::store::LimitOutcome;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub fn ceil_secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

/// IETF draft `RateLimit-Policy` / `RateLimit` fields for one limit. Budgets are
/// expressed in whole cents.
pub fn ratelimit_headers(headers: &mut HeaderMap, spec: &LimitSpec, outcome: &LimitOutcome) {
    let (quota, remaining) = match spec.kind {
        LimitKind::Budget => (
            spec.max / 10_000_000,
            (spec.max - outcome.used).max(0) / 10_000_000,
        ),
        _ => (spec.max, (spec.max - outcome.used).max(0)),
    };
    let name = spec.kind.as_str();
    let unit = match spec.kind {
        LimitKind::Requests => "",
        LimitKind::Tokens => ";qu=\"tokens\"",
        LimitKind::Budget => ";qu=\"usd-cents\"",
    };
    let policy = format!("\"{name}\";q={quota};w={}{unit}", ceil_secs(spec.len_ms));
    let state = format!(
        "\"{name}\";r={remaining};t={}",
        ceil_secs(outcome.reset_after_ms)
    );
    if let (Ok(p), Ok(s)) = (value(policy), value(state)) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, s);
    }
}

/// Built at compile time: `from_static` checks its name on every call.
const OPENAI: [(LimitKind, [HeaderName; 3]); 2] = [
    (
        LimitKind::Requests,
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
    ),
    (
        LimitKind::Tokens,
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ),
];

/// The most headers a check answer has: content type, two IETF, six OpenAI, retry.
pub const MOST: usize = 10;

/// OpenAI's headers for the most restrictive request limit and the most restrictive
/// token limit among the limits at `positions` (the one refusing longest if any
/// refused, else the one with the smallest fraction left). A kind without limits gets
/// no headers.
pub fn openai_headers(
    headers: &mut HeaderMap,
    pairs: &[(&LimitSpec, LimitOutcome)],
    positions: &[usize],
) {
    for (kind, names) in &OPENAI {
        let of_kind = positions
            .iter()
            .copied()
            .filter(|&i| pairs[i].0.kind == *kind);
        let Some(i) = most_restrictive_of(pairs, of_kind) else {
            continue;
        };
        let (spec, outcome) = pairs[i];
        let values = openai_values(spec.max, outcome.used, outcome.reset_after_ms);
        for (name, value) in names.iter().zip(values) {
            headers.insert(name.clone(), value);
        }
    }
}

/// Limit, remaining and reset as OpenAI writes them: `["60", "59", "1s"]`.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A header value that keeps `s`'s buffer (no copy).
fn value(s: String) -> Result<HeaderValue, axum::http::header::InvalidHeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
}

fn openai_values(max: i64, used: i64, reset_after_ms: i64) -> [HeaderValue; 3] {
    // A Go duration is ASCII digits and units: always a valid header value.
    let reset = value(go_duration(reset_after_ms)).unwrap_or(HeaderValue::from_static("0s"));
    [
        HeaderValue::from(max),
        HeaderValue::from((max - used).max(0)),
        reset,
    ]
}

/// `ms` as Go prints a `time.Duration` rounded to milliseconds (`6m0s`, `1.5s`,
/// `20ms`), written into one buffer.
pub fn go_duration(ms: i64) -> String {
    use std::fmt::Write;
    let ms = ms.max(0);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::with_capacity(16);
    if ms < 1000 {
        let _ = write!(out, "{ms}ms");
        return out;
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    match (h, m) {
        (0, 0) => {}
        (0, m) => {
            let _ = write!(out, "{m}m");
        }
        (h, m) => {
            let _ = write!(out, "{h}h{m}m");
        }
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        // Milliseconds as a decimal fraction, without its trailing zeros.
        let (mut digits, mut width) = (frac, 3);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{digits:0width$}");
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        for (ms, want) in [
            (0, "0s"),
            (-5, "0s"),
            (1, "1ms"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (1020, "1.02s"),
            (1001, "1.001s"),
            (59_999, "59.999s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (361_500, "6m1.5s"),
            (3_600_000, "1h0m0s"),
            (86_400_000, "24h0m0s"),
            (90_061_000, "25h1m1s"),
        ] {
            assert_eq!(go_duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn openai_values_never_go_negative() {
        let text = |v: [HeaderValue; 3]| v.map(|h| h.to_str().unwrap().to_string());
        assert_eq!(text(openai_values(60, 1, 1000)), ["60", "59", "1s"]);
        assert_eq!(text(openai_values(3, 5, 360_000)), ["3", "0", "6m0s"]);
    }
}
