//! JSON Schemas of the fields whose grammar `ToSchema` cannot infer from their Rust type
//! (`#[schema(schema_with = …)]`): reset durations, scopes as sent, non-blank names.
//! Each pattern accepts exactly what the code accepts, or more, never less: a request
//! that tollgate accepts must validate against the document (`/openapi.json`).

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};

/// The characters `str::trim` removes (Unicode `White_Space`), as a regex class body
/// that ECMA-262 and Python agree on (Python's `\s` also counts `\x1c`–`\x1f`).
pub const WHITESPACE: &str =
    r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// What `model::duration::parse_duration_ms` parses (before its range check: zero and
/// more than 100 years are refused with a 400 too).
pub fn duration_pattern() -> String {
    let ws = format!("[{WHITESPACE}]*");
    let ci = |w: &str| -> String {
        w.chars()
            .map(|c| format!("[{}{}]", c, c.to_ascii_uppercase()))
            .collect()
    };
    let words = ["daily", "weekly", "monthly", "yearly"].map(ci).join("|");
    format!(
        r"^{ws}(?:{words}|\+?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h|d|w|M|Y))+){ws}$"
    )
}

/// A string with at least one character that is not whitespace.
pub fn not_blank_pattern() -> String {
    format!("[^{WHITESPACE}]")
}

const DURATION_HELP: &str = "A reset duration: Go-style (`30s`, `5m`, `1h30m`, `250ms`) plus \
`d` (24h), `w` (7d), `M` (30d), `Y` (365d), decimals allowed (`1.5d`), or \
`daily|weekly|monthly|yearly` in any letter case. `m` is minutes, `M` months. Zero or more \
than 100 years: 400.";

fn nullable(t: Type, nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([t, Type::Null])
    } else {
        SchemaType::new(t)
    }
}

fn duration_schema(null: bool) -> Schema {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String, null))
        .pattern(Some(duration_pattern()))
        .description(Some(DURATION_HELP))
        .examples(["1m", "1h30m", "1.5d", "monthly"])
        .build()
        .into()
}

/// A reset duration, `null` allowed (absent).
pub fn duration_or_null() -> Schema {
    duration_schema(true)
}

/// A reset duration as shown in answers.
pub fn duration() -> Schema {
    duration_schema(false)
}

/// `scope` of a create or update: absent, `null` or `""` mean `global` (create) or
/// "not sent" (update).
pub fn scope_input() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::json!(""),
            "global".into(),
            "virtual_key".into(),
            "user".into(),
            serde_json::Value::Null,
        ]))
        .description(Some(
            "`global` (the default: absent, null or \"\"), `virtual_key` or `user`. On update \
             it is identity: a value other than the config's own is a 400.",
        ))
        .build()
        .into()
}

/// `alert_thresholds` on update: a list of fractions (`[]`: none), `"default"` (the
/// replica's `--alert-thresholds`), or null (unchanged).
pub fn thresholds_update() -> Schema {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
    let fraction = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Number))
        .exclusive_minimum(Some(0.0))
        .maximum(Some(10.0));
    let list = ArrayBuilder::new().items(fraction).max_items(Some(8));
    let word = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(["default"]));
    let null = ObjectBuilder::new().schema_type(SchemaType::new(Type::Null));
    OneOfBuilder::new()
        .item(list)
        .item(word)
        .item(null)
        .description(Some(
            "A list replaces the config's thresholds (`[]`: none); `\"default\"`: back to the \
             replica's `--alert-thresholds`; absent or null: unchanged.",
        ))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::duration::parse_duration_ms;
    use proptest::prelude::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn duration_pattern_accepts_what_the_parser_accepts_and_rejects_garbage() {
        let p = duration_pattern();
        for ok in [
            "30s",
            "1h30m",
            "1.5d",
            "DAILY",
            "Monthly",
            " 1M ",
            "+5m",
            ".5h",
            "1.s",
            "250ms",
            "1500us",
            "2000µs",
            "1Y",
            "1w",
            "\u{3000}1h\t",
        ] {
            assert!(parse_duration_ms(ok).is_ok(), "{ok}");
            assert!(matches(&p, ok), "{ok:?} must match {p}");
        }
        for bad in [
            "", "soon", "1", "1x", "-1s", "1.2.3s", "1mh", "s", "++1s", "1 s", "day",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
            assert!(!matches(&p, bad), "{bad:?} must not match");
        }
    }

    #[test]
    fn not_blank_is_what_trim_leaves_non_empty() {
        let p = not_blank_pattern();
        for s in [" ", "\t\n", "\u{3000}\u{2028}", ""] {
            assert!(s.trim().is_empty() && !matches(&p, s), "{s:?}");
        }
        for s in ["x", " x ", "\u{1c}"] {
            assert!(!s.trim().is_empty() && matches(&p, s), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn every_parsed_duration_matches(s in "[ \t]?[+]?([0-9.]{1,4}(ns|us|µs|ms|s|m|h|d|w|M|Y|x|)){1,3}[ ]?|(?i:daily|weekly|monthly|yearly|hourly)") {
            if parse_duration_ms(&s).is_ok() {
                prop_assert!(matches(&duration_pattern(), &s), "{:?}", s);
            }
        }

        #[test]
        fn blank_is_exactly_what_trim_empties(s in "\\PC{0,3}|[\t\n \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}\u{1c}-\u{1f}\u{feff}]{0,3}") {
            prop_assert_eq!(matches(&not_blank_pattern(), &s), !s.trim().is_empty(), "{:?}", s);
        }
    }
}
