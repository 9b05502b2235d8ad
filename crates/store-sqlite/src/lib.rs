//! The SQLite adapter: Trueline's embedded default (zero setup, one file under `./data/`).
//!
//! Connection model: one **writer** connection and a small pool of **reader** connections on
//! the same WAL database. Every write transaction starts with `BEGIN IMMEDIATE` on the single
//! writer, so writers queue in-process instead of failing with "database is locked", and
//! readers never block them. `synchronous=FULL`: a commit acknowledged to a client survives
//! power loss.
//!
//! Conventions of the schema: ids are 16-byte UUID blobs, instants are INTEGER unix
//! microseconds (see [`micros`]), tables are `STRICT`, and every invariant the domain checks
//! is also a CHECK, UNIQUE, FK or trigger, so the database refuses what the code forgot.

mod accounts;
mod assessments;
mod checkpoint;
mod combined;
mod delivery;
mod direct;
mod inventory;
mod migrate;
mod platform;
mod token_cache;
mod wal_vfs;
mod writer;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use trueline_store::{Store, StoreError, StoreHealth};

/// How long a statement waits for SQLite's file lock (another process, e.g. `trueline
/// migrate`) before giving up.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// What [`SqliteStore::release_leftovers`] released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub idempotency_claims: u64,
    pub outbox_leases: u64,
    pub delivery_leases: u64,
}

impl Leftovers {
    pub fn any(&self) -> bool {
        self.idempotency_claims + self.outbox_leases + self.delivery_leases > 0
    }
}

/// Tunables of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader connections (the writer is always exactly one).
    pub readers: u32,
    /// How long a request waits for a connection before `dependency_unavailable`.
    pub acquire_timeout: Duration,
    /// Run the checkpointer (and its final `TRUNCATE` at close). Only for the process that
    /// owns the database (the server, or a tool holding the server lock): a guest beside a
    /// running server must not reset the WAL under it.
    pub checkpoints: bool,
    /// WAL frames after which the checkpointer holds the writer for a round so the WAL
    /// starts over (see the `checkpoint` module); the WAL file is cut back to about this
    /// many frames plus 64 MiB when it does. Default 48,000 (~190 MiB of 4 KiB pages).
    pub wal_restart_frames: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            acquire_timeout: Duration::from_secs(5),
            checkpoints: true,
            wal_restart_frames: checkpoint::RESTART_AFTER_FRAMES,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<writer::Writer>,
    reader: SqlitePool,
    /// How every connection is opened (also for [`SqliteStore::bypass_pool`]).
    connect: SqliteConnectOptions,
    tokens: std::sync::Arc<token_cache::TokenCache>,
    /// Dropped with the last clone of the store: stops the checkpointer.
    _alive: std::sync::Arc<()>,
    /// The checkpointer's task (taken by [`SqliteStore::close`], which waits for its final
    /// round), and how `close` wakes it from its sleep.
    checkpointer: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    closing: Arc<tokio::sync::Notify>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path/to/file.db`).
    /// In-memory databases are refused: the reader and writer pools must share one file.
    pub async fn connect(url: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Internal(
                "in-memory SQLite is not supported; use a file (sqlite://data/trueline.db)".into(),
            ));
        }
        wal_vfs::register().map_err(StoreError::Internal)?;
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid SQLite URL: {e}")))?
            // The default VFS, with a commit's WAL frames written in a few calls (`wal_vfs`).
            .vfs(wal_vfs::NAME)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            // Checkpoints run beside the writer (the `checkpoint` module), and the WAL
            // file is cut back after a reset so it does not stay at its high-water mark
            // (but not below what the next cycle writes again).
            .pragma("wal_autocheckpoint", "0")
            // `REPLACE` (`INSERT OR REPLACE`) deletes the row it conflicts with; without
            // recursive triggers that delete fires no trigger, so it went past every guard on
            // deletes (the audit log's and history's immutability, the last-owner count). No
            // trigger of the schema changes its own table, so nothing recurses.
            .pragma("recursive_triggers", "ON")
            .pragma(
                "journal_size_limit",
                checkpoint::wal_size_limit(options.wal_restart_frames).to_string(),
            );
        // One writer connection outside any pool (see `writer`). Its statement journals
        // (a statement that changes several rows keeps one, to undo just that statement on
        // error) live in memory rather than in temporary files: they are small
        // and short-lived, and writing them was ~5 % of the writer's CPU. (Not for readers:
        // their temporary tables, e.g. big sorts, may be large.)
        let writer_options = connect.clone().pragma("temp_store", "MEMORY");
        let writer = Arc::new(writer::Writer::new(
            writer_options.connect().await.map_err(db_error)?,
            writer_options,
            options.acquire_timeout,
        ));
        // No ping before each acquire (sqlx's default): a connection to a local file does not
        // go stale, and on SQLite every ping is one more hand-off to the connection's worker
        // thread.
        let reader = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone().read_only(true))
            .await
            .map_err(db_error)?;
        let alive = std::sync::Arc::new(());
        let closing = Arc::new(tokio::sync::Notify::new());
        let mut task = None;
        if options.checkpoints {
            let checkpointer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(connect.clone())
                .await
                .map_err(db_error)?;
            task = Some(tokio::spawn(checkpoint::checkpoint_continuously(
                checkpointer,
                writer.clone(),
                std::sync::Arc::downgrade(&alive),
                closing.clone(),
                options.wal_restart_frames,
            )));
        }
        Ok(Self {
            writer,
            reader,
            connect,
            tokens: std::sync::Arc::default(),
            _alive: alive,
            checkpointer: Arc::new(std::sync::Mutex::new(task)),
            closing,
        })
    }

    /// A separate connection pool to the same database, opened like the store's own: for
    /// migrations, and for tests that must bypass the domain (to prove the schema refuses
    /// what the code forgot).
    pub async fn bypass_pool(&self) -> Result<SqlitePool, StoreError> {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(self.connect.clone())
            .await
            .map_err(db_error)
    }

    /// Starts a write transaction that holds SQLite's write lock from its first statement.
    async fn begin_write(&self) -> Result<writer::WriteTx, StoreError> {
        self.writer.begin().await
    }

    /// For the only server of this database, at start-up: pending idempotency claims and
    /// outbox / webhook-delivery leases left by a process that is gone are released now,
    /// instead of when they expire. Call it only while holding the server lock.
    pub async fn release_leftovers(&self, now: OffsetDateTime) -> Result<Leftovers, StoreError> {
        let mut tx = self.begin_write().await?;
        let idempotency_claims = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = ?1
             WHERE state = 'pending' AND locked_until > ?1",
        )
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        let outbox_leases = sqlx::query("DELETE FROM outbox_leases")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        let delivery_leases = sqlx::query(
            "UPDATE webhook_deliveries SET locked_until = NULL WHERE locked_until IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(Leftovers {
            idempotency_claims,
            outbox_leases,
            delivery_leases,
        })
    }

    /// Closes the connections, then waits (up to 5 s) for the checkpointer's last round,
    /// which copies the WAL back and truncates it: otherwise a process that exits next can
    /// leave a WAL of up to its size limit (~250 MiB) for the next start to read back.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        let task = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            self.closing.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    async fn health_check(&self) -> StoreHealth {
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.reader),
        )
        .await;
        let (ok, detail) = match ping {
            // The reader answering says nothing of the writer, which every change needs.
            Ok(Ok(_)) if self.writer.is_closed() => {
                (false, "the writer connection is closed".to_owned())
            }
            Ok(Ok(_)) => (true, "sqlite reachable".to_owned()),
            Ok(Err(e)) => (false, format!("sqlite error: {e}")),
            Err(_) => (false, "sqlite did not answer within 2s".to_owned()),
        };
        let (idle, in_use) = self.connections();
        StoreHealth {
            ok,
            detail,
            pool_idle: idle,
            pool_in_use: in_use,
        }
    }

    /// (idle, in use) connections: the readers' pool and the writer.
    fn connections(&self) -> (u32, u32) {
        let idle = self.reader.num_idle() as u32;
        let readers_in_use = self.reader.size().saturating_sub(idle);
        let (writer_idle, writer_busy) = if self.writer.busy() { (0, 1) } else { (1, 0) };
        (idle + writer_idle, readers_in_use + writer_busy)
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> (u32, u32) {
        self.connections()
    }
}

/// Instants are stored as unix microseconds.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

pub(crate) fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| StoreError::Internal(format!("stored instant out of range: {e}")))
}

/// Maps a driver error that no constraint translation claimed.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        // What the storage, not the request, is short of: 5 SQLITE_BUSY ("database is
        // locked"), 7 NOMEM, 10 IOERR, 13 FULL (primary codes of the extended code). As on
        // PostgreSQL (53100 disk full, 53200 out of memory): 503 with Retry-After, not a 500
        // that reads as a bug. (Not 8 READONLY: the readers are read-only connections, and a
        // write sent to one is a bug to see, not an outage to retry.)
        sqlx::Error::Database(d)
            if d.message().contains("database is locked")
                || d.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(storage_is_short) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Whether an SQLite result code (extended or primary) says the storage is short of
/// something: 5 SQLITE_BUSY, 7 NOMEM, 10 IOERR, 13 FULL (see [`db_error`]).
pub(crate) fn storage_is_short(code: i32) -> bool {
    matches!(code & 0xff, 5 | 7 | 10 | 13)
}

/// The message of a constraint or trigger failure, for translation into a domain error.
/// SQLite names the columns of a failed UNIQUE (`UNIQUE constraint failed: users.email`), the
/// name of a failed CHECK, and the text given to `RAISE(ABORT, …)`.
pub(crate) fn constraint_message(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) => Some(d.message()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{SqliteOptions, SqliteStore};

    /// A store on a fresh database file, migrated (the directory lives as long as the guard).
    pub(crate) async fn migrated() -> (tempfile::TempDir, SqliteStore) {
        use trueline_store::Migrations;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url, SqliteOptions::default())
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        (dir, store)
    }

    /// The plans, not a timing: lookups made per request search an index, where a scan would
    /// read every row ever stored (migration 16 added the two indexes these use).
    #[tokio::test]
    async fn per_request_lookups_search_an_index() {
        use sqlx::Row;
        let (_dir, store) = migrated().await;
        let id = uuid::Uuid::now_v7();
        for (sql, params, expected) in [
            (
                format!(
                    "SELECT {} FROM {}",
                    crate::assessments::SUBMISSION_COLUMNS,
                    crate::assessments::SUBMISSION_OF_INVITE
                ),
                1,
                "SEARCH submissions USING INDEX submissions_by_invite (invite_id=?)",
            ),
            (
                crate::accounts::LIVE_TOKEN_ORGS_OF_USER.to_owned(),
                3,
                "SEARCH api_tokens USING INDEX api_tokens_by_user (user_id=?)",
            ),
        ] {
            let mut explain = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
            for _ in 0..params {
                explain = explain.bind(id);
            }
            let plan: Vec<String> = explain
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            assert_eq!(plan, [expected], "{sql}");
        }
    }

    /// A full disk (here: a database at its page limit) is the storage's state, not a bug:
    /// `Unavailable` (503 with Retry-After), as PostgreSQL's disk_full is.
    #[tokio::test]
    async fn a_full_database_is_unavailable_not_internal() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("full.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("CREATE TABLE t (b BLOB); PRAGMA max_page_count = 3")
            .await
            .unwrap();
        let full = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(
            matches!(
                super::db_error(full),
                trueline_store::StoreError::Unavailable(_)
            ),
            "SQLITE_FULL maps to Unavailable"
        );
    }

    /// The bundled SQLite is built with the options of `.cargo/config.toml` (a build from
    /// outside the workspace, or a `LIBSQLITE3_FLAGS` set over it, would lose them quietly).
    /// `HAVE_FDATASYNC` is not among the options SQLite reports; it comes with the others.
    #[tokio::test]
    async fn the_bundled_sqlite_has_our_build_options() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }

    /// The reader answering said nothing of the writer: a closed writer was `ready`.
    #[tokio::test]
    async fn a_closed_writer_fails_the_health_check() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url, SqliteOptions::default())
            .await
            .unwrap();
        assert!(store.health_check().await.ok);
        store.writer.close().await;
        let health = store.health_check().await;
        assert!(!health.ok, "{}", health.detail);
        store.close().await;
    }
}
