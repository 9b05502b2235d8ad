//! Trueline's pure domain: newtypes that parse instead of validate, invariants, role rules and
//! the domain error vocabulary. No IO, no async, no database or HTTP types: every other crate
//! builds on these definitions, so they change only when a business rule changes.
//!
//! Layout:
//! - [`validation`]: the field-error shape and the text rules shared by every name-like value.
//! - [`ids`]: typed identifiers (`OrgId`, `UserId`, …) so ids of different kinds never mix.
//! - [`clock`]: the time source; every transition receives `now` from it, never from the OS.
//! - [`accounts`]: emails, passwords, organization names, roles and who may change whom.
//! - [`error`]: [`DomainError`], the business rejections the transport maps to stable codes.

pub mod accounts;
pub mod assessments;
pub mod clock;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod inventory;
pub mod validation;

pub use error::DomainError;
