//! The business rejections of every module. Each variant is a transition the current state
//! or the caller's role forbids; the transport maps each to one stable problem `code`.

use crate::accounts::Role;
use crate::ids::ItemId;
use crate::validation::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// One or more fields broke their invariants; every failing field is listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The resource does not exist in the caller's organization (or exists in another one:
    /// the two are indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("role {actual} may not do this; {required} or above is required")]
    InsufficientRole { required: Role, actual: Role },
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("the user is already a member of this organization")]
    AlreadyMember,
    #[error("an organization must keep at least one owner")]
    LastOwner,
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// Another item of the organization already has this name (case-insensitively).
    #[error("an item named {name:?} already exists")]
    NameTaken { name: String },
    #[error("item {item_id} has qty {current}; delta {delta} would make it {}", *current as i128 + *delta as i128)]
    InsufficientQuantity {
        item_id: ItemId,
        current: u64,
        delta: i64,
    },
    #[error("item {item_id} has qty {current}; delta {delta} would exceed 2^53-1")]
    QuantityOverflow {
        item_id: ItemId,
        current: u64,
        delta: i64,
    },
    /// `If-Match` named another version than the current one.
    #[error("the item is at version {current}, not {expected}")]
    VersionMismatch { expected: u64, current: u64 },
    /// A batch adjustment was refused; every failing line is listed and nothing was applied.
    #[error("{} adjustment line(s) cannot be applied", .0.len())]
    AdjustmentsRejected(Vec<LineRejection>),
    /// The assessment is no longer a draft: its settings and questions are frozen.
    #[error("the assessment is {status}; only a draft can be edited (revise it to change it)")]
    NotEditable { status: &'static str },
    /// Publishing would exceed the organization's published-assessment quota.
    #[error("the organization already has {max} published assessments; close one first")]
    ActiveAssessmentLimit { max: u32 },
    /// The candidate already submitted this assessment.
    #[error("this assessment was already submitted")]
    AlreadySubmitted,
    /// A submit without answers scored the saved ones, and a save replaced them before the
    /// submit was recorded (nothing was recorded; submitting again scores the new ones).
    #[error("the saved answers changed while submitting; submit again")]
    AnswersChanged,
    /// The attempt's deadline (plus the grace period) has passed.
    #[error("the time limit has passed")]
    DeadlinePassed,
    /// The invite is past its expiry.
    #[error("the invite has expired")]
    InviteExpired,
    /// A candidate with this email is already invited (the existing invite is not revealed).
    #[error("this email is already invited to the assessment")]
    AlreadyInvited,
    /// The idempotency key was used for a different request.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// The idempotency key is claimed by a request that has not finished.
    #[error("a request with this idempotency key is still being processed")]
    IdempotencyKeyInUse,
    /// A state machine (an assessment's lifecycle, a submission's review) does not allow
    /// going from `from` to `to`; both are the states' snake_case names.
    #[error("cannot go from {from} to {to}")]
    InvalidTransition {
        from: &'static str,
        to: &'static str,
    },
}

/// Why one line of a batch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRejection {
    /// 0-based position in the request.
    pub index: usize,
    pub error: DomainError,
}

impl DomainError {
    /// A single-field validation failure.
    pub fn field(field: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        DomainError::Validation(vec![FieldError::new(field, code, detail)])
    }
}
