//! Embedded, reversible migrations, applied with sqlx's migrator (checksums, dirty-state
//! detection, locking).

use crate::{PgStore, db_error};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{Acquire, Row};
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
    (
        13,
        "finished deliveries index",
        include_str!("../migrations/0013_finished_deliveries.up.sql"),
        include_str!("../migrations/0013_finished_deliveries.down.sql"),
    ),
    (
        14,
        "unicode name keys and emails",
        include_str!("../migrations/0014_unicode_keys.up.sql"),
        include_str!("../migrations/0014_unicode_keys.down.sql"),
    ),
    (
        15,
        "assessment status edges",
        include_str!("../migrations/0015_assessment_status_edges.up.sql"),
        include_str!("../migrations/0015_assessment_status_edges.down.sql"),
    ),
    (
        16,
        "event log mark",
        include_str!("../migrations/0016_event_log_mark.up.sql"),
        include_str!("../migrations/0016_event_log_mark.down.sql"),
    ),
    (
        17,
        "review sequence",
        include_str!("../migrations/0017_review_sequence.up.sql"),
        include_str!("../migrations/0017_review_sequence.down.sql"),
    ),
    (
        18,
        "review sequence for earlier instances",
        include_str!("../migrations/0018_review_sequence_for_earlier_instances.up.sql"),
        include_str!("../migrations/0018_review_sequence_for_earlier_instances.down.sql"),
    ),
    (
        19,
        "outbox NATS backlog by organization",
        include_str!("../migrations/0019_outbox_nats_pending_by_org.up.sql"),
        include_str!("../migrations/0019_outbox_nats_pending_by_org.down.sql"),
    ),
    (
        20,
        "indexes for two lookups that scanned",
        include_str!("../migrations/0020_lookup_indexes.up.sql"),
        include_str!("../migrations/0020_lookup_indexes.down.sql"),
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

/// A connection for a migration step: under the migrate lock, and without the pool's
/// statement timeout (waiting for the lock behind another instance's migration, or one long
/// statement such as an index build on a big table, must not fail after 30 s and make every
/// instance's start fail the same way).
async fn migration_turn(
    store: &PgStore,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
    let mut turn = store.pool.acquire().await.map_err(db_error)?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *turn)
        .await
        .map_err(db_error)?;
    sqlx::query(MIGRATE_LOCK)
        .execute(&mut *turn)
        .await
        .map_err(db_error)?;
    Ok(turn)
}

/// Gives the lock back and the pool's statement timeout; a connection that cannot be reset
/// is closed (a session lock lives as long as its connection: never back into the pool).
async fn end_turn(mut turn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let unlocked = sqlx::query(MIGRATE_UNLOCK)
        .execute(&mut *turn)
        .await
        .is_ok();
    let reset = sqlx::query("RESET statement_timeout")
        .execute(&mut *turn)
        .await
        .is_ok();
    if !(unlocked && reset) {
        let _ = sqlx::Connection::close(turn.detach()).await;
    }
}

#[async_trait::async_trait]
impl Migrations for PgStore {
    async fn migrate_up(&self) -> Result<Vec<i64>, StoreError> {
        let mut turn = migration_turn(self).await?;
        let result = async {
            let before = self.applied_versions().await?;
            // (`run_direct`: `run` on a borrowed connection trips the "`Acquire` is not
            // general enough" limit inside the trait's boxed future.)
            migrator()
                .run_direct(None, &mut *turn, false)
                .await
                .map_err(migrate_error)?;
            rekey_listed(&mut turn).await?;
            let after = self.applied_versions().await?;
            Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
        }
        .await;
        end_turn(turn).await;
        result
    }

    /// Under the migrate lock too: what is applied is read and undone in one turn, so an
    /// instance migrating up meanwhile cannot have its new version undone with them.
    async fn migrate_down(&self, steps: u32) -> Result<Vec<i64>, StoreError> {
        let turn = migration_turn(self).await?;
        let result = async {
            let applied = self.applied_versions().await?;
            let keep = applied.len().saturating_sub(steps as usize);
            let target = if keep == 0 { 0 } else { applied[keep - 1] };
            // On a pooled connection of its own (sqlx has no `undo` for a borrowed one), with
            // the pool's statement timeout: down migrations are an operator's step.
            migrator()
                .undo(&self.pool, target)
                .await
                .map_err(migrate_error)?;
            Ok(applied[keep..].iter().rev().copied().collect())
        }
        .await;
        end_turn(turn).await;
        result
    }

    async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let applied = self.applied_versions().await?;
        let known: Vec<(i64, &str)> = MIGRATIONS.iter().map(|m| (m.0, m.1)).collect();
        Ok(trueline_store::migration_status(&known, &applied))
    }
}

/// Rows per transaction of [`rekey_listed`].
const REKEY_BATCH: i64 = 500;

/// Recomputes the keys migration 14 listed in `unicode_rekeys` (see [`Rekey`]), a batch per
/// transaction, each done row's entry removed with its change; returns how many rows
/// changed. Runs under the migrate lock, but other instances may be serving: each update is
/// guarded by the source value it was computed from (a row renamed meanwhile got its key
/// from the rename). A row whose new key another row already holds (or that a constraint
/// refuses) keeps its old key and stays listed, logged at every start until an operator
/// renames one of the two (the names are now equivalent); its update runs in a savepoint so
/// the rest of the batch still changes, and the batches walk the list in key order so such
/// rows are passed over, not read again.
async fn rekey_listed(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    let mut changed = 0u64;
    let mut after: (String, uuid::Uuid) = (String::new(), uuid::Uuid::nil());
    loop {
        let mut tx = conn.begin().await.map_err(db_error)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(Rekey::list_sql(true)))
            .bind(&after.0)
            .bind(after.1)
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
            let id: uuid::Uuid = row.try_get("row_id").map_err(db_error)?;
            let source: Option<String> = row.try_get("source").map_err(db_error)?;
            let stored: Option<String> = row.try_get("stored").map_err(db_error)?;
            after = (table.clone(), id);
            let rekey = Rekey::from_table(&table);
            let new = match (rekey, &source, &stored) {
                (Some(rekey), Some(source), Some(stored)) => rekey
                    .recompute(source, stored)
                    .map(|key| (rekey, key, source)),
                _ => None,
            };
            if let Some((rekey, key, source)) = new {
                let mut savepoint = tx.begin().await.map_err(db_error)?;
                let updated = sqlx::query(sqlx::AssertSqlSafe(rekey.update_sql(true)))
                    .bind(&key)
                    .bind(id)
                    .bind(source)
                    .execute(&mut *savepoint)
                    .await;
                match updated {
                    Ok(done) => {
                        savepoint.commit().await.map_err(db_error)?;
                        changed += done.rows_affected();
                    }
                    Err(sqlx::Error::Database(d))
                        if d.is_unique_violation() || d.is_check_violation() =>
                    {
                        savepoint.rollback().await.map_err(db_error)?;
                        tracing::warn!(
                            event = "store.rekey_conflict",
                            table = %table,
                            row_id = %id,
                            error = %d.message(),
                            "a recomputed key is refused (another row holds it): this row keeps its old key and stays listed"
                        );
                        continue;
                    }
                    Err(e) => return Err(db_error(e)),
                }
            }
            sqlx::query("DELETE FROM unicode_rekeys WHERE table_name = $1 AND row_id = $2")
                .bind(&table)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
    }
}
