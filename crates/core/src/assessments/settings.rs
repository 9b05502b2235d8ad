//! Assessment settings: what the author configures besides the questions.
//!
//! [`AssessmentSettingsInput`] is the request shape (`deny_unknown_fields`, strict integers);
//! serde refuses wrong JSON types one at a time, then [`AssessmentSettings::parse`] checks
//! every range and text rule and reports *every* failing field at once.

use crate::assessments::json::JsonInteger;
use crate::assessments::scoring::PassingScorePercent;
use crate::assessments::text::clean_multiline;
use crate::assessments::{
    DESCRIPTION_CHARS_MAX, TIME_LIMIT_MINUTES_MAX, TIME_LIMIT_MINUTES_MIN, TITLE_CHARS_MAX, codes,
};
use crate::validation::{FieldError, Invalid, clean_name};
use serde::{Deserialize, Serialize};

/// The settings as a client sends them. The booleans default to `false` and the description
/// to none when absent; the title, time limit and passing score are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentSettingsInput {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub time_limit_minutes: JsonInteger,
    pub passing_score_percent: JsonInteger,
    #[serde(default)]
    pub shuffle_questions: bool,
    #[serde(default)]
    pub show_score_to_candidate: bool,
}

/// Validated settings. The title is trimmed, 1..=200 characters without control characters;
/// the description is trimmed, at most 5000 characters, may hold line breaks and tabs, and an
/// all-whitespace description is no description; 5 ≤ time limit ≤ 240 minutes;
/// 0 ≤ passing score ≤ 100 percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssessmentSettings {
    title: String,
    description: Option<String>,
    time_limit_minutes: u32,
    passing_score_percent: PassingScorePercent,
    shuffle_questions: bool,
    show_score_to_candidate: bool,
}

impl AssessmentSettings {
    /// Checks every field; the error lists each failing one with its JSON pointer.
    pub fn parse(input: AssessmentSettingsInput) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let title = clean_name(&input.title, TITLE_CHARS_MAX)
            .map_err(|e| errors.push(e.at("/title")))
            .ok();
        let description = match &input.description {
            None => Some(None),
            Some(raw) => clean_multiline(raw, DESCRIPTION_CHARS_MAX, true)
                .map_err(|e| errors.push(e.at("/description")))
                .ok(),
        };
        let time_limit_minutes = time_limit(input.time_limit_minutes.0)
            .map_err(|e| errors.push(e.at("/time_limit_minutes")))
            .ok();
        let passing_score_percent = PassingScorePercent::new(input.passing_score_percent.0)
            .map_err(|e| errors.push(e.at("/passing_score_percent")))
            .ok();
        match (
            title,
            description,
            time_limit_minutes,
            passing_score_percent,
        ) {
            (Some(title), Some(description), Some(time_limit_minutes), Some(passing))
                if errors.is_empty() =>
            {
                Ok(Self {
                    title,
                    description,
                    time_limit_minutes,
                    passing_score_percent: passing,
                    shuffle_questions: input.shuffle_questions,
                    show_score_to_candidate: input.show_score_to_candidate,
                })
            }
            _ => Err(errors),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub fn time_limit_minutes(&self) -> u32 {
        self.time_limit_minutes
    }

    pub fn passing_score_percent(&self) -> PassingScorePercent {
        self.passing_score_percent
    }

    pub fn shuffle_questions(&self) -> bool {
        self.shuffle_questions
    }

    pub fn show_score_to_candidate(&self) -> bool {
        self.show_score_to_candidate
    }
}

fn time_limit(minutes: i64) -> Result<u32, Invalid> {
    if (TIME_LIMIT_MINUTES_MIN..=TIME_LIMIT_MINUTES_MAX).contains(&minutes) {
        // The range check above bounds `minutes` to 5..=240, which fits in u32.
        Ok(minutes as u32)
    } else {
        Err(Invalid::new(
            codes::OUT_OF_RANGE,
            format!(
                "must be between {TIME_LIMIT_MINUTES_MIN} and {TIME_LIMIT_MINUTES_MAX} minutes, got {minutes}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Result<AssessmentSettings, Vec<FieldError>> {
        let input: AssessmentSettingsInput = serde_json::from_value(value).expect("input shape");
        AssessmentSettings::parse(input)
    }

    #[test]
    fn valid_settings_are_trimmed_and_defaults_apply() {
        let settings = parse(json!({
            "title": "  Rust basics ",
            "description": "  Ownership\r\nand borrowing ",
            "time_limit_minutes": 5,
            "passing_score_percent": 0,
        }))
        .expect("valid");
        assert_eq!(settings.title(), "Rust basics");
        assert_eq!(settings.description(), Some("Ownership\nand borrowing"));
        assert_eq!(settings.time_limit_minutes(), 5);
        assert_eq!(settings.passing_score_percent().get(), 0);
        assert!(!settings.shuffle_questions());
        assert!(!settings.show_score_to_candidate());

        let settings = parse(json!({
            "title": "x", "description": "   ", "time_limit_minutes": 240,
            "passing_score_percent": 100, "shuffle_questions": true,
            "show_score_to_candidate": true,
        }))
        .expect("valid");
        assert_eq!(settings.description(), None);
        assert!(settings.shuffle_questions() && settings.show_score_to_candidate());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once_with_its_pointer() {
        let errors = parse(json!({
            "title": " \t ",
            "description": "d".repeat(DESCRIPTION_CHARS_MAX + 1),
            "time_limit_minutes": 4,
            "passing_score_percent": 101,
        }))
        .expect_err("invalid");
        let got: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            got,
            [
                ("/title", "empty"),
                ("/description", codes::TOO_LONG),
                ("/time_limit_minutes", codes::OUT_OF_RANGE),
                ("/passing_score_percent", codes::OUT_OF_RANGE),
            ]
        );
        let errors = parse(json!({
            "title": "a\u{7}", "time_limit_minutes": 241, "passing_score_percent": -1,
        }))
        .expect_err("invalid");
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].code, "control_character");
        assert!(
            parse(json!({"title": "t".repeat(201), "time_limit_minutes": 60,
                "passing_score_percent": 50}))
            .is_err()
        );
    }

    #[test]
    fn unknown_fields_and_non_integer_numbers_are_refused_by_the_input_shape() {
        let input = |v: serde_json::Value| {
            serde_json::from_value::<AssessmentSettingsInput>(v).map_err(|e| e.to_string())
        };
        let error = input(json!({"title": "t", "time_limit_minutes": 60,
            "passing_score_percent": 50, "shuffle": true}))
        .expect_err("unknown field");
        assert!(error.starts_with("unknown field `shuffle`"), "{error}");
        let error = input(json!({"title": "t", "time_limit_minutes": 60.0,
            "passing_score_percent": 50}))
        .expect_err("float");
        assert!(error.starts_with("[invalid_type]"), "{error}");
        let error = input(json!({"title": "t", "time_limit_minutes": 60,
            "passing_score_percent": true}))
        .expect_err("bool");
        assert!(error.starts_with("[invalid_type]"), "{error}");
        assert!(input(json!({"time_limit_minutes": 60, "passing_score_percent": 1})).is_err());
    }
}
