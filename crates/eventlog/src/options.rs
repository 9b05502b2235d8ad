//! Configuration: [`Options`], durability modes, retention, limits and the test-only I/O fault
//! hook.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest stream name, in UTF-8 bytes.
pub const STREAM_NAME_LEN_MAX: usize = 256;
/// Longest event type, in UTF-8 bytes.
pub const EVENT_TYPE_LEN_MAX: usize = 128;
/// Default limit of metadata + payload bytes of one event.
pub const EVENT_SIZE_DEFAULT_BYTES: usize = 1024 * 1024;
/// Hard ceiling for `Options::event_size_max_bytes`.
pub const EVENT_SIZE_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// Default number of events one append may carry.
pub const BATCH_DEFAULT_MAX: usize = 1000;
/// Hard ceiling for `Options::batch_max` (the format stores batch indexes as u16).
pub const BATCH_LIMIT_MAX: usize = 10_000;
/// Ceiling of the encoded size of one append (all its records).
pub const APPEND_SIZE_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// Default segment size at which the writer rolls to a new segment.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 128 * 1024 * 1024;
/// Smallest accepted segment size (tests use small segments to exercise rolling).
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 4096;
/// Largest accepted segment size (record offsets are stored as u32).
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Most events a read returns in one call, whatever limit is asked for.
pub const READ_LIMIT_MAX: usize = 10_000;
/// Zero-filled space the writer keeps ahead of the last record in the active segment.
pub const PREALLOCATE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes the writer puts in one group commit before writing (bounds memory).
pub const GROUP_COMMIT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// When an acknowledged append is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after the batch's `fdatasync` returned successfully (default).
    #[default]
    Always,
    /// Acknowledge after the write; `fdatasync` at most every N milliseconds (and when idle).
    /// A crash of the machine may lose the last N ms of acknowledged appends.
    IntervalMs(u64),
    /// Acknowledge after the write; the OS decides when data reaches the disk (segments are
    /// still synced when sealed and on close).
    Never,
}

/// Default of [`Options::cached_sealed_segments`].
pub const CACHED_SEALED_SEGMENTS_DEFAULT: u32 = 1;

/// Which sealed segments may be deleted. Retention never deletes the active segment, and
/// drops whole segments only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop a sealed segment once its newest event timestamp is older than this.
    pub max_age: Option<Duration>,
    /// Drop the oldest sealed segments while all segments together exceed this many bytes.
    pub max_total_bytes: Option<u64>,
}

/// Engine configuration. `Options::default()` is what production uses.
#[derive(Clone, Debug)]
pub struct Options {
    pub durability: Durability,
    pub segment_size_bytes: u64,
    pub event_size_max_bytes: usize,
    pub batch_max: usize,
    pub retention: Retention,
    /// How many of the most recent sealed segments stay in the OS page cache; an older one is
    /// dropped from it (`posix_fadvise` `DONTNEED`) when the segment after it is sealed.
    /// Default 1. 0 drops each segment as soon as it is sealed; `u32::MAX` never drops one
    /// (the kernel decides, as for any file). Why: docs/eventlog.md, "Page cache".
    pub cached_sealed_segments: u32,
    /// Test-only: lets tests inject write/fsync failures. Leave `None`.
    #[doc(hidden)]
    pub fault_hook: Option<Arc<dyn FaultHook>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_size_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            event_size_max_bytes: EVENT_SIZE_DEFAULT_BYTES,
            batch_max: BATCH_DEFAULT_MAX,
            retention: Retention::default(),
            cached_sealed_segments: CACHED_SEALED_SEGMENTS_DEFAULT,
            fault_hook: None,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&self.segment_size_bytes) {
            return Err(format!(
                "segment_size_bytes must be within {SEGMENT_SIZE_MIN_BYTES}..={SEGMENT_SIZE_MAX_BYTES}"
            ));
        }
        if self.event_size_max_bytes == 0 || self.event_size_max_bytes > EVENT_SIZE_LIMIT_BYTES {
            return Err(format!(
                "event_size_max_bytes must be within 1..={EVENT_SIZE_LIMIT_BYTES}"
            ));
        }
        if self.batch_max == 0 || self.batch_max > BATCH_LIMIT_MAX {
            return Err(format!("batch_max must be within 1..={BATCH_LIMIT_MAX}"));
        }
        Ok(())
    }
}

/// Test-only hook consulted by the writer before each segment write and each `fdatasync`.
#[doc(hidden)]
pub trait FaultHook: Send + Sync + fmt::Debug {
    /// Before writing `len` bytes: `Some((n, err))` writes the first `n` bytes (clamped to
    /// `len`) and then fails with `err`, like a disk filling up mid-write.
    fn on_write(&self, len: usize) -> Option<(usize, io::Error)>;
    /// Before `fdatasync`: `Some(err)` fails the sync without calling it.
    fn on_sync(&self) -> Option<io::Error>;
    /// At a roll, once the new segment's file exists, before the writer opens its read
    /// handle: `Some(err)` fails that open (a roll failing after the file was created).
    fn on_open_new_segment(&self) -> Option<io::Error> {
        None
    }
}

/// Which fault a [`FaultSwitch`] injects.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC on write, after writing this many bytes.
    WriteNoSpace { after_bytes: usize },
    /// EIO on write, after writing this many bytes.
    WriteIo { after_bytes: usize },
    /// ENOSPC on fdatasync.
    SyncNoSpace,
    /// EIO on fdatasync.
    SyncIo,
    /// EMFILE opening a new segment's read handle at a roll (its file exists by then).
    OpenNewSegment,
}

/// A ready-made [`FaultHook`]: set a fault, run appends, clear it.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FaultSwitch {
    fault: Mutex<Option<Fault>>,
}

impl FaultSwitch {
    pub fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    fn current(&self) -> Option<Fault> {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const EMFILE: i32 = 24;

impl FaultHook for FaultSwitch {
    fn on_write(&self, len: usize) -> Option<(usize, io::Error)> {
        match self.current()? {
            Fault::WriteNoSpace { after_bytes } => {
                Some((after_bytes.min(len), io::Error::from_raw_os_error(ENOSPC)))
            }
            Fault::WriteIo { after_bytes } => {
                Some((after_bytes.min(len), io::Error::from_raw_os_error(EIO)))
            }
            Fault::SyncNoSpace | Fault::SyncIo | Fault::OpenNewSegment => None,
        }
    }

    fn on_sync(&self) -> Option<io::Error> {
        match self.current()? {
            Fault::SyncNoSpace => Some(io::Error::from_raw_os_error(ENOSPC)),
            Fault::SyncIo => Some(io::Error::from_raw_os_error(EIO)),
            _ => None,
        }
    }

    fn on_open_new_segment(&self) -> Option<io::Error> {
        (self.current()? == Fault::OpenNewSegment).then(|| io::Error::from_raw_os_error(EMFILE))
    }
}
