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

/// A deserializer read the way the one it wraps reads, except that a struct must be a JSON
/// object at every level. serde's derived structs also take an array, matched to their fields
/// by position (`{"candidates": [["a@example.com", "Ann"]]}` invited Ann with no field name
/// checked). Wraps serde_json's streaming deserializer: one pass over the body, nothing
/// built but the typed request. The same newtype wraps every visitor, seed and access the
/// parse goes through, so nested structs are reached too. Not reached: what serde buffers
/// before reading it (`#[serde(flatten)]`, untagged and internally or adjacently tagged
/// enums read their content through serde's own `Content` deserializer), so a struct in
/// there still takes an array. No request type uses them.
pub struct ByName<X>(pub X);

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* ByName(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ByName<D> {
    type Error = D::Error;

    /// The one difference: a struct is read as a map, which refuses an array.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(ByName(visitor))
    }

    forward_deserialize! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf(); deserialize_option();
        deserialize_unit(); deserialize_seq(); deserialize_map(); deserialize_identifier();
        deserialize_ignored_any();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.0.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ByName<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str);
        visit_borrowed_str(&'de str); visit_string(String); visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(ByName(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(ByName(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.0.visit_seq(ByName(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(ByName(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.0.visit_enum(ByName(data))
    }
}

impl<'de, S: de::DeserializeSeed<'de>> de::DeserializeSeed<'de> for ByName<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(ByName(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for ByName<A> {
    type Error = A::Error;

    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(ByName(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ByName<A> {
    type Error = A::Error;

    fn next_key_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.0.next_key_seed(ByName(seed))
    }

    fn next_value_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(ByName(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for ByName<A> {
    type Error = A::Error;
    type Variant = ByName<A::Variant>;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(ByName(seed))?;
        Ok((value, ByName(variant)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for ByName<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, A::Error> {
        self.0.newtype_variant_seed(ByName(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, ByName(visitor))
    }

    /// A struct variant's content, like a struct, must be an object: read as the content of
    /// a newtype variant, through [`ByName::deserialize_struct`].
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.newtype_variant_seed(StructSeed { fields, visitor })
    }
}

struct StructSeed<V> {
    fields: &'static [&'static str],
    visitor: V,
}

impl<'de, V: Visitor<'de>> de::DeserializeSeed<'de> for StructSeed<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        ByName(d).deserialize_struct("", self.fields, self.visitor)
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
        let mut json = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(ByName(&mut json)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde_json says where; the path says it here.
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.clone(), |(m, _)| m.to_owned());
            (path, message)
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
