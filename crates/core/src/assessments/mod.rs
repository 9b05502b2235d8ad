//! Assessments: settings, questions with their answer keys, candidate answers, scoring, and the
//! two state machines (an assessment's lifecycle, a submission's review).
//!
//! Everything here is pure: the transport hands in JSON values, the service hands in stored
//! specs, and these functions say what is valid and what a submission scores. The HTTP and
//! storage layers build on these types and never re-implement a rule.
//!
//! Layout:
//! - [`settings`]: [`AssessmentSettings`] (title, time limit, passing score, …).
//! - [`question`]: [`QuestionSpec`], the validated question *including its answer key*, built
//!   from JSON ([`QuestionSpec::from_json`]) or from typed fields ([`QuestionFields`], used by
//!   the spreadsheet import); [`PublicQuestion`] is what a candidate may see.
//! - [`answer`]: [`Answer`], one candidate answer parsed against its question.
//! - [`scoring`]: [`score_attempt`], all-or-nothing per question, pass decided on integers.
//! - [`lifecycle`]: `draft → published → closed → archived`.
//! - [`review`]: `submitted → verified → approved | rejected → archived`.
//! - [`text`]: the normalization short-text answers and option uniqueness are decided on.
//!
//! Every limit is a named constant below, enforced by the parsers; every rejection is a
//! [`FieldError`](crate::validation::FieldError) with a JSON pointer and a code from [`codes`].

pub mod answer;
mod decimal;
mod json;
pub mod lifecycle;
pub mod question;
pub mod review;
pub mod scoring;
pub mod settings;
pub mod text;

pub use answer::{Answer, parse_answers};
pub use json::JsonInteger;
pub use lifecycle::{AssessmentStatus, expect_revision, transition};
pub use question::{
    AcceptedAnswer, AnswerKey, CorrectInput, FieldValue, PublicQuestion, QuestionFields,
    QuestionSpec, QuestionType, parse_questions,
};
pub use review::{ReviewDecision, SubmissionStatus, decide};
pub use scoring::{AttemptScore, PassingScorePercent, QuestionResult, score_attempt};
pub use settings::{AssessmentSettings, AssessmentSettingsInput};

/// Characters (Unicode scalar values) of an assessment title, after trimming.
pub const TITLE_CHARS_MAX: usize = 200;
/// Characters of an assessment description, after trimming.
pub const DESCRIPTION_CHARS_MAX: usize = 5000;
pub const TIME_LIMIT_MINUTES_MIN: i64 = 5;
pub const TIME_LIMIT_MINUTES_MAX: i64 = 240;
pub const PASSING_SCORE_PERCENT_MAX: i64 = 100;

/// Questions in one assessment.
pub const QUESTIONS_MIN: usize = 1;
pub const QUESTIONS_MAX: usize = 200;
/// Characters of a question prompt, after trimming.
pub const PROMPT_CHARS_MAX: usize = 2000;
pub const POINTS_MIN: i64 = 1;
pub const POINTS_MAX: i64 = 100;
/// Points of a question whose input names none.
pub const POINTS_DEFAULT: u32 = 1;
/// Options of a single- or multiple-choice question.
pub const OPTIONS_MIN: usize = 2;
pub const OPTIONS_MAX: usize = 10;
/// Characters of one option, after trimming.
pub const OPTION_CHARS_MAX: usize = 500;
/// Accepted answers of a short-text question.
pub const ACCEPTED_ANSWERS_MIN: usize = 1;
pub const ACCEPTED_ANSWERS_MAX: usize = 20;
/// Characters of one accepted answer, after trimming.
pub const ACCEPTED_ANSWER_CHARS_MAX: usize = 200;
/// Characters of a candidate's short-text answer (as sent, before normalization).
pub const SHORT_ANSWER_CHARS_MAX: usize = 1000;

/// The stable codes of every rejection in this module; the transport passes them through.
pub mod codes {
    /// A required field is absent.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A field this input does not know at all.
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// A known field that does not belong to this question type (`options` on `true_false`).
    pub const FIELD_NOT_ALLOWED: &str = "field_not_allowed";
    /// The JSON type is wrong (a string where an integer is required, `1.0`, `true`, `null`…).
    pub const INVALID_TYPE: &str = "invalid_type";
    /// The value has the right type but is not one of the accepted values.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// A number outside its range.
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// A list with too few or too many elements.
    pub const INVALID_LENGTH: &str = "invalid_length";
    /// Text empty (or only whitespace) after trimming.
    pub const EMPTY: &str = "empty";
    /// Text longer than its limit, in characters.
    pub const TOO_LONG: &str = "too_long";
    /// Text containing a control character it may not hold.
    pub const CONTROL_CHARACTER: &str = "control_character";
    /// Two options equal after normalization (case, width, spacing).
    pub const DUPLICATE_OPTION: &str = "duplicate_option";
    /// Two accepted answers equal after normalization.
    pub const DUPLICATE_ANSWER: &str = "duplicate_answer";
    /// The same option index twice in one list.
    pub const DUPLICATE_INDEX: &str = "duplicate_index";
    /// An answer key that names no option, or no option at all.
    pub const INVALID_CORRECT_ANSWER: &str = "invalid_correct_answer";
    /// An answer for a question id the assessment does not have.
    pub const UNKNOWN_QUESTION: &str = "unknown_question";
    /// Two answers for the same question id.
    pub const DUPLICATE_ANSWER_ID: &str = "duplicate_answer_id";
    /// An answer whose shape does not fit its question (a boolean for a numeric question).
    pub const ANSWER_MISMATCH: &str = "answer_mismatch";
}
