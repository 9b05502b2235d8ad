//! The lifecycle of an assessment: `draft → published → closed → archived`.
//!
//! Only those three edges exist: a published assessment cannot go back to draft (candidates
//! may already have answered it), nothing skips a step, nothing leaves `archived`, and a
//! transition to the current state is refused too (a retried request is the idempotency
//! layer's business, not a silent success here).

use crate::DomainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssessmentStatus {
    /// Being written: questions and settings may change; no candidate sees it.
    Draft,
    /// Open to candidates; questions are frozen.
    Published,
    /// No new submissions; existing ones are reviewed.
    Closed,
    /// Kept for the record only.
    Archived,
}

/// Every allowed `(from, to)`; anything not listed is an [`DomainError::InvalidTransition`].
pub const ALLOWED_TRANSITIONS: [(AssessmentStatus, AssessmentStatus); 3] = [
    (AssessmentStatus::Draft, AssessmentStatus::Published),
    (AssessmentStatus::Published, AssessmentStatus::Closed),
    (AssessmentStatus::Closed, AssessmentStatus::Archived),
];

impl AssessmentStatus {
    pub const ALL: [AssessmentStatus; 4] = [
        AssessmentStatus::Draft,
        AssessmentStatus::Published,
        AssessmentStatus::Closed,
        AssessmentStatus::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AssessmentStatus::Draft => "draft",
            AssessmentStatus::Published => "published",
            AssessmentStatus::Closed => "closed",
            AssessmentStatus::Archived => "archived",
        }
    }

    /// The stored name back into a status (`None` for anything else).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Questions and settings may change only in draft.
    pub fn is_editable(self) -> bool {
        self == AssessmentStatus::Draft
    }

    /// Candidates may be invited and start attempts only while published. An attempt started
    /// before a close runs to its deadline (saves, submit, the sweeper's auto-submit): closing
    /// stops new candidates, it does not take away a started one's time.
    pub fn accepts_submissions(self) -> bool {
        self == AssessmentStatus::Published
    }
}

/// Whether `from → to` is allowed.
pub fn transition(from: AssessmentStatus, to: AssessmentStatus) -> Result<(), DomainError> {
    if ALLOWED_TRANSITIONS.contains(&(from, to)) {
        Ok(())
    } else {
        Err(DomainError::InvalidTransition {
            from: from.as_str(),
            to: to.as_str(),
        })
    }
}

/// An `If-Match` precondition: the assessment must still be at the `expected` revision
/// (`None`: unconditional, `If-Match: *` or none sent).
pub fn expect_revision(expected: Option<u64>, current: u64) -> Result<(), DomainError> {
    match expected {
        Some(expected) if expected != current => {
            Err(DomainError::VersionMismatch { expected, current })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = AssessmentStatus> {
        proptest::sample::select(AssessmentStatus::ALL.to_vec())
    }

    #[test]
    fn the_three_forward_edges_are_allowed() {
        use AssessmentStatus::*;
        assert_eq!(transition(Draft, Published), Ok(()));
        assert_eq!(transition(Published, Closed), Ok(()));
        assert_eq!(transition(Closed, Archived), Ok(()));
        assert_eq!(
            transition(Published, Draft),
            Err(DomainError::InvalidTransition {
                from: "published",
                to: "draft"
            })
        );
        assert!(transition(Draft, Archived).is_err());
        assert!(transition(Archived, Archived).is_err());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in AssessmentStatus::ALL {
            assert_eq!(AssessmentStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, serde_json::json!(status.as_str()));
        }
        assert_eq!(AssessmentStatus::parse("Draft"), None);
    }

    proptest! {
        #[test]
        fn nothing_outside_the_table_passes(from in status(), to in status()) {
            let allowed = matches!(
                (from, to),
                (AssessmentStatus::Draft, AssessmentStatus::Published)
                    | (AssessmentStatus::Published, AssessmentStatus::Closed)
                    | (AssessmentStatus::Closed, AssessmentStatus::Archived)
            );
            match transition(from, to) {
                Ok(()) => prop_assert!(allowed),
                Err(DomainError::InvalidTransition { from: f, to: t }) => {
                    prop_assert!(!allowed);
                    prop_assert_eq!((f, t), (from.as_str(), to.as_str()));
                }
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
