//! The single writer thread: group commit, append rules, segment rolling, retention.
//!
//! Appends arrive on a channel. The writer takes everything queued (up to
//! [`GROUP_COMMIT_BYTES_MAX`]), checks each append against the index plus the effects of the
//! appends before it in the same group, encodes the accepted ones into one buffer, writes it
//! with one `write` and makes it durable with one `fdatasync` (in `Always` mode), then
//! publishes the new records to the index and only then completes the appends.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::complete::Completer;
use crate::error::AppendError;
use crate::format::{
    RecordFields, SEGMENT_HEADER_LEN, decode_record_checked, encode_record, encode_segment_header,
    index_file_name, segment_file_name,
};
use crate::index::{
    Entry, REGISTRY_FILE_NAME, SegmentFile, encode_checkpoint, encode_registry, id_key,
};
use crate::log::{IndexJob, Shared, read_at_location};
use crate::options::{Durability, GROUP_COMMIT_BYTES_MAX, PREALLOCATE_CHUNK_BYTES};
use crate::prepare::{PreparedFile, Preparer};
use crate::types::{CommitNotice, EventId, ExpectedVersion, NewEvent, OrgId, Recorded};

/// Completion callback of an append.
pub type Done = Box<dyn FnOnce(Result<Vec<Recorded>, AppendError>) + Send>;

/// Calls its callback exactly once: with the result, or with `Closed` if dropped unused (e.g.
/// an append still queued when the writer stopped).
pub(crate) struct Completion {
    done: Option<Done>,
    /// The chain this append belongs to, and its place in it.
    chain: Option<(AppendChain, u64)>,
}

impl Completion {
    pub fn new(done: Done) -> Self {
        Completion {
            done: Some(done),
            chain: None,
        }
    }

    /// The next append of `chain` (numbered in submission order).
    pub fn chained(done: Done, chain: &AppendChain) -> Self {
        let place = chain.0.next.fetch_add(1, Ordering::Relaxed);
        Completion {
            done: Some(done),
            chain: Some((chain.clone(), place)),
        }
    }

    pub fn complete(mut self, r: Result<Vec<Recorded>, AppendError>) {
        if r.is_err() {
            self.break_chain();
        }
        if let Some(f) = self.done.take() {
            call_contained(|| f(r));
        }
    }

    /// Records that this append failed. Called on the writer thread as soon as that is
    /// known, before its acknowledgement is handed on, so the chain's later appends see it
    /// when they are prepared.
    pub fn break_chain(&self) {
        if let Some((chain, place)) = &self.chain {
            chain.0.first_failed.fetch_min(*place, Ordering::AcqRel);
        }
    }

    /// Whether an earlier append of this one's chain failed (a later one's failure does not
    /// count: that one came after).
    fn chain_broken(&self) -> bool {
        self.chain
            .as_ref()
            .is_some_and(|(chain, place)| chain.0.first_failed.load(Ordering::Acquire) < *place)
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(f) = self.done.take() {
            self.break_chain();
            call_contained(|| f(Err(AppendError::Closed)));
        }
    }
}

/// Appends that must reach the log in order or not at all: once one of them fails, the
/// writer refuses the later ones (`AppendError::EarlierInChainFailed`) instead of writing
/// them without it. See [`crate::EventLog::append_chained`].
#[derive(Clone, Default)]
pub struct AppendChain(Arc<ChainState>);

struct ChainState {
    /// The place the next append of the chain gets.
    next: AtomicU64,
    /// The place of the first append that failed (`u64::MAX`: none).
    first_failed: AtomicU64,
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            next: AtomicU64::new(0),
            first_failed: AtomicU64::new(u64::MAX),
        }
    }
}

impl AppendChain {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Runs a caller-supplied callback; a panic in it must not take the writer thread down.
fn call_contained(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

pub(crate) struct AppendRequest {
    pub org: OrgId,
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Encoded size of all records of this append.
    pub encoded_len: usize,
    pub done: Completion,
}

pub(crate) enum Request {
    Append(AppendRequest),
    Retention(Box<dyn FnOnce(usize) + Send>),
    Shutdown(std::sync::mpsc::Sender<io::Result<()>>),
}

/// Where the original of a duplicate event is.
#[derive(Clone, Copy)]
enum Original {
    Durable(Recorded),
    Pending { append: usize, event: usize },
}

struct PendingDup {
    done: Completion,
    originals: Vec<Original>,
}

struct PendingAppend {
    req: AppendRequest,
    recorded: Vec<Recorded>,
}

/// The appends of one write, with their effect on stream versions and org positions.
struct Commit {
    frame_start: u64,
    buf: Vec<u8>,
    appends: Vec<PendingAppend>,
    dups: Vec<PendingDup>,
    stream_versions: HashMap<(OrgId, String), u64>,
    org_positions: HashMap<OrgId, u64>,
    ids: HashMap<EventId, (usize, usize)>,
    next_position: u64,
}

impl Commit {
    fn new(frame_start: u64, next_position: u64) -> Self {
        Self::with_capacity(frame_start, next_position, &[])
    }

    /// Sized for `group` up front: growing the maps append by append rehashed them several
    /// times per group (measured: ~3 % of the writer's time at 64 writers).
    fn with_capacity(frame_start: u64, next_position: u64, group: &[AppendRequest]) -> Self {
        let events = group.iter().map(|a| a.events.len()).sum();
        let bytes = group.iter().map(|a| a.encoded_len).sum();
        Commit {
            frame_start,
            buf: Vec::with_capacity(bytes),
            appends: Vec::with_capacity(group.len()),
            dups: Vec::new(),
            stream_versions: HashMap::with_capacity(group.len()),
            org_positions: HashMap::new(),
            ids: HashMap::with_capacity(events),
            next_position,
        }
    }
    fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.dups.is_empty()
    }
}

enum Prepared {
    New { current_version: u64 },
    Duplicate(Vec<Original>),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    file: File,
    seg_first: u64,
    /// Bytes written to the active segment.
    len: u64,
    /// Bytes of the active segment known durable.
    durable_len: u64,
    /// File length: `len` plus zero-filled space written ahead (see `ensure_allocated`).
    allocated: u64,
    /// The file was cut back (a failed batch) and not synced since.
    cut_unsynced: bool,
    last_sync: Instant,
    failed: Option<String>,
    /// Appends in the previous group (drives the linger heuristic).
    last_group: usize,
    /// Zero-fills the next segment ahead of time (`Always` mode).
    preparer: Preparer,
    /// Acknowledges large groups on another thread.
    completer: Completer,
}

/// The zeros `Writer::ensure_allocated` writes, a piece at a time. A fresh 4 MiB buffer per
/// chunk was allocated, zeroed, faulted in and unmapped again (the last with a TLB flush on
/// every CPU) every time: ~1 % of the server's CPU under `spread`, whose events fill the
/// first, unprepared segment (docs/benchmarks.md, "2026-12-05, morning"). Never written, so
/// its pages are the kernel's shared zero page and cost no memory.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Longest a group waits for more appends (only `Always` mode fsyncs per group, but the wait
/// also batches writes in other modes).
const LINGER_MAX: Duration = Duration::from_micros(200);
/// Groups at most this large never linger (low concurrency: latency first).
const LINGER_MIN_GROUP: usize = 4;

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Request>,
        file: File,
        seg_first: u64,
        len: u64,
    ) -> Self {
        let preparer = Preparer::new(&shared.dir);
        let completer = Completer::new(shared.completer_thread.clone());
        Writer {
            preparer,
            completer,
            shared,
            rx,
            file,
            seg_first,
            len,
            durable_len: len,
            cut_unsynced: false,
            allocated: len,
            last_sync: Instant::now(),
            failed: None,
            last_group: 0,
        }
    }

    pub fn run(mut self) {
        let _ = self.shared.writer_thread.set(std::thread::current().id());
        let mut deferred: Option<Request> = None;
        loop {
            let req = match deferred.take() {
                Some(r) => r,
                None => match self.next_request() {
                    Some(r) => r,
                    None => {
                        // Every EventLog handle is gone without a shutdown: finish cleanly.
                        let _ = self.shutdown();
                        return;
                    }
                },
            };
            match req {
                Request::Append(a) => {
                    let mut group = vec![a];
                    let mut bytes = group[0].encoded_len;
                    let linger_until = Instant::now() + LINGER_MAX;
                    while bytes < GROUP_COMMIT_BYTES_MAX {
                        match self.rx.try_recv() {
                            Ok(Request::Append(a)) => {
                                bytes += a.encoded_len;
                                group.push(a);
                            }
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(TryRecvError::Disconnected) => break,
                            Err(TryRecvError::Empty) => {
                                // The appenders acknowledged by the previous batch are waking
                                // up to append again: wait a moment for them rather than
                                // paying a whole fsync for a fraction of them.
                                let lingering = self.last_group > LINGER_MIN_GROUP
                                    && group.len() < self.last_group / 2
                                    && Instant::now() < linger_until;
                                if !lingering {
                                    break;
                                }
                                std::thread::yield_now();
                            }
                        }
                    }
                    self.last_group = group.len();
                    self.process(group);
                }
                Request::Retention(done) => {
                    let n = self.apply_retention();
                    done(n);
                }
                Request::Shutdown(reply) => {
                    let r = self.shutdown();
                    // Deliver every acknowledgement still queued, then fail whatever appends
                    // are still waiting (their Completion reports Closed), in that order.
                    self.completer.stop();
                    while self.rx.try_recv().is_ok() {}
                    // No more index jobs: the indexer finishes the queued ones (e.g. sealed
                    // segments' checkpoints) and exits. (A handle dropped inside a callback
                    // does not wait for it; `EventLog::stop` takes it too, after this.)
                    self.shared
                        .indexer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    let _ = reply.send(r);
                    return;
                }
            }
        }
    }

    /// Waits for the next request; in `IntervalMs` mode, syncs when the interval elapses idle.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let interval = match self.shared.options.durability {
                Durability::IntervalMs(ms) if self.len > self.durable_len => ms,
                _ => return self.rx.recv().ok(),
            };
            let due = self.last_sync + Duration::from_millis(interval);
            let wait = due.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(r) => return Some(r),
                Err(RecvTimeoutError::Timeout) => self.periodic_sync(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn next_position(&self) -> u64 {
        self.shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_position
            + 1
    }

    fn process(&mut self, group: Vec<AppendRequest>) {
        let mut commit = Commit::with_capacity(self.len, self.next_position(), &group);
        // Which of the group's ids the log may hold already, all at once (see
        // `Index::mark_known_keys`): almost every id is new and then needs no lookup.
        let mut known = self.known_ids(&group);
        let mut next_event = 0;
        for req in group {
            let events = next_event..next_event + req.events.len();
            next_event = events.end;
            if let Some(f) = &self.failed {
                let err = AppendError::WriterFailed { detail: f.clone() };
                self.refuse(req.done, err);
                continue;
            }
            // An append never spans segments: roll first if it would not fit.
            let used = self.len + commit.buf.len() as u64;
            if used > SEGMENT_HEADER_LEN
                && used + req.encoded_len as u64 > self.shared.options.segment_size_bytes
            {
                let publishes = !commit.appends.is_empty();
                self.commit(std::mem::replace(&mut commit, Commit::new(0, 0)));
                if publishes {
                    // The index now holds this group's earlier appends, which `known`
                    // predates: the rest of the group looks every id up.
                    known.clear();
                }
                // That commit may have stopped the writer: then nothing rolls (a new segment
                // would start at the failed group's positions) and nothing more is written.
                if let Some(f) = &self.failed {
                    let err = AppendError::WriterFailed { detail: f.clone() };
                    self.refuse(req.done, err);
                    commit = Commit::new(self.len, self.next_position());
                    continue;
                }
                if let Err(e) = self.roll() {
                    self.on_storage_error(&e);
                    self.refuse(req.done, e);
                    commit = Commit::new(self.len, self.next_position());
                    continue;
                }
                commit = Commit::new(self.len, self.next_position());
            }
            // Checked here, after any roll above: a failed commit of this group's first part
            // may have failed an earlier append of the chain.
            if req.done.chain_broken() {
                self.refuse(req.done, AppendError::EarlierInChainFailed);
                continue;
            }
            match self.prepare(&req, &commit, known.get(events)) {
                Err(e) => self.refuse(req.done, e),
                Ok(Prepared::Duplicate(originals)) => {
                    if originals.iter().all(|o| matches!(o, Original::Durable(_))) {
                        let recs = originals
                            .iter()
                            .filter_map(|o| match o {
                                Original::Durable(r) => Some(*r),
                                Original::Pending { .. } => None,
                            })
                            .collect();
                        self.completer.complete(vec![(req.done, Ok(recs))]);
                    } else {
                        commit.dups.push(PendingDup {
                            done: req.done,
                            originals,
                        });
                    }
                }
                Ok(Prepared::New { current_version }) => {
                    let org_last = match commit.org_positions.get(&req.org) {
                        Some(p) => *p,
                        None => self
                            .shared
                            .index
                            .read()
                            .unwrap_or_else(PoisonError::into_inner)
                            .org_last_position(&req.org),
                    };
                    encode_append(&mut commit, req, current_version, org_last);
                }
            }
        }
        self.commit(commit);
    }

    /// For every event of `group`, in order: whether the log may hold its id already (`false`:
    /// it certainly does not). One read lock and one batched lookup for the whole group.
    fn known_ids(&self, group: &[AppendRequest]) -> Vec<bool> {
        let keys: Vec<u64> = group
            .iter()
            .flat_map(|a| a.events.iter().map(|e| id_key(&e.id)))
            .collect();
        let mut known = vec![false; keys.len()];
        self.shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .mark_known_keys(&keys, &mut known);
        known
    }

    /// Checks an append against the log and the pending commit: duplicates, expected version.
    /// `known`: per event, whether the log may hold its id (`None`: not known, look it up).
    fn prepare(
        &self,
        req: &AppendRequest,
        c: &Commit,
        known: Option<&[bool]>,
    ) -> Result<Prepared, AppendError> {
        let mut originals: Vec<Option<Original>> = Vec::with_capacity(req.events.len());
        for (i, ev) in req.events.iter().enumerate() {
            let in_log = known.is_none_or(|k| k[i]);
            originals.push(self.find_original(req, ev, c, in_log)?);
        }
        let found = originals.iter().filter(|o| o.is_some()).count();
        if found == 0 {
            let key = (req.org, req.stream.clone());
            let current = match c.stream_versions.get(&key) {
                Some(v) => *v,
                None => self
                    .shared
                    .index
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stream_version(&req.org, &req.stream),
            };
            let ok = match req.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => current == 0,
                ExpectedVersion::Exact(v) => current == v,
            };
            if !ok {
                return Err(AppendError::WrongExpectedVersion { current });
            }
            return Ok(Prepared::New {
                current_version: current,
            });
        }
        // Some ids exist: the whole batch must be an exact, contiguous repeat.
        let mut out = Vec::with_capacity(originals.len());
        let mut prev_version = None;
        for (ev, o) in req.events.iter().zip(&originals) {
            let Some(o) = *o else {
                // Some ids exist and some do not: name the first existing one.
                let existing = req.events.iter().zip(&originals).find(|(_, o)| o.is_some());
                let id = existing.map_or(ev.id, |(e, _)| e.id);
                return Err(AppendError::EventIdConflict { id });
            };
            let version = match o {
                Original::Durable(r) => r.stream_version,
                Original::Pending { append, event } => {
                    c.appends[append].recorded[event].stream_version
                }
            };
            if prev_version.is_some_and(|p: u64| p + 1 != version) {
                return Err(AppendError::EventIdConflict { id: ev.id });
            }
            prev_version = Some(version);
            out.push(o);
        }
        Ok(Prepared::Duplicate(out))
    }

    /// The existing event with this id, if any; an error if it differs in content. The log is
    /// searched only if `in_log` (it may hold the id); the pending commit always is.
    fn find_original(
        &self,
        req: &AppendRequest,
        ev: &NewEvent,
        c: &Commit,
        in_log: bool,
    ) -> Result<Option<Original>, AppendError> {
        if let Some((a, e)) = c.ids.get(&ev.id) {
            let p = &c.appends[*a];
            let o = &p.req.events[*e];
            let same = p.req.org == req.org
                && p.req.stream == req.stream
                && o.event_type == ev.event_type
                && o.metadata == ev.metadata
                && o.payload == ev.payload;
            if !same {
                return Err(AppendError::EventIdConflict { id: ev.id });
            }
            return Ok(Some(Original::Pending {
                append: *a,
                event: *e,
            }));
        }
        if !in_log {
            return Ok(None);
        }
        let candidates = self
            .shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .id_candidates(&ev.id);
        for loc in candidates {
            let stored = read_at_location(&loc).map_err(|e| AppendError::Corrupt {
                detail: e.to_string(),
            })?;
            if stored.id != ev.id {
                continue;
            }
            let same = stored.org == req.org
                && stored.stream == req.stream
                && stored.event_type == ev.event_type
                && stored.metadata == ev.metadata
                && stored.payload == ev.payload;
            if !same {
                return Err(AppendError::EventIdConflict { id: ev.id });
            }
            return Ok(Some(Original::Durable(Recorded {
                id: stored.id,
                global_position: stored.global_position,
                org_position: stored.org_position,
                stream_version: stored.stream_version,
                timestamp_micros: stored.timestamp_micros,
                duplicate: true,
            })));
        }
        Ok(None)
    }

    fn hook_write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(h) = &self.shared.options.fault_hook
            && let Some((n, err)) = h.on_write(buf.len())
        {
            let _ = self.file.write_all_at(&buf[..n], offset);
            return Err(err);
        }
        self.file.write_all_at(buf, offset)
    }

    /// Makes sure the file already extends to `end` with zero-filled, synced space, so the
    /// per-batch `fdatasync` only flushes data blocks and not a new file size (measured on
    /// ext4 here: about 2,600 size-changing fdatasyncs/s against 6,800 overwriting ones).
    /// Zeros after the last record are not a torn tail; recovery trims them silently.
    fn ensure_allocated(&mut self, end: u64) -> io::Result<()> {
        // Only `Always` syncs every batch; elsewhere the zeros would just double the writes.
        if end <= self.allocated || self.shared.options.durability != Durability::Always {
            return Ok(());
        }
        let segment_size = self.shared.options.segment_size_bytes;
        let target = (end + PREALLOCATE_CHUNK_BYTES).min(segment_size.max(end));
        let mut offset = self.allocated;
        while offset < target {
            let n = (target - offset).min(ZEROS.len() as u64) as usize;
            self.hook_write_at(&ZEROS[..n], offset)?;
            offset += n as u64;
        }
        self.hook_sync()?;
        self.allocated = target;
        Ok(())
    }

    fn hook_sync(&mut self) -> io::Result<()> {
        if let Some(h) = &self.shared.options.fault_hook
            && let Some(err) = h.on_sync()
        {
            return Err(err);
        }
        self.file.sync_data()
    }

    /// A full disk: the space held by a segment prepared ahead goes back (see
    /// [`crate::prepare`]); the writes that failed for lack of it were retried once already.
    fn on_storage_error(&mut self, err: &AppendError) {
        if matches!(err, AppendError::StorageFull { .. }) {
            self.preparer.discard();
        }
    }

    /// Completes one append that did not reach a commit (refused, or the writer failed),
    /// through the completer, so it is never delivered before acknowledgements still queued
    /// there for earlier commits.
    fn refuse(&mut self, done: Completion, err: AppendError) {
        self.completer.complete(vec![(done, Err(err))]);
    }

    fn poison(&mut self, detail: String) {
        *self
            .shared
            .writer_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(detail.clone());
        self.failed = Some(detail);
    }

    /// Cuts the active segment back to `len` after a failed write or fsync. If even that
    /// fails, the writer stops (recovery on reopen sorts the file out).
    fn truncate_back(&mut self, len: u64, cause: &str) {
        match self.file.set_len(len) {
            Ok(()) => {
                self.len = len;
                self.allocated = len;
                self.durable_len = self.durable_len.min(len);
                // The cut is durable only with the next sync: a roll must not seal this
                // segment before (a sealed segment whose cut did not last, its failed batch
                // back after a crash, refused the next open or made `repair` set aside the
                // next segment's acknowledged events).
                self.cut_unsynced = true;
            }
            Err(e) => self.poison(format!("{cause}, then truncating the segment failed: {e}")),
        }
    }

    /// Writes, syncs (per durability mode), publishes and completes one commit.
    fn commit(&mut self, mut c: Commit) {
        if c.is_empty() {
            return;
        }
        let mut fsync = None;
        if !c.buf.is_empty() {
            let before = self.len;
            let mut written = self
                .ensure_allocated(before + c.buf.len() as u64)
                .and_then(|()| self.hook_write_at(&c.buf, before));
            if written.as_ref().is_err_and(is_no_space) && self.preparer.discard() {
                // The segment prepared ahead held space this write needed: it is gone now,
                // so write once more (over whatever part of the first try reached the file).
                written = self
                    .ensure_allocated(before + c.buf.len() as u64)
                    .and_then(|()| self.hook_write_at(&c.buf, before));
            }
            if let Err(e) = written {
                let err = AppendError::from_io(&e, "writing the segment");
                self.on_storage_error(&err);
                self.truncate_back(before, &err.to_string());
                fail_all(&mut self.completer, c, &err);
                return;
            }
            self.len += c.buf.len() as u64;
            if self.shared.options.durability == Durability::Always {
                let segment_size = self.shared.options.segment_size_bytes;
                if self.len >= segment_size / 2 {
                    self.preparer.request(segment_size);
                }
                let started = Instant::now();
                let synced = self.hook_sync();
                fsync = Some(started.elapsed());
                if let Err(e) = synced {
                    // Never retried as if it succeeded: the batch fails and its bytes are cut
                    // off, so the file is back to its last durable length.
                    let err = AppendError::from_io(&e, "fdatasync of the segment");
                    self.on_storage_error(&err);
                    let durable = self.durable_len;
                    self.truncate_back(durable, &err.to_string());
                    fail_all(&mut self.completer, c, &err);
                    return;
                }
                self.durable_len = self.len;
                self.cut_unsynced = false;
                self.last_sync = Instant::now();
            }
        }
        if let Err(why) = self.publish(&c) {
            let err = AppendError::WriterFailed {
                detail: why.clone(),
            };
            self.poison(why);
            fail_all(&mut self.completer, c, &err);
            return;
        }
        // Visible to readers now: tell the listener, then acknowledge (so when an append
        // returns, the listener has seen its commit).
        let mut orgs: Vec<(OrgId, u64)> = c.org_positions.iter().map(|(o, p)| (*o, *p)).collect();
        orgs.sort_unstable();
        let any_new = !c.appends.is_empty();
        let last = c.next_position - 1;
        if any_new {
            let listener = self
                .shared
                .listener
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(l) = listener {
                let notice = CommitNotice {
                    last_global_position: last,
                    orgs,
                    events: c.appends.iter().map(|a| a.recorded.len()).sum(),
                    fsync,
                };
                call_contained(|| l(notice));
            }
        }
        let mut outcomes = Vec::with_capacity(c.dups.len() + c.appends.len());
        for d in c.dups.drain(..) {
            let recs = d
                .originals
                .iter()
                .map(|o| match o {
                    Original::Durable(r) => *r,
                    Original::Pending { append, event } => Recorded {
                        duplicate: true,
                        ..c.appends[*append].recorded[*event]
                    },
                })
                .collect();
            outcomes.push((d.done, Ok(recs)));
        }
        for a in c.appends {
            outcomes.push((a.req.done, Ok(a.recorded)));
        }
        self.completer.complete(outcomes);
        if let Durability::IntervalMs(ms) = self.shared.options.durability
            && self.last_sync.elapsed() >= Duration::from_millis(ms)
        {
            self.periodic_sync();
        }
    }

    fn periodic_sync(&mut self) {
        if self.len == self.durable_len || self.failed.is_some() {
            self.last_sync = Instant::now();
            return;
        }
        match self.hook_sync() {
            Ok(()) => {
                self.durable_len = self.len;
                self.cut_unsynced = false;
            }
            // Acknowledged appends may not be durable and cannot be taken back: stop writing.
            Err(e) => self.poison(format!("periodic fdatasync failed: {e}")),
        }
        self.last_sync = Instant::now();
    }

    /// Adds the commit's records to the index (decoding them back from the write buffer).
    fn publish(&self, c: &Commit) -> Result<(), String> {
        let mut index = self
            .shared
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut p = 0usize;
        while p < c.buf.len() {
            let r =
                // Encoded by this thread a moment ago: no need to recompute the checksum.
                decode_record_checked(&c.buf[p..], false)
                    .map_err(|e| format!("encoded record invalid: {e}"))?;
            let offset = c.frame_start + p as u64;
            index.push(&Entry {
                position: r.global_position,
                org_position: r.org_position,
                stream_version: r.stream_version,
                timestamp_micros: r.timestamp_micros,
                id: r.event_id,
                org: r.org,
                stream: r.stream,
                event_type: r.event_type,
                offset: offset as u32,
                len: r.len as u32,
                crc: r.crc,
            })?;
            p += r.len;
        }
        Ok(())
    }

    /// Seals the active segment (sync + index checkpoint) and starts a new one.
    fn roll(&mut self) -> Result<(), AppendError> {
        if let Some(f) = &self.failed {
            return Err(AppendError::WriterFailed { detail: f.clone() });
        }
        if self.len > self.durable_len || self.allocated > self.len || self.cut_unsynced {
            // Sealed segments end exactly after their last record: trim the zero-filled space.
            let trimmed = if self.allocated > self.len {
                self.file.set_len(self.len)
            } else {
                Ok(())
            };
            if let Err(e) = trimmed.and_then(|()| self.hook_sync()) {
                let detail = format!("fdatasync before sealing the segment failed: {e}");
                self.poison(detail.clone());
                return Err(AppendError::WriterFailed { detail });
            }
            self.durable_len = self.len;
            self.allocated = self.len;
            self.cut_unsynced = false;
        }
        let first = self.next_position();
        let dir = self.shared.dir.clone();
        let path = dir.join(segment_file_name(first));
        // Once the new segment's file may exist under its name, a failed roll stops the
        // writer: appending on to the old segment would give positions that the orphan file
        // (empty, but with a valid header naming `first`) claims too, and the next open would
        // refuse the log. Stopped, the log reopens cleanly (an empty last segment).
        let (file, allocated) = match self.new_segment_file(&path, first) {
            Ok(created) => created,
            Err(e) => {
                let err = AppendError::from_io(&e, "creating a new segment");
                if path.exists() {
                    self.poison(format!("creating segment {} failed: {e}", path.display()));
                }
                return Err(err);
            }
        };
        // A read-only handle of its own: the writer's handle is write-only.
        let opened = match self.shared.options.fault_hook.as_ref() {
            Some(h) => h
                .on_open_new_segment()
                .map_or_else(|| File::open(&path), Err),
            None => File::open(&path),
        };
        let read = match opened {
            Ok(read) => read,
            Err(e) => {
                self.poison(format!("opening segment {} failed: {e}", path.display()));
                return Err(AppendError::from_io(&e, "opening segment"));
            }
        };
        let sealed_first = self.seg_first;
        {
            let mut index = self
                .shared
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let sf = SegmentFile {
                path,
                first_position: first,
                file: read,
            };
            let sealed_records = index.segments.last().map_or(0, |s| s.len());
            index.push_segment(Arc::new(sf), SEGMENT_HEADER_LEN);
            // The next segment will likely hold about as many records as this one.
            index.reserve_active_ids(sealed_records);
        }
        self.file = file;
        self.seg_first = first;
        self.len = SEGMENT_HEADER_LEN;
        self.durable_len = SEGMENT_HEADER_LEN;
        self.allocated = allocated;
        self.apply_retention();
        // Sorting the sealed segment's ids and writing its checkpoint (best effort: the index
        // is disposable) took 40-110 ms of the writer's time per roll; the indexer does both.
        self.shared.signal_indexer(IndexJob::Sealed(sealed_first));
        self.shared.signal_indexer(IndexJob::Merge);
        Ok(())
    }

    /// The file of the next segment and its length: the prepared one if it is ready (see
    /// [`crate::prepare`]), else a new file holding just the header.
    fn new_segment_file(&mut self, path: &Path, first: u64) -> io::Result<(File, u64)> {
        let dir = self.shared.dir.clone();
        if let Some(p) = self.preparer.take(self.shared.options.segment_size_bytes) {
            match install_prepared(&dir, &p, path, first) {
                Ok(()) => return Ok((p.file, p.len)),
                Err(Installed::NotRenamed) => {
                    let _ = std::fs::remove_file(&p.path);
                }
                Err(Installed::Renamed(e)) => return Err(e),
            }
        }
        create_segment(&dir, path, first).map(|f| (f, SEGMENT_HEADER_LEN))
    }

    /// Drops sealed segments that retention allows to drop. Returns how many.
    fn apply_retention(&mut self) -> usize {
        let r = self.shared.options.retention;
        if r.max_age.is_none() && r.max_total_bytes.is_none() {
            return 0;
        }
        let now_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut dropped = 0;
        loop {
            let drop = {
                let index = self
                    .shared
                    .index
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                if index.segments.len() < 2 {
                    false
                } else {
                    let total: u64 = index.segments.iter().map(|s| s.end_offset).sum();
                    let oldest = &index.segments[0];
                    let too_old = r.max_age.is_some_and(|age| {
                        let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
                        oldest.max_timestamp < now_micros.saturating_sub(age)
                    });
                    too_old || r.max_total_bytes.is_some_and(|max| total > max)
                }
            };
            if !drop {
                return dropped;
            }
            // Once a segment is gone, the registry is the only record of the last position of
            // an organization (and the last version of a stream) whose events were all in it:
            // without it a restart would hand those numbers out again. So it is written,
            // durably, before the first segment goes; if it cannot be, nothing is dropped.
            if dropped == 0 && write_registry(&self.shared).is_err() {
                self.shared
                    .checkpoint_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return 0;
            }
            let seg = self
                .shared
                .index
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .drop_first_segment();
            if let Some(seg) = seg {
                let first = seg.first_position;
                let _ = std::fs::remove_file(self.shared.dir.join(index_file_name(first)));
                let _ = std::fs::remove_file(&seg.file.path);
                let _ = sync_dir(&self.shared.dir);
                dropped += 1;
            }
        }
    }

    /// Clean stop: sync, then checkpoint the active segment so the next open is fast.
    fn shutdown(&mut self) -> io::Result<()> {
        self.preparer.stop();
        if self.failed.is_some() {
            return Ok(());
        }
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.allocated = self.len;
        }
        self.file.sync_all()?;
        self.durable_len = self.len;
        let cp = {
            let index = self
                .shared
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match index.segments.len().checked_sub(1) {
                Some(last) => encode_checkpoint(&index, last),
                None => return Ok(()),
            }
        };
        write_registry(&self.shared)?;
        write_checkpoint(&self.shared.dir, self.seg_first, &cp)
    }
}

fn is_no_space(e: &io::Error) -> bool {
    matches!(AppendError::from_io(e, ""), AppendError::StorageFull { .. })
}

/// Fails every append of a commit (in commit order with the acknowledgements before it).
fn fail_all(completer: &mut Completer, c: Commit, err: &AppendError) {
    let appends = c.appends.into_iter().map(|a| a.req.done);
    let dups = c.dups.into_iter().map(|d| d.done);
    completer.complete(appends.chain(dups).map(|d| (d, Err(err.clone()))).collect());
}

/// Encodes an accepted append into the commit buffer, assigning positions and versions.
fn encode_append(c: &mut Commit, req: AppendRequest, current_version: u64, org_last: u64) {
    let count = req.events.len() as u16;
    let mut org_pos = org_last;
    let mut recorded = Vec::with_capacity(req.events.len());
    let append_idx = c.appends.len();
    for (i, ev) in req.events.iter().enumerate() {
        let position = c.next_position;
        c.next_position += 1;
        org_pos += 1;
        let version = current_version + 1 + i as u64;
        encode_record(
            &mut c.buf,
            &RecordFields {
                global_position: position,
                org_position: org_pos,
                stream_version: version,
                timestamp_micros: ev.timestamp_micros,
                event_id: ev.id,
                org: req.org,
                frame_start: c.frame_start as u32,
                batch_index: i as u16,
                batch_count: count,
                stream: &req.stream,
                event_type: &ev.event_type,
                metadata: &ev.metadata,
                payload: &ev.payload,
            },
        );
        recorded.push(Recorded {
            id: ev.id,
            global_position: position,
            org_position: org_pos,
            stream_version: version,
            timestamp_micros: ev.timestamp_micros,
            duplicate: false,
        });
        c.ids.insert(ev.id, (append_idx, i));
    }
    c.org_positions.insert(req.org, org_pos);
    c.stream_versions.insert(
        (req.org, req.stream.clone()),
        current_version + req.events.len() as u64,
    );
    c.appends.push(PendingAppend { req, recorded });
}

/// Creates a segment file with its header, durably (file and directory synced). If the
/// directory cannot be synced the file stays (it may survive a crash under its name).
pub(crate) fn create_segment(dir: &Path, path: &Path, first: u64) -> io::Result<File> {
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)?;
    let res = f
        .write_all(&encode_segment_header(first))
        .and_then(|()| f.sync_all());
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(f)
}

/// Why a prepared file did not become the segment.
enum Installed {
    /// Still the temporary file: the caller removes it and creates the segment normally.
    NotRenamed,
    /// It has the segment's name but the directory could not be synced.
    Renamed(io::Error),
}

/// Turns a prepared (zero-filled, synced) file into the segment at `path`: header, sync,
/// rename, directory sync. Overwriting zeros, the sync does not change the file's size.
fn install_prepared(
    dir: &Path,
    p: &PreparedFile,
    path: &Path,
    first: u64,
) -> Result<(), Installed> {
    if path.exists() {
        // `rename` would replace it; creating it normally fails clearly instead.
        return Err(Installed::NotRenamed);
    }
    p.file
        .write_all_at(&encode_segment_header(first), 0)
        .and_then(|()| p.file.sync_data())
        .and_then(|()| std::fs::rename(&p.path, path))
        .map_err(|_| Installed::NotRenamed)?;
    // Not durably named, and maybe named after a crash: it stays, and the roll stops the
    // writer (removing it could not be made durable either).
    sync_dir(dir).map_err(Installed::Renamed)
}

/// Writes a checkpoint file atomically: temp file, fsync, rename, fsync directory.
/// Writes a segment checkpoint (`None`: the encoder found the index inconsistent; nothing is
/// written and the caller counts a checkpoint failure).
pub(crate) fn write_checkpoint(dir: &Path, first: u64, bytes: &Option<Vec<u8>>) -> io::Result<()> {
    let Some(bytes) = bytes else {
        return Err(io::Error::other(
            "index inconsistent: checkpoint not written",
        ));
    };
    write_atomic(dir, &index_file_name(first), bytes)
}

/// Writes the current stream registry atomically. Called before writing segment checkpoints
/// that refer to its stream ids, so a valid checkpoint never names an id the registry lacks.
/// Serialized, and encoded inside the lock, so the newest registry is the one left on disk.
pub(crate) fn write_registry(shared: &Shared) -> io::Result<()> {
    let _serialized = shared
        .registry_write
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let bytes = encode_registry(&shared.index.read().unwrap_or_else(PoisonError::into_inner));
    write_atomic(&shared.dir, REGISTRY_FILE_NAME, &bytes)
}

/// Suffix of temporary files (removed at open if a crash left them).
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(name);
    // Unique per write: concurrent writers must never share a temporary file.
    let tmp = dir.join(format!("{name}.{n}{TEMP_SUFFIX}"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
