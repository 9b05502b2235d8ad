//! A thin SQLite VFS over the default one ("unix") that coalesces the WAL's appends: the
//! frames of a commit reach the file in a few `pwrite`s of up to 124 KiB instead of two
//! per page.
//!
//! Why: SQLite writes each WAL frame as two `pwrite` calls, its 24-byte header and its page.
//! Under `spread` a combined batch writes ~140 frames, so the writer thread made ~280 system
//! calls per commit, and the kernel's `pwrite` work (per call: entering, locking the inode,
//! stamping its time, a partial-page write for every header) was ~12 % of the writer's
//! thread, as much as its `fdatasync` (docs/benchmarks.md, 2026-12-04 evening). Everything here
//! is delegation except `xWrite` on a WAL file, and every other call on that file writes
//! what is held first.
//!
//! What stays true, whatever the `synchronous` setting:
//! - **Nothing a reader can see is held back.** SQLite tells readers of a commit (the
//!   wal-index header, in shared memory, with no call to this file) only after the
//!   commit frame is written, so the page after a commit frame's header is written at once
//!   with everything held before it. In `FULL` the `xSync` that follows finds nothing held.
//! - **Only appends are held.** A write that is not an append to what is held, or is not in
//!   new territory of the file (SQLite rewriting a frame of the open transaction, or its
//!   checksums), first writes what is held and then goes straight through.
//! - **Durability is SQLite's:** `xSync` writes what is held before it syncs; a failed
//!   write is the error of the call that wrote it, and what was held is dropped (the
//!   transaction fails and SQLite never counts those frames).
//! - What a crash can lose is what SQLite's own design already treats as lost: frames of a
//!   transaction that had not committed.
//! - Only with powersafe overwrite (the unix VFS's default): without it SQLite pads a commit
//!   to a sector boundary and may split a frame's writes around a sync, and a 24-byte write
//!   would no longer have to be a frame header; such a WAL is written straight through.
//!
//! Tests: `every_commit_is_in_the_wal_file_when_it_returns` (every sync mode, spilled and
//! rewritten frames, read back from a copy as a crash leaves the files) and
//! `a_commit_writes_its_frames_at_once`; every other SQLite test runs through this VFS too.
//!
//! Only this module has `unsafe` code of the adapter besides the two `from_handle`s (in
//! `writer` and `direct`): a VFS is a table of C callbacks over raw pointers. Each function
//! states what it relies on.
#![allow(unsafe_code)]

use rusqlite::ffi;
use std::ffi::{CStr, c_int, c_void};
use std::mem::offset_of;
use std::ptr;
use std::sync::OnceLock;

/// The name connections open the database with (`SqliteConnectOptions::vfs`).
pub(crate) const NAME: &str = "trueline";
const NAME_C: &CStr = c"trueline";

/// More held than this is written before the next append is held (a commit of more pages
/// than that writes in several calls; nothing else changes).
const MAX_HELD: usize = 4 << 20;
/// The most the unix VFS writes in one call (it masks a length with 0x1ffff, SQLite's
/// largest page being 64 KiB): what is held goes out in pieces of this size.
const MAX_WRITE: usize = 31 * 4096;
/// A WAL file starts with a 32-byte header; each frame has a 24-byte header, whose bytes 4..8
/// are the database size after a commit frame, zero in any other (sqlite.org/fileformat2.html).
const WAL_HEADER: i64 = 32;
const FRAME_HEADER: usize = 24;

/// Registers the VFS once (not as the default); later calls return the first outcome.
pub(crate) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` with NULL returns the default VFS, which SQLite
            // keeps registered for the life of the process (nothing here unregisters it).
            let base = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
            if base.is_null() {
                return Err("SQLite has no default VFS".into());
            }
            // SAFETY: `base` is a valid, immutable-after-registration VFS object.
            let base_ref = unsafe { &*base };
            let _ = BASE.set(Base(base));
            let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
                // Our file objects carry the base VFS's after our own fields.
                szOsFile: (REAL_OFFSET + base_ref.szOsFile as usize) as c_int,
                pNext: ptr::null_mut(),
                zName: NAME_C.as_ptr(),
                xOpen: Some(x_open),
                // Everything else is the base VFS's own: the same functions, the same
                // `pAppData` and `mxPathname` they read.
                ..*base_ref
            }));
            // SAFETY: `vfs` is leaked, so it lives as long as the process, as SQLite requires.
            let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(format!("registering the SQLite VFS failed ({rc})"))
            }
        })
        .clone()
}

/// The default VFS this one delegates to.
struct Base(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer is to SQLite's static default VFS, read-only after registration and
// meant to be used from any thread.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

/// Calls the base object's method, or answers `SQLITE_IOERR` if it has none (a panic must
/// not cross into C).
macro_rules! base {
    ($file:expr, $method:ident($($arg:expr),*)) => {
        match base_methods($file).$method {
            Some(method) => method(real($file) $(, $arg)*),
            None => ffi::SQLITE_IOERR,
        }
    };
}

/// Our file object: SQLite allocates `szOsFile` bytes; the base VFS's object starts at
/// `real` and runs past the end of this struct (its size is the base's `szOsFile`).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The held appends of a WAL file; null for every other file.
    wal: *mut Held,
    real: ffi::sqlite3_file,
}
const REAL_OFFSET: usize = offset_of!(File, real);

/// Appends of one WAL file handle not yet written. SQLite calls a file's methods from one
/// thread at a time (the connection's), so nothing here is shared.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// File offset of `bytes[0]`.
    start: i64,
    /// Where what this handle wrote to the file ends, in the current WAL cycle (a write of
    /// the WAL header at offset 0 starts a new one); a write at or past it is an append.
    written_end: i64,
    /// The last frame header written was a commit frame's: its page is written at once.
    commit_frame: bool,
    /// Calls of the base's `xWrite` made for this file.
    writes: u64,
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Base(base)) = BASE.get() else {
        return ffi::SQLITE_ERROR;
    };
    let ours = file.cast::<File>();
    // SAFETY: SQLite hands us `szOsFile` bytes at `file` (our struct followed by the rest of
    // the base's object); the base VFS opens its object inside them. Raw-pointer writes
    // only: nothing in the block is initialized yet.
    unsafe {
        ptr::addr_of_mut!((*ours).base.pMethods).write(ptr::null());
        ptr::addr_of_mut!((*ours).wal).write(ptr::null_mut());
        let real = real(file);
        ptr::addr_of_mut!((*real).pMethods).write(ptr::null());
        let Some(open) = (**base).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = open(*base, name, real, flags, out_flags);
        // SQLite calls `xClose` iff `pMethods` is set, even after a failed open: mirror the
        // base's object.
        let real_methods = (*real).pMethods;
        if !real_methods.is_null() {
            // Only with powersafe overwrite (SQLite's default on unix): without it SQLite
            // pads a commit to a sector and may split a frame's writes around a sync, and
            // `x_write` could no longer tell a frame header from a piece of a page.
            let powersafe = (*real_methods)
                .xDeviceCharacteristics
                .is_some_and(|dc| dc(real) & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0);
            if flags & ffi::SQLITE_OPEN_WAL != 0 && powersafe {
                ptr::addr_of_mut!((*ours).wal).write(Box::into_raw(Box::default()));
            }
            let version = (*real_methods).iVersion.clamp(1, 3) as usize;
            ptr::addr_of_mut!((*ours).base.pMethods).write(&METHODS[version - 1]);
        }
        rc
    }
}

/// The base VFS's object inside ours.
///
/// # Safety
/// `file` is one of our file objects (allocated by SQLite with our `szOsFile`).
unsafe fn real(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: in bounds of the allocation, per the caller.
    unsafe { file.cast::<u8>().add(REAL_OFFSET).cast() }
}

/// The base object's methods.
///
/// # Safety
/// `file` is one of our open file objects.
unsafe fn base_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: set by the base's `xOpen` (non-null whenever ours is) and static in SQLite.
    unsafe { &*(*real(file)).pMethods }
}

/// The held appends, for a WAL file.
///
/// # Safety
/// `file` is one of our open file objects, used by this thread only (SQLite's rule for a
/// connection's files), and no other reference to its `Held` is alive.
unsafe fn held_of<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Held> {
    // SAFETY: per the caller; `wal` is null or our own box.
    unsafe { (*file.cast::<File>()).wal.as_mut() }
}

/// Writes what is held, if anything; on failure it is dropped and the error returned.
///
/// # Safety
/// As [`held_of`].
unsafe fn write_held(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the caller.
    let Some(held) = (unsafe { held_of(file) }) else {
        return ffi::SQLITE_OK;
    };
    if held.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    // Whatever happens, this was tried once: a failed write fails SQLite's transaction,
    // which rewrites its frames if it tries again.
    let end = held.start + held.bytes.len() as i64;
    held.written_end = held.written_end.max(end);
    let mut rc = ffi::SQLITE_OK;
    for (i, chunk) in held.bytes.chunks(MAX_WRITE).enumerate() {
        held.writes += 1;
        // SAFETY: the base's `xWrite` on its own object, with a buffer alive for the call.
        rc = unsafe {
            base!(
                file,
                xWrite(
                    chunk.as_ptr().cast(),
                    chunk.len() as c_int,
                    held.start + (i * MAX_WRITE) as i64
                )
            )
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
    }
    held.bytes.clear();
    // A huge transaction (an import) does not keep its high-water mark for good.
    if held.bytes.capacity() > MAX_HELD / 4 {
        held.bytes.shrink_to(MAX_HELD / 4);
    }
    rc
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY (whole function): SQLite calls this on our open object, from the connection's
    // thread, with `amount` readable bytes at `buf`.
    unsafe {
        let through = |file| base!(file, xWrite(buf, amount, offset));
        let Some(held) = held_of(file) else {
            return through(file);
        };
        let data = std::slice::from_raw_parts(buf.cast::<u8>(), amount as usize);
        // With powersafe overwrite (checked at open) SQLite never splits a frame's writes
        // nor pads, so a 24-byte write past the WAL header is a frame header, and a page is
        // always at least 512 bytes.
        let frame_header = data.len() == FRAME_HEADER && offset >= WAL_HEADER;
        if frame_header {
            held.commit_frame = data[4..8] != [0; 4];
        }
        let end_of_held = held.start + held.bytes.len() as i64;
        let appends_to_held = !held.bytes.is_empty() && offset == end_of_held;
        if !appends_to_held || held.bytes.len() + data.len() > MAX_HELD {
            let rc = write_held(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let Some(held) = held_of(file) else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            if offset == 0 {
                // The WAL header: a new cycle writes the file from its start again.
                held.written_end = 0;
                held.commit_frame = false;
            }
            if offset < held.written_end || data.len() > MAX_HELD {
                held.writes += 1;
                let rc = through(file);
                held.written_end = held.written_end.max(offset + amount as i64);
                return rc;
            }
            held.start = offset;
        }
        let Some(held) = held_of(file) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        held.bytes.extend_from_slice(data);
        if held.commit_frame && !frame_header {
            // The commit frame's page: the transaction's frames are complete, and SQLite
            // may tell readers of them without another call on this file.
            return write_held(file);
        }
        ffi::SQLITE_OK
    }
}

/// Every call but `xWrite` on a WAL file writes what is held first.
macro_rules! after_writing_held {
    ($file:expr) => {
        let rc = write_held($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    };
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes our open object once, from the connection's thread.
    unsafe {
        let written = write_held(file);
        let rc = base!(file, xClose());
        let wal = (*file.cast::<File>()).wal;
        if !wal.is_null() {
            drop(Box::from_raw(wal));
            (*file.cast::<File>()).wal = ptr::null_mut();
        }
        if written != ffi::SQLITE_OK {
            written
        } else {
            rc
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xRead(buf, amount, offset))
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        if let Some(held) = held_of(file) {
            held.written_end = held.written_end.min(size);
        }
        base!(file, xTruncate(size))
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xSync(flags))
    }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xFileSize(size))
    }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xLock(level))
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xUnlock(level))
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        base!(file, xCheckReservedLock(out))
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: delegation on our open object (see `held_of`).
    unsafe {
        after_writing_held!(file);
        match base_methods(file).xFileControl {
            Some(control) => control(real(file), op, arg),
            None => ffi::SQLITE_NOTFOUND,
        }
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegation on our open object.
    unsafe {
        match base_methods(file).xSectorSize {
            Some(size) => size(real(file)),
            None => 4096,
        }
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: delegation on our open object.
    unsafe {
        match base_methods(file).xDeviceCharacteristics {
            Some(characteristics) => characteristics(real(file)),
            None => 0,
        }
    }
}

// The shared-memory and memory-map calls are made on the database file, never on the WAL:
// plain delegation (only offered when the base object offers them, see `METHODS`).

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: delegation on our open object, whose base has version >= 2.
    unsafe {
        match base_methods(file).xShmMap {
            Some(map) => map(real(file), region, size, extend, out),
            None => ffi::SQLITE_IOERR,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: as `x_shm_map`.
    unsafe {
        match base_methods(file).xShmLock {
            Some(lock) => lock(real(file), offset, n, flags),
            None => ffi::SQLITE_IOERR,
        }
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as `x_shm_map`.
    unsafe {
        if let Some(barrier) = base_methods(file).xShmBarrier {
            barrier(real(file));
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: as `x_shm_map`.
    unsafe {
        match base_methods(file).xShmUnmap {
            Some(unmap) => unmap(real(file), delete),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: delegation on our open object, whose base has version 3.
    unsafe {
        match base_methods(file).xFetch {
            Some(fetch) => fetch(real(file), offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: as `x_fetch`.
    unsafe {
        match base_methods(file).xUnfetch {
            Some(unfetch) => unfetch(real(file), offset, page),
            None => ffi::SQLITE_OK,
        }
    }
}

/// Our methods at each version 1..=3, so SQLite is offered exactly what the base object
/// offers (WAL needs version 2's shared memory).
static METHODS: [ffi::sqlite3_io_methods; 3] = [methods(1), methods(2), methods(3)];

const fn methods(version: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: version,
        xClose: Some(x_close),
        xRead: Some(x_read),
        xWrite: Some(x_write),
        xTruncate: Some(x_truncate),
        xSync: Some(x_sync),
        xFileSize: Some(x_file_size),
        xLock: Some(x_lock),
        xUnlock: Some(x_unlock),
        xCheckReservedLock: Some(x_check_reserved_lock),
        xFileControl: Some(x_file_control),
        xSectorSize: Some(x_sector_size),
        xDeviceCharacteristics: Some(x_device_characteristics),
        xShmMap: Some(x_shm_map),
        xShmLock: Some(x_shm_lock),
        xShmBarrier: Some(x_shm_barrier),
        xShmUnmap: Some(x_shm_unmap),
        xFetch: Some(x_fetch),
        xUnfetch: Some(x_unfetch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::Path;

    #[test]
    fn the_name_is_one_name() {
        assert_eq!(NAME_C.to_str().unwrap(), NAME);
    }

    fn open(path: &Path, vfs: &str, synchronous: &str) -> Connection {
        register().unwrap();
        let db = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap();
        // A tiny page cache: big transactions spill frames into the WAL before they commit,
        // and pages changed again are rewritten in place (then their checksums).
        db.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 10;"
        ))
        .unwrap();
        db
    }

    /// What the files hold now, read as a process started after a crash would: a copy of
    /// the database and its WAL (no shared memory), recovered by plain SQLite.
    fn recovered(dir: &Path, copy: &Path) -> (i64, i64) {
        std::fs::create_dir_all(copy).unwrap();
        for name in ["t.db", "t.db-wal"] {
            std::fs::copy(dir.join(name), copy.join(name)).unwrap();
        }
        let db = Connection::open(copy.join("t.db")).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        db.query_row("SELECT count(*), coalesce(sum(n), 0) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    }

    /// Without any sync (`NORMAL`, `OFF`) nothing but SQLite's own calls puts the frames in
    /// the file: a commit that returned must already be there, and an open transaction's
    /// spilled frames must not count.
    #[test]
    fn every_commit_is_in_the_wal_file_when_it_returns() {
        for synchronous in ["FULL", "NORMAL", "OFF"] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(&dir.path().join("t.db"), NAME, synchronous);
            db.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, pad BLOB)")
                .unwrap();
            let mut expected = (0, 0);
            let check = |db: &Connection, expected: (i64, i64), round: usize| {
                let copy = dir.path().join(format!("copy-{round}"));
                assert_eq!(
                    recovered(dir.path(), &copy),
                    expected,
                    "{synchronous}, {round}"
                );
                // And a reader of the live files through the default VFS.
                let reader = Connection::open(dir.path().join("t.db")).unwrap();
                let seen: (i64, i64) = reader
                    .query_row("SELECT count(*), coalesce(sum(n), 0) FROM t", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap();
                assert_eq!(seen, expected, "{synchronous}, {round}");
                let _ = db;
            };
            // Small commits.
            for i in 0..20 {
                db.execute("INSERT INTO t (n, pad) VALUES (?1, zeroblob(100))", [i])
                    .unwrap();
                expected = (expected.0 + 1, expected.1 + i);
            }
            check(&db, expected, 1);
            // A commit far bigger than the cache, that changes its own rows again.
            db.execute_batch(
                "BEGIN;
                 WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
                 INSERT INTO t (n, pad) SELECT i, zeroblob(500) FROM s;
                 UPDATE t SET n = n + 1 WHERE id > 20;
                 COMMIT;",
            )
            .unwrap();
            expected = (
                expected.0 + 2000,
                expected.1 + (1..=2000).map(|i| i + 1).sum::<i64>(),
            );
            check(&db, expected, 2);
            // An open transaction with spilled frames: not committed, not there.
            db.execute_batch(
                "BEGIN;
                 WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000)
                 INSERT INTO t (n, pad) SELECT i, zeroblob(500) FROM s;",
            )
            .unwrap();
            check(&db, expected, 3);
            db.execute_batch("ROLLBACK").unwrap();
            check(&db, expected, 4);
        }
    }

    /// The writes made for the WAL file of `db`.
    fn wal_writes(db: &Connection) -> u64 {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: the journal pointer of an open connection in WAL mode is its WAL file, one
        // of our objects; read while nothing else uses the connection.
        unsafe {
            let rc = ffi::sqlite3_file_control(
                db.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                ptr::addr_of_mut!(file).cast(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            held_of(file).expect("the WAL holds its appends").writes
        }
    }

    /// The point of the module: the frames of a commit, two writes each in SQLite, go out
    /// in as few pieces as the base VFS takes.
    #[test]
    fn a_commit_writes_its_frames_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("t.db"), NAME, "FULL");
        db.execute_batch(
            "PRAGMA cache_size = 2000;
             CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, pad BLOB);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
             INSERT INTO t (n, pad) SELECT i, zeroblob(1000) FROM s;",
        )
        .unwrap();
        let wal_frames = || -> i64 {
            db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .unwrap()
        };
        // Everything copied back: the next commit starts the WAL over, from its header.
        wal_frames();
        let before = wal_writes(&db);
        // ~250 pages changed in one transaction.
        db.execute_batch("UPDATE t SET n = n + 1").unwrap();
        let frames = wal_frames();
        assert!(frames >= 250, "{frames} frames");
        // The WAL header on its own (`FULL` syncs it before the first frame), then the frames.
        let bytes = frames as usize * (FRAME_HEADER + 4096);
        assert_eq!(
            wal_writes(&db) - before,
            1 + bytes.div_ceil(MAX_WRITE) as u64
        );
    }
}
