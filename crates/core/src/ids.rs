//! Typed identifiers. Each wraps a UUID; distinct types make passing an item id where an
//! organization id is expected a compile error instead of a cross-tenant bug.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id: keyset pages and B-tree inserts stay local.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    )*};
}

id_type!(
    /// An organization (a tenant).
    OrgId,
    /// A user account; users join organizations through memberships.
    UserId,
    /// An API token (the row id, never the secret).
    TokenId,
    /// An inventory item.
    ItemId,
    /// An immutable audit record.
    AuditId,
    /// A domain event (outbox row and event-log record share it).
    EventId,
);
