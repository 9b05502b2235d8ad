//! The shape of a rejected field and the text rules shared by every name-like value.

use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Why one field of a request was refused. `field` is a JSON pointer (`/name`,
/// `/adjustments/3/delta`) filled in by whoever knows where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            detail: detail.into(),
        }
    }
}

/// A value that failed its invariant, before it is attached to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub detail: String,
}

impl Invalid {
    pub fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// Attaches the JSON pointer of the field the value came from.
    pub fn at(self, field: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            code: self.code,
            detail: self.detail,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Invalid {}

/// Trims surrounding whitespace and checks the rules every human-readable name obeys:
/// 1..=`max_chars` characters (Unicode scalar values, not bytes) and no control characters
/// (they make names that render identically but compare differently, and break logs).
pub fn clean_name(raw: &str, max_chars: usize) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Invalid::new(
            "empty",
            "must not be empty or only whitespace",
        ));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(Invalid::new(
            "too_long",
            format!("must be at most {max_chars} characters, got {chars}"),
        ));
    }
    if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
        return Err(Invalid::new(
            "control_character",
            format!(
                "must not contain control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The key under which names are unique, sorted and searched: Unicode *canonical caseless*
/// matching (Unicode §3.13, D145: NFD, full case folding, NFD again), kept in NFC. So `Milk`
/// and `milk` collide, and so do `Café` typed with a precomposed `é` and with `e` plus a
/// combining accent (two names that render identically), and `STRASSE` and `straße`. It is
/// computed here and stored, never derived in SQL: SQLite's `lower()` only folds ASCII and
/// PostgreSQL's depends on the collation. Compatibility forms stay apart (`²` is not `2`,
/// a full-width `Ａ` is not `A`): a name is what its owner typed, not a search term. Keys stored by
/// earlier versions (plain lowercase) are recomputed once by the stores after migrating.
pub fn name_key(clean: &str) -> String {
    let decomposed: String = clean.nfd().collect();
    let folded = caseless::default_case_fold_str(&decomposed);
    folded.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(clean_name("  milk \n", 10).as_deref(), Ok("milk"));
        assert_eq!(clean_name("ééééé", 5).as_deref(), Ok("ééééé"));
        assert_eq!(clean_name("éééééé", 5).map_err(|e| e.code), Err("too_long"));
        assert_eq!(clean_name("   ", 5).map_err(|e| e.code), Err("empty"));
        assert_eq!(
            clean_name("a\u{7}b", 5).map_err(|e| e.code),
            Err("control_character")
        );
    }

    #[test]
    fn name_keys_fold_unicode_case() {
        assert_eq!(name_key("MILK"), name_key("milk"));
        assert_eq!(name_key("ÉCLAIR"), "éclair");
        assert_eq!(name_key("STRASSE"), name_key("Straße"));
        assert_eq!(name_key("ΟΔΟΣ"), name_key("οδος"));
    }

    #[test]
    fn name_keys_equate_canonically_equivalent_names_only() {
        // Precomposed é (U+00E9) and e + COMBINING ACUTE ACCENT (U+0301) render alike.
        assert_eq!(name_key("Caf\u{e9}"), name_key("Cafe\u{301}"));
        assert_eq!(name_key("Cafe\u{301}"), "caf\u{e9}");
        // Å as a letter (U+00C5) and as the Ångström sign (U+212B) are canonically equal.
        assert_eq!(name_key("\u{212B}"), name_key("\u{c5}"));
        // Compatibility forms stay apart.
        assert_ne!(name_key("\u{ff21}"), name_key("a"));
        assert_ne!(name_key("x\u{b2}"), name_key("x2"));
    }

    proptest::proptest! {
        /// The stores recompute and compare keys (cursor checks): a key is its own key.
        #[test]
        fn name_keys_are_stable(name in "\\PC{1,12}") {
            let key = name_key(&name);
            proptest::prop_assert_eq!(name_key(&key), key.clone());
            let nfd: String = name.nfd().collect();
            proptest::prop_assert_eq!(name_key(&nfd), key);
        }
    }
}
