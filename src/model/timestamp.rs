//! Timestamps as a config keeps them, read back fast: a full load parses six per
//! config, a million configs at a time, and chrono's general parser (what its
//! `Deserialize` uses) was about 5 % of a replica's start. The RFC 3339 form tollgate
//! writes goes through chrono's dedicated RFC 3339 parser; anything else (hand-written
//! data) still gets the general one, so what was accepted before still is.

use chrono::{DateTime, Utc};
use serde::de::{Deserializer, Error, Visitor};
use std::fmt;

/// `#[serde(deserialize_with = "…")]` on `DateTime<Utc>` fields.
pub fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Rfc3339;
    impl Visitor<'_> for Rfc3339 {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<DateTime<Utc>, E> {
            match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Ok(t.with_timezone(&Utc)),
                Err(_) => s.parse().map_err(E::custom),
            }
        }
    }
    d.deserialize_str(Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize)]
    struct At(#[serde(deserialize_with = "rfc3339")] DateTime<Utc>);

    fn read(json: &str) -> Result<DateTime<Utc>, String> {
        serde_json::from_str::<At>(json)
            .map(|a| a.0)
            .map_err(|e| e.to_string())
    }

    proptest! {
        /// Reads what chrono's own `Deserialize` reads, the same way: what tollgate
        /// writes, and the looser forms chrono accepts.
        #[test]
        fn reads_as_chrono_does(secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000,
                                form in 0usize..4) {
            let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap();
            let text = match form {
                0 => serde_json::to_string(&t).unwrap(),
                1 => format!("\"{}\"", t.format("%Y-%m-%d %H:%M:%S%.f%:z")),
                2 => format!("\"{}\"", t.format("%Y-%m-%dT%H:%M:%S+00:00")),
                _ => format!("\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            };
            let ours = read(&text);
            let chronos = serde_json::from_str::<DateTime<Utc>>(&text).map_err(|e| e.to_string());
            prop_assert_eq!(ours.is_ok(), chronos.is_ok());
            if let (Ok(a), Ok(b)) = (ours, chronos) {
                prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        assert!(read("\"yesterday\"").is_err());
        assert!(read("12").is_err());
    }
}
