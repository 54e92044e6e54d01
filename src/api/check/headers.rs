//! Rate-limit headers of a check answer: the IETF draft `RateLimit-Policy` / `RateLimit`
//! for the most restrictive limit, and OpenAI's `x-ratelimit-*-requests` /
//! `x-ratelimit-*-tokens` for the most restrictive request and token limits.

use crate::app::check::most_restrictive_of;
use crate::limits::{LimitKind, LimitSpec};
use crate::store::LimitOutcome;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use itoa::Buffer;

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
    // Integers with `itoa`: without `fmt`'s formatter and its dynamic calls.
    let (mut a, mut b) = (Buffer::new(), Buffer::new());
    let policy = [
        "\"",
        name,
        "\";q=",
        a.format(quota),
        ";w=",
        b.format(ceil_secs(spec.len_ms)),
        unit,
    ]
    .concat();
    let state = [
        "\"",
        name,
        "\";r=",
        a.format(remaining),
        ";t=",
        b.format(ceil_secs(outcome.reset_after_ms)),
    ]
    .concat();
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
    let ms = ms.max(0);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::with_capacity(16);
    let mut buf = Buffer::new();
    if ms < 1000 {
        out.push_str(buf.format(ms));
        out.push_str("ms");
        return out;
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        out.push_str(buf.format(h));
        out.push('h');
    }
    if h > 0 || m > 0 {
        out.push_str(buf.format(m));
        out.push('m');
    }
    out.push_str(buf.format(s));
    if frac > 0 {
        // Milliseconds as a decimal fraction, without its trailing zeros.
        let (mut digits, mut width) = (frac, 3);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        out.push('.');
        let digits = buf.format(digits);
        for _ in digits.len()..width {
            out.push('0');
        }
        out.push_str(digits);
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

    /// Go's own rule, written plainly with `format!`: the written one must agree.
    fn go_duration_by_format(ms: i64) -> String {
        let ms = ms.max(0);
        if ms == 0 {
            return "0s".into();
        }
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let head = match (h, m) {
            (0, 0) => String::new(),
            (0, m) => format!("{m}m"),
            (h, m) => format!("{h}h{m}m"),
        };
        let frac = format!("{:03}", frac);
        let frac = frac.trim_end_matches('0');
        match frac {
            "" => format!("{head}{s}s"),
            f => format!("{head}{s}.{f}s"),
        }
    }

    proptest::proptest! {
        #[test]
        fn go_durations_agree_with_format(ms in proptest::prop_oneof![
            -10i64..5_000, 0i64..400_000_000, proptest::num::i64::ANY,
        ]) {
            proptest::prop_assert_eq!(go_duration(ms), go_duration_by_format(ms));
        }
    }

    #[test]
    fn ietf_fields_of_each_kind() {
        let config = crate::model::validate::create_config(
            serde_json::from_value(serde_json::json!({
                "model_name": "*", "scope": "global",
                "rate_limit": {"request_max_limit": 60, "request_reset_duration": "1m",
                               "token_max_limit": 1000, "token_reset_duration": "1h"},
                "budgets": [{"max_limit": 2.5, "reset_duration": "1d"}]
            }))
            .unwrap(),
            chrono::Utc::now(),
        )
        .unwrap();
        let compiled = crate::limits::CompiledConfig::compile(config).unwrap();
        let outcome = |used| LimitOutcome {
            admitted: true,
            used,
            reset_after_ms: 1_500,
            retry_after_ms: 0,
        };
        let mut got = Vec::new();
        for (spec, used) in compiled.limits().iter().zip([59, 1_001, 1_250_000_000]) {
            let mut headers = HeaderMap::new();
            ratelimit_headers(&mut headers, spec, &outcome(used));
            let text = |name: &HeaderName| headers[name].to_str().unwrap().to_string();
            got.push((text(&RATELIMIT_POLICY), text(&RATELIMIT)));
        }
        let want = [
            (r#""requests";q=60;w=60"#, r#""requests";r=1;t=2"#),
            (
                r#""tokens";q=1000;w=3600;qu="tokens""#,
                r#""tokens";r=0;t=2"#,
            ),
            (
                r#""budget";q=250;w=86400;qu="usd-cents""#,
                r#""budget";r=125;t=2"#,
            ),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn openai_values_never_go_negative() {
        let text = |v: [HeaderValue; 3]| v.map(|h| h.to_str().unwrap().to_string());
        assert_eq!(text(openai_values(60, 1, 1000)), ["60", "59", "1s"]);
        assert_eq!(text(openai_values(3, 5, 360_000)), ["3", "0", "6m0s"]);
    }
}
