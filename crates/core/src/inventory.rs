//! Inventory: item names, SKUs, quantities and deltas.
//!
//! Invariants (also CHECK/UNIQUE constraints in both schemas):
//! - a name is trimmed, 1..=200 characters, without control characters, and unique per
//!   organization case-insensitively ([`ItemName::key`]);
//! - `0 <= qty <= 2^53 - 1` ([`Quantity`]), so every quantity is exact in JavaScript;
//! - a delta is a non-zero JSON *integer* within ±(2^53 − 1) ([`Delta`]): booleans, floats
//!   (`1.0`), strings and nulls are refused, never coerced (the original service's
//!   `{"delta": true}` bug).
//!
//! The `Deserialize` impls report `[code] detail` messages; the transport turns them into
//! field errors with that code.

use crate::validation::{Invalid, clean_name, name_key};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest integer JavaScript represents exactly (2^53 − 1).
pub const JSON_SAFE_INTEGER_MAX: i64 = 9_007_199_254_740_991;
pub const ITEM_NAME_CHARS_MAX: usize = 200;
pub const SKU_CHARS_MAX: usize = 100;
/// Lines in one batch adjustment.
pub const ADJUSTMENT_LINES_MAX: usize = 100;
pub const ADJUSTMENT_REASON_CHARS_MAX: usize = 500;

/// A validated item name; [`key`](Self::key) is what uniqueness is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemName {
    name: String,
    key: String,
}

impl ItemName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = clean_name(raw, ITEM_NAME_CHARS_MAX)?;
        let key = name_key(&name);
        Ok(Self { name, key })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Case-folded form: `Milk` and `milk` share it.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A stock-keeping unit code: trimmed, 1..=100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        clean_name(raw, SKU_CHARS_MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A quantity on hand: `0 ..= 2^53 - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(u64);

impl Quantity {
    pub const ZERO: Quantity = Quantity(0);
    pub const MAX: Quantity = Quantity(JSON_SAFE_INTEGER_MAX as u64);

    pub fn new(value: u64) -> Result<Self, Invalid> {
        if value > Self::MAX.0 {
            return Err(Invalid::new("out_of_range", "must be between 0 and 2^53-1"));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// The quantity after `delta`, or why the transition is forbidden.
    pub fn apply(self, delta: Delta) -> Result<Quantity, QuantityRejection> {
        let after = self.0 as i64 + delta.get();
        if after < 0 {
            Err(QuantityRejection::Insufficient)
        } else if after > JSON_SAFE_INTEGER_MAX {
            Err(QuantityRejection::Overflow)
        } else {
            Ok(Quantity(after as u64))
        }
    }
}

/// Why a delta cannot be applied to a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityRejection {
    /// The result would be negative.
    Insufficient,
    /// The result would exceed 2^53 − 1.
    Overflow,
}

/// A non-zero change of quantity within ±(2^53 − 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Delta(i64);

impl Delta {
    pub fn new(value: i64) -> Result<Self, Invalid> {
        if value == 0 {
            return Err(Invalid::new(
                "invalid_value",
                "must not be zero (a zero delta changes nothing)",
            ));
        }
        if !(-JSON_SAFE_INTEGER_MAX..=JSON_SAFE_INTEGER_MAX).contains(&value) {
            return Err(Invalid::new("out_of_range", "must be within ±(2^53-1)"));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Accepts only JSON integers; the message says exactly what was wrong.
struct StrictInteger {
    expecting: &'static str,
}

impl<'de> Visitor<'de> for StrictInteger {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("[out_of_range] must be within ±(2^53-1)"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // serde_json hands over integers too large for 64 bits as floats as well.
        if v.fract() == 0.0 && v.abs() > JSON_SAFE_INTEGER_MAX as f64 {
            Err(E::custom("[out_of_range] must be within ±(2^53-1)"))
        } else {
            Err(E::custom(format!(
                "[invalid_type] must be a JSON integer, not a number with a fraction or exponent ({v})"
            )))
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<i64, E> {
        Err(E::custom(format!(
            "[invalid_type] must be a JSON integer, not the boolean {v}"
        )))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<i64, E> {
        Err(E::custom(
            "[invalid_type] must be a JSON integer, not a string",
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
        Err(E::custom("[invalid_type] must be a JSON integer, not null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<i64, E> {
        self.visit_unit()
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<i64, A::Error> {
        Err(de::Error::custom(
            "[invalid_type] must be a JSON integer, not an array",
        ))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<i64, A::Error> {
        Err(de::Error::custom(
            "[invalid_type] must be a JSON integer, not an object",
        ))
    }
}

fn strict_integer<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<i64, D::Error> {
    d.deserialize_any(StrictInteger { expecting })
}

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = strict_integer(d, "a non-zero JSON integer within ±(2^53-1)")?;
        Delta::new(value).map_err(|e| de::Error::custom(format!("[{}] {}", e.code, e.detail)))
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = strict_integer(d, "a JSON integer between 0 and 2^53-1")?;
        u64::try_from(value)
            .map_err(|_| de::Error::custom("[out_of_range] must be between 0 and 2^53-1"))
            .and_then(|v| {
                Quantity::new(v)
                    .map_err(|e| de::Error::custom(format!("[{}] {}", e.code, e.detail)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(json: &str) -> Result<i64, String> {
        serde_json::from_str::<Delta>(json)
            .map(Delta::get)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn deltas_accept_only_exact_non_zero_json_integers_in_range() {
        assert_eq!(delta("-1"), Ok(-1));
        assert_eq!(delta("9007199254740991"), Ok(JSON_SAFE_INTEGER_MAX));
        assert_eq!(delta("-9007199254740991"), Ok(-JSON_SAFE_INTEGER_MAX));
        for (json, code) in [
            ("true", "[invalid_type]"),
            ("false", "[invalid_type]"),
            ("1.0", "[invalid_type]"),
            ("1e3", "[invalid_type]"),
            ("\"1\"", "[invalid_type]"),
            ("null", "[invalid_type]"),
            ("[1]", "[invalid_type]"),
            ("{}", "[invalid_type]"),
            ("0", "[invalid_value]"),
            ("9007199254740992", "[out_of_range]"),
            ("-9007199254740992", "[out_of_range]"),
            ("18446744073709551616", "[out_of_range]"),
        ] {
            let error = delta(json).expect_err(json);
            assert!(error.starts_with(code), "{json}: {error}");
        }
    }

    #[test]
    fn quantities_are_bounded_and_deltas_apply_with_guards() {
        let q = Quantity::new(1).expect("valid");
        assert_eq!(q.apply(Delta::new(-1).expect("valid")), Ok(Quantity::ZERO));
        assert_eq!(
            q.apply(Delta::new(-2).expect("valid")),
            Err(QuantityRejection::Insufficient)
        );
        assert_eq!(
            Quantity::MAX.apply(Delta::new(1).expect("valid")),
            Err(QuantityRejection::Overflow)
        );
        assert!(Quantity::new(JSON_SAFE_INTEGER_MAX as u64 + 1).is_err());
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("true").is_err());
    }

    #[test]
    fn item_names_are_unique_by_their_case_folded_key() {
        let a = ItemName::parse(" Milk ").expect("valid");
        let b = ItemName::parse("MILK").expect("valid");
        assert_eq!(a.as_str(), "Milk");
        assert_eq!(a.key(), b.key());
        assert!(ItemName::parse(&"x".repeat(201)).is_err());
    }
}
