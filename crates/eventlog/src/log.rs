//! [`EventLog`]: open/recovery, the append entry points and the read API.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::{AppendError, OpenError, ReadError};
use crate::format::{
    INDEX_EXT, RECORD_PREFIX_LEN, SEGMENT_HEADER_LEN, body_len_of, decode_record,
    decode_segment_header, index_file_name, newer_format_version, parse_segment_file_name,
    record_len, segment_file_name,
};
use crate::index::{
    Checkpoint, Entry, IdRun, Index, Location, REGISTRY_FILE_NAME, SegmentFile, checkpoint_source,
    decode_registry, read_checkpoint, sort_id_pairs,
};
use crate::options::{
    APPEND_SIZE_LIMIT_BYTES, EVENT_TYPE_LEN_MAX, Options, READ_LIMIT_MAX, STREAM_NAME_LEN_MAX,
};
use crate::scan::{TailVerdict, classify_tail, is_zero_range, scan_segment};
use crate::types::{
    CommitNotice, Direction, EventId, ExpectedVersion, NewEvent, OrgFilter, OrgId, OrgStats,
    Recorded, RecoveryReport, StorageStats, StoredEvent, TruncatedTail,
};
use crate::writer::{
    AppendChain, AppendRequest, Completion, Done, Request, TEMP_SUFFIX, Writer, create_segment,
    sync_dir, write_checkpoint, write_registry,
};

/// Name of the lock file inside the log directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Called after each batch becomes visible.
pub type CommitListener = Arc<dyn Fn(CommitNotice) + Send + Sync>;

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: Options,
    pub index: RwLock<Index>,
    pub listener: RwLock<Option<CommitListener>>,
    pub recovery: RecoveryReport,
    pub checkpoint_failures: AtomicU64,
    pub writer_failure: Mutex<Option<String>>,
    /// Jobs for the background indexer thread (`None` once stopping).
    pub indexer: Mutex<Option<Sender<IndexJob>>>,
    pub stopping: AtomicBool,
    /// Serializes writes of the stream registry file.
    pub registry_write: Mutex<()>,
    /// The writer thread's id (to detect a handle dropped from inside a callback).
    pub writer_thread: std::sync::OnceLock<std::thread::ThreadId>,
    /// The acknowledging thread's id, once it started (see [`crate::complete`]).
    pub completer_thread: Arc<std::sync::OnceLock<std::thread::ThreadId>>,
    // The directory lock lives as long as any thread that uses the files (the writer and
    // indexer hold `Shared` until they exit); the OS releases it when this is dropped.
    _lock: File,
}

/// Work for the background indexer thread.
pub(crate) enum IndexJob {
    /// Write checkpoints for these sealed segments (they had none at open).
    Checkpoints(Vec<u64>),
    /// The writer sealed the segment starting at this position: sort its ids, checkpoint it.
    Sealed(u64),
    /// Merge the ids of sealed segments into the global id run.
    Merge,
}

impl Shared {
    pub fn signal_indexer(&self, job: IndexJob) {
        if let Some(tx) = self
            .indexer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(job);
        }
    }
}

fn run_indexer(shared: &Shared, rx: mpsc::Receiver<IndexJob>) {
    while let Ok(job) = rx.recv() {
        match job {
            IndexJob::Checkpoints(firsts) => write_missing_checkpoints(shared, &firsts),
            IndexJob::Sealed(first) => seal_segment(shared, first),
            IndexJob::Merge => merge_ids(shared),
        }
    }
}

/// The page cache keeps the active segment and the last [`Options::cached_sealed_segments`]
/// sealed ones (default 1): when a segment is sealed (found in the index by `position`), the
/// one that many places before it is dropped from the cache (its pages are clean: the roll
/// synced it). An append-only log written at full speed would otherwise fill the cache with pages
/// read rarely, and every new page would be one the kernel must find: on a VM, a
/// never-touched page costs the host a fault, and writing 1 GiB into fresh page cache took
/// 2.6 s of CPU here against 0.21 s into pages freed just before. PostgreSQL does the same
/// with its WAL segments. Reads of older events go to the disk (one `pread` each, sequential
/// for catch-up). Best effort: the advice failing changes nothing.
fn uncache_sealed(shared: &Shared, position: impl Fn(&Index) -> Option<usize>) {
    let keep = shared.options.cached_sealed_segments as usize;
    let dropped = {
        let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
        let Some(at) = position(&index).and_then(|pos| pos.checked_sub(keep)) else {
            return;
        };
        index.segments[at].file.clone()
    };
    let _ = rustix::fs::fadvise(&dropped.file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Merges the ids of sealed segments into the recent run, or, once that would pass a quarter
/// of the main run, the recent run and them into the main run; outside any lock, then swaps the
/// result in under the write lock (lookups stay correct throughout: unmerged segments are
/// searched one by one until then). Rewriting one run of every id at each roll made the
/// indexer's work grow with the log (at 2.6 M events it took a core's worth of time from the
/// writer, slowing appends by a third); now an id is rewritten a bounded number of times on
/// average (the main run grows by at least a quarter between rewrites).
fn merge_ids(shared: &Shared) {
    let (main, recent, plan, generation, min) = {
        let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
        (
            index.ids.clone(),
            index.recent_ids.clone(),
            index.merge_plan(),
            index.retention_generation,
            index.first_position(),
        )
    };
    if plan.is_empty() {
        return;
    }
    let planned: usize = plan.iter().map(|(_, ids)| ids.keys.len()).sum();
    let into_main = (recent.len() + planned) * 4 > main.len();
    let bases: Vec<&IdRun> = if into_main {
        vec![&main, &recent]
    } else {
        vec![&recent]
    };
    let stop = || shared.stopping.load(Ordering::Relaxed);
    let Some(run) = IdRun::merge(&bases, &plan, min, &stop) else {
        return;
    };
    let merged: Vec<u64> = plan.iter().map(|(first, _)| *first).collect();
    drop(bases);
    drop(plan);
    drop(main);
    drop(recent);
    let mut index = shared.index.write().unwrap_or_else(PoisonError::into_inner);
    index.install_merged(run, &merged, generation, into_main);
}

/// An open event log. `Send + Sync`: share it with `Arc` and call it from any thread.
/// Dropping the last handle (or [`EventLog::close`]) stops the writer after the queued appends
/// and writes an index checkpoint.
pub struct EventLog {
    shared: Arc<Shared>,
    tx: Sender<Request>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Writes checkpoints for sealed segments that open had to scan (off the open path).
    indexer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (creating if needed) the log in `dir`, running recovery. Fails with
    /// [`OpenError::Locked`] if another `EventLog` holds the directory.
    pub fn open(
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<(EventLog, RecoveryReport), OpenError> {
        let started = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        options
            .validate()
            .map_err(|detail| OpenError::InvalidOptions { detail })?;
        fs::create_dir_all(&dir).map_err(|e| OpenError::io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        let mut report = RecoveryReport::default();
        let (index, mut active) = recover(&dir, &mut report)?;
        report.duration = started.elapsed();
        report.last_global_position = index.last_position;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            options,
            index: RwLock::new(index),
            listener: RwLock::new(None),
            recovery: report.clone(),
            checkpoint_failures: AtomicU64::new(0),
            writer_failure: Mutex::new(None),
            indexer: Mutex::new(None),
            stopping: AtomicBool::new(false),
            registry_write: Mutex::new(()),
            writer_thread: std::sync::OnceLock::new(),
            completer_thread: Arc::default(),
            _lock: lock,
        });
        let writer = Writer::new(shared.clone(), rx, active.file, active.first, active.len);
        let handle = std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| OpenError::io(&dir, e))?;
        let (itx, irx) = mpsc::channel();
        let bg_shared = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("eventlog-indexer".into())
            .spawn(move || run_indexer(&bg_shared, irx))
            .map_err(|e| OpenError::io(&dir, e))?;
        // Checkpoints first: merging frees the per-segment id runs they are written from.
        let _ = itx.send(IndexJob::Checkpoints(std::mem::take(
            &mut active.missing_checkpoints,
        )));
        let _ = itx.send(IndexJob::Merge);
        *shared
            .indexer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(itx);
        let log = EventLog {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
            indexer: Mutex::new(Some(indexer)),
        };
        Ok((log, report))
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends `events` to one stream atomically and waits for the outcome (in `Always` mode:
    /// until the batch is durable).
    pub fn append(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_with(
            org,
            stream,
            expected,
            events,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Like [`EventLog::append`] but returns at once; `done` is called exactly once with the
    /// outcome, on the writer or the acknowledging thread (or on this thread for requests
    /// rejected up front). It must be quick and must not block (e.g. send on a oneshot
    /// channel).
    pub fn append_with(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        done: Done,
    ) {
        self.submit(org, stream, expected, events, Completion::new(done));
    }

    /// Like [`EventLog::append_with`], as the next append of `chain`: it is written only if
    /// every earlier append of the chain succeeded (otherwise it fails with
    /// [`AppendError::EarlierInChainFailed`] and nothing of it is written). Appends of a chain
    /// submitted one after the other, without waiting, still share group commits; what a
    /// chain rules out is a later one reaching the log while an earlier one failed (a full
    /// disk that frees up in between, a failed `fdatasync`), which would put them in the
    /// log out of order once the earlier one is retried.
    #[allow(clippy::too_many_arguments)]
    pub fn append_chained(
        &self,
        chain: &AppendChain,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        done: Done,
    ) {
        self.submit(
            org,
            stream,
            expected,
            events,
            Completion::chained(done, chain),
        );
    }

    fn submit(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        done: Completion,
    ) {
        let encoded_len = match validate(&self.shared.options, stream, &events) {
            Ok(n) => n,
            Err(e) => return done.complete(Err(e)),
        };
        let req = AppendRequest {
            org,
            stream: stream.to_owned(),
            expected,
            events,
            encoded_len,
            done,
        };
        // If the writer is gone the request comes back and its Completion reports Closed.
        let _ = self.tx.send(Request::Append(req));
    }

    /// Sets (replacing any previous) the function called after each batch becomes visible.
    /// It runs on the writer thread: keep it short.
    pub fn set_commit_listener(&self, listener: CommitListener) {
        *self
            .shared
            .listener
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The event with this id, if it is in the (retained part of the) log.
    pub fn get(&self, id: EventId) -> Result<Option<StoredEvent>, ReadError> {
        let candidates = self.index().id_candidates(&id);
        for loc in candidates {
            let ev = read_at_location(&loc)?;
            if ev.id == id {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// The event at a global position, if retained.
    pub fn get_by_position(&self, position: u64) -> Result<Option<StoredEvent>, ReadError> {
        let loc = self.index().location(position);
        loc.map(|l| read_at_location(&l)).transpose()
    }

    /// Events of `org` with org position `> after_org_position`, in org-position order, at most
    /// `limit` (capped at [`READ_LIMIT_MAX`]), optionally filtered by type and/or stream.
    pub fn read_org(
        &self,
        org: OrgId,
        after_org_position: u64,
        limit: usize,
        filter: OrgFilter<'_>,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        self.read_org_within(org, after_org_position, limit, filter, usize::MAX)
    }

    /// [`EventLog::read_org`] that stops after the event whose metadata and payload bring the
    /// read to `max_bytes` (at least one event): a page's memory bound when events are large.
    pub fn read_org_within(
        &self,
        org: OrgId,
        after_org_position: u64,
        limit: usize,
        filter: OrgFilter<'_>,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let locs = self.locate_org(org, after_org_position, limit, filter, FILTER_SCAN_CHUNK);
        read_within(&locs, max_bytes)
    }

    /// Where the events of [`EventLog::read_org`] are, walking at most `chunk` positions per
    /// hold of the index lock (see [`FILTER_SCAN_CHUNK`]).
    fn locate_org(
        &self,
        org: OrgId,
        after_org_position: u64,
        limit: usize,
        filter: OrgFilter<'_>,
        chunk: usize,
    ) -> Vec<Location> {
        let limit = limit.min(READ_LIMIT_MAX);
        let mut locs = Vec::new();
        let mut after = after_org_position;
        let mut until = None;
        loop {
            let (found, resume) = {
                let index = self.index();
                // The walk ends where the log ended when the read began: a read of a rare
                // type, resumed chunk after chunk, would otherwise chase the appends made
                // meanwhile and might never end.
                let until = *until.get_or_insert(index.last_position);
                let left = limit - locs.len();
                collect_org(&index, &org, after, left, filter, chunk, until)
            };
            locs.extend(found);
            match resume {
                Some(next) if locs.len() < limit => {
                    after = next;
                    // Lets the writer this read may have kept waiting take the lock first.
                    std::thread::yield_now();
                }
                _ => return locs,
            }
        }
    }

    /// Events of one stream starting at `from_version` (inclusive), forward or backward, at
    /// most `limit`. Backward from `u64::MAX` reads from the end.
    pub fn read_stream(
        &self,
        org: OrgId,
        stream: &str,
        from_version: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        self.read_stream_within(org, stream, from_version, direction, limit, usize::MAX)
    }

    /// [`EventLog::read_stream`] that stops at `max_bytes` as [`EventLog::read_org_within`].
    pub fn read_stream_within(
        &self,
        org: OrgId,
        stream: &str,
        from_version: u64,
        direction: Direction,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let limit = limit.min(READ_LIMIT_MAX);
        let locs = {
            let index = self.index();
            let Some(s) = index.stream(&org, stream) else {
                return Ok(Vec::new());
            };
            let n = s.positions.len() as u64;
            let mut idxs: Vec<u64> = Vec::new();
            if n > 0 && limit > 0 {
                match direction {
                    Direction::Forward => {
                        let start = from_version.max(s.first_version) - s.first_version;
                        idxs.extend((start..n).take(limit));
                    }
                    Direction::Backward => {
                        if from_version >= s.first_version {
                            let top = (from_version - s.first_version).min(n - 1);
                            idxs.extend((0..=top).rev().take(limit));
                        }
                    }
                }
            }
            idxs.iter()
                .filter_map(|i| s.positions.get(*i as usize))
                .filter_map(|p| index.location(p))
                .collect::<Vec<_>>()
        };
        read_within(&locs, max_bytes)
    }

    /// The stream's last version (0 when it has no events).
    pub fn stream_version(&self, org: OrgId, stream: &str) -> u64 {
        self.index().stream_version(&org, stream)
    }

    /// The last global position visible to readers.
    pub fn last_global_position(&self) -> u64 {
        self.index().last_position
    }

    pub fn org_stats(&self, org: OrgId) -> OrgStats {
        let index = self.index();
        let Some(o) = index.org(&org) else {
            return OrgStats::default();
        };
        let events = o.positions.len() as u64;
        OrgStats {
            events,
            bytes: o.bytes,
            streams: o.streams.len() as u64,
            first_org_position: if events > 0 { o.first_org_position } else { 0 },
            last_org_position: o.last_org_position(),
        }
    }

    /// Everything about the storage, for operators and tools. It walks the index (every
    /// stream and organization, for `index_memory_bytes`) under its read lock, which the
    /// writer needs to publish: milliseconds at a million streams, so not for a path any
    /// client can call often. Health checks use [`EventLog::writer_failure`].
    pub fn storage_stats(&self) -> StorageStats {
        let index = self.index();
        StorageStats {
            segments: index.segments.len(),
            bytes: index.segments.iter().map(|s| s.end_offset).sum(),
            events: index.events(),
            first_global_position: index.first_position(),
            last_global_position: index.last_position,
            index_memory_bytes: index.heap_bytes(),
            index_unmerged_segments: index.unmerged_segments(),
            last_recovery: self.shared.recovery.clone(),
            checkpoint_write_failures: self.shared.checkpoint_failures.load(Ordering::Relaxed),
            writer_failure: self
                .shared
                .writer_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Why the writer stopped, if it did (appends then fail until a restart). Takes no index
    /// lock: for health checks.
    pub fn writer_failure(&self) -> Option<String> {
        self.shared
            .writer_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The report of the recovery this log was opened with. Takes no index lock.
    pub fn last_recovery(&self) -> RecoveryReport {
        self.shared.recovery.clone()
    }

    /// Applies the retention policy now (it also runs after each segment roll). Returns the
    /// number of segments dropped.
    pub fn apply_retention(&self) -> Result<usize, AppendError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let req = Request::Retention(Box::new(move |n| {
            let _ = tx.send(n);
        }));
        self.tx.send(req).map_err(|_| AppendError::Closed)?;
        rx.recv().map_err(|_| AppendError::Closed)
    }

    /// Stops the writer after the queued appends, syncs and writes the index checkpoint.
    pub fn close(self) -> std::io::Result<()> {
        self.stop()
    }

    fn stop(&self) -> std::io::Result<()> {
        let me = std::thread::current().id();
        if self.shared.writer_thread.get() == Some(&me)
            || self.shared.completer_thread.get() == Some(&me)
        {
            // Dropped inside a callback on the writer (or acknowledging) thread: waiting for
            // the writer would wait for ourselves. Ask it to stop once the callback returns and
            // leave. The writer still seals the segments that the appends queued before the
            // stop fill, and lets the indexer go only after its last job (see
            // `Writer::run`); the directory lock is held until both threads are done.
            let (tx, _rx) = mpsc::channel();
            let _ = self.tx.send(Request::Shutdown(tx));
            self.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            self.indexer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            return Ok(());
        }
        let result = self.stop_writer();
        // Then the indexer: an unfinished merge is abandoned (the index is dropped anyway).
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared
            .indexer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let bg = self
            .indexer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(bg) = bg {
            let _ = bg.join();
        }
        result
    }

    fn stop_writer(&self) -> std::io::Result<()> {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel();
        let result = match self.tx.send(Request::Shutdown(tx)) {
            Ok(()) => rx.recv().unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        let _ = handle.join();
        result
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// How many positions a read of an organization's events walks per hold of the index's read
/// lock. The writer takes that lock to publish every group commit, and a type filter can skip
/// nearly all of an organization's events: reads of a rare type walking two million positions
/// each, one after the other, held the writer off for seconds (0–2 appends/s; `examples/
/// filtered_reads.rs`, docs/eventlog.md). Between chunks the lock is let go and the walk
/// resumes where it stopped. Small chunks and a yield in between, because std's lock lets a
/// reader that comes straight back take it again before the writer it just woke: with 4,096
/// positions per hold appends still fell to a few hundred a second, with 512 and the yield
/// they keep their rate.
const FILTER_SCAN_CHUNK: usize = 512;

/// The locations of up to `limit` events of `org` after org position `after` and at global
/// positions up to `until` that pass `filter`, walking at most `budget` positions; with the
/// org position to resume after when the budget ran out first.
fn collect_org(
    index: &Index,
    org: &OrgId,
    after: u64,
    limit: usize,
    filter: OrgFilter<'_>,
    budget: usize,
    until: u64,
) -> (Vec<Location>, Option<u64>) {
    let mut out = Vec::new();
    let Some(o) = index.org(org) else {
        return (out, None);
    };
    let start = after.saturating_add(1).max(o.first_org_position) - o.first_org_position;
    let Ok(start) = usize::try_from(start) else {
        return (out, None);
    };
    let Some(first_pos) = o.positions.get(start) else {
        return (out, None);
    };
    let type_id = match filter.event_type {
        Some(t) => match index.type_id(t) {
            Some(id) => Some(id),
            None => return (out, None),
        },
        None => None,
    };
    let type_ok = |p: u64| type_id.is_none_or(|t| index.type_of(p) == Some(t));
    let budget = budget.max(1);
    if let Some(stream) = filter.stream {
        let Some(s) = index.stream(org, stream) else {
            return (out, None);
        };
        let mut i = s.positions.lower_bound(first_pos);
        let mut walked = 0;
        while out.len() < limit {
            let Some(p) = s.positions.get(i).filter(|p| *p <= until) else {
                break;
            };
            if walked == budget {
                // The org position of the last one walked (a stream's positions are some of
                // its organization's).
                let last = s.positions.get(i - 1).unwrap_or(p);
                let at = o.positions.lower_bound(last) as u64;
                return (out, Some(o.first_org_position + at));
            }
            walked += 1;
            if type_ok(p)
                && let Some(l) = index.location(p)
            {
                out.push(l);
            }
            i += 1;
        }
    } else {
        let mut i = start;
        while out.len() < limit {
            let Some(p) = o.positions.get(i).filter(|p| *p <= until) else {
                break;
            };
            if i - start == budget {
                return (out, Some(o.first_org_position + i as u64 - 1));
            }
            if type_ok(p)
                && let Some(l) = index.location(p)
            {
                out.push(l);
            }
            i += 1;
        }
    }
    (out, None)
}

/// Reads and fully verifies the record at `loc`.
/// Reads the events at `locs` in order, stopping after the one that brings their metadata and
/// payload to `max_bytes` (the first is always read).
fn read_within(locs: &[Location], max_bytes: usize) -> Result<Vec<StoredEvent>, ReadError> {
    let mut events = Vec::with_capacity(locs.len());
    let mut bytes = 0usize;
    for loc in locs {
        let event = read_at_location(loc)?;
        bytes = bytes.saturating_add(event.metadata.len() + event.payload.len());
        events.push(event);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(events)
}

pub(crate) fn read_at_location(loc: &Location) -> Result<StoredEvent, ReadError> {
    let f = &loc.file;
    let corrupt = |detail: String| ReadError::Corrupt {
        segment: f.path.clone(),
        offset: loc.offset,
        detail,
    };
    let io = |source| ReadError::Io {
        segment: f.path.clone(),
        source,
    };
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    f.file.read_exact_at(&mut prefix, loc.offset).map_err(io)?;
    let body = body_len_of(&prefix).map_err(|e| corrupt(e.to_string()))?;
    let mut buf = vec![0u8; RECORD_PREFIX_LEN + body];
    buf[..RECORD_PREFIX_LEN].copy_from_slice(&prefix);
    f.file
        .read_exact_at(
            &mut buf[RECORD_PREFIX_LEN..],
            loc.offset + RECORD_PREFIX_LEN as u64,
        )
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt("record runs past the end of the segment".into())
            } else {
                io(e)
            }
        })?;
    let r = decode_record(&buf).map_err(|e| corrupt(e.to_string()))?;
    if r.global_position != loc.position {
        return Err(corrupt(format!(
            "record has global position {}, the index expected {}",
            r.global_position, loc.position
        )));
    }
    Ok(StoredEvent {
        id: r.event_id,
        global_position: r.global_position,
        org_position: r.org_position,
        org: r.org,
        stream: r.stream.to_owned(),
        stream_version: r.stream_version,
        event_type: r.event_type.to_owned(),
        timestamp_micros: r.timestamp_micros,
        metadata: r.metadata.to_vec(),
        payload: r.payload.to_vec(),
    })
}

/// Checks an append's shape and limits; returns its encoded size.
fn validate(options: &Options, stream: &str, events: &[NewEvent]) -> Result<usize, AppendError> {
    if events.is_empty() {
        return Err(AppendError::EmptyBatch);
    }
    if events.len() > options.batch_max {
        return Err(AppendError::BatchTooLarge {
            count: events.len(),
            max: options.batch_max,
        });
    }
    if stream.is_empty() {
        return Err(AppendError::EmptyStreamName);
    }
    if stream.len() > STREAM_NAME_LEN_MAX {
        return Err(AppendError::StreamNameTooLong {
            len: stream.len(),
            max: STREAM_NAME_LEN_MAX,
        });
    }
    let mut ids = HashSet::with_capacity(events.len());
    let mut total = 0usize;
    for ev in events {
        if ev.event_type.is_empty() {
            return Err(AppendError::EmptyEventType);
        }
        if ev.event_type.len() > EVENT_TYPE_LEN_MAX {
            return Err(AppendError::EventTypeTooLong {
                len: ev.event_type.len(),
                max: EVENT_TYPE_LEN_MAX,
            });
        }
        let size = ev.metadata.len() + ev.payload.len();
        if size > options.event_size_max_bytes {
            return Err(AppendError::EventTooLarge {
                size,
                max: options.event_size_max_bytes,
            });
        }
        if !ids.insert(ev.id) {
            return Err(AppendError::DuplicateIdInBatch { id: ev.id });
        }
        total += record_len(
            stream.len(),
            ev.event_type.len(),
            ev.metadata.len(),
            ev.payload.len(),
        );
    }
    if total > APPEND_SIZE_LIMIT_BYTES {
        return Err(AppendError::AppendTooLarge {
            size: total,
            max: APPEND_SIZE_LIMIT_BYTES,
        });
    }
    Ok(total)
}

/// A fresh, practically unique registry epoch (time, process id and an address mixed).
pub(crate) fn new_epoch() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ (&raw const local as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).max(1)
}

/// How long open retries a held lock: a process that forks (e.g. to run a child) shares
/// every open file description, and so briefly the lock, until its child execs.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE_NAME);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::io(&path, e))?;
    let started = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_RETRY => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(OpenError::io(&path, e)),
        }
    }
}

pub(crate) struct ActiveSegment {
    pub file: File,
    pub first: u64,
    pub len: u64,
    /// First positions of sealed segments that had no valid checkpoint.
    pub missing_checkpoints: Vec<u64>,
}

fn write_missing_checkpoints(shared: &Shared, firsts: &[u64]) {
    if firsts.is_empty() {
        return;
    }
    // The registry first: the checkpoints name streams by registry id.
    if write_registry(shared).is_err() {
        shared.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        return;
    }
    for first in firsts {
        let (source, (keys, slots)) = {
            let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
            let pos = index
                .segments
                .iter()
                .position(|s| s.first_position == *first);
            // Gone already (retention): nothing to do.
            let Some(pos) = pos else { continue };
            (checkpoint_source(&index, pos), index.segment_ids(pos))
        };
        let bytes = source.map(|src| src.encode(&keys, &slots));
        if write_checkpoint(&shared.dir, *first, &bytes).is_err() {
            shared.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// After a roll: the sealed segment's ids leave their hash map for sorted vectors, then the
/// stream registry and the segment's checkpoint are written. The index lock is held only to
/// copy out what these need and to install the sorted ids, so the writer (which needs the
/// write lock to publish) is not held up by the sorting, encoding and fsyncs.
fn seal_segment(shared: &Shared, first: u64) {
    let position = |index: &Index| {
        index
            .segments
            .iter()
            .position(|s| s.first_position == first)
    };
    uncache_sealed(shared, position);
    let (pairs, source) = {
        let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
        // Gone already (retention) or already sorted: nothing to do.
        let Some(pos) = position(&index) else { return };
        if !index.segments[pos].has_recent_ids() {
            return;
        }
        (
            index.segments[pos].id_pairs(),
            checkpoint_source(&index, pos),
        )
    };
    let (keys, slots) = sort_id_pairs(pairs);
    let bytes = source.map(|src| src.encode(&keys, &slots));
    {
        let mut index = shared.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pos) = position(&index) {
            index.segments[pos].set_sorted_ids((keys, slots));
        }
    }
    // The registry first: the checkpoint names streams by registry id.
    let written =
        write_registry(shared).and_then(|()| write_checkpoint(&shared.dir, first, &bytes));
    if written.is_err() {
        shared.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
    }
    // Retention may have dropped the segment meanwhile (and deleted its checkpoint before
    // this one was written): no checkpoint outlives its segment.
    let gone = position(&shared.index.read().unwrap_or_else(PoisonError::into_inner)).is_none();
    if gone {
        let _ = fs::remove_file(shared.dir.join(index_file_name(first)));
    }
}

/// Whether `dir` holds a segment file (a missing directory holds none), without opening or
/// creating anything: a start uses it to tell an empty or unmounted log directory.
pub fn holds_segments(dir: &Path) -> Result<bool, OpenError> {
    if !dir.exists() {
        return Ok(false);
    }
    Ok(!list_segments(dir)?.is_empty())
}

/// Segment files of `dir`, sorted by first position.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| OpenError::io(dir, e))? {
        let entry = entry.map_err(|e| OpenError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_segment_file_name) {
            segs.push((first, entry.path()));
        }
    }
    segs.sort();
    Ok(segs)
}

fn remove_stale_temp_files(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let ours = |n: &str| {
                (n.contains(&format!(".{INDEX_EXT}.")) && n.ends_with(TEMP_SUFFIX))
                    || n == crate::prepare::PREPARED_FILE_NAME
            };
            if name.to_str().is_some_and(ours) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Checkpoints of segments that no longer exist (retention dropped the segment while the
/// indexer was writing its checkpoint, before that was prevented).
fn remove_orphan_checkpoints(dir: &Path, segs: &[(u64, PathBuf)]) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(&format!(".{INDEX_EXT}")))
            .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        if segs.binary_search_by_key(&first, |(f, _)| *f).is_err() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Builds the index from checkpoints and segment scans, truncating a torn tail.
fn recover(dir: &Path, report: &mut RecoveryReport) -> Result<(Index, ActiveSegment), OpenError> {
    remove_stale_temp_files(dir);
    let mut segs = list_segments(dir)?;
    remove_orphan_checkpoints(dir, &segs);
    // A crash while creating a segment can leave a last file without a complete header.
    let mut recreate_at = 1;
    if let Some((first, path)) = segs.last().cloned() {
        let len = fs::metadata(&path)
            .map_err(|e| OpenError::io(&path, e))?
            .len();
        let mut header = vec![0u8; len.min(SEGMENT_HEADER_LEN) as usize];
        File::open(&path)
            .and_then(|f| f.read_exact_at(&mut header, 0))
            .map_err(|e| OpenError::io(&path, e))?;
        // (A header-only segment of a newer format is not a partial one: it is refused below.)
        let bad_header = decode_segment_header(&header).is_err_and(|_| len <= SEGMENT_HEADER_LEN)
            && newer_format_version(&header).is_none();
        if bad_header && segs.len() > 1 {
            fs::remove_file(&path).map_err(|e| OpenError::io(&path, e))?;
            let _ = fs::remove_file(dir.join(index_file_name(first)));
            report.removed_partial_segment = Some(path);
            segs.pop();
        } else if bad_header {
            // The only segment: recreate it below, at the position it was to start at (a
            // log retention trimmed must not start over at 1 and hand positions out again).
            fs::remove_file(&path).map_err(|e| OpenError::io(&path, e))?;
            report.removed_partial_segment = Some(path);
            segs.pop();
            recreate_at = first;
        }
    }
    if segs.is_empty() {
        let path = dir.join(segment_file_name(recreate_at));
        create_segment(dir, &path, recreate_at).map_err(|e| OpenError::io(&path, e))?;
        segs.push((recreate_at, path));
    }
    let mut index = Index::default();
    let mut registry = None;
    let count = segs.len();
    let mut missing_checkpoints = Vec::new();
    // Checkpoints are read and decoded on a second thread, up to 16 segments ahead (their big
    // arrays are mapped, so reading ahead holds little memory), while this one loads the
    // stream registry and then applies them: the two halves of a restart take about the same
    // time.
    std::thread::scope(|scope| -> Result<(), OpenError> {
        let (ptx, prx) = mpsc::sync_channel::<Option<Result<Checkpoint, String>>>(16);
        let firsts: Vec<u64> = segs.iter().map(|(first, _)| *first).collect();
        scope.spawn(move || {
            for first in firsts {
                let p = dir.join(index_file_name(first));
                let item = p.exists().then(|| read_checkpoint(&p));
                if ptx.send(item).is_err() {
                    return;
                }
            }
        });
        // The stream registry: stable ids for orgs and streams, used by the checkpoints.
        // Disposable while the log starts at position 1 (everything in it can be rebuilt
        // from the segments); not once retention dropped segments (see `RegistryLost`).
        let registry_path = dir.join(REGISTRY_FILE_NAME);
        let trimmed_from = segs.first().map_or(1, |(first, _)| *first);
        let lost = |detail: String| OpenError::RegistryLost {
            path: registry_path.clone(),
            first_position: trimmed_from,
            detail,
        };
        registry = match fs::read(&registry_path) {
            Ok(bytes) => match decode_registry(&bytes).and_then(|r| {
                index.preload_registry(&r)?;
                Ok(r)
            }) {
                Ok(r) => Some(r),
                Err(detail) if trimmed_from > 1 => return Err(lost(format!("damaged ({detail})"))),
                Err(_) => {
                    // Ignored: every checkpoint that needs it is rejected and rebuilt.
                    index = Index::default();
                    report.checkpoints_rejected.push(registry_path.clone());
                    let _ = fs::remove_file(&registry_path);
                    None
                }
            },
            Err(e) if trimmed_from > 1 => {
                return Err(lost(if e.kind() == std::io::ErrorKind::NotFound {
                    "missing".into()
                } else {
                    format!("unreadable ({e})")
                }));
            }
            Err(_) => None,
        };
        if registry.is_none() {
            index.registry_epoch = new_epoch();
        }
        for (i, (name_first, path)) in segs.iter().enumerate() {
            let is_last = i + 1 == count;
            let io = |e| OpenError::io(path, e);
            let read = File::open(path).map_err(io)?;
            let file_len = read.metadata().map_err(io)?.len();
            let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
            read.read_exact_at(&mut header, 0).map_err(io)?;
            let corrupt = |offset: u64, detail: String| OpenError::Corrupt {
                segment: path.clone(),
                offset,
                detail,
            };
            if let Some(version) = newer_format_version(&header) {
                return Err(OpenError::NewerFormat {
                    segment: path.clone(),
                    version,
                });
            }
            let first = decode_segment_header(&header).map_err(|d| corrupt(0, d))?;
            if first != *name_first {
                return Err(corrupt(0, format!("header says first position {first}")));
            }
            if i > 0 && first != index.last_position + 1 {
                return Err(corrupt(
                    0,
                    format!(
                        "segment starts at position {first} but the previous one ends at {} \
                         (a segment file is missing or out of place)",
                        index.last_position
                    ),
                ));
            }
            if i == 0 {
                index.last_position = first - 1;
            }
            let sf = Arc::new(SegmentFile {
                path: path.clone(),
                first_position: first,
                file: read,
            });
            index.push_segment(sf.clone(), SEGMENT_HEADER_LEN);
            report.segments += 1;
            // 1. The checkpoint, if it is valid and matches the segment.
            let cp_path = dir.join(index_file_name(first));
            let mut from_checkpoint = false;
            if let Some(cp) = prx.recv().ok().flatten() {
                match load_checkpoint(&mut index, &sf, file_len, cp) {
                    Ok(records) => {
                        report.segments_from_checkpoint += 1;
                        report.records_from_checkpoint += records;
                        from_checkpoint = true;
                    }
                    Err(_) => {
                        report.checkpoints_rejected.push(cp_path.clone());
                        let _ = fs::remove_file(&cp_path);
                    }
                }
            }
            // 2. Scan what the checkpoint does not cover. (A sealed segment's ids are sorted
            // once its scan ends: see `SegIndex::bulk_ids`.)
            index.segments[i].bulk_ids = !is_last;
            let start = index.segments[i].end_offset;
            let res = scan_segment(
                &sf.file,
                start,
                file_len,
                index.last_position + 1,
                |off, r| {
                    index.push(&Entry {
                        position: r.global_position,
                        org_position: r.org_position,
                        stream_version: r.stream_version,
                        timestamp_micros: r.timestamp_micros,
                        id: r.event_id,
                        org: r.org,
                        stream: r.stream,
                        event_type: r.event_type,
                        offset: off as u32,
                        len: r.len as u32,
                        crc: r.crc,
                    })
                },
            )
            .map_err(io)?;
            report.records_scanned += res.records;
            report.bytes_scanned += res.good_end - start;
            if let Some((off, why)) = res.rejected {
                return Err(corrupt(off, why));
            }
            if let Some((bad_off, why)) = res.bad {
                if !is_last {
                    return Err(corrupt(bad_off, format!("{why} (in a sealed segment)")));
                }
                let truncate = |len: u64| -> Result<(), OpenError> {
                    let w = OpenOptions::new().write(true).open(path).map_err(io)?;
                    w.set_len(len).map_err(io)?;
                    w.sync_all().map_err(io)
                };
                if is_zero_range(&sf.file, res.good_end, file_len).map_err(io)? {
                    // Space the writer preallocated: nothing was lost.
                    truncate(res.good_end)?;
                    report.trimmed_zero_bytes = file_len - res.good_end;
                } else {
                    let verdict = classify_tail(&sf.file, bad_off, file_len, res.last_position);
                    if let TailVerdict::Corrupt { later_record_at } = verdict.map_err(io)? {
                        return Err(corrupt(
                            bad_off,
                            format!(
                                "{why}; a valid record written later follows at byte \
                                 {later_record_at}, so this is not a torn tail"
                            ),
                        ));
                    }
                    truncate(res.good_end)?;
                    report.truncated = Some(TruncatedTail {
                        segment: path.clone(),
                        offset: res.good_end,
                        truncated_bytes: file_len - res.good_end,
                        reason: format!("at byte {bad_off}: {why}"),
                    });
                }
            }
            if !is_last && !from_checkpoint {
                missing_checkpoints.push(index.segments[i].first_position);
            }
            if !is_last && index.segments[i].has_recent_ids() {
                // Scanned records of a sealed segment: move their ids into a sorted run.
                let ids = index.segments[i].sorted_ids();
                index.segments[i].set_sorted_ids(ids);
            }
            index.segments[i].bulk_ids = false;
        }
        Ok(())
    })?;
    index.flush_deferred();
    // The registry carries on the numbers of streams and organizations whose events
    // retention dropped. In a log that still starts at 1 nothing was dropped: the segments
    // are the truth, and a registry naming more (written from events a power loss then took
    // in `never`/`interval_ms` mode, or restored newer than the segments) is ignored.
    if let Some(r) = registry.as_ref().filter(|_| !index.starts_at_one) {
        index.finish_registry(r);
    }
    index.shrink();
    let Some(last) = index.segments.last() else {
        return Err(OpenError::Corrupt {
            segment: dir.to_path_buf(),
            offset: 0,
            detail: "no segment".into(),
        });
    };
    let path = last.file.path.clone();
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::io(&path, e))?;
    let len = file.metadata().map_err(|e| OpenError::io(&path, e))?.len();
    if len != last.end_offset {
        return Err(OpenError::Corrupt {
            segment: path,
            offset: last.end_offset,
            detail: format!(
                "segment is {len} bytes but its records end at {}",
                last.end_offset
            ),
        });
    }
    // What the scan read may be only in the page cache (written by a process killed before
    // its `fdatasync`): synced before anything is answered from it, or a retried append
    // found as a duplicate (which syncs nothing) would be acknowledged for an event a power
    // loss could still take.
    file.sync_data().map_err(|e| OpenError::io(&path, e))?;
    let active = ActiveSegment {
        file,
        first: last.first_position,
        len,
        missing_checkpoints,
    };
    let _ = sync_dir(dir);
    Ok((index, active))
}

/// Loads a checkpoint into the (empty) last segment of `index`, after checking it matches the
/// segment file: its last covered record must be there with the recorded checksum.
fn load_checkpoint(
    index: &mut Index,
    sf: &SegmentFile,
    file_len: u64,
    cp: Result<Checkpoint, String>,
) -> Result<u64, String> {
    let cp = cp?;
    if cp.first_position != sf.first_position || cp.end_offset > file_len {
        return Err("checkpoint does not match the segment".into());
    }
    check_checkpoint_tail(&sf.file, &cp)?;
    let records = cp.records as u64;
    index.apply_checkpoint(cp)?;
    Ok(records)
}

/// Whether the checkpoint's last record is the segment's record at that offset (its checksum,
/// position and end): what open checks before it trusts a checkpoint, and `verify` with it.
pub(crate) fn check_checkpoint_tail(file: &File, cp: &Checkpoint) -> Result<(), String> {
    if let Some(off) = cp.last_offset() {
        let mut prefix = [0u8; RECORD_PREFIX_LEN];
        file.read_exact_at(&mut prefix, off)
            .map_err(|e| e.to_string())?;
        let body = body_len_of(&prefix).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; RECORD_PREFIX_LEN + body];
        file.read_exact_at(&mut buf, off)
            .map_err(|e| e.to_string())?;
        let r = decode_record(&buf).map_err(|e| e.to_string())?;
        let expected_pos = cp.first_position + cp.records as u64 - 1;
        if r.crc != cp.last_crc
            || r.global_position != expected_pos
            || off + r.len as u64 != cp.end_offset
        {
            return Err("checkpoint's last record does not match the segment".into());
        }
    } else if cp.end_offset != SEGMENT_HEADER_LEN {
        return Err("empty checkpoint with a non-empty extent".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent};

    /// What `/readyz` and `/stats` ask (any client may call them often) takes no index lock:
    /// answered while the writer's lock is held. (`storage_stats` walked every stream under
    /// the read lock; a loop of `/readyz` calls at a million streams held appends off.)
    #[test]
    fn health_facts_take_no_index_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        let log = std::sync::Arc::new(log);
        let held = log.shared.index.write().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let asking = log.clone();
        std::thread::spawn(move || {
            let facts = (
                asking.writer_failure(),
                asking.last_recovery().truncated.is_none(),
            );
            let _ = tx.send(facts);
        });
        let facts = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        assert_eq!(
            facts,
            Ok((None, true)),
            "answered while the index lock was held"
        );
    }

    /// A read walking its positions a few at a time, letting the index lock go in between,
    /// finds exactly what one walk in a single hold finds, whatever the filter, the start and
    /// the page size.
    #[test]
    fn reads_in_chunks_find_what_one_walk_finds() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        let org = |n: u8| OrgId([n; 16]);
        for n in 1..=120u64 {
            let stream = ["a", "b", "c"][(n % 3) as usize];
            let ty = if n % 11 == 0 {
                "rare"
            } else if n % 2 == 0 {
                "even"
            } else {
                "odd"
            };
            let o = if n % 4 == 0 { org(2) } else { org(1) };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.to_be_bytes());
            let event = NewEvent {
                id: EventId(id),
                event_type: ty.to_owned(),
                timestamp_micros: 1_700_000_000_000_000 + n as i64,
                metadata: b"{}".to_vec(),
                payload: b"{}".to_vec(),
            };
            log.append(o, stream, ExpectedVersion::Any, vec![event])
                .unwrap();
        }
        let positions = |locs: Vec<Location>| locs.iter().map(|l| l.position).collect::<Vec<_>>();
        let mut compared = 0;
        for event_type in [None, Some("rare"), Some("even"), Some("nope")] {
            for stream in [None, Some("a"), Some("c")] {
                let filter = OrgFilter { event_type, stream };
                for after in [0, 1, 7, 40, 89, 90, 200] {
                    for limit in [1, 3, 50, 1000] {
                        let whole =
                            positions(log.locate_org(org(1), after, limit, filter, usize::MAX));
                        for chunk in [1, 2, 5, 16] {
                            let chunked =
                                positions(log.locate_org(org(1), after, limit, filter, chunk));
                            assert_eq!(
                                chunked, whole,
                                "{filter:?} after {after} limit {limit} chunk {chunk}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 4 * 3 * 7 * 4 * 4);
        // A read sees the log as it ended when the read began: nothing appended after that
        // (here: before the test's read, positions past `until` stand for later appends).
        let index = log.index();
        let until = 60;
        let filter = OrgFilter {
            event_type: Some("rare"),
            stream: None,
        };
        let (found, resume) = collect_org(&index, &org(1), 0, 1000, filter, usize::MAX, until);
        assert_eq!(resume, None);
        let expected = (1..=until).filter(|n| n % 11 == 0 && n % 4 != 0).count();
        assert_eq!(found.len(), expected);
        assert!(found.iter().all(|l| l.position <= until));
        drop(index);
        let rare = positions(log.locate_org(
            org(1),
            0,
            1000,
            OrgFilter {
                event_type: Some("rare"),
                stream: None,
            },
            1,
        ));
        assert_eq!(
            rare.len(),
            (1..=120u64).filter(|n| n % 11 == 0 && n % 4 != 0).count()
        );
    }
}
