//! Integer fields that also accept a JSON number with a zero fraction (`12.0`): JSON
//! Schema's `integer` (and so the OpenAPI document) counts `12.0` as an integer, and
//! clients that write every number as a float (Python's `float`, some JSON encoders)
//! send it so. A real fraction or an out-of-range value is still an error (a 400).
//! `#[serde(default, deserialize_with = "…")]` on `Option` fields.

use serde::de::{Deserializer, Error, Unexpected, Visitor};
use std::fmt;

struct IntVisitor<T>(std::marker::PhantomData<T>);

/// What the target type takes, from `i128` (every JSON integer fits).
trait FromWhole: Sized {
    const EXPECTING: &'static str;
    fn from_whole(v: i128) -> Option<Self>;
}

impl FromWhole for u64 {
    const EXPECTING: &'static str = "a non-negative integer";
    fn from_whole(v: i128) -> Option<Self> {
        u64::try_from(v).ok()
    }
}

impl FromWhole for i64 {
    const EXPECTING: &'static str = "an integer";
    fn from_whole(v: i128) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl<'de, T: FromWhole> Visitor<'de> for IntVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        T::from_whole(v.into())
            .map(Some)
            .ok_or_else(|| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        T::from_whole(v.into())
            .map(Some)
            .ok_or_else(|| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        // 2^64 is exactly representable; every whole f64 below it converts exactly.
        let whole = v.is_finite() && v.fract() == 0.0 && v.abs() < 18_446_744_073_709_551_616.0;
        whole
            .then(|| T::from_whole(v as i128))
            .flatten()
            .map(Some)
            .ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
    }
}

/// An optional non-negative integer (`null` or absent: `None`).
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(IntVisitor(std::marker::PhantomData))
}

/// An optional integer (`null` or absent: `None`).
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(IntVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "super::opt_i64")]
        i: Option<i64>,
    }

    fn n(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_spelling() {
        assert_eq!(n(r#"{"n": 7}"#), Ok(Some(7)));
        assert_eq!(n(r#"{"n": 7.0}"#), Ok(Some(7)));
        assert_eq!(n(r#"{"n": 7e3}"#), Ok(Some(7000)));
        assert_eq!(n(r#"{"n": null}"#), Ok(None));
        assert_eq!(n(r#"{}"#), Ok(None));
        assert_eq!(n(r#"{"n": 18446744073709551615}"#), Ok(Some(u64::MAX)));
        let i = serde_json::from_str::<T>(r#"{"i": -5.0}"#).unwrap().i;
        assert_eq!(i, Some(-5));
    }

    #[test]
    fn fractions_negatives_and_other_types_are_errors() {
        for bad in [
            r#"{"n": 7.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 1e30}"#,
            r#"{"n": "7"}"#,
            r#"{"n": true}"#,
            r#"{"n": 18446744073709551616}"#,
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<T>(r#"{"i": 1e19}"#).is_err());
    }
}
