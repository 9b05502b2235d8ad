//! Questions: the validated [`QuestionSpec`] (prompt, points and answer key) and the public
//! view a candidate may see.
//!
//! Two ways in, one rule set:
//! - [`QuestionSpec::from_json`] reads the JSON input
//!   `{type, prompt, points?, options?, correct?, accepted_answers?, value?, tolerance?}`,
//!   refusing wrong JSON types, unknown fields and fields that do not belong to the type;
//! - [`QuestionSpec::build`] takes [`QuestionFields`] already typed by another reader (the
//!   spreadsheet import) and applies every invariant.
//!
//! Both report *every* problem as a [`FieldError`] whose pointer is relative to the question
//! (`/options/3`, `/correct/1`, `/prompt`; `""` for the question itself).
//!
//! The stored form (`Serialize`/`Deserialize`) is the canonical JSON input, answer key included,
//! and reading it back re-validates: a row edited by hand cannot smuggle in an invalid key.
//! [`QuestionSpec::public_view`] never contains the answer key, accepted answers, value or
//! tolerance.
//!
//! An explicit `null` is a value, not an absence: `"points": null` is refused (`invalid_type`);
//! omit the field to get the default.

use crate::assessments::json::{finite_number, strict_integer, wrong_type};
use crate::assessments::text::{answer_key, clean_multiline};
use crate::assessments::{
    ACCEPTED_ANSWER_CHARS_MAX, ACCEPTED_ANSWERS_MAX, ACCEPTED_ANSWERS_MIN, OPTION_CHARS_MAX,
    OPTIONS_MAX, OPTIONS_MIN, POINTS_DEFAULT, POINTS_MAX, POINTS_MIN, PROMPT_CHARS_MAX,
    QUESTIONS_MAX, QUESTIONS_MIN, codes,
};
use crate::validation::{FieldError, Invalid, clean_name};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// The kind of a question; its JSON name is the snake_case form (`single_choice`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    SingleChoice,
    MultipleChoice,
    TrueFalse,
    ShortText,
    Numeric,
}

impl QuestionType {
    pub const ALL: [QuestionType; 5] = [
        QuestionType::SingleChoice,
        QuestionType::MultipleChoice,
        QuestionType::TrueFalse,
        QuestionType::ShortText,
        QuestionType::Numeric,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuestionType::SingleChoice => "single_choice",
            QuestionType::MultipleChoice => "multiple_choice",
            QuestionType::TrueFalse => "true_false",
            QuestionType::ShortText => "short_text",
            QuestionType::Numeric => "numeric",
        }
    }

    /// The exact snake_case name; anything else is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether a type-specific field belongs to this type.
    fn allows(self, field: &str) -> bool {
        match self {
            QuestionType::SingleChoice | QuestionType::MultipleChoice => {
                matches!(field, "options" | "correct")
            }
            QuestionType::TrueFalse => field == "correct",
            QuestionType::ShortText => field == "accepted_answers",
            QuestionType::Numeric => matches!(field, "value" | "tolerance"),
        }
    }

    fn list() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// The fields whose presence depends on the type.
const TYPE_SPECIFIC_FIELDS: [&str; 5] = [
    "options",
    "correct",
    "accepted_answers",
    "value",
    "tolerance",
];
const COMMON_FIELDS: [&str; 3] = ["type", "prompt", "points"];

/// One input field as a reader found it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FieldValue<T> {
    /// Not given.
    #[default]
    Absent,
    /// Given, but unreadable; the reader has already reported why, so later checks skip it
    /// (no `missing_field` on top of the reader's `invalid_type`).
    Rejected,
    Present(T),
}

impl<T> FieldValue<T> {
    fn is_given(&self) -> bool {
        !matches!(self, FieldValue::Absent)
    }
}

/// The answer key as typed by a reader, before it is checked against the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrectInput {
    /// An option index (single choice).
    Index(i64),
    /// Option indices (multiple choice).
    Indices(Vec<i64>),
    /// True/false.
    Boolean(bool),
}

/// A question's fields, typed but not yet validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuestionFields {
    pub kind: FieldValue<QuestionType>,
    pub prompt: FieldValue<String>,
    pub points: FieldValue<i64>,
    pub options: FieldValue<Vec<String>>,
    pub correct: FieldValue<CorrectInput>,
    pub accepted_answers: FieldValue<Vec<String>>,
    pub value: FieldValue<f64>,
    pub tolerance: FieldValue<f64>,
}

/// One accepted answer of a short-text question: the text as written (trimmed) and the key
/// it is compared on ([`answer_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedAnswer {
    text: String,
    key: String,
}

impl AcceptedAnswer {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The answer key of a validated question. Reachable only through [`QuestionSpec::key`], so
/// every instance held in a spec satisfies the invariants.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerKey {
    /// 2..=10 distinct options; `correct` is a valid 0-based index.
    SingleChoice {
        options: Vec<String>,
        correct: usize,
    },
    /// 2..=10 distinct options; `correct` is non-empty, strictly ascending, every index valid.
    MultipleChoice {
        options: Vec<String>,
        correct: Vec<usize>,
    },
    TrueFalse {
        correct: bool,
    },
    /// 1..=20 answers, distinct by key.
    ShortText {
        accepted_answers: Vec<AcceptedAnswer>,
    },
    /// Finite `value`; finite `tolerance >= 0` (never negative zero).
    Numeric {
        value: f64,
        tolerance: f64,
    },
}

/// A validated question: prompt (trimmed, 1..=2000 characters, line breaks and tabs allowed),
/// points (1..=100) and answer key.
#[derive(Debug, Clone, PartialEq)]
pub struct QuestionSpec {
    prompt: String,
    points: u32,
    key: AnswerKey,
}

/// What a candidate may see of a question: never the answer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicQuestion {
    #[serde(rename = "type")]
    pub kind: QuestionType,
    pub prompt: String,
    pub points: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

impl QuestionSpec {
    pub fn kind(&self) -> QuestionType {
        match self.key {
            AnswerKey::SingleChoice { .. } => QuestionType::SingleChoice,
            AnswerKey::MultipleChoice { .. } => QuestionType::MultipleChoice,
            AnswerKey::TrueFalse { .. } => QuestionType::TrueFalse,
            AnswerKey::ShortText { .. } => QuestionType::ShortText,
            AnswerKey::Numeric { .. } => QuestionType::Numeric,
        }
    }

    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    pub fn points(&self) -> u32 {
        self.points
    }

    pub fn key(&self) -> &AnswerKey {
        &self.key
    }

    /// The options of a choice question, in order.
    pub fn options(&self) -> Option<&[String]> {
        match &self.key {
            AnswerKey::SingleChoice { options, .. } | AnswerKey::MultipleChoice { options, .. } => {
                Some(options)
            }
            _ => None,
        }
    }

    /// Type, prompt, points and options: what a candidate may see.
    pub fn public_view(&self) -> PublicQuestion {
        PublicQuestion {
            kind: self.kind(),
            prompt: self.prompt.clone(),
            points: self.points,
            options: self.options().map(<[String]>::to_vec),
        }
    }

    /// Reads and validates one question from its JSON input (see the module docs).
    pub fn from_json(value: &Value) -> Result<Self, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![wrong_type("a JSON object", value).at("")]);
        };
        let mut errors = Vec::new();
        for name in object.keys() {
            if !COMMON_FIELDS.contains(&name.as_str())
                && !TYPE_SPECIFIC_FIELDS.contains(&name.as_str())
            {
                errors.push(FieldError::new(
                    format!("/{}", escape_pointer(name)),
                    codes::UNKNOWN_FIELD,
                    format!(
                        "unknown field `{name}`; expected one of {}",
                        [COMMON_FIELDS.as_slice(), TYPE_SPECIFIC_FIELDS.as_slice()]
                            .concat()
                            .join(", ")
                    ),
                ));
            }
        }
        let mut fields = QuestionFields {
            kind: read(object, "type", &mut errors, |v| match v {
                Value::String(s) => QuestionType::parse(s).ok_or_else(|| {
                    at(
                        "/type",
                        Invalid::new(
                            codes::INVALID_VALUE,
                            format!(
                                "unknown question type {s:?}; expected one of {}",
                                QuestionType::list()
                            ),
                        ),
                    )
                }),
                other => Err(at(
                    "/type",
                    wrong_type("a string naming the question type", other),
                )),
            }),
            prompt: read(object, "prompt", &mut errors, |v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(at("/prompt", wrong_type("a string", other))),
            }),
            points: read(object, "points", &mut errors, |v| {
                strict_integer(v, "a JSON integer").map_err(|e| at("/points", e))
            }),
            ..QuestionFields::default()
        };
        // Type-specific fields are read only when the type is known: a field that does not
        // belong is reported as such (not as a type error), and when the type itself is
        // missing or unknown there is nothing to check them against.
        let FieldValue::Present(kind) = fields.kind else {
            return with_reader_errors(errors, QuestionSpec::build(fields));
        };
        let belongs = |name: &str, errors: &mut Vec<FieldError>| {
            let given = object.contains_key(name);
            if given && !kind.allows(name) {
                errors.push(not_allowed(kind, name));
            }
            given && kind.allows(name)
        };
        if belongs("options", &mut errors) {
            fields.options = read(object, "options", &mut errors, |v| {
                read_string_list(v, "/options", "options")
            });
        }
        if belongs("correct", &mut errors) {
            fields.correct = read(object, "correct", &mut errors, |v| read_correct(kind, v));
        }
        if belongs("accepted_answers", &mut errors) {
            fields.accepted_answers = read(object, "accepted_answers", &mut errors, |v| {
                read_string_list(v, "/accepted_answers", "accepted answers")
            });
        }
        if belongs("value", &mut errors) {
            fields.value = read(object, "value", &mut errors, |v| {
                finite_number(v, "a number").map_err(|e| at("/value", e))
            });
        }
        if belongs("tolerance", &mut errors) {
            fields.tolerance = read(object, "tolerance", &mut errors, |v| {
                finite_number(v, "a number").map_err(|e| at("/tolerance", e))
            });
        }
        with_reader_errors(errors, QuestionSpec::build(fields))
    }

    /// Applies every invariant to typed fields. Fields the reader marked
    /// [`FieldValue::Rejected`] are skipped (the reader reported them), so the result can be
    /// `Err` with an empty list: the caller's own errors are the whole story then.
    pub fn build(fields: QuestionFields) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut rejected = false;
        let kind = match fields.kind {
            FieldValue::Absent => {
                errors.push(missing("/type", "`type` is required"));
                None
            }
            FieldValue::Rejected => {
                rejected = true;
                None
            }
            FieldValue::Present(kind) => Some(kind),
        };
        let prompt = match &fields.prompt {
            FieldValue::Absent => {
                errors.push(missing("/prompt", "`prompt` is required"));
                None
            }
            FieldValue::Rejected => {
                rejected = true;
                None
            }
            FieldValue::Present(raw) => match clean_multiline(raw, PROMPT_CHARS_MAX, false) {
                Ok(prompt) => prompt,
                Err(e) => {
                    errors.push(e.at("/prompt"));
                    None
                }
            },
        };
        let points = match fields.points {
            FieldValue::Absent => Some(POINTS_DEFAULT),
            FieldValue::Rejected => {
                rejected = true;
                None
            }
            FieldValue::Present(points) => match check_points(points) {
                Ok(points) => Some(points),
                Err(e) => {
                    errors.push(e.at("/points"));
                    None
                }
            },
        };
        let Some(kind) = kind else {
            return Err(errors);
        };
        for (name, given) in [
            ("options", fields.options.is_given()),
            ("correct", fields.correct.is_given()),
            ("accepted_answers", fields.accepted_answers.is_given()),
            ("value", fields.value.is_given()),
            ("tolerance", fields.tolerance.is_given()),
        ] {
            if given && !kind.allows(name) {
                errors.push(not_allowed(kind, name));
            }
        }
        let key = match kind {
            QuestionType::SingleChoice | QuestionType::MultipleChoice => {
                build_choice(kind, &fields, &mut errors, &mut rejected)
            }
            QuestionType::TrueFalse => match &fields.correct {
                FieldValue::Absent => {
                    errors.push(missing("/correct", "`correct` (true or false) is required"));
                    None
                }
                FieldValue::Rejected => {
                    rejected = true;
                    None
                }
                FieldValue::Present(CorrectInput::Boolean(correct)) => {
                    Some(AnswerKey::TrueFalse { correct: *correct })
                }
                FieldValue::Present(_) => {
                    errors.push(FieldError::new(
                        "/correct",
                        codes::INVALID_TYPE,
                        "must be a boolean (true or false)",
                    ));
                    None
                }
            },
            QuestionType::ShortText => match &fields.accepted_answers {
                FieldValue::Absent => {
                    errors.push(missing(
                        "/accepted_answers",
                        "`accepted_answers` is required",
                    ));
                    None
                }
                FieldValue::Rejected => {
                    rejected = true;
                    None
                }
                FieldValue::Present(raw) => check_accepted_answers(raw, &mut errors)
                    .map(|accepted_answers| AnswerKey::ShortText { accepted_answers }),
            },
            QuestionType::Numeric => build_numeric(&fields, &mut errors, &mut rejected),
        };
        match (prompt, points, key) {
            (Some(prompt), Some(points), Some(key)) if errors.is_empty() && !rejected => Ok(Self {
                prompt,
                points,
                key,
            }),
            _ => Err(errors),
        }
    }

    /// The canonical JSON form, answer key included: what is stored, and what
    /// [`from_json`](Self::from_json) reads back into an equal spec.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("type".into(), json!(self.kind().as_str()));
        object.insert("prompt".into(), json!(self.prompt));
        object.insert("points".into(), json!(self.points));
        match &self.key {
            AnswerKey::SingleChoice { options, correct } => {
                object.insert("options".into(), json!(options));
                object.insert("correct".into(), json!(correct));
            }
            AnswerKey::MultipleChoice { options, correct } => {
                object.insert("options".into(), json!(options));
                object.insert("correct".into(), json!(correct));
            }
            AnswerKey::TrueFalse { correct } => {
                object.insert("correct".into(), json!(correct));
            }
            AnswerKey::ShortText { accepted_answers } => {
                let texts: Vec<&str> = accepted_answers.iter().map(AcceptedAnswer::text).collect();
                object.insert("accepted_answers".into(), json!(texts));
            }
            AnswerKey::Numeric { value, tolerance } => {
                // Both are finite (an invariant), so neither becomes `null`.
                object.insert("value".into(), json!(value));
                object.insert("tolerance".into(), json!(tolerance));
            }
        }
        Value::Object(object)
    }
}

impl Serialize for QuestionSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for QuestionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        QuestionSpec::from_json(&value).map_err(|errors| {
            let more = errors.len().saturating_sub(1);
            match errors.into_iter().next() {
                Some(first) => de::Error::custom(format!(
                    "[{}] {}: {}{}",
                    first.code,
                    if first.field.is_empty() {
                        "/"
                    } else {
                        &first.field
                    },
                    first.detail,
                    if more > 0 {
                        format!(" (and {more} more)")
                    } else {
                        String::new()
                    }
                )),
                None => de::Error::custom("[invalid_value] invalid question"),
            }
        })
    }
}

/// Validates a list of questions (1..=200, in order). Pointers are `/questions/{i}/…`.
pub fn parse_questions(values: &[Value]) -> Result<Vec<QuestionSpec>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !(QUESTIONS_MIN..=QUESTIONS_MAX).contains(&values.len()) {
        errors.push(FieldError::new(
            "/questions",
            codes::INVALID_LENGTH,
            format!(
                "an assessment has {QUESTIONS_MIN} to {QUESTIONS_MAX} questions, got {}",
                values.len()
            ),
        ));
    }
    let mut specs = Vec::with_capacity(values.len().min(QUESTIONS_MAX));
    for (i, value) in values.iter().enumerate() {
        match QuestionSpec::from_json(value) {
            Ok(spec) => specs.push(spec),
            Err(question_errors) => errors.extend(question_errors.into_iter().map(|mut e| {
                e.field = format!("/questions/{i}{}", e.field);
                e
            })),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

/// Escapes a JSON object key for use in a JSON pointer (RFC 6901).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn missing(field: &str, detail: &str) -> FieldError {
    FieldError::new(field, codes::MISSING_FIELD, detail)
}

fn not_allowed(kind: QuestionType, name: &str) -> FieldError {
    FieldError::new(
        format!("/{name}"),
        codes::FIELD_NOT_ALLOWED,
        format!("`{name}` does not belong to a {} question", kind.as_str()),
    )
}

/// The reader's own errors first, then the domain's; success only when both are clean.
fn with_reader_errors(
    mut errors: Vec<FieldError>,
    built: Result<QuestionSpec, Vec<FieldError>>,
) -> Result<QuestionSpec, Vec<FieldError>> {
    match built {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            Err(errors)
        }
    }
}

fn at(field: &str, invalid: Invalid) -> Vec<FieldError> {
    vec![invalid.at(field)]
}

/// Reads one optional field with `parse`, recording its errors.
fn read<T>(
    object: &Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(&Value) -> Result<T, Vec<FieldError>>,
) -> FieldValue<T> {
    match object.get(name) {
        None => FieldValue::Absent,
        Some(value) => match parse(value) {
            Ok(v) => FieldValue::Present(v),
            Err(mut e) => {
                errors.append(&mut e);
                FieldValue::Rejected
            }
        },
    }
}

/// An array of strings; every non-string element is reported at its own pointer.
fn read_string_list(
    value: &Value,
    pointer: &str,
    what: &str,
) -> Result<Vec<String>, Vec<FieldError>> {
    let Value::Array(items) = value else {
        return Err(at(
            pointer,
            wrong_type(&format!("an array of {what} (strings)"), value),
        ));
    };
    let mut errors = Vec::new();
    let mut strings = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => strings.push(s.clone()),
            other => errors.push(wrong_type("a string", other).at(format!("{pointer}/{i}"))),
        }
    }
    if errors.is_empty() {
        Ok(strings)
    } else {
        Err(errors)
    }
}

/// The JSON shape of `correct` that `kind` expects.
fn read_correct(kind: QuestionType, value: &Value) -> Result<CorrectInput, Vec<FieldError>> {
    match kind {
        QuestionType::TrueFalse => match value {
            Value::Bool(b) => Ok(CorrectInput::Boolean(*b)),
            other => Err(at(
                "/correct",
                wrong_type("a boolean (true or false)", other),
            )),
        },
        QuestionType::MultipleChoice => {
            let Value::Array(items) = value else {
                return Err(at(
                    "/correct",
                    wrong_type("an array of 0-based option indices", value),
                ));
            };
            let mut errors = Vec::new();
            let mut indices = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match strict_integer(item, "a 0-based option index (a JSON integer)") {
                    Ok(index) => indices.push(index),
                    Err(e) => errors.push(e.at(format!("/correct/{i}"))),
                }
            }
            if errors.is_empty() {
                Ok(CorrectInput::Indices(indices))
            } else {
                Err(errors)
            }
        }
        // Single choice (the only other type `correct` belongs to).
        _ => strict_integer(
            value,
            "the 0-based index of the correct option (a JSON integer)",
        )
        .map(CorrectInput::Index)
        .map_err(|e| at("/correct", e)),
    }
}

fn check_points(points: i64) -> Result<u32, Invalid> {
    if (POINTS_MIN..=POINTS_MAX).contains(&points) {
        // Bounded to 1..=100 just above.
        Ok(points as u32)
    } else {
        Err(Invalid::new(
            codes::OUT_OF_RANGE,
            format!("must be between {POINTS_MIN} and {POINTS_MAX}, got {points}"),
        ))
    }
}

/// Options: 2..=10, each a clean name of at most 500 characters, distinct by [`answer_key`].
/// Returns the options only when all of them are valid.
fn check_options(raw: &[String], errors: &mut Vec<FieldError>) -> Option<Vec<String>> {
    let before = errors.len();
    if !(OPTIONS_MIN..=OPTIONS_MAX).contains(&raw.len()) {
        errors.push(FieldError::new(
            "/options",
            codes::INVALID_LENGTH,
            format!(
                "must have {OPTIONS_MIN} to {OPTIONS_MAX} options, got {}",
                raw.len()
            ),
        ));
        // Each option is compared with those before it: past the bound the list is refused
        // as a whole, not item by item (a list of 700,000 was 10^11 comparisons and as many
        // errors).
        if raw.len() > OPTIONS_MAX {
            return None;
        }
    }
    let mut options = Vec::with_capacity(raw.len());
    let mut keys: Vec<(usize, String)> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match clean_name(text, OPTION_CHARS_MAX) {
            Ok(option) => {
                let key = answer_key(&option);
                if let Some((first, _)) = keys.iter().find(|(_, k)| *k == key) {
                    errors.push(FieldError::new(
                        format!("/options/{i}"),
                        codes::DUPLICATE_OPTION,
                        format!(
                            "{option:?} is the same as option /options/{first} \
                             (ignoring case, width and spacing)"
                        ),
                    ));
                } else {
                    keys.push((i, key));
                }
                options.push(option);
            }
            Err(e) => errors.push(e.at(format!("/options/{i}"))),
        }
    }
    (errors.len() == before).then_some(options)
}

fn build_choice(
    kind: QuestionType,
    fields: &QuestionFields,
    errors: &mut Vec<FieldError>,
    rejected: &mut bool,
) -> Option<AnswerKey> {
    // How many options there are is known even when some of them are invalid, so the answer
    // key is still checked against it and both problems are reported together.
    let (options, option_count) = match &fields.options {
        FieldValue::Absent => {
            errors.push(missing("/options", "`options` is required"));
            (None, None)
        }
        FieldValue::Rejected => {
            *rejected = true;
            (None, None)
        }
        FieldValue::Present(raw) => (check_options(raw, errors), Some(raw.len())),
    };
    let index_problem = |index: i64| -> Option<String> {
        match (usize::try_from(index), option_count) {
            (Err(_), _) => Some(format!("{index} is not an option index (they start at 0)")),
            (Ok(i), Some(count)) if i >= count => Some(format!(
                "{index} is not an option index: there are {count} options (0 to {})",
                count.saturating_sub(1)
            )),
            _ => None,
        }
    };
    let correct = match (&fields.correct, kind) {
        (FieldValue::Absent, _) => {
            errors.push(missing("/correct", "`correct` is required"));
            None
        }
        (FieldValue::Rejected, _) => {
            *rejected = true;
            None
        }
        (FieldValue::Present(CorrectInput::Index(index)), QuestionType::SingleChoice) => {
            match index_problem(*index) {
                Some(detail) => {
                    errors.push(FieldError::new(
                        "/correct",
                        codes::INVALID_CORRECT_ANSWER,
                        detail,
                    ));
                    None
                }
                // `index_problem` refused negative values.
                None => usize::try_from(*index).ok().map(|i| vec![i]),
            }
        }
        (FieldValue::Present(CorrectInput::Indices(indices)), QuestionType::MultipleChoice) => {
            let before = errors.len();
            if indices.is_empty() {
                errors.push(FieldError::new(
                    "/correct",
                    codes::INVALID_CORRECT_ANSWER,
                    "must name at least one correct option",
                ));
            }
            // More indices than options can exist cannot be right; refused as a whole before
            // the pairwise duplicate check.
            if indices.len() > OPTIONS_MAX {
                errors.push(FieldError::new(
                    "/correct",
                    codes::INVALID_LENGTH,
                    format!(
                        "names {} options; a question has at most {OPTIONS_MAX}",
                        indices.len()
                    ),
                ));
                return None;
            }
            let mut seen: Vec<usize> = Vec::with_capacity(indices.len());
            for (j, index) in indices.iter().enumerate() {
                if let Some(detail) = index_problem(*index) {
                    errors.push(FieldError::new(
                        format!("/correct/{j}"),
                        codes::INVALID_CORRECT_ANSWER,
                        detail,
                    ));
                } else if let Ok(i) = usize::try_from(*index) {
                    if seen.contains(&i) {
                        errors.push(FieldError::new(
                            format!("/correct/{j}"),
                            codes::DUPLICATE_INDEX,
                            format!("option {i} is listed twice"),
                        ));
                    } else {
                        seen.push(i);
                    }
                }
            }
            seen.sort_unstable();
            (errors.len() == before).then_some(seen)
        }
        (FieldValue::Present(_), QuestionType::SingleChoice) => {
            errors.push(FieldError::new(
                "/correct",
                codes::INVALID_TYPE,
                "must be the 0-based index of the correct option (an integer)",
            ));
            None
        }
        (FieldValue::Present(_), _) => {
            errors.push(FieldError::new(
                "/correct",
                codes::INVALID_TYPE,
                "must be an array of 0-based option indices",
            ));
            None
        }
    };
    let (options, correct) = (options?, correct?);
    Some(match (kind, correct.as_slice()) {
        (QuestionType::SingleChoice, [index]) => AnswerKey::SingleChoice {
            options,
            correct: *index,
        },
        _ => AnswerKey::MultipleChoice { options, correct },
    })
}

/// Accepted answers: 1..=20, each a clean name of at most 200 characters whose key is not
/// empty, distinct by [`answer_key`].
fn check_accepted_answers(
    raw: &[String],
    errors: &mut Vec<FieldError>,
) -> Option<Vec<AcceptedAnswer>> {
    let before = errors.len();
    if !(ACCEPTED_ANSWERS_MIN..=ACCEPTED_ANSWERS_MAX).contains(&raw.len()) {
        errors.push(FieldError::new(
            "/accepted_answers",
            codes::INVALID_LENGTH,
            format!(
                "must have {ACCEPTED_ANSWERS_MIN} to {ACCEPTED_ANSWERS_MAX} accepted answers, got {}",
                raw.len()
            ),
        ));
        // As for options: past the bound, refused as a whole.
        if raw.len() > ACCEPTED_ANSWERS_MAX {
            return None;
        }
    }
    let mut answers: Vec<AcceptedAnswer> = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let pointer = format!("/accepted_answers/{i}");
        let text = match clean_name(text, ACCEPTED_ANSWER_CHARS_MAX) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e.at(pointer));
                continue;
            }
        };
        let key = answer_key(&text);
        if key.is_empty() {
            errors.push(FieldError::new(
                pointer,
                codes::EMPTY,
                "is empty once normalized",
            ));
        } else if let Some(first) = answers.iter().position(|a| a.key == key) {
            errors.push(FieldError::new(
                pointer,
                codes::DUPLICATE_ANSWER,
                format!(
                    "{text:?} is the same as accepted answer {first} once normalized \
                     (case, width and spacing)"
                ),
            ));
        } else {
            answers.push(AcceptedAnswer { text, key });
        }
    }
    (errors.len() == before).then_some(answers)
}

fn build_numeric(
    fields: &QuestionFields,
    errors: &mut Vec<FieldError>,
    rejected: &mut bool,
) -> Option<AnswerKey> {
    let value = match fields.value {
        FieldValue::Absent => {
            errors.push(missing("/value", "`value` is required"));
            None
        }
        FieldValue::Rejected => {
            *rejected = true;
            None
        }
        FieldValue::Present(value) if value.is_finite() => Some(value),
        FieldValue::Present(_) => {
            errors.push(FieldError::new(
                "/value",
                codes::INVALID_VALUE,
                "must be a finite number",
            ));
            None
        }
    };
    let tolerance = match fields.tolerance {
        FieldValue::Absent => Some(0.0),
        FieldValue::Rejected => {
            *rejected = true;
            None
        }
        FieldValue::Present(t) if !t.is_finite() => {
            errors.push(FieldError::new(
                "/tolerance",
                codes::INVALID_VALUE,
                "must be a finite number",
            ));
            None
        }
        FieldValue::Present(t) if t < 0.0 => {
            errors.push(FieldError::new(
                "/tolerance",
                codes::OUT_OF_RANGE,
                format!("must be zero or more, got {t}"),
            ));
            None
        }
        FieldValue::Present(t) => Some(t),
    };
    // `+ 0.0` turns a negative zero into zero, so the stored form never reads `-0.0`.
    Some(AnswerKey::Numeric {
        value: value? + 0.0,
        tolerance: tolerance? + 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errors(value: Value) -> Vec<(String, &'static str)> {
        QuestionSpec::from_json(&value)
            .expect_err("invalid question")
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    fn pairs(expected: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
        expected
            .iter()
            .map(|(f, c)| ((*f).to_owned(), *c))
            .collect()
    }

    #[test]
    fn one_valid_question_of_every_type_parses_with_defaults() {
        let single = QuestionSpec::from_json(&json!({
            "type": "single_choice", "prompt": "  Capital of France?\r\n ",
            "options": [" Paris ", "Lyon"], "correct": 0,
        }))
        .expect("valid");
        assert_eq!(single.prompt(), "Capital of France?");
        assert_eq!(single.points(), 1);
        assert_eq!(
            single.key(),
            &AnswerKey::SingleChoice {
                options: vec!["Paris".into(), "Lyon".into()],
                correct: 0
            }
        );
        let multiple = QuestionSpec::from_json(&json!({
            "type": "multiple_choice", "prompt": "Primes?", "points": 3,
            "options": ["2", "3", "4"], "correct": [1, 0],
        }))
        .expect("valid");
        assert_eq!(
            multiple.key(),
            &AnswerKey::MultipleChoice {
                options: vec!["2".into(), "3".into(), "4".into()],
                correct: vec![0, 1]
            }
        );
        let tf = QuestionSpec::from_json(&json!({"type": "true_false", "prompt": "p",
            "correct": true}))
        .expect("valid");
        assert_eq!(tf.key(), &AnswerKey::TrueFalse { correct: true });
        let text = QuestionSpec::from_json(&json!({"type": "short_text", "prompt": "p",
            "accepted_answers": [" Café ", "coffee"]}))
        .expect("valid");
        let AnswerKey::ShortText { accepted_answers } = text.key() else {
            panic!("short text")
        };
        assert_eq!(accepted_answers[0].text(), "Café");
        assert_eq!(accepted_answers[0].key(), "café");
        let numeric = QuestionSpec::from_json(&json!({"type": "numeric", "prompt": "p",
            "value": -0.0}))
        .expect("valid");
        let AnswerKey::Numeric { value, tolerance } = *numeric.key() else {
            panic!("numeric")
        };
        assert_eq!((value, tolerance), (0.0, 0.0));
        assert!(value.is_sign_positive());
    }

    #[test]
    fn every_problem_of_a_choice_question_is_reported_with_its_pointer() {
        assert_eq!(
            errors(json!({
                "type": "single_choice", "prompt": " ", "points": 101,
                "options": ["a", " A ", "", "b\u{1}", "x".repeat(501)], "correct": 5,
                "accepted_answers": ["a"], "extra": 1,
            })),
            pairs(&[
                ("/extra", codes::UNKNOWN_FIELD),
                ("/accepted_answers", codes::FIELD_NOT_ALLOWED),
                ("/prompt", codes::EMPTY),
                ("/points", codes::OUT_OF_RANGE),
                ("/options/1", codes::DUPLICATE_OPTION),
                ("/options/2", codes::EMPTY),
                ("/options/3", codes::CONTROL_CHARACTER),
                ("/options/4", codes::TOO_LONG),
                ("/correct", codes::INVALID_CORRECT_ANSWER),
            ])
        );
        assert_eq!(
            errors(json!({"type": "multiple_choice", "prompt": "p",
                "options": ["a", "b", "c"], "correct": [2, -1, 3, 2, 1.0]})),
            pairs(&[("/correct/4", codes::INVALID_TYPE)])
        );
        assert_eq!(
            errors(json!({"type": "multiple_choice", "prompt": "p",
                "options": ["a", "b", "c"], "correct": [2, -1, 3, 2]})),
            pairs(&[
                ("/correct/1", codes::INVALID_CORRECT_ANSWER),
                ("/correct/2", codes::INVALID_CORRECT_ANSWER),
                ("/correct/3", codes::DUPLICATE_INDEX),
            ])
        );
        assert_eq!(
            errors(json!({"type": "multiple_choice", "prompt": "p",
                "options": ["a", "b"], "correct": []})),
            pairs(&[("/correct", codes::INVALID_CORRECT_ANSWER)])
        );
        assert_eq!(
            errors(
                json!({"type": "single_choice", "prompt": "p", "options": ["a"],
                "correct": 0})
            ),
            pairs(&[("/options", codes::INVALID_LENGTH)])
        );
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            errors(
                json!({"type": "single_choice", "prompt": "p", "options": eleven,
                "correct": 10})
            ),
            pairs(&[("/options", codes::INVALID_LENGTH)])
        );
        assert_eq!(
            errors(json!({"type": "single_choice", "prompt": "p",
                "options": ["a", 2, null], "correct": [0]})),
            pairs(&[
                ("/options/1", codes::INVALID_TYPE),
                ("/options/2", codes::INVALID_TYPE),
                ("/correct", codes::INVALID_TYPE),
            ])
        );
        assert_eq!(
            errors(json!({"type": "single_choice", "prompt": "p"})),
            pairs(&[
                ("/options", codes::MISSING_FIELD),
                ("/correct", codes::MISSING_FIELD)
            ])
        );
    }

    #[test]
    fn options_are_distinct_ignoring_case_width_and_spacing() {
        assert_eq!(
            errors(json!({"type": "single_choice", "prompt": "p",
                "options": ["New York", "new  york", "ＮＥＷ ＹＯＲＫ", "Boston"], "correct": 0})),
            pairs(&[
                ("/options/1", codes::DUPLICATE_OPTION),
                ("/options/2", codes::DUPLICATE_OPTION),
            ])
        );
    }

    /// Lists past their bound are refused as a whole: one error each, not one per item (and
    /// not a pairwise comparison of 100,000 items).
    #[test]
    fn overlong_lists_are_one_error_each() {
        let many: Vec<String> = (0..100_000).map(|i| format!("o{i}")).collect();
        let indices: Vec<usize> = (0..100_000).collect();
        assert_eq!(
            errors(json!({"type": "multiple_choice", "prompt": "p",
                "options": many, "correct": indices})),
            pairs(&[
                ("/options", codes::INVALID_LENGTH),
                ("/correct", codes::INVALID_LENGTH),
            ])
        );
        let same = vec!["a"; 100_000];
        assert_eq!(
            errors(json!({"type": "short_text", "prompt": "p", "accepted_answers": same})),
            pairs(&[("/accepted_answers", codes::INVALID_LENGTH)])
        );
    }

    #[test]
    fn integers_are_strict_for_points_and_correct() {
        for (points, code) in [
            (json!(1.0), codes::INVALID_TYPE),
            (json!(true), codes::INVALID_TYPE),
            (json!("2"), codes::INVALID_TYPE),
            (Value::Null, codes::INVALID_TYPE),
            (json!(0), codes::OUT_OF_RANGE),
            (json!(-1), codes::OUT_OF_RANGE),
        ] {
            assert_eq!(
                errors(json!({"type": "true_false", "prompt": "p", "correct": true,
                    "points": points})),
                pairs(&[("/points", code)]),
                "{points}"
            );
        }
        assert!(
            QuestionSpec::from_json(&json!({"type": "true_false", "prompt": "p",
            "correct": true, "points": 100}))
            .is_ok()
        );
        for correct in [json!(0.0), json!(true), json!("0"), json!([0])] {
            assert_eq!(
                errors(
                    json!({"type": "single_choice", "prompt": "p", "options": ["a", "b"],
                    "correct": correct})
                ),
                pairs(&[("/correct", codes::INVALID_TYPE)]),
                "{correct}"
            );
        }
    }

    #[test]
    fn fields_of_other_types_are_refused_even_when_well_formed() {
        assert_eq!(
            errors(json!({"type": "true_false", "prompt": "p", "correct": true,
                "options": ["a", "b"], "value": 1})),
            pairs(&[
                ("/options", codes::FIELD_NOT_ALLOWED),
                ("/value", codes::FIELD_NOT_ALLOWED)
            ])
        );
        assert_eq!(
            errors(json!({"type": "numeric", "prompt": "p", "value": 1,
                "accepted_answers": ["1"], "correct": 1})),
            pairs(&[
                ("/correct", codes::FIELD_NOT_ALLOWED),
                ("/accepted_answers", codes::FIELD_NOT_ALLOWED),
            ])
        );
        assert_eq!(
            errors(
                json!({"type": "short_text", "prompt": "p", "accepted_answers": ["x"],
                "tolerance": 0})
            ),
            pairs(&[("/tolerance", codes::FIELD_NOT_ALLOWED)])
        );
    }

    #[test]
    fn type_prompt_and_shape_errors_are_precise() {
        assert_eq!(errors(json!([])), pairs(&[("", codes::INVALID_TYPE)]));
        assert_eq!(
            errors(json!({"prompt": "p", "correct": true})),
            pairs(&[("/type", codes::MISSING_FIELD)])
        );
        assert_eq!(
            errors(json!({"type": "essay", "prompt": 3})),
            pairs(&[
                ("/type", codes::INVALID_VALUE),
                ("/prompt", codes::INVALID_TYPE)
            ])
        );
        assert_eq!(
            errors(json!({"type": "true_false", "correct": "yes"})),
            pairs(&[
                ("/correct", codes::INVALID_TYPE),
                ("/prompt", codes::MISSING_FIELD)
            ])
        );
        assert_eq!(
            errors(json!({"type": "true_false", "prompt": "a\u{1b}b", "correct": true})),
            pairs(&[("/prompt", codes::CONTROL_CHARACTER)])
        );
        assert_eq!(
            errors(json!({"type": "true_false", "prompt": "p".repeat(2001), "correct": true})),
            pairs(&[("/prompt", codes::TOO_LONG)])
        );
        assert_eq!(
            errors(json!({"type": "true_false", "prompt": "p", "correct": true, "a/b~": 1})),
            pairs(&[("/a~1b~0", codes::UNKNOWN_FIELD)])
        );
        let multiline = QuestionSpec::from_json(&json!({"type": "true_false",
            "prompt": "line 1\n\tline 2", "correct": false}))
        .expect("valid");
        assert_eq!(multiline.prompt(), "line 1\n\tline 2");
    }

    #[test]
    fn short_text_and_numeric_keys_are_checked() {
        assert_eq!(
            errors(json!({"type": "short_text", "prompt": "p",
                "accepted_answers": ["Café", "CAFÉ", " ", "x".repeat(201), 3]})),
            pairs(&[("/accepted_answers/4", codes::INVALID_TYPE)])
        );
        assert_eq!(
            errors(json!({"type": "short_text", "prompt": "p",
                "accepted_answers": ["Café", "CAFÉ", " ", "x".repeat(201)]})),
            pairs(&[
                ("/accepted_answers/1", codes::DUPLICATE_ANSWER),
                ("/accepted_answers/2", codes::EMPTY),
                ("/accepted_answers/3", codes::TOO_LONG),
            ])
        );
        assert_eq!(
            errors(json!({"type": "short_text", "prompt": "p", "accepted_answers": []})),
            pairs(&[("/accepted_answers", codes::INVALID_LENGTH)])
        );
        let many: Vec<String> = (0..21).map(|i| format!("a{i}")).collect();
        assert_eq!(
            errors(json!({"type": "short_text", "prompt": "p", "accepted_answers": many})),
            pairs(&[("/accepted_answers", codes::INVALID_LENGTH)])
        );
        assert_eq!(
            errors(json!({"type": "numeric", "prompt": "p", "tolerance": -0.5})),
            pairs(&[
                ("/value", codes::MISSING_FIELD),
                ("/tolerance", codes::OUT_OF_RANGE)
            ])
        );
        // An integer key a double cannot hold exactly is refused, not rounded.
        assert_eq!(
            errors(
                json!({"type": "numeric", "prompt": "p", "value": 9_007_199_254_740_993_u64,
                "tolerance": -9_007_199_254_740_993_i64})
            ),
            pairs(&[
                ("/value", codes::OUT_OF_RANGE),
                ("/tolerance", codes::OUT_OF_RANGE)
            ])
        );
        assert!(
            QuestionSpec::from_json(&json!({"type": "numeric", "prompt": "p",
                "value": 9_007_199_254_740_991_u64, "tolerance": 0}))
            .is_ok()
        );
        assert_eq!(
            errors(json!({"type": "numeric", "prompt": "p", "value": "1", "tolerance": null})),
            pairs(&[
                ("/value", codes::INVALID_TYPE),
                ("/tolerance", codes::INVALID_TYPE)
            ])
        );
        let mut fields = QuestionFields {
            kind: FieldValue::Present(QuestionType::Numeric),
            prompt: FieldValue::Present("p".into()),
            value: FieldValue::Present(f64::NAN),
            tolerance: FieldValue::Present(f64::INFINITY),
            ..QuestionFields::default()
        };
        let codes_of = |fields: QuestionFields| -> Vec<(String, &'static str)> {
            QuestionSpec::build(fields)
                .expect_err("invalid")
                .into_iter()
                .map(|e| (e.field, e.code))
                .collect()
        };
        assert_eq!(
            codes_of(fields.clone()),
            pairs(&[
                ("/value", codes::INVALID_VALUE),
                ("/tolerance", codes::INVALID_VALUE)
            ])
        );
        fields.value = FieldValue::Rejected;
        fields.tolerance = FieldValue::Absent;
        assert_eq!(codes_of(fields), pairs(&[]));
    }

    #[test]
    fn the_public_view_never_holds_the_answer_key() {
        let questions = [
            json!({"type": "single_choice", "prompt": "p", "options": ["a", "b"], "correct": 1}),
            json!({"type": "multiple_choice", "prompt": "p", "options": ["a", "b"],
                "correct": [0, 1]}),
            json!({"type": "true_false", "prompt": "p", "correct": true}),
            json!({"type": "short_text", "prompt": "p", "accepted_answers": ["secret"]}),
            json!({"type": "numeric", "prompt": "p", "value": 12345.5, "tolerance": 0.25}),
        ];
        for question in questions {
            let spec = QuestionSpec::from_json(&question).expect("valid");
            let public = serde_json::to_value(spec.public_view()).expect("json");
            let object = public.as_object().expect("object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            for key in &keys {
                assert!(
                    ["type", "prompt", "points", "options"].contains(key),
                    "{key}"
                );
            }
            let text = public.to_string();
            assert!(!text.contains("secret") && !text.contains("12345") && !text.contains("0.25"));
            assert_eq!(object["type"], question["type"]);
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_is_revalidated_on_read() {
        let spec = QuestionSpec::from_json(&json!({"type": "numeric", "prompt": "p",
            "value": 0.1, "tolerance": 1e-9}))
        .expect("valid");
        let stored = serde_json::to_string(&spec).expect("json");
        let back: QuestionSpec = serde_json::from_str(&stored).expect("reads back");
        assert_eq!(back, spec);
        let tampered =
            r#"{"type":"single_choice","prompt":"p","points":1,"options":["a","b"],"correct":2}"#;
        let error = serde_json::from_str::<QuestionSpec>(tampered).expect_err("invalid key");
        assert!(
            error
                .to_string()
                .starts_with("[invalid_correct_answer] /correct:"),
            "{error}"
        );
    }

    #[test]
    fn question_lists_hold_one_to_two_hundred_questions_and_prefix_pointers() {
        let tf = json!({"type": "true_false", "prompt": "p", "correct": true});
        assert_eq!(
            parse_questions(&[]).map_err(|e| e[0].code),
            Err(codes::INVALID_LENGTH)
        );
        assert_eq!(
            parse_questions(&vec![tf.clone(); 200]).map(|q| q.len()),
            Ok(200)
        );
        assert!(parse_questions(&vec![tf.clone(); 201]).is_err());
        let errors = parse_questions(&[tf, json!({"type": "true_false", "prompt": "p"}), json!(1)])
            .expect_err("invalid");
        let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            [
                ("/questions/1/correct", codes::MISSING_FIELD),
                ("/questions/2", codes::INVALID_TYPE),
            ]
        );
    }

    fn text() -> impl Strategy<Value = String> + Clone {
        "[a-zA-Z0-9 éÉß]{1,12}"
    }

    fn valid_question() -> impl Strategy<Value = Value> {
        let options = prop::collection::vec(text(), 2..=10);
        prop_oneof![
            (
                text(),
                1i64..=100,
                options.clone(),
                any::<prop::sample::Index>()
            )
                .prop_map(|(prompt, points, options, i)| {
                    let correct = i.index(options.len());
                    json!({"type": "single_choice", "prompt": prompt, "points": points,
                        "options": options, "correct": correct})
                }),
            (text(), options, any::<bool>()).prop_map(|(prompt, options, b)| {
                json!({"type": "multiple_choice", "prompt": prompt, "options": options,
                    "correct": if b { vec![0, 1] } else { vec![1] }})
            }),
            (text(), any::<bool>())
                .prop_map(|(p, c)| json!({"type": "true_false", "prompt": p, "correct": c})),
            (text(), prop::collection::vec(text(), 1..=20)).prop_map(|(p, a)| {
                json!({"type": "short_text", "prompt": p, "accepted_answers": a})
            }),
            (text(), any::<f64>(), 0.0..1e300f64).prop_map(|(p, v, t)| {
                json!({"type": "numeric", "prompt": p,
                    "value": if v.is_finite() { v } else { 0.0 }, "tolerance": t})
            }),
        ]
    }

    proptest! {
        #[test]
        fn a_valid_spec_survives_storage_bit_for_bit(question in valid_question()) {
            // Generated inputs can still be invalid (duplicate options): only valid ones
            // are stored.
            if let Ok(spec) = QuestionSpec::from_json(&question) {
                let stored = serde_json::to_string(&spec).expect("json");
                let back: QuestionSpec = serde_json::from_str(&stored).expect("reads back");
                prop_assert_eq!(&back, &spec);
                if let (AnswerKey::Numeric { value: a, tolerance: t }, AnswerKey::Numeric { value: b, tolerance: u }) = (back.key(), spec.key()) {
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                    prop_assert_eq!(t.to_bits(), u.to_bits());
                }
            }
        }

        #[test]
        fn arbitrary_json_never_panics_and_errors_are_never_empty(
            value in arbitrary_question_like(),
        ) {
            if let Err(errors) = QuestionSpec::from_json(&value) {
                prop_assert!(!errors.is_empty());
            }
        }
    }

    fn arbitrary_question_like() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..12).prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,6}".prop_map(Value::String),
            prop::sample::select(QuestionType::ALL.map(QuestionType::as_str).to_vec())
                .prop_map(|s| json!(s)),
        ];
        let value = leaf.prop_recursive(2, 12, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        });
        let field = prop::sample::select(vec![
            "type",
            "prompt",
            "points",
            "options",
            "correct",
            "accepted_answers",
            "value",
            "tolerance",
            "other",
        ]);
        prop::collection::vec((field, value), 0..8).prop_map(|fields| {
            Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    }
}
