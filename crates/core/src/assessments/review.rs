//! The review of a submission: `submitted → verified → approved | rejected → archived`.
//!
//! `verified` means a reviewer confirmed the computed score; only then may the submission be
//! approved or rejected, and only a decided submission can be archived. Each
//! [`ReviewDecision`] has one target state, and [`decide`] refuses every decision the current
//! state does not allow with [`DomainError::InvalidTransition`] (`to` is the target state).

use crate::DomainError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionStatus {
    Submitted,
    Verified,
    Approved,
    Rejected,
    Archived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Verify,
    Approve,
    Reject,
    Archive,
}

/// Every allowed `(from, decision, to)`.
pub const ALLOWED_DECISIONS: [(SubmissionStatus, ReviewDecision, SubmissionStatus); 5] = [
    (
        SubmissionStatus::Submitted,
        ReviewDecision::Verify,
        SubmissionStatus::Verified,
    ),
    (
        SubmissionStatus::Verified,
        ReviewDecision::Approve,
        SubmissionStatus::Approved,
    ),
    (
        SubmissionStatus::Verified,
        ReviewDecision::Reject,
        SubmissionStatus::Rejected,
    ),
    (
        SubmissionStatus::Approved,
        ReviewDecision::Archive,
        SubmissionStatus::Archived,
    ),
    (
        SubmissionStatus::Rejected,
        ReviewDecision::Archive,
        SubmissionStatus::Archived,
    ),
];

impl SubmissionStatus {
    pub const ALL: [SubmissionStatus; 5] = [
        SubmissionStatus::Submitted,
        SubmissionStatus::Verified,
        SubmissionStatus::Approved,
        SubmissionStatus::Rejected,
        SubmissionStatus::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionStatus::Submitted => "submitted",
            SubmissionStatus::Verified => "verified",
            SubmissionStatus::Approved => "approved",
            SubmissionStatus::Rejected => "rejected",
            SubmissionStatus::Archived => "archived",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl ReviewDecision {
    pub const ALL: [ReviewDecision; 4] = [
        ReviewDecision::Verify,
        ReviewDecision::Approve,
        ReviewDecision::Reject,
        ReviewDecision::Archive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Verify => "verify",
            ReviewDecision::Approve => "approve",
            ReviewDecision::Reject => "reject",
            ReviewDecision::Archive => "archive",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The state this decision leads to when it is allowed.
    pub fn target(self) -> SubmissionStatus {
        match self {
            ReviewDecision::Verify => SubmissionStatus::Verified,
            ReviewDecision::Approve => SubmissionStatus::Approved,
            ReviewDecision::Reject => SubmissionStatus::Rejected,
            ReviewDecision::Archive => SubmissionStatus::Archived,
        }
    }
}

/// The state after `decision`, or why it is not allowed from `from`.
pub fn decide(
    from: SubmissionStatus,
    decision: ReviewDecision,
) -> Result<SubmissionStatus, DomainError> {
    ALLOWED_DECISIONS
        .iter()
        .find(|(f, d, _)| *f == from && *d == decision)
        .map(|(_, _, to)| *to)
        .ok_or(DomainError::InvalidTransition {
            from: from.as_str(),
            to: decision.target().as_str(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_submission_is_verified_before_it_is_decided_and_archived_after() {
        use ReviewDecision::*;
        use SubmissionStatus::*;
        assert_eq!(decide(Submitted, Verify), Ok(Verified));
        assert_eq!(decide(Verified, Approve), Ok(Approved));
        assert_eq!(decide(Verified, Reject), Ok(Rejected));
        assert_eq!(decide(Approved, Archive), Ok(Archived));
        assert_eq!(decide(Rejected, Archive), Ok(Archived));
        assert_eq!(
            decide(Submitted, Approve),
            Err(DomainError::InvalidTransition {
                from: "submitted",
                to: "approved"
            })
        );
        assert!(decide(Approved, Reject).is_err());
        assert!(decide(Verified, Verify).is_err());
        assert!(decide(Archived, Archive).is_err());
        assert!(decide(Submitted, Archive).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in SubmissionStatus::ALL {
            assert_eq!(SubmissionStatus::parse(s.as_str()), Some(s));
        }
        for d in ReviewDecision::ALL {
            assert_eq!(ReviewDecision::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_value(d).expect("json"),
                serde_json::json!(d.as_str())
            );
        }
    }

    proptest! {
        #[test]
        fn every_state_and_decision_pair_follows_the_table(
            from in proptest::sample::select(SubmissionStatus::ALL.to_vec()),
            decision in proptest::sample::select(ReviewDecision::ALL.to_vec()),
        ) {
            use ReviewDecision::*;
            use SubmissionStatus::*;
            let expected = match (from, decision) {
                (Submitted, Verify) => Some(Verified),
                (Verified, Approve) => Some(Approved),
                (Verified, Reject) => Some(Rejected),
                (Approved | Rejected, Archive) => Some(Archived),
                _ => None,
            };
            match (decide(from, decision), expected) {
                (Ok(to), Some(want)) => prop_assert_eq!(to, want),
                (Err(DomainError::InvalidTransition { from: f, to: t }), None) => {
                    prop_assert_eq!(f, from.as_str());
                    prop_assert_eq!(t, decision.target().as_str());
                }
                (got, want) => prop_assert!(false, "{from:?} {decision:?}: {got:?} vs {want:?}"),
            }
        }
    }
}
