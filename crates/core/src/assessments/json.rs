//! Strict readings of JSON values: an integer is a JSON integer (never `1.0`, `true`, `"1"` or
//! `null`), a number is finite, and every refusal names the JSON type that was found.

use crate::assessments::codes;
use crate::inventory::JSON_SAFE_INTEGER_MAX;
use crate::validation::Invalid;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// What a JSON value is, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction or exponent",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn wrong_type(expected: &str, found: &Value) -> Invalid {
    Invalid::new(
        codes::INVALID_TYPE,
        format!("must be {expected}, not {}", type_name(found)),
    )
}

/// A JSON integer within ±(2^53 − 1).
pub(crate) fn strict_integer(value: &Value, expected: &str) -> Result<i64, Invalid> {
    let Value::Number(n) = value else {
        return Err(wrong_type(expected, value));
    };
    if let Some(i) = n.as_i64() {
        return if (-JSON_SAFE_INTEGER_MAX..=JSON_SAFE_INTEGER_MAX).contains(&i) {
            Ok(i)
        } else {
            Err(out_of_safe_range())
        };
    }
    if n.is_u64() {
        return Err(out_of_safe_range());
    }
    Err(wrong_type(expected, value))
}

fn out_of_safe_range() -> Invalid {
    Invalid::new(codes::OUT_OF_RANGE, "must be within ±(2^53-1)")
}

/// A finite JSON number (integers included), as an f64. serde_json cannot produce NaN or
/// infinities from text, but a `Value` built in code can, so the check stays.
///
/// An integer must be within ±(2^53 − 1), as [`strict_integer`] requires: serde_json keeps a
/// 64-bit integer exactly, but the f64 it becomes here would silently round one beyond that
/// (9007199254740993 would be kept as 9007199254740992). A number with a fraction or exponent
/// was already read as the nearest f64 by serde_json, and is taken as that.
pub(crate) fn finite_number(value: &Value, expected: &str) -> Result<f64, Invalid> {
    match value {
        Value::Number(n) if !n.is_f64() => match n.as_i64() {
            Some(i) if (-JSON_SAFE_INTEGER_MAX..=JSON_SAFE_INTEGER_MAX).contains(&i) => {
                Ok(i as f64)
            }
            _ => Err(out_of_safe_range()),
        },
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(Invalid::new(
                codes::INVALID_VALUE,
                "must be a finite number",
            )),
        },
        other => Err(wrong_type(expected, other)),
    }
}

/// A JSON integer in a serde input struct: deserializes only from a JSON integer within
/// ±(2^53 − 1) and reports `[invalid_type] …` / `[out_of_range] …` otherwise, so the transport
/// can turn the message into a field error with that code. Ranges are checked by the parser
/// that consumes it, so every out-of-range field is reported at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JsonInteger(pub i64);

struct JsonIntegerVisitor;

impl<'de> Visitor<'de> for JsonIntegerVisitor {
    type Value = JsonInteger;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonInteger, E> {
        if (-JSON_SAFE_INTEGER_MAX..=JSON_SAFE_INTEGER_MAX).contains(&v) {
            Ok(JsonInteger(v))
        } else {
            Err(E::custom("[out_of_range] must be within ±(2^53-1)"))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonInteger, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom("[out_of_range] must be within ±(2^53-1)")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<JsonInteger, E> {
        // serde_json hands over integers too large for 64 bits as floats as well.
        if v.fract() == 0.0 && v.abs() > JSON_SAFE_INTEGER_MAX as f64 {
            Err(E::custom("[out_of_range] must be within ±(2^53-1)"))
        } else {
            Err(E::custom(format!(
                "[invalid_type] must be a JSON integer, not a number with a fraction or exponent ({v})"
            )))
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<JsonInteger, E> {
        Err(E::custom(format!(
            "[invalid_type] must be a JSON integer, not the boolean {v}"
        )))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<JsonInteger, E> {
        Err(E::custom(
            "[invalid_type] must be a JSON integer, not a string",
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<JsonInteger, E> {
        Err(E::custom("[invalid_type] must be a JSON integer, not null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<JsonInteger, E> {
        self.visit_unit()
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<JsonInteger, A::Error> {
        Err(de::Error::custom(
            "[invalid_type] must be a JSON integer, not an array",
        ))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<JsonInteger, A::Error> {
        Err(de::Error::custom(
            "[invalid_type] must be a JSON integer, not an object",
        ))
    }
}

impl<'de> Deserialize<'de> for JsonInteger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonIntegerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_json_integers_in_the_safe_range_are_integers() {
        assert_eq!(strict_integer(&json!(3), "x"), Ok(3));
        assert_eq!(strict_integer(&json!(-3), "x"), Ok(-3));
        for (value, code) in [
            (json!(3.0), codes::INVALID_TYPE),
            (json!(true), codes::INVALID_TYPE),
            (json!("3"), codes::INVALID_TYPE),
            (Value::Null, codes::INVALID_TYPE),
            (json!([3]), codes::INVALID_TYPE),
            (json!(9_007_199_254_740_992_i64), codes::OUT_OF_RANGE),
            (json!(u64::MAX), codes::OUT_OF_RANGE),
        ] {
            assert_eq!(
                strict_integer(&value, "x").map_err(|e| e.code),
                Err(code),
                "{value}"
            );
        }
    }

    #[test]
    fn json_integer_fields_reject_floats_booleans_strings_and_nulls_with_a_code() {
        let parse = |s: &str| serde_json::from_str::<JsonInteger>(s).map_err(|e| e.to_string());
        assert_eq!(parse("60"), Ok(JsonInteger(60)));
        for (json, prefix) in [
            ("60.0", "[invalid_type]"),
            ("true", "[invalid_type]"),
            ("\"60\"", "[invalid_type]"),
            ("null", "[invalid_type]"),
            ("9007199254740992", "[out_of_range]"),
            ("1e300", "[out_of_range]"),
        ] {
            let error = parse(json).expect_err(json);
            assert!(error.starts_with(prefix), "{json}: {error}");
        }
    }

    #[test]
    fn finite_numbers_accept_integers_and_fractions_only() {
        assert_eq!(finite_number(&json!(2), "x"), Ok(2.0));
        assert_eq!(finite_number(&json!(-0.5), "x"), Ok(-0.5));
        assert_eq!(
            finite_number(&json!("2"), "x").map_err(|e| e.code),
            Err(codes::INVALID_TYPE)
        );
    }
}
