//! The event log port: the Events API served either by the embedded `eventlog` engine
//! (`trueline-store-eventlog`) or by a PostgreSQL table (`trueline-store-postgres`), with the
//! same behaviour, proven by the conformance suite.
//!
//! Positions are per organization, gapless, from 1; stream versions are per (organization,
//! stream), gapless, from 1. Event ids are scoped to the organization.

use crate::StoreError;
use time::OffsetDateTime;
use trueline_core::ids::{EventId, OrgId};

/// Limits every backend enforces (named here so both enforce the same ones).
pub const EVENT_TYPE_BYTES_MAX: usize = 128;
pub const STREAM_NAME_BYTES_MAX: usize = 256;
pub const APPEND_EVENTS_MAX: usize = 1000;
/// Default maximum of `data` + `metadata` bytes of one event.
pub const EVENT_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// One stream's part of [`EventStore::append_many`].
#[derive(Debug, Clone)]
pub struct StreamBatch {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    /// Compact JSON bytes.
    pub data: Vec<u8>,
    /// Compact JSON bytes (`{}` when none was given).
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    Any,
    /// The stream must not exist yet (same as `Exact(0)`).
    NoStream,
    Exact(u64),
}

/// What an append did for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: EventId,
    pub position: u64,
    pub stream_version: u64,
    pub recorded_at: OffsetDateTime,
    /// The event existed already with identical content; nothing was written.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: EventId,
    pub position: u64,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
    pub recorded_at: OffsetDateTime,
}

/// How much one read returns at most: `events`, and events until their data and metadata
/// reach `bytes` (the event that reaches it is the last; the first is always read, even with
/// `bytes` 0). A read that returns fewer than `events` with at least `bytes` may have stopped
/// early. (PostgreSQL applies the bound in the query: rows past it are not even sent.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    pub events: usize,
    pub bytes: usize,
}

impl ReadLimit {
    /// At most `events`, whatever their size.
    pub fn events(events: usize) -> Self {
        Self {
            events,
            bytes: usize::MAX,
        }
    }

    /// Whether `read` (returned for this limit) may have stopped at the byte bound.
    pub fn stopped_by_bytes(&self, read: &[EventRecord]) -> bool {
        read.iter()
            .map(|e| e.data.len() + e.metadata.len())
            .fold(0usize, usize::saturating_add)
            >= self.bytes
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub stream: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDirection {
    Forward,
    Backward,
}

/// Bytes an event counts in [`EventStats::bytes`] besides its stream name, type, metadata and
/// data: the embedded engine's record header (an 8-byte length and checksum prefix and 84
/// bytes of fixed fields), so both backends report the same figure.
pub const EVENT_STORED_OVERHEAD_BYTES: u64 = 92;

/// Bytes of one append at most, counted as [`event_stored_bytes`]: the embedded engine's own
/// bound (its `APPEND_SIZE_LIMIT_BYTES`, held equal by a test), enforced on every backend so
/// they refuse the same appends.
pub const APPEND_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// An append's size as [`APPEND_BYTES_MAX`] counts it.
pub fn append_stored_bytes(stream: &str, events: &[NewEvent]) -> u64 {
    events.iter().map(|e| event_stored_bytes(stream, e)).sum()
}

/// What one event counts in [`EventStats::bytes`]: its size as the embedded engine stores it.
pub fn event_stored_bytes(stream: &str, event: &NewEvent) -> u64 {
    EVENT_STORED_OVERHEAD_BYTES
        + (stream.len() + event.event_type.len() + event.metadata.len() + event.data.len()) as u64
}

/// Totals of one organization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventStats {
    pub events: u64,
    /// The events' size as the embedded engine stores them ([`event_stored_bytes`]).
    pub bytes: u64,
    pub streams: u64,
    /// 0 when the organization has no events.
    pub first_position: u64,
    pub last_position: u64,
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendRefusal {
    #[error("the stream is at version {current}")]
    WrongExpectedVersion { current: u64 },
    #[error("event {id} exists with different content (or the batch mixes new and existing ids)")]
    EventIdConflict { id: EventId },
    #[error("event id {id} appears twice in the batch")]
    DuplicateIdInBatch { id: EventId },
    #[error("event of {size} bytes exceeds the limit of {max}")]
    EventTooLarge { size: usize, max: usize },
    /// The whole append, counted as [`event_stored_bytes`], exceeds [`APPEND_BYTES_MAX`].
    #[error("the append's {size} bytes exceed the limit of {max} per append")]
    AppendTooLarge { size: u64, max: u64 },
    #[error("the disk is full; nothing was written")]
    StorageFull,
}

#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error(transparent)]
    Refused(#[from] AppendRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<trueline_core::DomainError> for EventStoreError {
    fn from(e: trueline_core::DomainError) -> Self {
        EventStoreError::Store(StoreError::Domain(e))
    }
}

#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// `file` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Appends 1..=1000 events to one stream atomically. Client ids make it idempotent: if
    /// every id of the batch exists with identical content (as one contiguous run of this
    /// stream), the originals come back flagged `duplicate`.
    async fn append(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<Appended>, EventStoreError>;

    /// Appends several batches (each 1..=1000 events to one stream, like [`append`]) in
    /// this order, as calls to `append` one after another would, and returns their outcomes
    /// in the same order. Nothing after a failed batch is appended: the outcomes end at the
    /// first failure, or go on with failures of the batches it held back. The file engine
    /// submits them all at once as one chain (`AppendChain`), so one group commit can carry
    /// them; the default (PostgreSQL) appends them one by one.
    ///
    /// [`append`]: EventStore::append
    async fn append_many(
        &self,
        org: OrgId,
        batches: Vec<StreamBatch>,
        now: OffsetDateTime,
    ) -> Vec<Result<Vec<Appended>, EventStoreError>> {
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let outcome = self
                .append(org, &batch.stream, batch.expected, batch.events, now)
                .await;
            let refused = outcome.is_err();
            outcomes.push(outcome);
            if refused {
                break;
            }
        }
        outcomes
    }

    async fn event(&self, org: OrgId, id: EventId) -> Result<Option<EventRecord>, StoreError>;

    /// Events with position > `after`, in position order.
    async fn events_after(
        &self,
        org: OrgId,
        after: u64,
        limit: ReadLimit,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Forward: versions >= `from`; backward: versions <= `from` (`u64::MAX`: from the end).
    async fn read_stream(
        &self,
        org: OrgId,
        stream: &str,
        from: u64,
        direction: ReadDirection,
        limit: ReadLimit,
    ) -> Result<Vec<EventRecord>, StoreError>;

    async fn stats(&self, org: OrgId) -> Result<EventStats, StoreError>;

    /// The organization's last position (0 without events): [`EventStats::last_position`],
    /// which a backend may answer more cheaply than the whole statistics.
    async fn last_position(&self, org: OrgId) -> Result<u64, StoreError> {
        Ok(self.stats(org).await?.last_position)
    }

    /// The stream's last version (0 when it never had an event), also when retention dropped
    /// its events.
    async fn stream_version(&self, org: OrgId, stream: &str) -> Result<u64, StoreError>;

    /// Storage-level facts for `/stats` and `/readyz` (segments, index size, recovery…).
    fn storage(&self) -> serde_json::Value;

    /// Whether appends work (`/readyz`): `Err` with the reason if not.
    async fn health(&self) -> Result<(), String>;

    /// A receiver that changes whenever new events may be visible (live subscriptions wait
    /// on it, then read from their own position, so a slow reader never blocks writers).
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}
