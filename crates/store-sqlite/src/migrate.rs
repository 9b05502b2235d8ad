//! Embedded, reversible migrations, applied with sqlx's migrator (checksums, dirty-state
//! detection, locking).

use crate::{SqliteStore, db_error};
use sqlx::Row;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use trueline_store::{MigrationStatus, Migrations, Rekey, StoreError};

/// Every migration as (version, description, up, down).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "accounts",
        include_str!("../migrations/0001_accounts.up.sql"),
        include_str!("../migrations/0001_accounts.down.sql"),
    ),
    (
        2,
        "inventory",
        include_str!("../migrations/0002_inventory.up.sql"),
        include_str!("../migrations/0002_inventory.down.sql"),
    ),
    (
        3,
        "delivery",
        include_str!("../migrations/0003_delivery.up.sql"),
        include_str!("../migrations/0003_delivery.down.sql"),
    ),
    (
        4,
        "assessments",
        include_str!("../migrations/0004_assessments.up.sql"),
        include_str!("../migrations/0004_assessments.down.sql"),
    ),
    (
        5,
        "history index",
        include_str!("../migrations/0005_history_index.up.sql"),
        include_str!("../migrations/0005_history_index.down.sql"),
    ),
    (
        6,
        "outbox keeps unpublished rows",
        include_str!("../migrations/0006_outbox_keep_unpublished.up.sql"),
        include_str!("../migrations/0006_outbox_keep_unpublished.down.sql"),
    ),
    (
        7,
        "idempotency claim holder",
        include_str!("../migrations/0007_idempotency_holder.up.sql"),
        include_str!("../migrations/0007_idempotency_holder.down.sql"),
    ),
    (
        8,
        "questions frozen both ways",
        include_str!("../migrations/0008_questions_frozen_both_ways.up.sql"),
        include_str!("../migrations/0008_questions_frozen_both_ways.down.sql"),
    ),
    (
        9,
        "finished deliveries index",
        include_str!("../migrations/0009_finished_deliveries.up.sql"),
        include_str!("../migrations/0009_finished_deliveries.down.sql"),
    ),
    (
        10,
        "unicode name keys and emails",
        include_str!("../migrations/0010_unicode_keys.up.sql"),
        include_str!("../migrations/0010_unicode_keys.down.sql"),
    ),
    (
        11,
        "assessment status edges",
        include_str!("../migrations/0011_assessment_status_edges.up.sql"),
        include_str!("../migrations/0011_assessment_status_edges.down.sql"),
    ),
    (
        12,
        "event log mark",
        include_str!("../migrations/0012_event_log_mark.up.sql"),
        include_str!("../migrations/0012_event_log_mark.down.sql"),
    ),
    (
        13,
        "review sequence",
        include_str!("../migrations/0013_review_sequence.up.sql"),
        include_str!("../migrations/0013_review_sequence.down.sql"),
    ),
    (
        14,
        "outbox backlog by organization",
        include_str!("../migrations/0014_outbox_pending_by_org.up.sql"),
        include_str!("../migrations/0014_outbox_pending_by_org.down.sql"),
    ),
    (
        15,
        "history kinds checked in place",
        include_str!("../migrations/0015_history_kind_check.up.sql"),
        include_str!("../migrations/0015_history_kind_check.down.sql"),
    ),
    (
        16,
        "indexes for two lookups that scanned",
        include_str!("../migrations/0016_lookup_indexes.up.sql"),
        include_str!("../migrations/0016_lookup_indexes.down.sql"),
    ),
];

fn migrator() -> Migrator {
    let mut all = Vec::with_capacity(MIGRATIONS.len() * 2);
    for &(version, description, up, down) in MIGRATIONS {
        all.push(Migration::new(
            version,
            description.into(),
            MigrationType::ReversibleUp,
            up.into_sql_str(),
            false,
        ));
        all.push(Migration::new(
            version,
            description.into(),
            MigrationType::ReversibleDown,
            down.into_sql_str(),
            false,
        ));
    }
    Migrator::with_migrations(all)
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => db_error(e),
        other => StoreError::Internal(format!("migration failed: {other}")),
    }
}

impl SqliteStore {
    /// Migrations run on a connection of their own, opened like the store's (sqlx's migrator
    /// wants a pool or an owned connection, and the writer is neither).
    async fn migration_pool(&self) -> Result<sqlx::SqlitePool, StoreError> {
        self.bypass_pool().await
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        conn.ensure_migrations_table("_sqlx_migrations")
            .await
            .map_err(migrate_error)?;
        let mut applied: Vec<i64> = conn
            .list_applied_migrations("_sqlx_migrations")
            .await
            .map_err(migrate_error)?
            .into_iter()
            .map(|m| m.version)
            .collect();
        applied.sort_unstable();
        Ok(applied)
    }
}

#[async_trait::async_trait]
impl Migrations for SqliteStore {
    async fn migrate_up(&self) -> Result<Vec<i64>, StoreError> {
        let before = self.applied_versions().await?;
        let pool = self.migration_pool().await?;
        migrator().run(&pool).await.map_err(migrate_error)?;
        pool.close().await;
        rekey_listed(self).await?;
        let after = self.applied_versions().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    async fn migrate_down(&self, steps: u32) -> Result<Vec<i64>, StoreError> {
        let applied = self.applied_versions().await?;
        let keep = applied.len().saturating_sub(steps as usize);
        let target = if keep == 0 { 0 } else { applied[keep - 1] };
        let pool = self.migration_pool().await?;
        migrator()
            .undo(&pool, target)
            .await
            .map_err(migrate_error)?;
        pool.close().await;
        Ok(applied[keep..].iter().rev().copied().collect())
    }

    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let applied = self.applied_versions().await?;
        let known: Vec<(i64, &str)> = MIGRATIONS.iter().map(|m| (m.0, m.1)).collect();
        Ok(trueline_store::migration_status(&known, &applied))
    }
}

/// Rows per transaction of [`rekey_listed`].
const REKEY_BATCH: i64 = 500;

/// Recomputes the keys migration 10 listed in `unicode_rekeys` (see [`Rekey`]), a batch per
/// transaction, each done row's entry removed with its change; returns how many rows
/// changed. A row whose new key another row already holds (or that a constraint refuses)
/// keeps its old key and stays listed, logged at every start until an operator renames one
/// of the two (the names are now equivalent): SQLite undoes only the refused statement, and
/// the batches walk the list in key order so such rows are passed over, not read again.
async fn rekey_listed(store: &SqliteStore) -> Result<u64, StoreError> {
    let mut changed = 0u64;
    let mut after: (String, Vec<u8>) = (String::new(), Vec::new());
    loop {
        let mut tx = store.writer.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(Rekey::list_sql(false)))
            .bind(&after.0)
            .bind(&after.1)
            .bind(REKEY_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        if rows.is_empty() {
            if changed > 0 {
                tracing::info!(
                    event = "store.keys_recomputed",
                    rows = changed,
                    "name keys and emails recomputed under the Unicode rules"
                );
            }
            return Ok(changed);
        }
        for row in rows {
            let table: String = row.try_get("table_name").map_err(db_error)?;
            let id: Vec<u8> = row.try_get("row_id").map_err(db_error)?;
            let source: Option<String> = row.try_get("source").map_err(db_error)?;
            let stored: Option<String> = row.try_get("stored").map_err(db_error)?;
            after = (table.clone(), id.clone());
            let rekey = Rekey::from_table(&table);
            let new = match (rekey, &source, &stored) {
                (Some(rekey), Some(source), Some(stored)) => rekey
                    .recompute(source, stored)
                    .map(|key| (rekey, key, source)),
                _ => None,
            };
            if let Some((rekey, key, source)) = new {
                let updated = sqlx::query(sqlx::AssertSqlSafe(rekey.update_sql(false)))
                    .bind(&key)
                    .bind(&id)
                    .bind(source)
                    .execute(&mut *tx)
                    .await;
                match updated {
                    Ok(done) => {
                        changed += done.rows_affected();
                    }
                    Err(sqlx::Error::Database(d))
                        if d.is_unique_violation() || d.is_check_violation() =>
                    {
                        tracing::warn!(
                            event = "store.rekey_conflict",
                            table = %table,
                            row_id = %uuid::Uuid::from_slice(&id).unwrap_or_default(),
                            error = %d.message(),
                            "a recomputed key is refused (another row holds it): this row keeps its old key and stays listed"
                        );
                        continue;
                    }
                    Err(e) => return Err(db_error(e)),
                }
            }
            sqlx::query("DELETE FROM unicode_rekeys WHERE table_name = ?1 AND row_id = ?2")
                .bind(&table)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
    }
}
