//! The next segment file, zero-filled and synced ahead of time by a background thread.
//!
//! In `Always` mode every group commit ends in an `fdatasync`, which is about 2.5x slower
//! when it must also persist a new file size. So the active segment has to extend over
//! zero-filled, already-synced space. Writing those zeros on the writer thread (4 MiB at a
//! time, plus an `fdatasync` each) took about a quarter of the writer's time at full load:
//! every byte written twice, on the one thread that all appends wait for.
//!
//! Instead, once the active segment is half full, this thread writes a whole segment's worth
//! of zeros to a temporary file [`PREPARED_FILE_NAME`] and syncs it. At the roll the writer
//! writes the new header into it, syncs it and renames it into place; a segment that was not
//! prepared in time (or the first one) is extended on the writer thread as before. The
//! prepared file is a different inode, so its writeback never lands inside a commit's
//! `fdatasync`. A crash leaves at most a `*.tmp` file, which open deletes. It does not use the
//! test fault hook: a real failure here only means the writer extends the next segment itself.
//!
//! The file takes a segment's worth of disk ahead of need, so it must never be why an append
//! fails: when a write meets a full disk, the writer [discards](Preparer::discard) the file
//! (or the one in the works, waiting for the thread to delete it) and, if that gave space
//! back, writes once more; no other file is prepared until the next roll.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The file being prepared or ready (ends in `.tmp`: deleted at open if a crash left it).
pub(crate) const PREPARED_FILE_NAME: &str = "next-segment.seg.tmp";

/// The longest `discard` waits for the thread to abandon a file in the works.
const DISCARD_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Zeros are written in pieces this large, checking for shutdown in between.
const ZERO_PIECE_BYTES: usize = 1024 * 1024;

/// A zero-filled, synced file of `len` bytes, ready to become the next segment.
pub(crate) struct PreparedFile {
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// Where the one file being prepared stands. At most one is in the works at a time, so the
/// thread never rewrites a file the writer already holds.
enum Slot {
    Idle,
    Preparing,
    Ready(PreparedFile),
    /// Preparing failed or the writer discarded the file: none until the next roll.
    Failed,
}

/// The writer's handle on the preparing thread (started on first use).
pub(crate) struct Preparer {
    dir: PathBuf,
    requests: Option<Sender<u64>>,
    slot: Arc<Mutex<Slot>>,
    stopping: Arc<AtomicBool>,
    /// Set by [`Preparer::discard`]: the file in the works is abandoned.
    discarding: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    pub fn new(dir: &Path) -> Self {
        Preparer {
            dir: dir.to_path_buf(),
            requests: None,
            slot: Arc::new(Mutex::new(Slot::Idle)),
            stopping: Arc::default(),
            discarding: Arc::default(),
            thread: None,
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a prepared file of `len` bytes, unless one is being prepared or ready.
    pub fn request(&mut self, len: u64) {
        if !matches!(*self.slot(), Slot::Idle) {
            return;
        }
        if self.requests.is_none() {
            let (tx, rx) = mpsc::channel();
            let (dir, slot) = (self.dir.clone(), self.slot.clone());
            let (stopping, discarding) = (self.stopping.clone(), self.discarding.clone());
            let spawned = std::thread::Builder::new()
                .name("eventlog-prepare".into())
                .spawn(move || run(&dir, &rx, &slot, &stopping, &discarding));
            match spawned {
                Ok(handle) => self.thread = Some(handle),
                // Not fatal: the writer extends segments itself.
                Err(_) => return,
            }
            self.requests = Some(tx);
        }
        if let Some(tx) = &self.requests {
            self.discarding.store(false, Ordering::Relaxed);
            *self.slot() = Slot::Preparing;
            if tx.send(len).is_err() {
                *self.slot() = Slot::Idle;
            }
        }
    }

    /// The prepared file, if one is ready and `len` bytes long. Called at a roll, so a
    /// failed or discarded preparation may be tried again for the next segment.
    pub fn take(&mut self, len: u64) -> Option<PreparedFile> {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Failed) {
            *slot = Slot::Idle;
        }
        if !matches!(*slot, Slot::Ready(_)) {
            return None;
        }
        let Slot::Ready(prepared) = std::mem::replace(&mut *slot, Slot::Idle) else {
            return None;
        };
        if prepared.len == len {
            Some(prepared)
        } else {
            let _ = std::fs::remove_file(&prepared.path);
            None
        }
    }

    /// The disk is full: give back the space of the prepared file (or of the one in the
    /// works, waiting for the thread to remove it: at most one 1 MiB piece or one 8 MiB sync
    /// away), and prepare no other until the next roll. True if space was given back.
    pub fn discard(&mut self) -> bool {
        self.discarding.store(true, Ordering::Relaxed);
        let preparing = {
            let mut slot = self.slot();
            match std::mem::replace(&mut *slot, Slot::Failed) {
                Slot::Ready(p) => {
                    let _ = std::fs::remove_file(&p.path);
                    return true;
                }
                Slot::Preparing => {
                    *slot = Slot::Preparing;
                    true
                }
                Slot::Idle | Slot::Failed => false,
            }
        };
        if preparing {
            // The thread sees `discarding`, removes its file and leaves `Failed`.
            let deadline = std::time::Instant::now() + DISCARD_WAIT_MAX;
            while matches!(*self.slot(), Slot::Preparing) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        preparing
    }

    /// Stops the thread (an unfinished file is abandoned) and removes any prepared file.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.requests = None;
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
        if let Slot::Ready(p) = std::mem::replace(&mut *self.slot(), Slot::Idle) {
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    dir: &Path,
    requests: &Receiver<u64>,
    slot: &Mutex<Slot>,
    stopping: &AtomicBool,
    discarding: &AtomicBool,
) {
    let path = dir.join(PREPARED_FILE_NAME);
    let give_up = || stopping.load(Ordering::Relaxed) || discarding.load(Ordering::Relaxed);
    while let Ok(len) = requests.recv() {
        let prepared = prepare(&path, len, &give_up);
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match prepared {
            Ok(Some(file)) if !give_up() => {
                *slot = Slot::Ready(PreparedFile {
                    path: path.clone(),
                    file,
                    len,
                });
            }
            // Stopping, discarded, or failed (e.g. the disk is full): the writer extends
            // the next segment itself, and meets the real error there if it persists.
            _ => {
                *slot = Slot::Failed;
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Syncs the zeros written so far every this many bytes, so their writeback comes in
/// bounded bursts rather than one segment-sized flush queued ahead of the writer's syncs.
const SYNC_EVERY_BYTES: u64 = 8 * 1024 * 1024;

/// Writes `len` zero bytes to a new file at `path` and syncs it (data and size). `None` if
/// `give_up` said so meanwhile.
fn prepare(path: &Path, len: u64, give_up: &dyn Fn() -> bool) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; ZERO_PIECE_BYTES];
    let mut offset = 0u64;
    while offset < len {
        if give_up() {
            return Ok(None);
        }
        let n = (len - offset).min(ZERO_PIECE_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
        if offset.is_multiple_of(SYNC_EVERY_BYTES) {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    Ok(Some(file))
}
