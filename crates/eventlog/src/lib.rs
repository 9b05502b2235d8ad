//! The Trueline event log engine: an append-only, checksummed, segmented event store.
//!
//! It owns the files under one directory: segment files holding the records, per-segment index
//! checkpoint files, and a `LOCK` file. It uses `std` and `crc32c` (plus `memmap2` and
//! `bytemuck` to map checkpoint arrays at open, `rustix` to drop old sealed segments from the
//! page cache (see [`Options::cached_sealed_segments`]), `serde_json` just for the NDJSON
//! [`dump`]); no async runtime. The server bridges [`EventLog::append_with`] to a
//! oneshot channel.
//!
//! # Model
//!
//! Every record is one event with a **global position** (gapless over the whole log, from 1),
//! an **organization position** (gapless per organization, from 1), a **stream version**
//! (gapless per (organization, stream), from 1), a client-chosen 16-byte **event id**, a
//! caller-supplied timestamp (unix microseconds), the organization id, the stream name, the
//! event type, and opaque metadata and payload bytes. An append writes 1..=`batch_max` events
//! to ONE stream atomically.
//!
//! # Usage
//!
//! ```ignore
//! use std::sync::Arc;
//! use trueline_eventlog::*;
//!
//! let (log, recovery) = EventLog::open("data/eventlog", Options::default())?;
//! // log `recovery` as `eventlog.recovered` (see `RecoveryReport::is_clean`)
//! let log = Arc::new(log);
//! log.set_commit_listener(Arc::new(|notice: CommitNotice| { /* wake SSE subscribers */ }));
//! let recorded = log.append(
//!     OrgId(org_uuid_bytes),
//!     "item-42",
//!     ExpectedVersion::Exact(7),
//!     vec![NewEvent {
//!         id: EventId(event_uuid_bytes),
//!         event_type: "inventory.item.adjusted".into(),
//!         timestamp_micros: now_micros,
//!         metadata: br#"{"request_id":"..."}"#.to_vec(),
//!         payload: br#"{"delta":-2}"#.to_vec(),
//!     }],
//! )?;
//! // From async code: `log.append_with(org, stream, expected, events, Box::new(move |r| {
//! //     let _ = oneshot_tx.send(r); }))`.
//! let page = log.read_org(OrgId(org_uuid_bytes), after, 50, OrgFilter::default())?;
//! ```
//!
//! # On-disk format (version 1)
//!
//! All integers are little-endian. Files in the directory:
//!
//! - `LOCK`: empty; held with an exclusive lock (`File::try_lock`) while a log is open. Open
//!   retries for 200 ms (a process that forks shares the lock until its child execs), then
//!   fails with [`OpenError::Locked`] naming the directory.
//! - `{first_position:020}.seg`: a segment, named after the global position of its first
//!   record. Segments are contiguous: each starts at the previous one's last position + 1.
//! - `{first_position:020}.idx`: the index checkpoint of that segment (optional, disposable).
//! - `streams.idx`: the stream registry (optional, disposable; see below).
//! - `*.idx.{n}.tmp`: a checkpoint being written; deleted at open if a crash left one.
//! - `next-segment.seg.tmp`: the next segment, zero-filled ahead of time (`Always` mode, once
//!   the active segment is half full); deleted at open if a crash left it, and at close.
//!
//! ## Segment header (32 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TLEVSEG\0` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | header length, `32` |
//! | 16 | 8 | global position of the first record of this segment |
//! | 24 | 4 | reserved, `0` |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! ## Record
//!
//! Records follow the header back to back. Offsets are from the start of the record:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `body_len`: bytes after this 8-byte prefix (84 + the variable fields) |
//! | 4 | 4 | CRC32C of bytes 0..4 (`body_len`) followed by the whole body (8..8+body_len) |
//! | 8 | 8 | global position (u64, ≥ 1) |
//! | 16 | 8 | organization position (u64, ≥ 1) |
//! | 24 | 8 | stream version (u64, ≥ 1) |
//! | 32 | 8 | timestamp, unix microseconds (i64) |
//! | 40 | 16 | event id |
//! | 56 | 16 | organization id |
//! | 72 | 4 | `frame_start`: segment offset where the write (group commit) holding this record began |
//! | 76 | 2 | `batch_index`: index of this record in its append (0-based) |
//! | 78 | 2 | `batch_count`: number of records of its append |
//! | 80 | 2 | stream name length `S` (1..=256) |
//! | 82 | 2 | event type length `T` (1..=128) |
//! | 84 | 4 | metadata length `M` |
//! | 88 | 4 | payload length `P` |
//! | 92 | S | stream name, UTF-8 |
//! | 92+S | T | event type, UTF-8 |
//! | 92+S+T | M | metadata bytes |
//! | 92+S+T+M | P | payload bytes |
//!
//! The checksum covers every byte of the record except itself, so a record whose checksum
//! verifies is exactly what the writer wrote (up to CRC32C's 2^-32 false-accept rate per
//! damaged record). Decoding also checks that the lengths add up, names are non-empty UTF-8,
//! positions are non-zero and `batch_index < batch_count`. Records of one append are
//! contiguous and share `frame_start`; an append never spans two segments. Lengths are bytes:
//! any Unicode in names, metadata and payloads round-trips exactly.
//!
//! The active segment may end with zero bytes after its last record: in `Always` mode each
//! batch's `fdatasync` must flush data only, not a new file size (measured here: about 2,600
//! size-changing against 6,800 overwriting fdatasyncs per second), so the segment extends over
//! zero-filled, synced space. A background thread prepares the next segment as a whole
//! segment's worth of synced zeros (`next-segment.seg.tmp`, renamed into place with its header
//! at the roll); a segment that was not prepared (the first, or after a restart) is extended
//! by the writer [`PREALLOCATE_CHUNK_BYTES`] at a time. Sealed segments are trimmed to their
//! last record; a clean close trims the active one too.
//!
//! ## Stream registry (`streams.idx`)
//!
//! Every organization and stream the index knows, in id order, so checkpoints can name streams
//! by a u32 id and loading them needs no string hashing. Layout: magic `TLEVREG\0`, version `1`
//! (u32), reserved (u32), epoch (u64), org count (u32), stream count (u32); then per org its
//! 16-byte id and last org position (u64); per stream its org index (u32), last version
//! (u64), name length (u16) and UTF-8 name; then the CRC32C of everything before (u32).
//! Ids are only ever appended, so a newer registry extends an older one. The last versions and
//! positions keep streams and organizations whose events retention dropped counting after a
//! reopen. The **epoch** is a random u64 chosen when a registry is started from scratch (none,
//! or a damaged one, at open); every checkpoint records the epoch it was written against and
//! is used only with that registry. The registry is rewritten (atomically, serialized) before
//! any checkpoint that may refer to new stream ids.
//!
//! ## Index checkpoint (`{first_position}.idx`)
//!
//! Written atomically (unique temp file, fsync, rename, directory fsync) when a segment is
//! sealed, for the active segment on clean close, and in the background after open for sealed
//! segments that had to be scanned. Header (72 bytes): magic `TLEVIDX\0`, version `3` (u32),
//! array alignment `a` (u32: 0, or 3..=20), segment first position (u64), `end_offset` = bytes
//! of the segment covered (u64), record count `n` (u64), CRC32C of the last covered record
//! (u32), number of orgs / streams / types (3 × u32), newest timestamp (i64), registry epoch
//! (u64). Then the org table (16-byte id, first org position in this segment, event count,
//! bytes: u64 each), the stream table (registry stream id u32, local org index u32, first
//! version in this segment u64), the type table (u16 length + UTF-8), then seven arrays of `n`
//! values: u32 offsets, u32 local stream index and u32 local type index per record; the record
//! slots grouped by local stream (u32; streams in table order, slots ascending within each) and
//! grouped by local org (u32, likewise); then the id index: u64 id hashes sorted ascending and
//! their u32 record slots. A trailing u32 is the CRC32C of everything before it. The two
//! groupings are what a restart needs to fill the stream and org position lists; they are
//! stored so that it checks them (keys never decrease along a grouping, slots strictly
//! increase within a key, and each slot's key is its record's: so each is exactly the grouping
//! of the records) instead of computing them. Versions 1 and 2 (without the groupings) are
//! refused like a damaged checkpoint, and rebuilt.
//!
//! With `a` > 0 each array starts at a multiple of `2^a` bytes, preceded by zero bytes
//! (checksummed, and refused if not zero). The writer uses `a` = 12 (4 KiB) for checkpoints of
//! at least 16,384 records and 0 (packed) below. At open, aligned arrays of at least 64 KiB are
//! mapped read-only from the file instead of copied into memory (every byte is still
//! checksummed before use), so a restart does not fault in fresh memory for them; the
//! segment's type ids stay checkpoint-local behind a small translation table. Checkpoint files
//! are only ever replaced by rename or unlinked, never modified in place, which is what makes
//! mapping them safe (see `column.rs`).
//!
//! A checkpoint is used only if its checksum verifies, its tables are consistent, its epoch is
//! the loaded registry's, it continues the positions/versions of the segments before it, and
//! the record at its last offset exists in the segment with the recorded checksum and
//! position. Otherwise it is deleted, reported in [`RecoveryReport::checkpoints_rejected`], and
//! the segment is scanned instead. Records after `end_offset` are always scanned.
//!
//! # Recovery rules
//!
//! On [`EventLog::open`] every segment is checked: header checksum and version, file name =
//! first position, contiguity with the previous segment (a missing segment file is
//! corruption). Records not covered by a checkpoint are scanned and verified: checksum, field
//! consistency, global position = previous + 1, org positions and stream versions continuing
//! without gaps, batch fields continuing within an append. Then:
//!
//! - A problem in a **sealed** segment (any but the last) is corruption: open fails with
//!   [`OpenError::Corrupt`] naming the file and byte offset.
//! - In the **last** segment, zero bytes after the last record are preallocated space: trimmed
//!   and counted in [`RecoveryReport::trimmed_zero_bytes`], not a torn tail.
//! - Any other problem in the last segment at offset `X` (an incomplete record, checksum
//!   failure, malformed record, or an append whose last records are missing) is a **torn
//!   tail** unless some later offset holds a complete record whose checksum verifies, whose
//!   global position is beyond the last good one, and whose `frame_start` is after `X`: such a
//!   record was written by a *later* write, and in `Always` mode a write only starts once the
//!   previous one was fsynced, so the damaged bytes had been durable: that is corruption and
//!   open refuses. Valid-looking records in the same frame as the damage (the kernel can
//!   persist the pages of an unsynced write in any order) belong to an unacknowledged write
//!   and go with the tail.
//! - A torn tail is cut at the end of the last complete append before `X` (appends stay all or
//!   nothing) and reported in [`RecoveryReport::truncated`]; the server logs it as
//!   `eventlog.recovered`.
//! - A last segment without a complete header (crash while rolling) is deleted and reported.
//!
//! Limitation: in `IntervalMs`/`Never` modes several writes can be unsynced at a power loss;
//! if the disk persisted a later write but not an earlier one, open refuses (correctly: the
//! hole is real) and an operator decides with [`verify`] and [`repair`]. Damage inside records
//! covered by a checkpoint is not seen at open (they are not read); reads of such a record
//! fail with [`ReadError::Corrupt`], and [`verify`] reads everything.
//!
//! A segment whose header is intact but has a format version above [`FORMAT_VERSION`] was
//! written by a newer engine: open, [`verify`], [`dump`] and [`repair`] report
//! [`OpenError::NewerFormat`] / [`ProblemKind::NewerFormat`] ("upgrade needed"), never damage.
//!
//! # Repair
//!
//! [`repair`] (the CLI's `eventlog repair --yes`) is the operator's explicit decision for what
//! open refuses. It plans everything first (reading every segment) and changes nothing when it
//! refuses. It never silently discards a record whose checksum verifies:
//!
//! - A **damaged segment header** is rewritten when that is certain to restore it: the header
//!   holds nothing but the magic, the version (`1`), its length, the first position (which
//!   the file name also carries), zeros and its checksum, so it is rebuilt from the file name
//!   when that name continues the previous segment and the segment's first record verifies
//!   right after the header with that position, as the first of its append, its write
//!   starting at byte 32 (or, in the last segment, only zeros follow: preallocated space).
//!   The old 32 bytes are kept in `{segment}.seg.header.quarantined`. The records are then
//!   checked as usual. Otherwise the header counts as damage at offset 0 of its segment.
//! - Otherwise the log is **cut** after its last good record: the damaged segment is truncated
//!   at the end of its last complete append (or moved aside whole when its header is bad or
//!   out of sequence) and every later segment is moved aside. If the bytes moved aside hold
//!   records whose checksums verify (found by a byte-by-byte search past the damage), repair
//!   refuses with [`OpenError::RepairWouldDiscard`] naming the cut's segment and offset, the
//!   count and the range of positions, unless [`RepairOptions::discard_valid_records`]
//!   (`--discard-valid-records`) accepts the loss. A torn tail (what open itself would cut:
//!   no later write's record follows the damage) and bytes in which no record verifies are
//!   cut without it.
//! - A trimmed log's oldest segment unreadable from its header on is moved aside alone (as
//!   retention would have dropped it; it needs the same consent if it holds intact records);
//!   a cut that would leave a trimmed log no segment is refused whatever the options.
//! - A segment of a **newer format version** is refused whatever the options.
//!
//! [`RepairReport`] lists the rewritten headers, the cut, every file moved aside (nothing is
//! deleted but checkpoints) and how many intact records were moved aside.
//!
//! # Durability, failures and visibility
//!
//! One dedicated writer thread owns the active segment. Appends are queued; the writer takes
//! all queued appends (group commit, up to [`GROUP_COMMIT_BYTES_MAX`]), checks them in order,
//! encodes them into one buffer, issues one positional write and (in [`Durability::Always`],
//! the default) one `fdatasync`. Only then are the records added to the index (visible to
//! readers), the commit listener is called, and the appends are acknowledged: readers never
//! see an event before it is durable, and when `append` returns the listener has seen its
//! commit. In `IntervalMs` and `Never` the acknowledgement follows the write. Groups of more
//! than four appends are acknowledged by a second thread while the writer goes on with the
//! next group (each acknowledgement is a thread wake-up); acknowledgements keep commit order.
//!
//! A failed write or fsync is never retried as if it succeeded. The batch's appends fail with
//! [`AppendError::StorageFull`] (ENOSPC/EDQUOT) or [`AppendError::Io`], and the segment is
//! truncated back to its last durable length, so the next batch writes over clean ground and
//! appends resume when the fault clears. If that truncation fails, or a periodic fsync fails
//! in `IntervalMs` mode (acknowledged data may be lost and cannot be taken back), the writer
//! stops: every later append fails with [`AppendError::WriterFailed`] until the log is
//! reopened, which runs recovery. A failed append is never visible to readers; after a
//! machine crash in the short window before the next successful fsync its bytes may still be
//! on disk, which is why clients retry with the same event ids (idempotency).
//!
//! # Idempotency and append rules
//!
//! Checked by the writer, in queue order, so they are atomic with the write:
//! - Shape and limits first (empty batch/names, lengths, sizes, duplicate ids in the batch),
//!   on the caller's thread.
//! - If no id of the batch exists: the expected version is checked ([`ExpectedVersion`]) and
//!   the events are appended.
//! - If every id exists with identical organization, stream, event type, metadata and payload
//!   (the timestamp is not compared), and the originals have consecutive stream versions in
//!   batch order: nothing is written, the originals are returned with `duplicate: true`, and
//!   the expected version is NOT checked (a retry of a successful append succeeds).
//! - Otherwise (one id with different content, or only some ids existing, or originals not a
//!   contiguous run): [`AppendError::EventIdConflict`] with the offending id.
//!
//! # Concurrency model
//!
//! [`EventLog`] is `Send + Sync`. Reads run on the caller's thread: they take a read lock on the
//! in-memory index just long enough to find file offsets, then read with positional reads
//! (`pread`) on shared read-only file handles and verify each record's checksum. These
//! threads belong to a log: the writer (the only mutator of segment files and, for appends,
//! of the index; it takes the index write lock only to publish a committed batch, to roll a
//! segment and for retention), the acknowledging thread (completes large groups, see above),
//! the segment preparer (zero-fills the next segment in `Always` mode), the background indexer
//! (writes checkpoints after open and merges sealed segments' ids into the id runs,
//! swapping it in under the write lock), and briefly at open a checkpoint prefetcher. The
//! commit listener runs on the writer thread, `append_with` callbacks on the writer or the
//! acknowledging thread; they must not block, and a panic in one is contained.
//!
//! # Index
//!
//! The index is disposable acceleration rebuilt from the log. Per event it holds: the record's
//! offset and type id (u32 each, per segment; its stream is found through the stream lists),
//! a 16-byte entry (64-bit id hash,
//! global position) in a sorted id run searched through a bucket directory (keys are uniform
//! hashes), and the global position in its stream's and its organization's position lists
//! (4 bytes each: u32 offsets from the first value of their 4096-entry chunk, in chunked
//! lists that never over-allocate by more than one chunk): about 32 bytes, plus names
//! interned once. The active segment's ids live in a hash
//! map until the segment is sealed; then the background indexer sorts them (searched per
//! segment by interpolation until merged) and folds them into a *recent* run, which is merged
//! into the *main* run once it would pass a quarter of it: a lookup searches two runs, and an
//! id is rewritten a bounded number of times on average instead of at every roll. Hash
//! collisions are resolved by reading the record.
//!
//! # Retention
//!
//! [`Retention`] drops whole sealed segments (never the active one), oldest first, by age (of
//! the segment's newest timestamp) and/or total size, after each roll and on
//! [`EventLog::apply_retention`]. Reads of dropped positions behave as if the events never
//! existed (`get` → `None`, reads start at the oldest retained event), while stream versions
//! and organization positions keep counting from where they were, across reopens too.

mod column;
mod complete;
mod error;
mod format;
mod index;
mod log;
mod options;
mod prepare;
mod scan;
mod tools;
mod types;
mod writer;

pub use error::{AppendError, OpenError, ReadError};
pub use format::FORMAT_VERSION;
pub use log::{CommitListener, EventLog, LOCK_FILE_NAME, holds_segments};
pub use options::{
    APPEND_SIZE_LIMIT_BYTES, BATCH_DEFAULT_MAX, BATCH_LIMIT_MAX, CACHED_SEALED_SEGMENTS_DEFAULT,
    Durability, EVENT_SIZE_DEFAULT_BYTES, EVENT_SIZE_LIMIT_BYTES, EVENT_TYPE_LEN_MAX,
    GROUP_COMMIT_BYTES_MAX, Options, PREALLOCATE_CHUNK_BYTES, READ_LIMIT_MAX, Retention,
    SEGMENT_SIZE_DEFAULT_BYTES, SEGMENT_SIZE_MAX_BYTES, SEGMENT_SIZE_MIN_BYTES,
    STREAM_NAME_LEN_MAX,
};
#[doc(hidden)]
pub use options::{Fault, FaultHook, FaultSwitch};
pub use tools::{
    Problem, ProblemKind, RepairOptions, RepairReport, VerifyReport, dump, in_use, repair, verify,
};
pub use types::{
    CommitNotice, Direction, EventId, ExpectedVersion, NewEvent, OrgFilter, OrgId, OrgStats,
    Recorded, RecoveryReport, StorageStats, StoredEvent, TruncatedTail,
};
pub use writer::{AppendChain, Done};
