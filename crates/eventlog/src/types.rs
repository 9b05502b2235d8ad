//! Public value types: ids, events as appended and as stored, read parameters, statistics.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

fn fmt_uuid(b: &[u8; 16], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

/// A client-chosen event id (the 16 bytes of a UUID). Ids make appends idempotent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub [u8; 16]);

/// An organization id (the 16 bytes of a UUID). Each organization has its own gapless
/// sequence of positions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(pub [u8; 16]);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_uuid(&self.0, f)
    }
}
impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}
impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_uuid(&self.0, f)
    }
}
impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({self})")
    }
}

/// An event to append. The stream and organization are given once per append call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    /// UTF-8, 1..=[`crate::EVENT_TYPE_LEN_MAX`] bytes.
    pub event_type: String,
    /// Unix time in microseconds, supplied by the caller and stored as is.
    pub timestamp_micros: i64,
    /// Opaque bytes (typically JSON). Counts towards the event size limit.
    pub metadata: Vec<u8>,
    /// Opaque bytes (typically JSON). Counts towards the event size limit.
    pub payload: Vec<u8>,
}

/// What the caller expects the stream's current version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events (version 0).
    NoStream,
    /// The stream's last version must be exactly this (0 is the same as `NoStream`).
    Exact(u64),
}

/// The outcome of one appended (or deduplicated) event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub id: EventId,
    pub global_position: u64,
    pub org_position: u64,
    pub stream_version: u64,
    pub timestamp_micros: i64,
    /// True when the event already existed with identical content and nothing was written:
    /// the positions are those of the original.
    pub duplicate: bool,
}

/// A complete event as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub global_position: u64,
    pub org_position: u64,
    pub org: OrgId,
    pub stream: String,
    pub stream_version: u64,
    pub event_type: String,
    pub timestamp_micros: i64,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Direction of a stream read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Optional filters of [`crate::EventLog::read_org`]; both must match when both are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrgFilter<'a> {
    pub event_type: Option<&'a str>,
    pub stream: Option<&'a str>,
}

/// Sent to the commit listener after each batch becomes visible to readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitNotice {
    /// The last global position now visible.
    pub last_global_position: u64,
    /// For every organization that received events in this batch, its last org position.
    pub orgs: Vec<(OrgId, u64)>,
    /// New events in this batch (the group commit's size).
    pub events: usize,
    /// How long the batch's `fdatasync` took (`None` when this mode did not sync it).
    pub fsync: Option<std::time::Duration>,
}

/// Per-organization statistics (over retained events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgStats {
    /// Retained events of the organization.
    pub events: u64,
    /// Encoded bytes of those events (record headers included).
    pub bytes: u64,
    /// Streams the organization has ever written to (including streams whose events were all
    /// dropped by retention).
    pub streams: u64,
    /// First retained org position (0 when none).
    pub first_org_position: u64,
    /// Last org position ever assigned (0 when none); never decreases.
    pub last_org_position: u64,
}

/// Whole-log statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageStats {
    pub segments: usize,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Retained events.
    pub events: u64,
    pub first_global_position: u64,
    pub last_global_position: u64,
    /// Estimate of the heap bytes held by all index structures.
    pub index_memory_bytes: u64,
    /// Sealed segments whose ids the background indexer has not merged into the global id
    /// run yet (lookups are slower until it has; 0 in steady state).
    pub index_unmerged_segments: usize,
    /// How the last open went.
    pub last_recovery: RecoveryReport,
    /// Index checkpoints that could not be written since open (the log itself is unaffected).
    pub checkpoint_write_failures: u64,
    /// Set when the writer stopped accepting appends after an unrecoverable I/O failure.
    pub writer_failure: Option<String>,
}

/// A torn tail removed during open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    pub segment: PathBuf,
    /// Offset (in the segment file) where the file now ends.
    pub offset: u64,
    pub truncated_bytes: u64,
    /// Why the bytes were judged a torn tail (first problem found at `offset` or later).
    pub reason: String,
}

/// What open had to do. The server logs it as `eventlog.recovered`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub duration: Duration,
    pub segments: usize,
    /// Segments whose index came (entirely or as a prefix) from a checkpoint file.
    pub segments_from_checkpoint: usize,
    /// Checkpoint files that were present but rejected (damaged or stale) and rebuilt.
    pub checkpoints_rejected: Vec<PathBuf>,
    /// Records read from segment files (those not covered by a checkpoint).
    pub records_scanned: u64,
    /// Records whose index entries came from checkpoints.
    pub records_from_checkpoint: u64,
    pub bytes_scanned: u64,
    pub truncated: Option<TruncatedTail>,
    /// Zero bytes after the last record of the active segment (space the writer had
    /// preallocated), trimmed. Normal after a crash; not a torn tail.
    pub trimmed_zero_bytes: u64,
    /// An empty or header-less last segment left by a crash during a roll, deleted.
    pub removed_partial_segment: Option<PathBuf>,
    pub last_global_position: u64,
}

impl RecoveryReport {
    /// True when open found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none() && self.removed_partial_segment.is_none()
    }
}
