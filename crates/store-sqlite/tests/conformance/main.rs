//! The conformance suite on SQLite: every case on a fresh database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;
use std::sync::Arc;
use trueline_store::Migrations;
use trueline_store_conformance::{Fixture, RawSql, conformance_suite};
use trueline_store_sqlite::{SqliteOptions, SqliteStore};

struct Raw(sqlx::SqlitePool);

#[async_trait::async_trait]
impl RawSql for Raw {
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.0)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.0)
            .await
            .unwrap();
        row.try_get(0).unwrap()
    }
}

async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("trueline.db").display());
    let store = SqliteStore::connect(&url, SqliteOptions::default())
        .await
        .unwrap();
    store.migrate_up().await.unwrap();
    let raw = Raw(store.bypass_pool().await.unwrap());
    Fixture {
        store: Arc::new(store),
        raw: Arc::new(raw),
        guard: Box::new(dir),
    }
}

conformance_suite!(sqlite_fixture);
