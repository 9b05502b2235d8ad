//! The store ports: one small trait per module, in domain terms, and the error every adapter
//! returns. Adapters (`trueline-store-sqlite`, `trueline-store-postgres`) implement them; the
//! conformance suite (`trueline-store-conformance`) proves they behave identically.
//!
//! Rules every adapter follows:
//! - an operation that must be atomic is ONE trait method (no transactions cross this
//!   boundary), and it commits the business rows, the audit rows and the outbox rows together;
//! - named database constraints are translated into [`DomainError`]s inside the adapter, so
//!   the database stays the final authority and callers still get a stable error;
//! - `now` comes from the caller's clock, never from the database server.

pub mod accounts;
pub mod assessments;
pub mod combine;
pub mod delivery;
pub mod events;
pub mod inventory;
pub mod migrations;
pub mod page;
pub mod platform;

pub use accounts::*;
pub use assessments::*;
pub use delivery::*;
pub use inventory::*;
pub use migrations::*;
pub use page::*;
pub use platform::*;

use trueline_core::DomainError;

/// Everything a transport needs from storage, as one object-safe handle.
pub trait Store:
    AccountStore
    + ItemStore
    + AssessmentStore
    + IdempotencyStore
    + DeliveryStore
    + EventLogMarks
    + Migrations
    + Send
    + Sync
    + 'static
{
    /// Which backend this is (`sqlite` or `postgres`), for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// Connections in the pool as (idle, in use), for the `db_pool_connections` gauge.
    fn pool_stats(&self) -> (u32, u32);
}

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A business rule (possibly enforced by a constraint or trigger) refused the change.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The database could not be reached or did not answer in time; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken database. Logged with the request id, never shown.
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn not_found(what: &'static str) -> Self {
        StoreError::Domain(DomainError::NotFound(what))
    }
}

/// Health of the store for `/readyz`.
#[derive(Debug, Clone)]
pub struct StoreHealth {
    pub ok: bool,
    pub detail: String,
    /// Connections in the pool, by state, for the `db_pool_connections` gauge.
    pub pool_idle: u32,
    pub pool_in_use: u32,
}
