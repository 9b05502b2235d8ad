//! SQLite's own API on a connection sqlx opened: statements run on the caller's thread
//! instead of as commands to the connection's worker thread.
//!
//! Each sqlx call on SQLite is a hand-off between two threads, and every row read comes
//! back through a channel, waking the caller. That is fine for a request's few rows; for
//! the thousands a batch writes or a relay round reads it is most of the cost: the outbox
//! relay took ~40–55 ms to read a round of 4,000 rows through sqlx under `spread`, ~10 µs a
//! row (docs/benchmarks.md, "2026-12-04, late night"). Here a batch costs SQLite's own work
//! and one hand-off (taking the handle).

use crate::{SqliteStore, db_error, storage_is_short};
use trueline_store::StoreError;

impl SqliteStore {
    /// Runs `work` on a reader connection's own handle (read-only, like every reader), on
    /// this thread (see [`blocking`]). The rusqlite wrapper lives for this call only: its
    /// statements are finalized before the handle goes back to sqlx.
    ///
    /// Call it from a task of the multi-thread runtime or from a current-thread runtime,
    /// not from a `LocalSet` or a `Handle::enter` inside another runtime, where
    /// `block_in_place` panics (the relay runs in a spawned task).
    pub(crate) async fn read_direct<T>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        let mut handle = conn.lock_handle().await.map_err(db_error)?;
        let raw = handle.as_raw_handle().as_ptr();
        // SAFETY: `raw` is this connection's open handle, opened by sqlx in multi-thread mode
        // (usable from any one thread at a time). `handle` keeps sqlx's worker off the
        // connection until it is dropped, after the wrapper: the wrapper does not own the
        // handle (never closes it), and dropping it finalizes the statements it prepared.
        #[allow(unsafe_code)]
        let direct = unsafe { rusqlite::Connection::from_handle(raw) }.map_err(direct_error)?;
        let done = blocking(|| work(&direct));
        // Every statement ran to its end or was dropped: no read transaction stays open
        // on a connection that goes back to the pool.
        debug_assert!(direct.is_autocommit());
        drop(direct);
        drop(handle);
        done
    }
}

/// Runs `work` on this thread: directly on a current-thread runtime (the combiner's own),
/// through `block_in_place` on a multi-thread one (so its other tasks move elsewhere).
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// As [`db_error`] for an error of the handle: what the storage is short of (5 BUSY, 7 NOMEM,
/// 10 IOERR, 13 FULL) is `Unavailable`, anything else `Internal`.
pub(crate) fn direct_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if storage_is_short(f.extended_code) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
