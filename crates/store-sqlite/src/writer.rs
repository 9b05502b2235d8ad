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

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnection, SqliteTransactionManager};
use sqlx::{Connection, SqlSafeStr};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{Mutex, OwnedMutexGuard};
use trueline_store::StoreError;

use crate::db_error;

pub(crate) struct Writer {
    /// `None` once closed.
    conn: Arc<Mutex<Option<SqliteConnection>>>,
    /// How long a caller waits for the writer before `dependency_unavailable`.
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// Exclusive use of the writer connection (no transaction).
pub(crate) struct WriteConn(OwnedMutexGuard<Option<SqliteConnection>>);

impl Deref for WriteConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        // A `WriteConn` exists only for an open connection (checked in `acquire`), and the
        // connection can only be taken out (`close`) by whoever holds the lock: this guard.
        #[allow(clippy::expect_used)]
        self.0.as_ref().expect("checked open when acquired")
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        // See `deref`.
        #[allow(clippy::expect_used)]
        self.0.as_mut().expect("checked open when acquired")
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on the writer connection.
pub(crate) struct WriteTx {
    conn: WriteConn,
    open: bool,
}

impl WriteTx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        SqliteTransactionManager::commit(&mut self.conn).await?;
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

impl Writer {
    pub fn new(conn: SqliteConnection, acquire_timeout: Duration) -> Self {
        Writer {
            conn: Arc::new(Mutex::new(Some(conn))),
            acquire_timeout,
        }
    }

    /// The writer connection, once whoever holds it is done (at most `acquire_timeout`).
    pub async fn acquire(&self) -> Result<WriteConn, StoreError> {
        let guard = tokio::time::timeout(self.acquire_timeout, self.conn.clone().lock_owned())
            .await
            .map_err(|_| db_error(sqlx::Error::PoolTimedOut))?;
        if guard.is_none() {
            return Err(db_error(sqlx::Error::PoolClosed));
        }
        Ok(WriteConn(guard))
    }

    /// Starts a transaction that holds SQLite's write lock from its first statement.
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        let mut conn = self.acquire().await?;
        SqliteTransactionManager::begin(&mut conn, Some("BEGIN IMMEDIATE".into_sql_str()))
            .await
            .map_err(db_error)?;
        Ok(WriteTx { conn, open: true })
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
        let conn = self.conn.lock().await.take();
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }
}
