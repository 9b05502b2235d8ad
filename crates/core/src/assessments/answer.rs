//! Candidate answers, parsed against the question they answer.
//!
//! One JSON value per question: an option index (`single_choice`), an array of distinct option
//! indices (`multiple_choice`; `[]` is an answer that selects nothing), a boolean
//! (`true_false`), a string of at most 1000 characters (`short_text`), a finite number
//! (`numeric`). Anything else is refused with the reason, never scored as a silent zero.
//! To leave a question unanswered, omit it; `null` is refused like any other wrong type.

use crate::assessments::json::{finite_number, strict_integer, type_name};
use crate::assessments::question::{AnswerKey, QuestionSpec, QuestionType};
use crate::assessments::{SHORT_ANSWER_CHARS_MAX, codes};
use crate::validation::{FieldError, Invalid};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Display;
use std::hash::Hash;

/// One parsed answer. Serializes back to the JSON the candidate sent (multiple-choice indices
/// sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    SingleChoice(usize),
    /// Distinct indices, ascending.
    MultipleChoice(Vec<usize>),
    TrueFalse(bool),
    /// As sent (not normalized); compared through
    /// [`answer_key`](crate::assessments::text::answer_key).
    ShortText(String),
    Numeric(f64),
}

impl Answer {
    /// Reads `value` as an answer to `spec`; the error says exactly what is wrong.
    pub fn parse(spec: &QuestionSpec, value: &Value) -> Result<Answer, Invalid> {
        match spec.key() {
            AnswerKey::SingleChoice { options, .. } => {
                let index = strict_integer(value, "the 0-based index of an option (an integer)")?;
                option_index(index, options.len()).map(Answer::SingleChoice)
            }
            AnswerKey::MultipleChoice { options, .. } => {
                let Value::Array(items) = value else {
                    return Err(Invalid::new(
                        codes::INVALID_TYPE,
                        format!(
                            "must be an array of 0-based option indices, not {}",
                            type_name(value)
                        ),
                    ));
                };
                let mut chosen: Vec<usize> = Vec::with_capacity(items.len());
                for (position, item) in items.iter().enumerate() {
                    let located = |e: Invalid| {
                        Invalid::new(e.code, format!("element {position}: {}", e.detail))
                    };
                    let index =
                        strict_integer(item, "an option index (an integer)").map_err(located)?;
                    let index = option_index(index, options.len()).map_err(located)?;
                    if chosen.contains(&index) {
                        return Err(Invalid::new(
                            codes::DUPLICATE_INDEX,
                            format!("element {position}: option {index} is chosen twice"),
                        ));
                    }
                    chosen.push(index);
                }
                chosen.sort_unstable();
                Ok(Answer::MultipleChoice(chosen))
            }
            AnswerKey::TrueFalse { .. } => match value {
                Value::Bool(b) => Ok(Answer::TrueFalse(*b)),
                other => Err(Invalid::new(
                    codes::INVALID_TYPE,
                    format!("must be a boolean, not {}", type_name(other)),
                )),
            },
            AnswerKey::ShortText { .. } => match value {
                Value::String(s) => {
                    let chars = s.chars().count();
                    if chars > SHORT_ANSWER_CHARS_MAX {
                        Err(Invalid::new(
                            codes::TOO_LONG,
                            format!(
                                "must be at most {SHORT_ANSWER_CHARS_MAX} characters, got {chars}"
                            ),
                        ))
                    } else if s
                        .chars()
                        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                    {
                        // A NUL cannot be stored in PostgreSQL's JSON (a 500 there, accepted
                        // by SQLite); no control character belongs in a typed answer.
                        Err(Invalid::new(
                            codes::CONTROL_CHARACTER,
                            "must not contain control characters (tabs and line breaks are fine)",
                        ))
                    } else {
                        Ok(Answer::ShortText(s.clone()))
                    }
                }
                other => Err(Invalid::new(
                    codes::INVALID_TYPE,
                    format!("must be a string, not {}", type_name(other)),
                )),
            },
            AnswerKey::Numeric { .. } => finite_number(value, "a number").map(Answer::Numeric),
        }
    }

    /// The question type this answer fits.
    pub fn kind(&self) -> QuestionType {
        match self {
            Answer::SingleChoice(_) => QuestionType::SingleChoice,
            Answer::MultipleChoice(_) => QuestionType::MultipleChoice,
            Answer::TrueFalse(_) => QuestionType::TrueFalse,
            Answer::ShortText(_) => QuestionType::ShortText,
            Answer::Numeric(_) => QuestionType::Numeric,
        }
    }
}

fn option_index(index: i64, count: usize) -> Result<usize, Invalid> {
    usize::try_from(index)
        .ok()
        .filter(|i| *i < count)
        .ok_or_else(|| {
            Invalid::new(
                codes::OUT_OF_RANGE,
                format!(
                    "{index} is not an option: options are numbered 0 to {}",
                    count.saturating_sub(1)
                ),
            )
        })
}

/// Parses a submission's answers (question id → JSON value) against the assessment's
/// questions. Every bad answer is reported at `/answers/{id}`: an id the assessment does not
/// have (`unknown_question`), an id given twice (`duplicate_answer_id`), or a malformed value.
/// Questions without an answer are simply unanswered.
pub fn parse_answers<'v, K>(
    questions: &[(K, QuestionSpec)],
    raw: impl IntoIterator<Item = (K, &'v Value)>,
) -> Result<HashMap<K, Answer>, Vec<FieldError>>
where
    K: Eq + Hash + Clone + Display,
{
    let specs: HashMap<&K, &QuestionSpec> = questions.iter().map(|(id, q)| (id, q)).collect();
    let mut answers = HashMap::new();
    let mut errors = Vec::new();
    for (id, value) in raw {
        let pointer = format!("/answers/{id}");
        let Some(spec) = specs.get(&id) else {
            errors.push(FieldError::new(
                pointer,
                codes::UNKNOWN_QUESTION,
                format!("the assessment has no question {id}"),
            ));
            continue;
        };
        match Answer::parse(spec, value) {
            Ok(answer) => match answers.entry(id) {
                Entry::Vacant(slot) => {
                    slot.insert(answer);
                }
                Entry::Occupied(_) => errors.push(FieldError::new(
                    pointer,
                    codes::DUPLICATE_ANSWER_ID,
                    "question is answered more than once",
                )),
            },
            Err(e) => errors.push(e.at(pointer)),
        }
    }
    if errors.is_empty() {
        Ok(answers)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(value: Value) -> QuestionSpec {
        QuestionSpec::from_json(&value).expect("valid question")
    }

    fn single() -> QuestionSpec {
        spec(
            json!({"type": "single_choice", "prompt": "p", "options": ["a", "b", "c"], "correct": 1}),
        )
    }

    fn multiple() -> QuestionSpec {
        spec(
            json!({"type": "multiple_choice", "prompt": "p", "options": ["a", "b", "c"], "correct": [0, 2]}),
        )
    }

    fn code(spec: &QuestionSpec, value: Value) -> Result<Answer, &'static str> {
        Answer::parse(spec, &value).map_err(|e| e.code)
    }

    #[test]
    fn well_formed_answers_parse_for_every_type() {
        assert_eq!(code(&single(), json!(2)), Ok(Answer::SingleChoice(2)));
        assert_eq!(
            code(&multiple(), json!([2, 0])),
            Ok(Answer::MultipleChoice(vec![0, 2]))
        );
        assert_eq!(
            code(&multiple(), json!([])),
            Ok(Answer::MultipleChoice(vec![]))
        );
        let tf = spec(json!({"type": "true_false", "prompt": "p", "correct": false}));
        assert_eq!(code(&tf, json!(true)), Ok(Answer::TrueFalse(true)));
        let text = spec(json!({"type": "short_text", "prompt": "p", "accepted_answers": ["x"]}));
        assert_eq!(
            code(&text, json!(" X ")),
            Ok(Answer::ShortText(" X ".into()))
        );
        let number = spec(json!({"type": "numeric", "prompt": "p", "value": 1}));
        assert_eq!(code(&number, json!(2)), Ok(Answer::Numeric(2.0)));
        assert_eq!(code(&number, json!(-2.5)), Ok(Answer::Numeric(-2.5)));
    }

    #[test]
    fn malformed_answers_are_errors_that_say_what_is_wrong() {
        assert_eq!(code(&single(), json!(3)), Err(codes::OUT_OF_RANGE));
        assert_eq!(code(&single(), json!(-1)), Err(codes::OUT_OF_RANGE));
        assert_eq!(code(&single(), json!(1.0)), Err(codes::INVALID_TYPE));
        assert_eq!(code(&single(), json!("1")), Err(codes::INVALID_TYPE));
        assert_eq!(code(&single(), json!(true)), Err(codes::INVALID_TYPE));
        assert_eq!(code(&single(), Value::Null), Err(codes::INVALID_TYPE));
        assert_eq!(code(&multiple(), json!(1)), Err(codes::INVALID_TYPE));
        assert_eq!(
            code(&multiple(), json!([0, 0])),
            Err(codes::DUPLICATE_INDEX)
        );
        assert_eq!(code(&multiple(), json!([0, 3])), Err(codes::OUT_OF_RANGE));
        assert_eq!(code(&multiple(), json!([0, "1"])), Err(codes::INVALID_TYPE));
        let error = Answer::parse(&multiple(), &json!([0, 7])).expect_err("out of range");
        assert!(
            error.detail.starts_with("element 1: 7 is not an option"),
            "{}",
            error.detail
        );
        let tf = spec(json!({"type": "true_false", "prompt": "p", "correct": false}));
        assert_eq!(code(&tf, json!("true")), Err(codes::INVALID_TYPE));
        assert_eq!(code(&tf, json!(1)), Err(codes::INVALID_TYPE));
        let text = spec(json!({"type": "short_text", "prompt": "p", "accepted_answers": ["x"]}));
        assert_eq!(code(&text, json!(1)), Err(codes::INVALID_TYPE));
        assert_eq!(code(&text, json!("é".repeat(1001))), Err(codes::TOO_LONG));
        assert!(code(&text, json!("é".repeat(1000))).is_ok());
        // A NUL (PostgreSQL's JSON cannot hold it) or another control character is refused;
        // tabs and line breaks are text.
        for bad in ["a\u{0}b", "a\u{7}", "\u{7f}", "\u{85}"] {
            assert_eq!(
                code(&text, json!(bad)),
                Err(codes::CONTROL_CHARACTER),
                "{bad:?}"
            );
        }
        assert!(code(&text, json!("two\nlines\tand\r")).is_ok());
        let number = spec(json!({"type": "numeric", "prompt": "p", "value": 1}));
        assert_eq!(code(&number, json!("2")), Err(codes::INVALID_TYPE));
    }

    /// An f64 holds every integer up to 2^53 exactly and not all beyond: an integer answer
    /// outside ±(2^53 − 1) is refused, never rounded to a neighbour.
    #[test]
    fn numeric_answers_beyond_what_a_double_holds_exactly_are_refused() {
        let number = spec(json!({"type": "numeric", "prompt": "p", "value": 1}));
        let safe = 9_007_199_254_740_991_i64;
        assert_eq!(code(&number, json!(safe)), Ok(Answer::Numeric(safe as f64)));
        assert_eq!(
            code(&number, json!(-safe)),
            Ok(Answer::Numeric(-safe as f64))
        );
        for beyond in [
            json!(safe + 1),
            json!(9_007_199_254_740_993_i64),
            json!(-9_007_199_254_740_993_i64),
            json!(i64::MIN),
            json!(u64::MAX),
        ] {
            let error = Answer::parse(&number, &beyond).expect_err("refused");
            assert_eq!(
                (error.code, error.detail.as_str()),
                (codes::OUT_OF_RANGE, "must be within ±(2^53-1)"),
                "{beyond}"
            );
        }
        // Decimals are read as the nearest double, as documented.
        assert_eq!(code(&number, json!(0.1)), Ok(Answer::Numeric(0.1)));
    }

    #[test]
    fn a_submission_reports_every_bad_answer_and_unknown_or_repeated_ids() {
        let questions = vec![(1u32, single()), (2, multiple())];
        let good = json!(0);
        let bad = json!([9]);
        let parsed = parse_answers(&questions, [(1, &good)]).expect("valid");
        assert_eq!(parsed.get(&1), Some(&Answer::SingleChoice(0)));
        assert!(!parsed.contains_key(&2));
        let errors = parse_answers(&questions, [(1, &good), (2, &bad), (3, &good), (1, &good)])
            .expect_err("invalid");
        let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            [
                ("/answers/2", codes::OUT_OF_RANGE),
                ("/answers/3", codes::UNKNOWN_QUESTION),
                ("/answers/1", codes::DUPLICATE_ANSWER_ID),
            ]
        );
    }

    proptest! {
        #[test]
        fn any_json_answer_either_parses_into_the_right_kind_or_is_refused(
            value in arbitrary_json(),
        ) {
            for spec in [single(), multiple()] {
                if let Ok(answer) = Answer::parse(&spec, &value) {
                    prop_assert_eq!(answer.kind(), spec.kind());
                }
            }
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }
}
