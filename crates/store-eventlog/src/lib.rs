//! The `EventStore` port on the embedded `trueline-eventlog` engine: the default event
//! backend (files under `<data_dir>/eventlog/`, one writer per directory).
//!
//! Bridging: appends use the engine's callback form and a oneshot channel, so no runtime
//! thread blocks on `fdatasync`; multi-event reads run on the blocking pool.
//!
//! Event ids are scoped to the organization: the engine's id index is global, so the adapter
//! stores `client id XOR mask(organization)` with a keyed mask no client can compute (see
//! [`id_scope`]). Two organizations using the same id store different ids (no cross-tenant
//! conflict, nothing revealed), and the XOR is undone on read.

pub mod id_scope;

// Both backends refuse the same appends: the shared bound is the engine's own.
const _: () = assert!(
    trueline_eventlog::APPEND_SIZE_LIMIT_BYTES as u64 == trueline_store::events::APPEND_BYTES_MAX
);

use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::watch;
use trueline_core::ids::{EventId, OrgId};
use trueline_eventlog as engine;
use trueline_store::StoreError;
use trueline_store::events::*;

pub use engine::{Durability, OpenError, RecoveryReport};
use id_scope::Mask;
pub use id_scope::{ID_KEY_FILE, IdKeyError, IdScope};

/// Engine tunables the server exposes in its configuration.
#[derive(Debug, Clone)]
pub struct FileEventOptions {
    pub durability: Durability,
    pub segment_size_bytes: u64,
    pub event_bytes_max: usize,
    pub retention: engine::Retention,
    /// Sealed segments kept in the OS page cache (see `engine::Options`).
    pub cached_sealed_segments: u32,
    /// Test-only fault injection (ENOSPC/EIO); `None` in production.
    pub fault_hook: Option<Arc<dyn engine::FaultHook>>,
}

impl Default for FileEventOptions {
    fn default() -> Self {
        let defaults = engine::Options::default();
        Self {
            durability: defaults.durability,
            segment_size_bytes: defaults.segment_size_bytes,
            event_bytes_max: EVENT_BYTES_MAX_DEFAULT,
            retention: defaults.retention,
            cached_sealed_segments: defaults.cached_sealed_segments,
            fault_hook: None,
        }
    }
}

#[derive(Clone)]
pub struct FileEventStore {
    log: Arc<engine::EventLog>,
    changes: watch::Sender<u64>,
    recovery: Arc<RecoveryReport>,
    ids: IdScope,
}

/// Why [`FileEventStore::open`] failed: the engine refused, or the id key is unusable.
#[derive(Debug)]
pub enum FileOpenError {
    Engine(OpenError),
    IdKey(IdKeyError),
}

impl std::fmt::Display for FileOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileOpenError::Engine(e) => e.fmt(f),
            FileOpenError::IdKey(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FileOpenError {}

fn engine_org(org: OrgId) -> engine::OrgId {
    engine::OrgId(*org.0.as_bytes())
}

/// The id the API shows for an event stored with `stored` in organization `org`, given the
/// log's key (for tools that read the files directly, such as `trueline eventlog dump`).
pub fn api_event_id(ids: &IdScope, org: uuid::Uuid, stored: uuid::Uuid) -> uuid::Uuid {
    uuid::Uuid::from_bytes(ids.mask(org.as_bytes()).apply(*stored.as_bytes()))
}

fn client_id(mask: Mask, id: engine::EventId) -> EventId {
    EventId(uuid::Uuid::from_bytes(mask.apply(id.0)))
}

fn instant(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn read_error(e: engine::ReadError) -> StoreError {
    StoreError::Internal(format!("event log read failed: {e}"))
}

fn record(mask: Mask, e: engine::StoredEvent) -> EventRecord {
    EventRecord {
        id: client_id(mask, e.id),
        position: e.org_position,
        stream: e.stream,
        stream_version: e.stream_version,
        event_type: e.event_type,
        data: e.payload,
        metadata: e.metadata,
        recorded_at: instant(e.timestamp_micros),
    }
}

impl FileEventStore {
    /// Opens (creating if needed) the log in `dir`. A second process on the same directory
    /// fails with `OpenError::Locked`; damage in the middle of the log refuses to open.
    /// A log with events and no id key (or a damaged one) refuses to open.
    pub fn open(dir: &Path, options: FileEventOptions) -> Result<Self, FileOpenError> {
        let engine_options = engine::Options {
            durability: options.durability,
            segment_size_bytes: options.segment_size_bytes,
            event_size_max_bytes: options.event_bytes_max,
            batch_max: APPEND_EVENTS_MAX,
            retention: options.retention,
            cached_sealed_segments: options.cached_sealed_segments,
            fault_hook: options.fault_hook,
        };
        let (log, recovery) =
            engine::EventLog::open(dir, engine_options).map_err(FileOpenError::Engine)?;
        // After the engine's open: it holds the directory's lock, and knows whether the log
        // has ever held an event.
        let ids =
            IdScope::open(dir, recovery.last_global_position == 0).map_err(FileOpenError::IdKey)?;
        let (changes, _) = watch::channel(recovery.last_global_position);
        let notify = changes.clone();
        log.set_commit_listener(Arc::new(move |notice: engine::CommitNotice| {
            notify.send_replace(notice.last_global_position);
            metrics::histogram!("eventlog_append_batch_size").record(notice.events as f64);
            if let Some(fsync) = notice.fsync {
                metrics::histogram!("eventlog_fsync_duration_seconds").record(fsync.as_secs_f64());
            }
        }));
        Ok(Self {
            log: Arc::new(log),
            changes,
            recovery: Arc::new(recovery),
            ids,
        })
    }

    /// Whether this log keeps the first version's id mapping (see [`id_scope`]).
    pub fn legacy_ids(&self) -> bool {
        self.ids.is_legacy()
    }

    /// The last global position visible to readers (with `always` durability, durable).
    pub fn last_global_position(&self) -> u64 {
        self.log.last_global_position()
    }

    /// What recovery did at open (the server logs it as `eventlog.recovered`).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Drops sealed segments beyond the retention settings; returns how many.
    pub fn apply_retention(&self) -> Result<usize, String> {
        self.log.apply_retention().map_err(|e| e.to_string())
    }
}

type EngineOutcome = Result<Vec<engine::Recorded>, engine::AppendError>;

/// A batch of [`FileEventStore::append_many`]: its outcome, or the channel it will come on.
enum Submitted {
    Done(EngineOutcome),
    Waiting(tokio::sync::oneshot::Receiver<EngineOutcome>),
}

impl FileEventStore {
    fn mask(&self, org: OrgId) -> Mask {
        self.ids.mask(org.0.as_bytes())
    }

    /// Hands one batch to the writer (as the next append of `chain`, if given), its ids
    /// mapped with the organization's `mask`; the outcome comes on the returned channel.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        chain: Option<&engine::AppendChain>,
        mask: Mask,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: OffsetDateTime,
    ) -> tokio::sync::oneshot::Receiver<EngineOutcome> {
        let micros = (now.unix_timestamp_nanos() / 1_000) as i64;
        let engine_events = events
            .into_iter()
            .map(|e| engine::NewEvent {
                id: engine::EventId(mask.apply(*e.id.0.as_bytes())),
                event_type: e.event_type,
                timestamp_micros: micros,
                metadata: e.metadata,
                payload: e.data,
            })
            .collect();
        let expected = match expected {
            ExpectedVersion::Any => engine::ExpectedVersion::Any,
            ExpectedVersion::NoStream => engine::ExpectedVersion::NoStream,
            ExpectedVersion::Exact(v) => engine::ExpectedVersion::Exact(v),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: engine::Done = Box::new(move |result| {
            let _ = tx.send(result);
        });
        let org = engine_org(org);
        match chain {
            Some(chain) => {
                self.log
                    .append_chained(chain, org, stream, expected, engine_events, done)
            }
            None => self
                .log
                .append_with(org, stream, expected, engine_events, done),
        }
        rx
    }
}

/// The API's view of one batch's outcome.
fn finish(
    mask: Mask,
    received: Result<EngineOutcome, tokio::sync::oneshot::error::RecvError>,
) -> Result<Vec<Appended>, EventStoreError> {
    let result = received.map_err(|_| StoreError::Unavailable("event log closed".into()))?;
    let recorded = result.map_err(|e| append_error(mask, e))?;
    // Events written: a retry that found its events already there wrote none (as on
    // PostgreSQL, which counts only new rows).
    let written = recorded.iter().filter(|r| !r.duplicate).count();
    metrics::counter!("eventlog_events_total").increment(written as u64);
    Ok(recorded
        .into_iter()
        .map(|r| Appended {
            id: client_id(mask, r.id),
            position: r.org_position,
            stream_version: r.stream_version,
            recorded_at: instant(r.timestamp_micros),
            duplicate: r.duplicate,
        })
        .collect())
}

#[async_trait::async_trait]
impl EventStore for FileEventStore {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn append(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<Appended>, EventStoreError> {
        let mask = self.mask(org);
        let pending = self.submit(None, mask, org, stream, expected, events, now);
        finish(mask, pending.await)
    }

    /// Every batch goes to the writer before any is waited for: in submission order, and
    /// one group commit (one `fdatasync`) for all of them, where waiting for each paid one
    /// `fdatasync` per batch (the outbox relay's one-event batches under `spread`: ~2,000
    /// per second). They go as one chain: once one fails, the later ones are refused rather
    /// than written without it (the relay retries from the failed one, in order).
    async fn append_many(
        &self,
        org: OrgId,
        batches: Vec<StreamBatch>,
        now: OffsetDateTime,
    ) -> Vec<Result<Vec<Appended>, EventStoreError>> {
        let mut submitted = Vec::with_capacity(batches.len());
        let chain = engine::AppendChain::new();
        let mask = self.mask(org);
        for batch in batches {
            let mut receiver = self.submit(
                Some(&chain),
                mask,
                org,
                &batch.stream,
                batch.expected,
                batch.events,
                now,
            );
            match receiver.try_recv() {
                // Refused before it reached the writer (e.g. too large): stop, as calls to
                // `append` one after another would.
                Ok(Err(e)) => {
                    submitted.push(Submitted::Done(Err(e)));
                    break;
                }
                Ok(done) => submitted.push(Submitted::Done(done)),
                Err(_) => submitted.push(Submitted::Waiting(receiver)),
            }
        }
        let mut outcomes = Vec::with_capacity(submitted.len());
        for submitted in submitted {
            let received = match submitted {
                Submitted::Done(done) => Ok(done),
                Submitted::Waiting(receiver) => receiver.await,
            };
            outcomes.push(finish(mask, received));
        }
        outcomes
    }

    async fn event(&self, org: OrgId, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        let mask = self.mask(org);
        let found = self
            .log
            .get(engine::EventId(mask.apply(*id.0.as_bytes())))
            .map_err(read_error)?;
        // The keyed mapping makes another organization's event unreachable, but check anyway.
        Ok(found
            .filter(|e| e.org == engine_org(org))
            .map(|e| record(mask, e)))
    }

    async fn events_after(
        &self,
        org: OrgId,
        after: u64,
        limit: ReadLimit,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let log = self.log.clone();
        let mask = self.mask(org);
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || {
            let engine_filter = engine::OrgFilter {
                event_type: filter.event_type.as_deref(),
                stream: filter.stream.as_deref(),
            };
            log.read_org_within(
                engine_org(org),
                after,
                limit.events,
                engine_filter,
                limit.bytes,
            )
            .map(|events| events.into_iter().map(|e| record(mask, e)).collect())
            .map_err(read_error)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn read_stream(
        &self,
        org: OrgId,
        stream: &str,
        from: u64,
        direction: ReadDirection,
        limit: ReadLimit,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let log = self.log.clone();
        let mask = self.mask(org);
        let stream = stream.to_owned();
        tokio::task::spawn_blocking(move || {
            let direction = match direction {
                ReadDirection::Forward => engine::Direction::Forward,
                ReadDirection::Backward => engine::Direction::Backward,
            };
            log.read_stream_within(
                engine_org(org),
                &stream,
                from,
                direction,
                limit.events,
                limit.bytes,
            )
            .map(|events| events.into_iter().map(|e| record(mask, e)).collect())
            .map_err(read_error)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn stream_version(&self, org: OrgId, stream: &str) -> Result<u64, StoreError> {
        Ok(self.log.stream_version(engine_org(org), stream))
    }

    async fn stats(&self, org: OrgId) -> Result<EventStats, StoreError> {
        let s = self.log.org_stats(engine_org(org));
        Ok(EventStats {
            events: s.events,
            bytes: s.bytes,
            streams: s.streams,
            first_position: s.first_org_position,
            last_position: s.last_org_position,
        })
    }

    /// What `/stats` shows of the storage: no totals of the whole log (they would tell one
    /// organization about the others), and nothing that takes the index lock (any member may
    /// call `/stats`; walking the index there held up every append: see
    /// [`engine::EventLog::storage_stats`]).
    fn storage(&self) -> serde_json::Value {
        let recovery = self.log.last_recovery();
        serde_json::json!({
            "backend": "file",
            "last_recovery_ms": recovery.duration.as_secs_f64() * 1000.0,
            "last_recovery_truncated_bytes": recovery.truncated.as_ref().map_or(0, |t| t.truncated_bytes),
            "writer_failure": self.log.writer_failure(),
        })
    }

    /// `/readyz`, unauthenticated: only the writer's state, without the index lock.
    async fn health(&self) -> Result<(), String> {
        match self.log.writer_failure() {
            None => Ok(()),
            Some(failure) => Err(format!("event log writer stopped: {failure}")),
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn append_error(mask: Mask, e: engine::AppendError) -> EventStoreError {
    use engine::AppendError as E;
    match e {
        E::WrongExpectedVersion { current } => {
            AppendRefusal::WrongExpectedVersion { current }.into()
        }
        E::EventIdConflict { id } => AppendRefusal::EventIdConflict {
            id: client_id(mask, id),
        }
        .into(),
        E::DuplicateIdInBatch { id } => AppendRefusal::DuplicateIdInBatch {
            id: client_id(mask, id),
        }
        .into(),
        E::EventTooLarge { size, max } => AppendRefusal::EventTooLarge { size, max }.into(),
        E::AppendTooLarge { size, max } => AppendRefusal::AppendTooLarge {
            size: size as u64,
            max: max as u64,
        }
        .into(),
        E::StorageFull { .. } => AppendRefusal::StorageFull.into(),
        E::Io { detail } | E::WriterFailed { detail } => {
            StoreError::Unavailable(format!("event log I/O failure: {detail}")).into()
        }
        E::Closed => StoreError::Unavailable("event log closed".into()).into(),
        E::EarlierInChainFailed => StoreError::Unavailable(
            "an earlier batch of the same append failed; this one was not written".into(),
        )
        .into(),
        other => StoreError::Internal(format!("event log refused the append: {other}")).into(),
    }
}
