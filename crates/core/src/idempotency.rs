//! Idempotency keys: how a client makes a retried mutation safe.

use crate::validation::Invalid;

pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// 1..=255 printable ASCII characters. The header may carry it bare (`abc`) or as a quoted
/// structured-field string (`"abc"`); both name the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        if unquoted.is_empty() || unquoted.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return Err(Invalid::new(
                "invalid_idempotency_key",
                format!("must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"),
            ));
        }
        if !unquoted.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Invalid::new(
                "invalid_idempotency_key",
                "must contain only printable ASCII characters",
            ));
        }
        Ok(Self(unquoted.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoted_and_bare_keys_are_the_same_key() {
        assert_eq!(
            IdempotencyKey::parse("\"abc\""),
            IdempotencyKey::parse("abc")
        );
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("\"\"").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("ünïcode").is_err());
    }

    proptest! {
        #[test]
        fn every_accepted_key_is_printable_ascii_within_limits(raw in ".{0,300}") {
            if let Ok(key) = IdempotencyKey::parse(&raw) {
                prop_assert!(!key.as_str().is_empty());
                prop_assert!(key.as_str().len() <= IDEMPOTENCY_KEY_LENGTH_MAX);
                prop_assert!(key.as_str().bytes().all(|b| (0x20..=0x7e).contains(&b)));
            }
        }
    }
}
