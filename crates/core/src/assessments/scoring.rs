//! Scoring a submission.
//!
//! Per question: full points when the answer is correct, otherwise 0; unanswered is 0.
//! Multiple choice is all-or-nothing: the chosen set must equal the correct set exactly (no
//! partial credit, so guessing every option never earns anything). Short text compares
//! [`answer_key`](crate::assessments::text::answer_key)s; numeric answers are correct iff
//! `|answer − value| ≤ tolerance`, decided exactly on the decimals (see `decimal.rs`).
//!
//! Passing is decided on integers: `earned × 100 ≥ passing_score_percent × total`, never on a
//! rounded percentage (2/3 passes 66 % and fails 67 %).

use crate::DomainError;
use crate::assessments::answer::Answer;
use crate::assessments::decimal::within_tolerance;
use crate::assessments::json::JsonInteger;
use crate::assessments::question::{AnswerKey, QuestionSpec};
use crate::assessments::text::answer_key;
use crate::assessments::{PASSING_SCORE_PERCENT_MAX, codes};
use crate::validation::{FieldError, Invalid};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;

/// 0..=100: the share of the total points a submission needs to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PassingScorePercent(u8);

impl PassingScorePercent {
    pub fn new(percent: i64) -> Result<Self, Invalid> {
        u8::try_from(percent)
            .ok()
            .filter(|p| i64::from(*p) <= PASSING_SCORE_PERCENT_MAX)
            .map(Self)
            .ok_or_else(|| {
                Invalid::new(
                    codes::OUT_OF_RANGE,
                    format!("must be between 0 and {PASSING_SCORE_PERCENT_MAX}, got {percent}"),
                )
            })
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PassingScorePercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let JsonInteger(percent) = JsonInteger::deserialize(d)?;
        PassingScorePercent::new(percent)
            .map_err(|e| serde::de::Error::custom(format!("[{}] {}", e.code, e.detail)))
    }
}

/// The outcome of one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuestionResult {
    /// `max` when correct, else 0.
    pub earned: u32,
    /// The question's points.
    pub max: u32,
    pub correct: bool,
    /// Whether the submission held an answer for it (an empty multiple-choice selection and
    /// an empty string are answers).
    pub answered: bool,
}

/// The outcome of a submission, per question in the assessment's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptScore<K> {
    pub earned: u64,
    pub total: u64,
    pub passed: bool,
    pub per_question: Vec<(K, QuestionResult)>,
}

/// Scores one question. The error (`answer_mismatch`) means the answer was not parsed
/// against this question (another type, an option index it does not have): a caller bug,
/// reported rather than scored as a silent zero.
pub fn score_question(
    spec: &QuestionSpec,
    answer: Option<&Answer>,
) -> Result<QuestionResult, Invalid> {
    let max = spec.points();
    let Some(answer) = answer else {
        return Ok(QuestionResult {
            earned: 0,
            max,
            correct: false,
            answered: false,
        });
    };
    let mismatch = || {
        Invalid::new(
            codes::ANSWER_MISMATCH,
            format!(
                "a {} answer does not fit this {} question",
                answer.kind().as_str(),
                spec.kind().as_str()
            ),
        )
    };
    let correct = match (spec.key(), answer) {
        (AnswerKey::SingleChoice { options, correct }, Answer::SingleChoice(chosen)) => {
            if *chosen >= options.len() {
                return Err(mismatch());
            }
            chosen == correct
        }
        (AnswerKey::MultipleChoice { options, correct }, Answer::MultipleChoice(chosen)) => {
            if chosen.iter().any(|i| *i >= options.len()) {
                return Err(mismatch());
            }
            let mut chosen = chosen.clone();
            chosen.sort_unstable();
            chosen.dedup();
            chosen == *correct
        }
        (AnswerKey::TrueFalse { correct }, Answer::TrueFalse(chosen)) => chosen == correct,
        (AnswerKey::ShortText { accepted_answers }, Answer::ShortText(text)) => {
            let key = answer_key(text);
            accepted_answers.iter().any(|a| a.key() == key)
        }
        (AnswerKey::Numeric { value, tolerance }, Answer::Numeric(x)) => {
            within_tolerance(*x, *value, *tolerance)
        }
        _ => return Err(mismatch()),
    };
    Ok(QuestionResult {
        earned: if correct { max } else { 0 },
        max,
        correct,
        answered: true,
    })
}

/// Scores a submission against the assessment's questions (in order). Fails with
/// [`DomainError::Validation`] listing every answer for an unknown question id
/// (`unknown_question`) or one not parsed against its question (`answer_mismatch`), at
/// `/answers/{id}`.
pub fn score_attempt<K>(
    questions: &[(K, QuestionSpec)],
    answers: &HashMap<K, Answer>,
    passing_score_percent: PassingScorePercent,
) -> Result<AttemptScore<K>, DomainError>
where
    K: Eq + Hash + Clone + Display,
{
    let mut errors = Vec::new();
    for id in answers.keys() {
        if !questions.iter().any(|(q, _)| q == id) {
            errors.push(FieldError::new(
                format!("/answers/{id}"),
                codes::UNKNOWN_QUESTION,
                format!("the assessment has no question {id}"),
            ));
        }
    }
    let mut per_question = Vec::with_capacity(questions.len());
    let (mut earned, mut total) = (0u64, 0u64);
    for (id, spec) in questions {
        match score_question(spec, answers.get(id)) {
            Ok(result) => {
                earned += u64::from(result.earned);
                total += u64::from(result.max);
                per_question.push((id.clone(), result));
            }
            Err(e) => errors.push(e.at(format!("/answers/{id}"))),
        }
    }
    if !errors.is_empty() {
        // Stable order for callers and tests: the map's iteration order is not.
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        return Err(DomainError::Validation(errors));
    }
    Ok(AttemptScore {
        earned,
        total,
        passed: passes(earned, total, passing_score_percent),
        per_question,
    })
}

/// `earned × 100 ≥ percent × total`, in integers (no overflow: both sides fit in u128).
pub fn passes(earned: u64, total: u64, passing_score_percent: PassingScorePercent) -> bool {
    u128::from(earned) * 100 >= u128::from(passing_score_percent.get()) * u128::from(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn spec(value: Value) -> QuestionSpec {
        QuestionSpec::from_json(&value).expect("valid question")
    }

    fn percent(p: i64) -> PassingScorePercent {
        PassingScorePercent::new(p).expect("valid percent")
    }

    fn three_true_false() -> Vec<(u32, QuestionSpec)> {
        (1..=3)
            .map(|id| {
                (
                    id,
                    spec(json!({"type": "true_false", "prompt": "p", "correct": true})),
                )
            })
            .collect()
    }

    fn answered(ids: &[u32], value: bool) -> HashMap<u32, Answer> {
        ids.iter()
            .map(|id| (*id, Answer::TrueFalse(value)))
            .collect()
    }

    #[test]
    fn two_of_three_passes_at_66_percent_and_fails_at_67() {
        let questions = three_true_false();
        let answers = answered(&[1, 2], true);
        let at_66 = score_attempt(&questions, &answers, percent(66)).expect("scored");
        assert_eq!((at_66.earned, at_66.total, at_66.passed), (2, 3, true));
        let at_67 = score_attempt(&questions, &answers, percent(67)).expect("scored");
        assert!(!at_67.passed);
        assert_eq!(
            at_67.per_question[2],
            (
                3,
                QuestionResult {
                    earned: 0,
                    max: 1,
                    correct: false,
                    answered: false
                }
            )
        );
    }

    #[test]
    fn zero_percent_passes_everything_and_one_hundred_needs_every_point() {
        let questions = three_true_false();
        let nothing = HashMap::new();
        let empty = score_attempt(&questions, &nothing, percent(0)).expect("scored");
        assert_eq!((empty.earned, empty.total, empty.passed), (0, 3, true));
        assert!(
            empty
                .per_question
                .iter()
                .all(|(_, r)| !r.answered && r.earned == 0)
        );
        assert!(
            !score_attempt(&questions, &nothing, percent(1))
                .expect("scored")
                .passed
        );
        let all = answered(&[1, 2, 3], true);
        assert!(
            score_attempt(&questions, &all, percent(100))
                .expect("scored")
                .passed
        );
        let mut one_wrong = all.clone();
        one_wrong.insert(3, Answer::TrueFalse(false));
        let score = score_attempt(&questions, &one_wrong, percent(100)).expect("scored");
        assert!(!score.passed);
        assert_eq!(
            score.per_question[2].1,
            QuestionResult {
                earned: 0,
                max: 1,
                correct: false,
                answered: true
            }
        );
    }

    #[test]
    fn multiple_choice_needs_the_exact_set_and_gives_no_partial_credit() {
        let q = spec(
            json!({"type": "multiple_choice", "prompt": "p", "points": 4,
            "options": ["a", "b", "c"], "correct": [0, 2]}),
        );
        let score = |chosen: Vec<usize>| {
            score_question(&q, Some(&Answer::MultipleChoice(chosen)))
                .expect("scored")
                .earned
        };
        assert_eq!(score(vec![0, 2]), 4);
        assert_eq!(score(vec![2, 0]), 4);
        assert_eq!(score(vec![0]), 0);
        assert_eq!(score(vec![0, 1, 2]), 0);
        assert_eq!(score(vec![]), 0);
    }

    #[test]
    fn short_answers_match_across_width_case_ligatures_and_spacing() {
        let q = spec(json!({"type": "short_text", "prompt": "p", "points": 2,
            "accepted_answers": ["café", "fine art", "Straße"]}));
        let correct = |text: &str| {
            score_question(&q, Some(&Answer::ShortText(text.into())))
                .expect("scored")
                .correct
        };
        assert!(correct("Ｃａｆé"));
        assert!(correct("CAFE\u{301}"));
        assert!(correct("  ﬁne    art "));
        assert!(correct("FINE\u{3000}ART"));
        assert!(correct("STRASSE"));
        assert!(!correct("cafe"));
        assert!(!correct("fineart"));
        assert!(!correct(""));
    }

    #[test]
    fn numeric_answers_use_the_tolerance_inclusively() {
        let q = spec(json!({"type": "numeric", "prompt": "p", "value": 1.0, "tolerance": 0.1}));
        let correct = |x: f64| {
            score_question(&q, Some(&Answer::Numeric(x)))
                .expect("scored")
                .correct
        };
        assert!(correct(1.1));
        assert!(correct(0.9));
        assert!(correct(1.0));
        assert!(!correct(1.1000001));
        assert!(!correct(0.8999999));
        let exact = spec(json!({"type": "numeric", "prompt": "p", "value": 42}));
        assert!(
            score_question(&exact, Some(&Answer::Numeric(42.0)))
                .expect("scored")
                .correct
        );
        assert!(
            !score_question(&exact, Some(&Answer::Numeric(42.000001)))
                .expect("s")
                .correct
        );
    }

    #[test]
    fn answers_that_do_not_fit_their_question_are_refused_not_zeroed() {
        let questions = three_true_false();
        let mut answers = answered(&[1], true);
        answers.insert(2, Answer::Numeric(1.0));
        answers.insert(9, Answer::TrueFalse(true));
        let Err(DomainError::Validation(errors)) = score_attempt(&questions, &answers, percent(50))
        else {
            panic!("expected a validation error");
        };
        let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            [
                ("/answers/2", codes::ANSWER_MISMATCH),
                ("/answers/9", codes::UNKNOWN_QUESTION)
            ]
        );
        let single = spec(json!({"type": "single_choice", "prompt": "p",
            "options": ["a", "b"], "correct": 0}));
        assert_eq!(
            score_question(&single, Some(&Answer::SingleChoice(2))).map_err(|e| e.code),
            Err(codes::ANSWER_MISMATCH)
        );
    }

    #[test]
    fn passing_percent_is_a_json_integer_from_0_to_100() {
        assert!(PassingScorePercent::new(-1).is_err());
        assert!(PassingScorePercent::new(101).is_err());
        assert_eq!(
            serde_json::from_str::<PassingScorePercent>("100")
                .map(|p| p.get())
                .ok(),
            Some(100)
        );
        assert!(serde_json::from_str::<PassingScorePercent>("50.0").is_err());
    }

    proptest! {
        #[test]
        fn passing_agrees_with_exact_rational_comparison(
            total in 0u64..20_000, earned_share in 0u64..=100, p in 0i64..=100,
        ) {
            let earned = total * earned_share / 100;
            let percent = percent(p);
            // The fewest points that pass: ceil(p × total / 100).
            let needed = (p as u64 * total).div_ceil(100);
            let expected = earned >= needed;
            prop_assert_eq!(passes(earned, total, percent), expected);
            prop_assert!(passes(total, total, percent));
            prop_assert_eq!(passes(0, total, percent), p == 0 || total == 0);
        }
    }
}
