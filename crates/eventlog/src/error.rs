//! Error types of the engine, one enum per operation family.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::types::EventId;

/// Why an append failed. `Clone` because one I/O failure fails every append of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The stream's version is not the expected one (0 when the stream does not exist).
    WrongExpectedVersion {
        current: u64,
    },
    /// The id exists with different content, or a batch mixes existing and new ids, or the
    /// existing events of a retried batch are not the same contiguous run of the stream.
    EventIdConflict {
        id: EventId,
    },
    /// The same id appears twice in one batch.
    DuplicateIdInBatch {
        id: EventId,
    },
    /// Metadata + payload of one event exceed the limit.
    EventTooLarge {
        size: usize,
        max: usize,
    },
    /// More events than `max_batch`.
    BatchTooLarge {
        count: usize,
        max: usize,
    },
    /// The whole append (all records encoded) exceeds [`crate::APPEND_SIZE_LIMIT_BYTES`].
    AppendTooLarge {
        size: usize,
        max: usize,
    },
    EmptyBatch,
    EmptyStreamName,
    StreamNameTooLong {
        len: usize,
        max: usize,
    },
    EmptyEventType,
    EventTypeTooLong {
        len: usize,
        max: usize,
    },
    /// The disk is full (ENOSPC/EDQUOT). Nothing of the batch was kept; retry later.
    StorageFull {
        detail: String,
    },
    /// Another I/O error. Nothing of the batch was kept.
    Io {
        detail: String,
    },
    /// The writer hit an I/O failure it could not undo and accepts no appends until the log
    /// is reopened (which runs recovery).
    WriterFailed {
        detail: String,
    },
    /// Reading an existing event (for deduplication) found a damaged record.
    Corrupt {
        detail: String,
    },
    /// The log is closed.
    Closed,
    /// An earlier append of the same [`crate::AppendChain`] failed, so this one was not
    /// written: the log never holds a later append of a chain without an earlier one.
    EarlierInChainFailed,
}

impl AppendError {
    pub(crate) fn from_io(e: &io::Error, what: &str) -> Self {
        let detail = format!("{what}: {e}");
        if is_storage_full(e) {
            AppendError::StorageFull { detail }
        } else {
            AppendError::Io { detail }
        }
    }
}

/// True for "no space left" style errors.
pub(crate) fn is_storage_full(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::WrongExpectedVersion { current } => {
                write!(f, "wrong expected version: stream is at version {current}")
            }
            AppendError::EventIdConflict { id } => {
                write!(f, "event id {id} already exists with different content")
            }
            AppendError::DuplicateIdInBatch { id } => {
                write!(f, "event id {id} appears more than once in the batch")
            }
            AppendError::EventTooLarge { size, max } => {
                write!(
                    f,
                    "event metadata + payload is {size} bytes, the limit is {max}"
                )
            }
            AppendError::BatchTooLarge { count, max } => {
                write!(f, "batch has {count} events, the limit is {max}")
            }
            AppendError::AppendTooLarge { size, max } => {
                write!(f, "append encodes to {size} bytes, the limit is {max}")
            }
            AppendError::EmptyBatch => write!(f, "an append needs at least one event"),
            AppendError::EmptyStreamName => write!(f, "stream name is empty"),
            AppendError::StreamNameTooLong { len, max } => {
                write!(f, "stream name is {len} bytes, the limit is {max}")
            }
            AppendError::EmptyEventType => write!(f, "event type is empty"),
            AppendError::EventTypeTooLong { len, max } => {
                write!(f, "event type is {len} bytes, the limit is {max}")
            }
            AppendError::StorageFull { detail } => write!(f, "storage full: {detail}"),
            AppendError::Io { detail } => write!(f, "I/O error: {detail}"),
            AppendError::WriterFailed { detail } => {
                write!(f, "event log writer stopped after an I/O failure: {detail}")
            }
            AppendError::Corrupt { detail } => write!(f, "corrupt event log: {detail}"),
            AppendError::Closed => write!(f, "event log is closed"),
            AppendError::EarlierInChainFailed => {
                write!(
                    f,
                    "an earlier append of the same chain failed; nothing was written"
                )
            }
        }
    }
}

impl std::error::Error for AppendError {}

/// Why a read failed. A read never returns data that failed its checksum.
#[derive(Debug)]
pub enum ReadError {
    /// The record at this place failed its checksum or does not match the index.
    Corrupt {
        segment: PathBuf,
        offset: u64,
        detail: String,
    },
    Io {
        segment: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Corrupt {
                segment,
                offset,
                detail,
            } => {
                write!(
                    f,
                    "corrupt record in {} at byte {offset}: {detail}",
                    segment.display()
                )
            }
            ReadError::Io { segment, source } => {
                write!(f, "I/O error reading {}: {source}", segment.display())
            }
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            ReadError::Corrupt { .. } => None,
        }
    }
}

/// Why open (or `verify`/`dump`/`repair`) failed.
#[derive(Debug)]
pub enum OpenError {
    /// Another `EventLog` (in this or another process) holds the directory's lock.
    Locked {
        dir: PathBuf,
    },
    /// Damage in the middle of the log: open refuses to guess. See the crate docs.
    Corrupt {
        segment: PathBuf,
        offset: u64,
        detail: String,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
    InvalidOptions {
        detail: String,
    },
    /// The stream registry is missing or damaged in a log that retention has trimmed: it was
    /// the only record of the last numbers of streams and organizations whose events were
    /// all dropped, and rebuilding it from the log would hand those numbers out again.
    /// `repair` rebuilds it when the operator accepts that.
    RegistryLost {
        path: PathBuf,
        first_position: u64,
        detail: String,
    },
    /// A segment was written by a newer version of the engine: its header is intact and its
    /// format version is above [`crate::FORMAT_VERSION`]. Not damage: upgrade. Open, `verify`
    /// and `repair` say so, and `repair` changes nothing, whatever its options.
    NewerFormat {
        segment: PathBuf,
        version: u32,
    },
    /// `repair` refused, changing nothing: cutting the log where it is damaged would move
    /// aside `records` records whose checksums verify (global positions between
    /// `first_position` and `last_position`), e.g. the records after a damaged record in the
    /// middle of a segment, or whole later segments. Restore the log from a backup, or accept
    /// the loss with [`crate::RepairOptions::discard_valid_records`].
    RepairWouldDiscard {
        /// Where the cut would be: the damaged segment and byte offset.
        segment: PathBuf,
        offset: u64,
        /// What is damaged there.
        reason: String,
        records: u64,
        first_position: u64,
        last_position: u64,
    },
}

impl OpenError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        OpenError::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked { dir } => write!(
                f,
                "event log directory {} is locked by another process or EventLog",
                dir.display()
            ),
            OpenError::Corrupt {
                segment,
                offset,
                detail,
            } => write!(
                f,
                "event log corrupt in {} at byte {offset}: {detail} (run verify; repair truncates)",
                segment.display()
            ),
            OpenError::Io { path, source } => {
                write!(f, "I/O error on {}: {source}", path.display())
            }
            OpenError::InvalidOptions { detail } => {
                write!(f, "invalid event log options: {detail}")
            }
            OpenError::RegistryLost {
                path,
                first_position,
                detail,
            } => write!(
                f,
                "the stream registry {} is {detail}, and retention dropped every event before \
                 position {first_position}: streams and organizations whose events were all \
                 dropped would count from 1 again. Restore the file from a backup, or accept \
                 that with `repair` (which rebuilds it from the log)",
                path.display()
            ),
            OpenError::NewerFormat { segment, version } => write!(
                f,
                "event log segment {} has format version {version}, newer than this binary's \
                 ({}): the log was written by a newer Trueline; upgrade needed (this is not \
                 damage: nothing was changed, and repair will not touch it)",
                segment.display(),
                crate::FORMAT_VERSION
            ),
            OpenError::RepairWouldDiscard {
                segment,
                offset,
                reason,
                records,
                first_position,
                last_position,
            } => write!(
                f,
                "repair refused, nothing was changed: cutting the event log in {} at byte \
                 {offset} ({reason}) would move aside {records} record(s) whose checksums \
                 verify (global positions {first_position} to {last_position}). Restore the log \
                 from a backup, or accept losing them with `repair --yes \
                 --discard-valid-records` (the records are moved aside into `*.quarantined` \
                 files, not deleted)",
                segment.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
