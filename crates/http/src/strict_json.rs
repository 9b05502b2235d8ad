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

/// A parsed body read into a typed request the way serde_json reads text, except that a
/// struct must be a JSON object at every level. serde's derived structs also take an array,
/// matched to their fields by position (`{"candidates": [["a@example.com", "Ann"]]}`
/// invited Ann with no field name checked); the top level is checked before parsing, and a
/// body with an array anywhere is read through this.
pub struct ByName(pub Value);

impl<'de> de::IntoDeserializer<'de, serde_json::Error> for ByName {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl ByName {
    fn refused<'de, V: Visitor<'de>>(self, visitor: &V) -> serde_json::Error {
        let unexpected = match &self.0 {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => de::Unexpected::Unsigned(u),
                (None, Some(i)) => de::Unexpected::Signed(i),
                _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => de::Unexpected::Str(s),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Object(_) => de::Unexpected::Map,
        };
        de::Error::invalid_type(unexpected, visitor)
    }
}

fn visit_array<'de, V: Visitor<'de>>(
    items: Vec<Value>,
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    let mut seq = de::value::SeqDeserializer::new(items.into_iter().map(ByName));
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

fn visit_object<'de, V: Visitor<'de>>(
    members: Map<String, Value>,
    visitor: V,
) -> Result<V::Value, serde_json::Error> {
    let mut map = de::value::MapDeserializer::new(members.into_iter().map(|(k, v)| (k, ByName(v))));
    let value = visitor.visit_map(&mut map)?;
    map.end()?;
    Ok(value)
}

impl<'de> Deserializer<'de> for ByName {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                _ => Err(de::Error::custom("a number out of every range")),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(members) => visit_object(members, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(ByName(other)),
        }
    }

    /// The one difference from serde_json: a struct is an object, never an array.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(members) => visit_object(members, visitor),
            _ => Err(self.refused(&visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(variant) => visitor
                .visit_enum(de::IntoDeserializer::<serde_json::Error>::into_deserializer(variant)),
            Value::Object(members) if members.len() == 1 => {
                let Some((variant, value)) = members.into_iter().next() else {
                    return Err(de::Error::custom("an enum object names one variant"));
                };
                visitor.visit_enum(Variant(variant, value))
            }
            other => Err(ByName(other).refused(&visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// An enum given as `{"variant": value}`.
struct Variant(String, Value);

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = serde_json::Error;
    type Variant = ByName;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, ByName), serde_json::Error> {
        let variant =
            seed.deserialize(de::IntoDeserializer::<serde_json::Error>::into_deserializer(self.0))?;
        Ok((variant, ByName(self.1)))
    }
}

impl<'de> de::VariantAccess<'de> for ByName {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), serde_json::Error> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Map,
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        self.deserialize_struct("", fields, visitor)
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

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Vec<Inner>,
        maybe: Option<Inner>,
        kind: Kind,
        tagged: Option<Tagged>,
        id: Option<uuid::Uuid>,
        either: Option<Either>,
        count: u32,
        #[serde(default)]
        defaulted: bool,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: i64,
        b: Option<String>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        One,
        Two,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Tagged {
        Num(i64),
        Pair(i64, i64),
        Obj { x: bool },
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }

    fn by_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
        let value: Value = serde_json::from_str(text).unwrap();
        serde_path_to_error::deserialize(ByName(value)).map_err(|e| {
            let path = e.path().to_string();
            (path, e.into_inner().to_string())
        })
    }

    #[test]
    fn typed_bodies_read_by_name_as_serde_json_reads_them() {
        for text in [
            r#"{"name": "n", "inner": [{"a": -1}, {"a": 2, "b": "x"}], "maybe": null,
                "kind": "two", "tagged": {"pair": [1, 2]}, "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "either": "s", "count": 3, "defaulted": true}"#,
            r#"{"name": "", "inner": [], "maybe": {"a": 9007199254740991, "b": null},
                "kind": "one", "tagged": {"obj": {"x": true}}, "either": 7, "count": 0}"#,
            r#"{"name": "n", "inner": [], "kind": "one", "tagged": {"num": -5}, "count": 1}"#,
        ] {
            assert_eq!(
                by_name::<Outer>(text).unwrap(),
                serde_json::from_str::<Outer>(text).unwrap(),
                "{text}"
            );
        }
        // Refusals say what serde_json says, at the same place.
        for text in [
            r#"{"name": 1, "inner": [], "kind": "one", "count": 1}"#,
            r#"{"name": "n", "inner": [], "kind": "three", "count": 1}"#,
            r#"{"name": "n", "inner": [{"a": 1, "c": 2}], "kind": "one", "count": 1}"#,
            r#"{"name": "n", "inner": [], "kind": "one", "count": -1}"#,
            r#"{"name": "n", "inner": [], "kind": "one"}"#,
            r#"{"name": "n", "inner": [], "kind": "one", "count": 1, "extra": 0}"#,
        ] {
            let (_, expected) = serde_json::from_str::<Outer>(text)
                .unwrap_err()
                .to_string()
                .rsplit_once(" at line ")
                .map(|(m, rest)| (rest.to_owned(), m.to_owned()))
                .unwrap();
            assert_eq!(by_name::<Outer>(text).unwrap_err().1, expected, "{text}");
        }
    }

    #[test]
    fn a_struct_given_as_an_array_is_refused_at_every_level() {
        for (text, path) in [
            (
                r#"{"name": "n", "inner": [[1, "x"]], "kind": "one", "count": 1}"#,
                "inner[0]",
            ),
            (
                r#"{"name": "n", "inner": [], "maybe": [1, null], "kind": "one", "count": 1}"#,
                "maybe",
            ),
            (
                r#"{"name": "n", "inner": [], "kind": "one", "tagged": {"obj": [true]}, "count": 1}"#,
                "tagged.obj",
            ),
        ] {
            // serde_json itself takes the array, by position.
            assert!(serde_json::from_str::<Outer>(text).is_ok(), "{text}");
            let (at, message) = by_name::<Outer>(text).unwrap_err();
            assert_eq!(at, path, "{text}");
            assert!(
                message.starts_with("invalid type: sequence, expected"),
                "{text}: {message}"
            );
        }
    }

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
