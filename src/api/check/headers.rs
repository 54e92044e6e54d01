//! Rate-limit headers of a check answer: the IETF draft `RateLimit-Policy` / `RateLimit`
//! for the most restrictive limit, and OpenAI's `x-ratelimit-*-requests` /
//! `x-ratelimit-*-tokens` for the most restrictive request and token limits.

use crate::app::check::most_restrictive_among;
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

const OPENAI: [(LimitKind, [&str; 3]); 2] = [
    (
        LimitKind::Requests,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    ),
    (
        LimitKind::Tokens,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    ),
];

/// OpenAI's headers for the most restrictive request limit and the most restrictive
/// token limit (the one refusing longest if any refused, else the one with the smallest
/// fraction left). A kind without limits gets no headers.
pub fn openai_headers(headers: &mut HeaderMap, pairs: &[(&LimitSpec, LimitOutcome)]) {
    for (kind, names) in OPENAI {
        let of_kind: Vec<usize> = (0..pairs.len())
            .filter(|&i| pairs[i].0.kind == kind)
            .collect();
        let Some(i) = most_restrictive_among(pairs, &of_kind) else {
            continue;
        };
        let (spec, outcome) = pairs[i];
        let values = openai_values(spec.max, outcome.used, outcome.reset_after_ms);
        for (name, value) in names.into_iter().zip(values) {
            headers.insert(HeaderName::from_static(name), value);
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

pub fn go_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let digits = format!("{frac:03}");
        secs.push('.');
        secs.push_str(digits.trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
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
