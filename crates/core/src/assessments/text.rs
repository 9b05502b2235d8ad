//! Text rules of assessments: multi-line text (prompts, descriptions) and the normalization
//! short-text answers are compared on and options are kept distinct by.
//!
//! [`answer_key`] is Unicode *compatibility caseless* matching (Unicode §3.13, D146) plus
//! whitespace rules: NFKC, full case folding, NFKC again (folding can denormalize), then
//! trimming and collapsing every run of whitespace to one space. So `Ｃａｆé` (full-width
//! letters, decomposed accent) matches `café`, `ﬁ` matches `fi`, `STRASSE` matches `straße`
//! and `new   york` matches `New York`. Full case folding (the `caseless` crate) is used rather
//! than `to_lowercase`, which leaves `ß` and final sigma unfolded.

use crate::assessments::codes;
use crate::validation::Invalid;
use unicode_normalization::UnicodeNormalization;

/// The comparison key of a short-text answer or of an option.
pub fn answer_key(raw: &str) -> String {
    let nfkc: String = raw.nfkc().collect();
    let folded = caseless::default_case_fold_str(&nfkc);
    let renormalized: String = folded.nfkc().collect();
    renormalized
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalizes line breaks (`\r\n` and lone `\r` become `\n`, so a CRLF spreadsheet cell and a
/// JSON string compare equal), trims, and checks 1..=`max_chars` characters and no control
/// characters other than `\n` and `\t`. `allow_empty` turns an empty result into `Ok(None)`.
pub fn clean_multiline(
    raw: &str,
    max_chars: usize,
    allow_empty: bool,
) -> Result<Option<String>, Invalid> {
    let unified = raw.replace("\r\n", "\n").replace('\r', "\n");
    let trimmed = unified.trim();
    if trimmed.is_empty() {
        return if allow_empty {
            Ok(None)
        } else {
            Err(Invalid::new(
                codes::EMPTY,
                "must not be empty or only whitespace",
            ))
        };
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(Invalid::new(
            codes::TOO_LONG,
            format!("must be at most {max_chars} characters, got {chars}"),
        ));
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t')
    {
        return Err(Invalid::new(
            codes::CONTROL_CHARACTER,
            format!(
                "must not contain control characters other than line breaks and tabs (found U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(Some(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn width_accents_ligatures_case_and_spacing_do_not_change_the_key() {
        // Full-width letters and a decomposed é against the precomposed form.
        assert_eq!(answer_key("Ｃａｆe\u{301}"), answer_key("café"));
        assert_eq!(answer_key("Ｃａｆé"), "café");
        assert_eq!(answer_key("ﬁsh"), "fish");
        assert_eq!(answer_key("STRASSE"), answer_key("straße"));
        assert_eq!(answer_key("  New \t  York\n"), "new york");
        assert_eq!(answer_key("a\u{00A0}\u{3000}b"), "a b");
        assert_ne!(answer_key("cafe"), answer_key("café"));
    }

    #[test]
    fn multiline_text_keeps_newlines_and_tabs_but_refuses_other_controls() {
        assert_eq!(
            clean_multiline(" a\r\nb\tc\r", 10, false),
            Ok(Some("a\nb\tc".to_owned()))
        );
        assert_eq!(
            clean_multiline("a\u{0}b", 10, false).map_err(|e| e.code),
            Err(codes::CONTROL_CHARACTER)
        );
        assert_eq!(
            clean_multiline(" \n ", 10, false).map_err(|e| e.code),
            Err(codes::EMPTY)
        );
        assert_eq!(clean_multiline(" \n ", 10, true), Ok(None));
        assert_eq!(
            clean_multiline(&"é".repeat(11), 10, false).map_err(|e| e.code),
            Err(codes::TOO_LONG)
        );
    }

    proptest! {
        #[test]
        fn the_key_is_idempotent_and_has_no_surrounding_or_repeated_whitespace(s in "\\PC{0,40}") {
            let key = answer_key(&s);
            prop_assert_eq!(answer_key(&key), key.clone());
            prop_assert_eq!(key.trim(), key.as_str());
            prop_assert!(!key.contains("  "));
        }
    }
}
