//! The shape of a rejected field and the text rules shared by every name-like value.

use std::fmt;

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

/// The key under which names are unique: Unicode lowercase, so `Milk` and `milk` collide on
/// every backend alike (SQLite's `lower()` only folds ASCII, PostgreSQL's depends on the
/// collation, so the key is computed here and stored, never derived in SQL).
pub fn name_key(clean: &str) -> String {
    clean.to_lowercase()
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
    }
}
