//! The PostgreSQL adapter: Trueline's scale-out backend (many stateless server instances on
//! one database). Same behaviour as the SQLite adapter, proven by the conformance suite; it
//! uses what PostgreSQL is good at: row locks (`FOR UPDATE`), `SKIP LOCKED`, `ON CONFLICT`,
//! named constraints (translated into domain errors here) and trigger-enforced invariants.

mod accounts;
mod assessments;
mod combined;
mod delivery;
pub mod events;
mod inventory;
mod migrate;
mod platform;
pub mod testing;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use trueline_store::{Store, StoreError, StoreHealth};

/// Tunables of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before `dependency_unavailable`.
    pub acquire_timeout: Duration,
    /// Server-side cap on any one statement, so a stuck query cannot hold a connection forever.
    pub statement_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects lazily: the pool opens connections on demand, so a running server reports
    /// not-ready while the database is down and recovers on its own. (A start migrates, so
    /// it needs the database: see [`connection_error`](Self::connection_error).)
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?
            .options([(
                "statement_timeout",
                format!("{}", options.statement_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self { pool })
    }

    /// Why a connection cannot be made now, if it cannot: the pool reports only that it
    /// timed out waiting, and an operator needs the cause (refused, unknown host, password).
    pub async fn connection_error(&self) -> Option<String> {
        use sqlx::Connection;
        let options = self.pool.connect_options();
        match tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 5 s".to_owned()),
        }
    }

    /// The pool, for tests that must bypass the domain (to prove the schema refuses).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn health_check(&self) -> StoreHealth {
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.pool),
        )
        .await;
        let (ok, detail) = match ping {
            Ok(Ok(_)) => (true, "postgres reachable".to_owned()),
            Ok(Err(e)) => (false, format!("postgres error: {e}")),
            Err(_) => (false, "postgres did not answer within 2s".to_owned()),
        };
        let size = self.pool.size();
        let idle = self.pool.num_idle() as u32;
        StoreHealth {
            ok,
            detail,
            pool_idle: idle,
            pool_in_use: size.saturating_sub(idle),
        }
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> (u32, u32) {
        let idle = self.pool.num_idle() as u32;
        (idle, self.pool.size().saturating_sub(idle))
    }
}

/// Maps a driver error that no constraint translation claimed.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        // 57P01 admin_shutdown, 57P02 crash_shutdown (every session after a backend crash),
        // 57P03 cannot_connect_now, 08xxx connection exceptions, 25006 read-only transaction
        // (a failover, or a standby), 53100/53200 disk full / out of memory; and what a retry
        // can get past: 57014 statement timeout (a lock waited on too long), 55P03 lock not
        // available, 40P01 deadlock detected, 40001 serialization failure. Like SQLite's
        // "database is locked": 503 with Retry-After, not a 500 that reads as a bug.
        sqlx::Error::Database(d)
            if d.code().is_some_and(|c| {
                c.starts_with("08")
                    || [
                        "57P01", "57P02", "57P03", "25006", "53100", "53200", "57014", "55P03",
                        "40P01", "40001",
                    ]
                    .contains(&&*c)
            }) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// The name of the constraint (or trigger-raised pseudo constraint) that refused a change.
pub(crate) fn constraint_name(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) => d.constraint(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    /// The plans, not a timing: lookups made per request can search an index, where a scan
    /// would read every row ever stored (migration 20 added the two indexes these use).
    /// Sequential scans are priced out, so a plan names an index whenever one can serve the
    /// search, even on empty tables.
    #[tokio::test]
    #[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
    async fn per_request_lookups_search_an_index() {
        use trueline_store::Migrations;
        let database = testing::TestDatabase::create().await;
        let store = PgStore::connect(&database.url, PgOptions::default())
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let id = uuid::Uuid::now_v7();
        for (sql, index) in [
            (
                format!(
                    "SELECT {} FROM {}",
                    assessments::SUBMISSION_COLUMNS,
                    assessments::SUBMISSION_OF_INVITE
                ),
                "submissions_by_invite",
            ),
            (
                accounts::LIVE_TOKENS_OF_USER.to_owned(),
                "api_tokens_by_user",
            ),
        ] {
            let mut explain =
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(id);
            if sql.contains("$2") {
                explain = explain.bind(time::OffsetDateTime::now_utc()).bind(id);
            }
            let plan = explain.fetch_all(&mut *tx).await.unwrap();
            assert!(
                plan.iter().any(|step| step.contains(index))
                    && !plan.iter().any(|step| step.contains("Seq Scan")),
                "{sql}: {plan:?}"
            );
        }
        tx.rollback().await.unwrap();
        store.pool().close().await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL: set TRUELINE_TEST_POSTGRES_URL and run with --ignored"]
    async fn errors_a_retry_can_get_past_are_unavailable_not_internal() {
        let url = std::env::var(testing::TEST_URL_ENV).expect("TRUELINE_TEST_POSTGRES_URL");
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let raised = |code: &str| {
            format!("DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$")
        };
        for code in [
            "57014", "40P01", "40001", "57P01", "57P02", "25006", "53100", "53200", "55P03",
        ] {
            let e = sqlx::query(sqlx::AssertSqlSafe(raised(code)))
                .execute(&pool)
                .await
                .unwrap_err();
            assert!(matches!(db_error(e), StoreError::Unavailable(_)), "{code}");
        }
        // A real statement timeout, as a lock wait beyond it ends.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL statement_timeout = '10ms'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let e = sqlx::query("SELECT pg_sleep(1)")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(matches!(db_error(e), StoreError::Unavailable(_)));
        // Anything else stays a bug.
        let e = sqlx::query(sqlx::AssertSqlSafe(raised("22012")))
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(matches!(db_error(e), StoreError::Internal(_)));
    }
}
