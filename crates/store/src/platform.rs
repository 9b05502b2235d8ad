//! Platform components every module uses: idempotency records and the outbox.

use crate::StoreError;
use time::OffsetDateTime;
use trueline_core::ids::{OrgId, UserId};

/// A response as stored for replay: replays are byte-identical to the first answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The headers that matter for a replay (`content-type`, `location`, `etag`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Whose key it is: keys are scoped to (organization, user), so two users never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub key: String,
    /// Which request holds the claim: completing and releasing a pending claim need it, so a
    /// request whose claim expired and was taken over by a retry can neither complete the
    /// retry's claim with its own response nor delete it.
    pub holder: uuid::Uuid,
}

impl IdempotencyScope {
    /// The scope of one request (a new holder).
    pub fn new(org_id: OrgId, user_id: UserId, key: String) -> Self {
        Self {
            org_id,
            user_id,
            key,
            holder: uuid::Uuid::new_v4(),
        }
    }

    /// The same key of the same user, whichever request holds it.
    pub fn same_key(&self, other: &Self) -> bool {
        (self.org_id, self.user_id, &self.key) == (other.org_id, other.user_id, &other.key)
    }
}

/// The outcome of claiming a key before running a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: run the mutation and complete the record in its transaction.
    Acquired,
    /// The same request already succeeded: send this response again.
    Replay(StoredResponse),
    /// The same key is held by a request that has not finished.
    InProgress,
    /// The key was used for a different request (method, path or body).
    Mismatch,
}

/// Handed to a mutating store method: in the same transaction as the mutation, the adapter
/// marks the claimed key completed with `render(result)`. If the mutation fails, nothing is
/// stored and the caller releases the claim.
pub struct Idempotency<'a, T> {
    pub scope: &'a IdempotencyScope,
    pub render: &'a (dyn Fn(&T) -> StoredResponse + Send + Sync),
}

impl<T> Clone for Idempotency<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Idempotency<'_, T> {}

#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `scope` for a request with `fingerprint`. A pending claim whose `locked_until`
    /// has passed (its request died) is taken over.
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        locked_until: OffsetDateTime,
    ) -> Result<Claim, StoreError>;

    /// Drops a pending claim whose request failed without changing anything.
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError>;

    /// Deletes up to `limit` completed records created before `before` and stale pending
    /// claims, oldest first; returns how many.
    async fn purge_idempotency(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// A domain event written to the outbox in the transaction of its change.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: trueline_core::ids::EventId,
    pub org_id: OrgId,
    /// `inventory.item.qty_changed`, `accounts.member.role_changed`, …
    pub event_type: String,
    /// The event-log stream it belongs to (`item-<id>`, `organization-<id>`).
    pub stream: String,
    /// The payload as JSON text, serialized once where the event is built: the outbox
    /// stores text (SQLite) or takes it as `jsonb` (PostgreSQL), and the relay passes it on
    /// as it is. Built through a `serde_json::Value` and turned into text inside the
    /// combined batch, the payload of a quantity change was ~5 % of the SQLite writer's time
    /// under deltas spread over many items (docs/benchmarks.md, "2026-12-05, morning").
    pub payload: Box<serde_json::value::RawValue>,
    pub created_at: OffsetDateTime,
}

impl OutboxEvent {
    /// The JSON text of a payload.
    pub fn payload_of(
        value: &impl serde::Serialize,
    ) -> Result<Box<serde_json::value::RawValue>, StoreError> {
        serde_json::value::to_raw_value(value)
            .map_err(|e| StoreError::Internal(format!("cannot encode an event payload: {e}")))
    }
}

/// What the database remembers of the embedded event log it is used with (the file backend):
/// the log's identity and a global position the log had reached. The log is a directory of
/// its own; this lets a start tell a missing, replaced or rolled-back log from the one the
/// database's published outbox rows went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLogMark {
    pub log_id: uuid::Uuid,
    pub position: u64,
}

#[async_trait::async_trait]
pub trait EventLogMarks: Send + Sync {
    /// The mark, if a file event log was ever used with this database.
    async fn event_log_mark(&self) -> Result<Option<EventLogMark>, StoreError>;

    /// Records `mark`; whether the stored mark changed. Without `replace` a mark only moves
    /// forward, and only for the log it names (a lower or equal position, or another log's
    /// id, leaves the stored mark as it is: `false`); with `replace` (the operator's
    /// `trueline eventlog pair`) it is stored as given.
    async fn set_event_log_mark(
        &self,
        mark: EventLogMark,
        now: OffsetDateTime,
        replace: bool,
    ) -> Result<bool, StoreError>;

    /// Whether the outbox relay ever published a row (into the event log): a published row
    /// is still kept, or rows were purged (the purge deletes published rows only). A start
    /// that finds no event log and no mark asks this: such a database had a log (one used
    /// before the mark existed), and starting a new one would hand out its positions again.
    /// Purged rows are told by the outbox's sequence having gone past its rows; on
    /// PostgreSQL, whose sequences also skip the values of rolled-back inserts, that can
    /// answer yes for rows that were never published (the pairing that asks is made on the
    /// embedded configuration only).
    async fn outbox_ever_published(&self) -> Result<bool, StoreError>;
}
