//! The single writer connection, held outside sqlx's pool.
//!
//! Every write transaction queues for this one connection (`BEGIN IMMEDIATE`). sqlx's pool
//! tests a connection on every release with a ping: on SQLite a round trip to the
//! connection's worker thread, run in a spawned task that the next acquire waits for. Under
//! the hot-item load that cost ~0.7 ms of every combined batch (~3.3 ms), on the path every
//! write waits for. A connection to a local file does not go stale, so an async mutex around
//! one connection is all the pool gave the writer.
//!
//! [`WriteTx`] is the write transaction: it derefs to the connection (for statements), and
//! dropping it without [`WriteTx::commit`] queues a rollback, which the connection's worker
//! runs before the next command, as `sqlx::Transaction` does.
//!
//! What the pool's ping-on-release gave, a connection that cannot be used is replaced: when
//! its worker thread is gone (`WorkerCrashed`), or when sqlx still counts a transaction open
//! at `BEGIN` (SQLite rolled one back by itself after an I/O error, so the queued rollback
//! failed), the next user gets a new connection.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteTransactionManager};
use sqlx::{ConnectOptions, Connection, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMutexGuard};
use trueline_store::StoreError;

use crate::db_error;

pub(crate) struct Writer {
    /// `None` once closed.
    conn: Arc<Mutex<Option<Held>>>,
    /// Callers of [`Writer::acquire`] waiting for the connection (see [`Writer::wanted`]).
    waiting: std::sync::atomic::AtomicUsize,
    /// How long a caller waits for the writer before `dependency_unavailable`.
    acquire_timeout: Duration,
    /// How to open a replacement connection.
    options: SqliteConnectOptions,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// The connection, and whether a transaction begun with plain SQL (which sqlx does not
/// track, see [`WriteConn::begin_untracked`]) may still be open on it.
struct Held {
    /// rusqlite over `conn`'s own SQLite handle (see [`WriteConn::with_handle`]), made on
    /// first use. Declared before `conn` so that it is dropped first: dropping it finalizes
    /// its prepared statements, and sqlx's close of a handle with statements left open panics.
    direct: Option<rusqlite::Connection>,
    conn: SqliteConnection,
    untracked_tx: bool,
    /// Replace the connection before its next use.
    broken: bool,
}

/// Exclusive use of the writer connection (no transaction).
pub(crate) struct WriteConn(OwnedMutexGuard<Option<Held>>);

impl WriteConn {
    fn held(&mut self) -> &mut Held {
        // A `WriteConn` exists only for an open connection (checked in `acquire`), and the
        // connection can only be taken out (`close`) by whoever holds the lock: this guard.
        #[allow(clippy::expect_used)]
        self.0.as_mut().expect("checked open when acquired")
    }

    /// The caller is about to send `BEGIN` as plain SQL, in one call with the statements
    /// that follow it (one round trip to the connection's thread instead of several). Until
    /// [`WriteConn::end_untracked`], a transaction may be open that sqlx does not know
    /// about: if this guard is dropped before that (an error the caller did not clean up,
    /// a cancelled future), the next [`Writer::acquire`] rolls it back first.
    pub fn begin_untracked(&mut self) {
        self.held().untracked_tx = true;
    }

    /// The untracked transaction was committed or rolled back.
    pub fn end_untracked(&mut self) {
        self.held().untracked_tx = false;
    }

    /// Runs `work` on this thread with the connection's SQLite handle, through rusqlite,
    /// instead of as commands to the connection's worker thread: for work that is only
    /// statements, no awaits (the combined delta batch). Each sqlx call is a hand-off between
    /// two threads, and each row it reads comes back through a channel; here only taking the
    /// handle is one. rusqlite's statement cache lives as long as the connection.
    pub async fn with_handle<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Connection) -> T,
    ) -> Result<T, sqlx::Error> {
        let held = self.held();
        let mut handle = held.conn.lock_handle().await?;
        let direct = match &mut held.direct {
            Some(direct) => direct,
            empty => {
                let raw = handle.as_raw_handle().as_ptr();
                // SAFETY: `raw` is this connection's open handle, opened by sqlx in
                // multi-thread mode (usable from any one thread at a time). The wrapper
                // does not own it (never closes it) and is used only here, while `handle`
                // keeps sqlx's worker off the connection; it is dropped before the
                // connection is closed or replaced (field order of `Held`, `reconnect`,
                // `close`).
                #[allow(unsafe_code)]
                let wrapped = unsafe { rusqlite::Connection::from_handle(raw) }
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                empty.insert(wrapped)
            }
        };
        let done = work(direct);
        drop(handle);
        Ok(done)
    }

    /// Looks at an error of this connection: if its worker thread is gone, the connection is
    /// replaced before the next use.
    pub fn note_error(&mut self, e: &sqlx::Error) {
        if matches!(e, sqlx::Error::WorkerCrashed) {
            self.held().broken = true;
        }
    }
}

impl Deref for WriteConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        // See `held`.
        #[allow(clippy::expect_used)]
        &self.0.as_ref().expect("checked open when acquired").conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.held().conn
    }
}

/// Counts one waiter of [`Writer::acquire`] for as long as it lives (a cancelled wait too).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on the writer connection.
pub(crate) struct WriteTx {
    conn: WriteConn,
    open: bool,
}

impl WriteTx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        if let Err(e) = SqliteTransactionManager::commit(&mut self.conn).await {
            self.conn.note_error(&e);
            return Err(e);
        }
        self.open = false;
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if self.open {
            SqliteTransactionManager::start_rollback(&mut self.conn);
        }
    }
}

async fn begin_immediate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    SqliteTransactionManager::begin(conn, Some("BEGIN IMMEDIATE".into_sql_str())).await
}

impl Writer {
    pub fn new(
        conn: SqliteConnection,
        options: SqliteConnectOptions,
        acquire_timeout: Duration,
    ) -> Self {
        Writer {
            conn: Arc::new(Mutex::new(Some(Held {
                direct: None,
                conn,
                untracked_tx: false,
                broken: false,
            }))),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            acquire_timeout,
            options,
        }
    }

    /// Replaces the connection of `conn` with a new one.
    async fn reconnect(&self, conn: &mut WriteConn) -> Result<(), StoreError> {
        let fresh = self.options.connect().await.map_err(db_error)?;
        let held = conn.held();
        held.direct = None;
        held.conn = fresh;
        held.untracked_tx = false;
        held.broken = false;
        tracing::warn!(
            event = "error.db",
            "the SQLite writer connection was replaced"
        );
        Ok(())
    }

    /// The writer connection, once whoever holds it is done (at most `acquire_timeout`).
    pub async fn acquire(&self) -> Result<WriteConn, StoreError> {
        let guard = {
            let _waiting = Waiting::on(&self.waiting);
            tokio::time::timeout(self.acquire_timeout, self.conn.clone().lock_owned())
                .await
                .map_err(|_| db_error(sqlx::Error::PoolTimedOut))?
        };
        if guard.is_none() {
            return Err(db_error(sqlx::Error::PoolClosed));
        }
        let mut conn = WriteConn(guard);
        if conn.held().untracked_tx {
            // Left open by a holder that stopped half-way; "no transaction is active" is fine.
            if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                conn.note_error(&e);
            }
            conn.end_untracked();
        }
        if conn.held().broken {
            self.reconnect(&mut conn).await?;
        }
        Ok(conn)
    }

    /// Starts a transaction that holds SQLite's write lock from its first statement.
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        let mut conn = self.acquire().await?;
        // The transaction count is read by the worker when it gets to `BEGIN`, after any
        // rollback queued before it (reading it here could see one still queued). If it
        // still counts one open (the rollback failed), or the worker is gone, the connection
        // is replaced and the `BEGIN` sent once more.
        match begin_immediate(&mut conn).await {
            Ok(()) => {}
            Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::WorkerCrashed) => {
                self.reconnect(&mut conn).await?;
                begin_immediate(&mut conn).await.map_err(db_error)?;
            }
            Err(e) => return Err(db_error(e)),
        }
        Ok(WriteTx { conn, open: true })
    }

    /// Returns once everything queued on the writer before this call has run, however long
    /// that takes (or once it is closed): for a write whose request was dropped half-way,
    /// whose `COMMIT` may still be queued behind a stalled `fsync`. A wait that times out is
    /// tried again: declaring the write over then let a cache keep what it was about to
    /// change (a revoked token served as valid until some later token write).
    pub async fn drain(&self) {
        loop {
            match self.acquire().await {
                Ok(mut conn) => {
                    if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
                        conn.note_error(&e);
                    }
                    return;
                }
                Err(_) if self.is_closed() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Whether someone waits for the connection: a holder that could go on (the combiner,
    /// between batches) lets it go instead.
    pub fn wanted(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Whether someone holds the writer right now (for the pool gauges).
    pub fn busy(&self) -> bool {
        self.conn.try_lock().is_err()
    }

    pub fn is_closed(&self) -> bool {
        self.conn.try_lock().is_ok_and(|c| c.is_none())
    }

    /// Closes the connection after the current holder is done; later calls fail.
    pub async fn close(&self) {
        let held = self.conn.lock().await.take();
        // (A replacement is never opened after this: `acquire` refuses a closed writer.)
        if let Some(mut held) = held {
            held.direct = None;
            let _ = held.conn.close().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let conn = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        let w = Writer::new(conn, options, Duration::from_secs(5));
        let mut c = w.acquire().await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(&mut *c)
            .await
            .unwrap();
        w
    }

    async fn rows(w: &Writer) -> i64 {
        let mut c = w.acquire().await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *c)
            .await
            .unwrap()
    }

    /// `drain` outlasts the acquire timeout: a holder stalled for longer (a `COMMIT` behind a
    /// slow `fsync`) is waited for, not declared done.
    #[tokio::test]
    async fn drain_waits_for_a_holder_longer_than_the_acquire_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("d.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let conn = options.connect().await.unwrap();
        let w = Arc::new(Writer::new(conn, options, Duration::from_millis(50)));
        let held = w.acquire().await.unwrap();
        let draining = tokio::spawn({
            let w = w.clone();
            async move { w.drain().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !draining.is_finished(),
            "drain returned while the writer was held"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), draining)
            .await
            .expect("drain returns once the holder is done")
            .unwrap();
        // A closed writer ends a drain at once.
        w.close().await;
        tokio::time::timeout(Duration::from_secs(1), w.drain())
            .await
            .expect("closed");
    }

    #[tokio::test]
    async fn an_untracked_transaction_left_open_is_rolled_back_before_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        {
            let mut c = w.acquire().await.unwrap();
            c.begin_untracked();
            sqlx::query("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
                .execute(&mut *c)
                .await
                .unwrap();
            // Dropped without COMMIT or ROLLBACK (an error path, a cancelled future).
        }
        assert_eq!(rows(&w).await, 0, "the insert was rolled back");
        // A tracked transaction starts and commits normally afterwards.
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows(&w).await, 1);
    }

    /// Statements run through the handle are the connection's own (sqlx sees their rows at
    /// once), and the statements kept prepared for the next use never stop the connection
    /// from being replaced or closed: sqlx's close of a handle with a statement still
    /// prepared panics.
    #[tokio::test]
    async fn work_on_the_handle_is_the_connections_and_lets_it_close() {
        // sqlx closes a handle on the connection's worker thread and panics there: watch
        // every thread (nextest runs each test in its own process).
        let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = panicked.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        mark_connection(&w).await;
        let mut c = w.acquire().await.unwrap();
        assert_eq!(insert(&mut c, 1).await.unwrap(), 1);
        assert_eq!(
            insert(&mut c, 2).await.unwrap(),
            1,
            "the kept statement again"
        );
        drop(c);
        assert_eq!(rows(&w).await, 2);
        // Replaced (its worker "crashed") with a statement of ours still prepared.
        let mut c = w.acquire().await.unwrap();
        c.note_error(&sqlx::Error::WorkerCrashed);
        drop(c);
        let mut c = w.acquire().await.unwrap();
        assert_eq!(insert(&mut c, 3).await.unwrap(), 1, "on the new connection");
        drop(c);
        assert!(!same_connection(&w).await, "replaced");
        assert_eq!(rows(&w).await, 3);
        w.close().await;
        // The replaced connection's worker ends on its own time.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !panicked.load(std::sync::atomic::Ordering::SeqCst),
            "a connection was closed with statements still prepared"
        );
    }

    #[tokio::test]
    async fn a_connection_with_a_transaction_sqlx_still_counts_open_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        mark_connection(&w).await;
        {
            // A transaction sqlx counts as open and nobody will roll back.
            let mut c = w.acquire().await.unwrap();
            SqliteTransactionManager::begin(&mut c, None).await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *c)
                .await
                .unwrap();
        }
        let mut tx = w.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            rows(&w).await,
            1,
            "only the second insert, on the new connection"
        );
        assert!(!same_connection(&w).await, "replaced");
    }

    async fn insert(c: &mut WriteConn, n: i64) -> Result<usize, sqlx::Error> {
        c.with_handle(move |db| {
            db.prepare_cached("INSERT INTO t VALUES (?1)")
                .and_then(|mut s| s.execute([n]))
                .unwrap()
        })
        .await
    }

    /// Whether the writer still has the connection that created the temporary table.
    async fn same_connection(w: &Writer) -> bool {
        let mut c = w.acquire().await.unwrap();
        sqlx::query("SELECT count(*) FROM temp.marker")
            .execute(&mut *c)
            .await
            .is_ok()
    }

    async fn mark_connection(w: &Writer) {
        let mut c = w.acquire().await.unwrap();
        sqlx::query("CREATE TEMP TABLE marker (x)")
            .execute(&mut *c)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rolling_back_a_dropped_transaction_keeps_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        mark_connection(&w).await;
        for _ in 0..20 {
            // Dropped at once: its rollback is still queued when the next `begin` comes.
            let mut tx = w.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        assert!(
            same_connection(&w).await,
            "a routine rollback replaced the connection"
        );
        assert_eq!(rows(&w).await, 0);
    }

    #[tokio::test]
    async fn a_write_transaction_dropped_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir).await;
        {
            let mut tx = w.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        assert_eq!(rows(&w).await, 0);
        w.close().await;
        assert!(w.acquire().await.is_err(), "a closed writer refuses");
    }
}
