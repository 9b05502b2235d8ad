//! Free-form JSON values (a question's definition, an event's `data` and `metadata`) parsed
//! like `serde_json::Value`, except that an object naming a member twice is refused:
//! `Value` keeps the last one without a word, so `{"correct": 0, "correct": 2}` stored an
//! answer key the author may not have meant. Typed request bodies refuse duplicates already
//! (serde's derived structs).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value without duplicate object members anywhere in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

/// A JSON object without duplicate members anywhere in it (a candidate's answers: with a
/// plain map, `{"q1": 0, "q1": 1}` kept the last answer without a word).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StrictObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_map(StrictVisitor)? {
            Value::Object(members) => Ok(StrictObject(members)),
            // deserialize_map hands the visitor only objects.
            _ => Err(de::Error::custom("[invalid_type] must be a JSON object")),
        }
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As `Value` does: JSON has no non-finite numbers to parse.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "[duplicate_field] the object names `{name}` more than once"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// `json` with every integer literal too wide for 64 bits (beyond `i64` when negative,
/// `u64` otherwise) written as the widest 64-bit integer of its sign; borrowed when there is
/// none. serde_json reads such a literal as the nearest double, so `123456789012345678901`
/// came through as a decimal and was rounded where the rules say an integer must be within
/// ±(2^53 − 1) and is refused otherwise; narrowed, it is an integer beyond that range and
/// every integer rule refuses it (`out_of_range`) at its own field. Only for bodies whose
/// numbers follow those rules: an event's `data` keeps numbers as doubles, as documented.
pub fn narrow_wide_integers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut narrowed: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string: digits inside one are text.
                i += 1;
                while i < json.len() {
                    match json[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let negative = json[i] == b'-';
                i += usize::from(negative);
                let digits_start = i;
                while json.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let digits = &json[digits_start..i];
                let integer = !matches!(json.get(i), Some(b'.' | b'e' | b'E'));
                while json
                    .get(i)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                {
                    i += 1;
                }
                if integer && !digits.is_empty() && too_wide(digits, negative) {
                    let out = narrowed.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    out.extend_from_slice(&json[copied..start]);
                    out.extend_from_slice(if negative {
                        b"-9223372036854775808"
                    } else {
                        b"18446744073709551615"
                    });
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match narrowed {
        Some(mut out) => {
            out.extend_from_slice(&json[copied..]);
            std::borrow::Cow::Owned(out)
        }
        None => std::borrow::Cow::Borrowed(json),
    }
}

/// Whether the decimal `digits` (with their sign) are beyond what serde_json reads as an
/// integer.
fn too_wide(digits: &[u8], negative: bool) -> bool {
    // ASCII digits only, so this is UTF-8.
    let text = std::str::from_utf8(digits).unwrap_or("0");
    if negative {
        text.parse::<u64>()
            .map_or(true, |magnitude| magnitude > i64::MIN.unsigned_abs())
    } else {
        text.parse::<u64>().is_err()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn integer_literals_too_wide_for_64_bits_are_narrowed_and_nothing_else_changes() {
        let narrowed = |text: &str| {
            String::from_utf8(narrow_wide_integers(text.as_bytes()).into_owned()).unwrap()
        };
        for unchanged in [
            r#"{"a": [1, -2, 3.5, 18446744073709551615, -9223372036854775808, 1e400, 123456789012345678901.0, 123456789012345678901e0]}"#,
            r#"{"123456789012345678901": "123456789012345678901 \" 123456789012345678901"}"#,
            "",
            "-",
            "[1,",
        ] {
            assert!(
                matches!(
                    narrow_wide_integers(unchanged.as_bytes()),
                    std::borrow::Cow::Borrowed(_)
                ),
                "{unchanged}"
            );
        }
        assert_eq!(
            narrowed(
                r#"{"a":123456789012345678901,"b":[-9223372036854775809, 18446744073709551616],"c":"1"}"#
            ),
            r#"{"a":18446744073709551615,"b":[-9223372036854775808, 18446744073709551615],"c":"1"}"#
        );
        assert_eq!(
            narrowed("99999999999999999999999999999999"),
            "18446744073709551615"
        );
    }

    #[test]
    fn values_parse_as_serde_json_does_but_duplicates_are_refused() {
        for text in [
            r#"{"a": [1, -2, 3.5, 18446744073709551615, "x", null, true, {"b": {}}]}"#,
            r#""🦀 \u2028""#,
            "[]",
            "-0",
        ] {
            let strict: StrictValue = serde_json::from_str(text).unwrap();
            assert_eq!(
                strict.0,
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
        for text in [
            r#"{"correct": 0, "correct": 2}"#,
            r#"{"a": [{"b": 1, "c": 2, "b": 3}]}"#,
        ] {
            let error = serde_json::from_str::<StrictValue>(text).unwrap_err();
            assert!(error.to_string().contains("[duplicate_field]"), "{error}");
        }
    }
}
