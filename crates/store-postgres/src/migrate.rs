//! Embedded, reversible migrations, applied with sqlx's migrator (checksums, dirty-state
//! detection, locking).

use crate::{PgStore, db_error};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use trueline_store::{MigrationStatus, Migrations, StoreError};

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
        "events",
        include_str!("../migrations/0003_events.up.sql"),
        include_str!("../migrations/0003_events.down.sql"),
    ),
    (
        4,
        "delivery",
        include_str!("../migrations/0004_delivery.up.sql"),
        include_str!("../migrations/0004_delivery.down.sql"),
    ),
    (
        5,
        "assessments",
        include_str!("../migrations/0005_assessments.up.sql"),
        include_str!("../migrations/0005_assessments.down.sql"),
    ),
    (
        6,
        "history index",
        include_str!("../migrations/0006_history_index.up.sql"),
        include_str!("../migrations/0006_history_index.down.sql"),
    ),
    (
        7,
        "outbox keeps unpublished rows",
        include_str!("../migrations/0007_outbox_keep_unpublished.up.sql"),
        include_str!("../migrations/0007_outbox_keep_unpublished.down.sql"),
    ),
    (
        8,
        "item names sort by bytes",
        include_str!("../migrations/0008_name_key_collation.up.sql"),
        include_str!("../migrations/0008_name_key_collation.down.sql"),
    ),
    (
        9,
        "outbox rows in commit order",
        include_str!("../migrations/0009_outbox_commit_order.up.sql"),
        include_str!("../migrations/0009_outbox_commit_order.down.sql"),
    ),
    (
        10,
        "idempotency claim holder",
        include_str!("../migrations/0010_idempotency_holder.up.sql"),
        include_str!("../migrations/0010_idempotency_holder.down.sql"),
    ),
    (
        11,
        "event bytes as stored by the engine",
        include_str!("../migrations/0011_event_bytes.up.sql"),
        include_str!("../migrations/0011_event_bytes.down.sql"),
    ),
    (
        12,
        "questions frozen both ways",
        include_str!("../migrations/0012_questions_frozen_both_ways.up.sql"),
        include_str!("../migrations/0012_questions_frozen_both_ways.down.sql"),
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

impl PgStore {
    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
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

/// Instances migrating at once take turns for the whole step: sqlx locks only its own run,
/// and the bookkeeping table's `CREATE TABLE IF NOT EXISTS` before it fails (23505) when two
/// instances run it at once on a fresh database; "applied now" then also names only what
/// this instance applied.
const MIGRATE_LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('trueline.migrate', 0))";
const MIGRATE_UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('trueline.migrate', 0))";

#[async_trait::async_trait]
impl Migrations for PgStore {
    async fn migrate_up(&self) -> Result<Vec<i64>, StoreError> {
        let mut turn = self.pool.acquire().await.map_err(db_error)?;
        sqlx::query(MIGRATE_LOCK)
            .execute(&mut *turn)
            .await
            .map_err(db_error)?;
        let result = async {
            let before = self.applied_versions().await?;
            migrator().run(&self.pool).await.map_err(migrate_error)?;
            let after = self.applied_versions().await?;
            Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
        }
        .await;
        if sqlx::query(MIGRATE_UNLOCK)
            .execute(&mut *turn)
            .await
            .is_err()
        {
            // A session lock lives as long as its connection: never back into the pool.
            let _ = sqlx::Connection::close(turn.detach()).await;
        }
        result
    }

    async fn migrate_down(&self, steps: u32) -> Result<Vec<i64>, StoreError> {
        let applied = self.applied_versions().await?;
        let keep = applied.len().saturating_sub(steps as usize);
        let target = if keep == 0 { 0 } else { applied[keep - 1] };
        migrator()
            .undo(&self.pool, target)
            .await
            .map_err(migrate_error)?;
        Ok(applied[keep..].iter().rev().copied().collect())
    }

    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let applied = self.applied_versions().await?;
        Ok(MIGRATIONS
            .iter()
            .map(|&(version, description, _, _)| MigrationStatus {
                version,
                description: description.to_owned(),
                applied: applied.contains(&version),
            })
            .collect())
    }
}
