//! The reset-duration grammar of the management API.
//!
//! Go-style durations (`30s`, `5m`, `1h30m`, `250ms`) extended with `d` (24h), `w` (7d),
//! `M` (30d) and `Y` (365d), decimals in any component (`1.5d`), and the words
//! `daily`, `weekly`, `monthly`, `yearly` in any letter case (`DAILY`, `Monthly`: Bifrost's
//! `ParseDuration` lower-cases them). `m` is minutes, `M` is months: units stay
//! case-sensitive.

use std::fmt;

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
pub const WEEK_MS: u64 = 7 * DAY_MS;
pub const MONTH_MS: u64 = 30 * DAY_MS;
pub const YEAR_MS: u64 = 365 * DAY_MS;

/// Longest duration accepted: 100 years. Keeps every derived millisecond value far
/// inside the 2^53 range that Lua's doubles represent exactly.
pub const MAX_DURATION_MS: u64 = 100 * YEAR_MS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    Invalid(String),
    MissingUnit(String),
    UnknownUnit(String),
    NotPositive,
    TooLong,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "duration is empty"),
            DurationError::Invalid(s) => write!(
                f,
                "invalid duration {s:?}: expected e.g. 30s, 5m, 1h30m, 1.5d, 1w, 1M, 1Y or daily|weekly|monthly|yearly"
            ),
            DurationError::MissingUnit(s) => {
                write!(f, "invalid duration {s:?}: number without a unit")
            }
            DurationError::UnknownUnit(u) => write!(
                f,
                "unknown duration unit {u:?}: use ns, us, ms, s, m, h, d, w, M or Y"
            ),
            DurationError::NotPositive => write!(f, "duration must be at least 1ms"),
            DurationError::TooLong => write!(f, "duration must be at most 100 years"),
        }
    }
}

impl std::error::Error for DurationError {}

fn unit_ms(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-6,
        "us" | "µs" | "μs" => 1e-3,
        "ms" => 1.0,
        "s" => SECOND_MS as f64,
        "m" => MINUTE_MS as f64,
        "h" => HOUR_MS as f64,
        "d" => DAY_MS as f64,
        "w" => WEEK_MS as f64,
        "M" => MONTH_MS as f64,
        "Y" => YEAR_MS as f64,
        _ => return None,
    })
}

/// Parses a reset duration into whole milliseconds (rounded to nearest).
pub fn parse_duration_ms(input: &str) -> Result<u64, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    match s.to_ascii_lowercase().as_str() {
        "daily" => return Ok(DAY_MS),
        "weekly" => return Ok(WEEK_MS),
        "monthly" => return Ok(MONTH_MS),
        "yearly" => return Ok(YEAR_MS),
        _ => {}
    }
    if s.starts_with('-') {
        return Err(DurationError::NotPositive);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(DurationError::Invalid(input.to_string()));
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let per_unit = unit_ms(unit).ok_or_else(|| DurationError::UnknownUnit(unit.to_string()))?;
        let value: f64 = number
            .parse()
            .map_err(|_| DurationError::Invalid(input.to_string()))?;
        total += value * per_unit;
        if total > MAX_DURATION_MS as f64 {
            return Err(DurationError::TooLong);
        }
        rest = &rest[unit_len..];
    }
    let ms = total.round();
    if ms < 1.0 {
        return Err(DurationError::NotPositive);
    }
    Ok(ms as u64)
}

/// Formats milliseconds compactly for humans (`90s` → `1m30s`); used in check answers.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let units = [
        ("Y", YEAR_MS),
        ("w", WEEK_MS),
        ("d", DAY_MS),
        ("h", HOUR_MS),
        ("m", MINUTE_MS),
        ("s", SECOND_MS),
        ("ms", 1),
    ];
    let mut out = String::new();
    let mut rest = ms;
    for (name, size) in units {
        if rest >= size {
            out.push_str(&(rest / size).to_string());
            out.push_str(name);
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_style_units() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(HOUR_MS));
        assert_eq!(parse_duration_ms("1h30m"), Ok(HOUR_MS + 30 * MINUTE_MS));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1500us"), Ok(2));
        assert_eq!(
            parse_duration_ms("2h45m30s"),
            Ok(2 * HOUR_MS + 45 * MINUTE_MS + 30_000)
        );
    }

    #[test]
    fn parses_calendar_units_and_words() {
        assert_eq!(parse_duration_ms("1d"), Ok(DAY_MS));
        assert_eq!(parse_duration_ms("1w"), Ok(WEEK_MS));
        assert_eq!(parse_duration_ms("1M"), Ok(30 * DAY_MS));
        assert_eq!(parse_duration_ms("1Y"), Ok(365 * DAY_MS));
        assert_eq!(parse_duration_ms("1.5d"), Ok(36 * HOUR_MS));
        assert_eq!(parse_duration_ms("0.5h"), Ok(30 * MINUTE_MS));
        assert_eq!(parse_duration_ms("daily"), Ok(DAY_MS));
        assert_eq!(parse_duration_ms("weekly"), Ok(WEEK_MS));
        assert_eq!(parse_duration_ms("monthly"), Ok(MONTH_MS));
        assert_eq!(parse_duration_ms("yearly"), Ok(YEAR_MS));
    }

    #[test]
    fn words_in_any_letter_case() {
        assert_eq!(parse_duration_ms("DAILY"), Ok(DAY_MS));
        assert_eq!(parse_duration_ms("Monthly"), Ok(MONTH_MS));
        assert_eq!(parse_duration_ms("wEeKlY"), Ok(WEEK_MS));
        assert_eq!(parse_duration_ms(" Yearly "), Ok(YEAR_MS));
        assert!(parse_duration_ms("MONTHLYY").is_err());
    }

    #[test]
    fn minutes_and_months_differ_by_case() {
        assert_eq!(parse_duration_ms("1m"), Ok(MINUTE_MS));
        assert_eq!(parse_duration_ms("1M"), Ok(MONTH_MS));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "", "  ", "0s", "0", "10", "-5m", "abc", "5x", "1.2.3s", ".s", "s", "1 h", "0.0001ms",
            "monthlyy", "1000Y",
        ] {
            assert!(
                parse_duration_ms(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert!(
            parse_duration_ms("5x")
                .unwrap_err()
                .to_string()
                .contains("\"x\"")
        );
        assert!(
            parse_duration_ms("-1s")
                .unwrap_err()
                .to_string()
                .contains("at least")
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 1u64..MAX_DURATION_MS) {
            prop_assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = parse_duration_ms(&s);
        }

        #[test]
        fn sums_components(h in 0u64..1000, m in 0u64..1000, s in 1u64..1000) {
            let text = format!("{h}h{m}m{s}s");
            prop_assert_eq!(parse_duration_ms(&text), Ok(h * HOUR_MS + m * MINUTE_MS + s * SECOND_MS));
        }
    }
}
