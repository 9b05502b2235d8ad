//! Outbox rows, idempotency records: written inside the callers' transactions.

use crate::{SqliteStore, db_error, from_micros, micros};
use sqlx::Row;
use time::OffsetDateTime;
use trueline_core::DomainError;
use trueline_store::{
    Claim, Idempotency, IdempotencyScope, IdempotencyStore, OutboxEvent, StoreError, StoredResponse,
};

/// A connection inside a transaction: a write transaction (and a reader's) derefs to it.
pub(crate) type Tx = sqlx::SqliteConnection;

pub(crate) async fn write_outbox(tx: &mut Tx, event: &OutboxEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(event.event_id.0)
    .bind(event.org_id.0)
    .bind(&event.event_type)
    .bind(&event.stream)
    .bind(event.payload.get())
    .bind(micros(event.created_at))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Marks the claimed key completed with the rendered response, in the mutation's
/// transaction. If the claim was lost (taken over after expiry), the whole transaction fails.
pub(crate) async fn complete_idempotency<T>(
    tx: &mut Tx,
    idempotency: Option<Idempotency<'_, T>>,
    value: &T,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let Some(idem) = idempotency else {
        return Ok(());
    };
    let response = (idem.render)(value);
    let headers = serde_json::to_string(&response.headers)
        .map_err(|e| StoreError::Internal(format!("cannot encode headers: {e}")))?;
    let done = sqlx::query(
        "UPDATE idempotency_keys
         SET state = 'completed', response_status = ?4, response_headers = ?5,
             response_body = ?6, completed_at = ?7
         WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending' AND holder = ?8",
    )
    .bind(idem.scope.org_id.0)
    .bind(idem.scope.user_id.0)
    .bind(&idem.scope.key)
    .bind(i64::from(response.status))
    .bind(headers)
    .bind(response.body)
    .bind(micros(now))
    .bind(idem.scope.holder)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    if done.rows_affected() != 1 {
        return Err(DomainError::IdempotencyKeyInUse.into());
    }
    Ok(())
}

pub(crate) fn stored_response(row: &sqlx::sqlite::SqliteRow) -> Result<StoredResponse, StoreError> {
    decode_response(
        row.try_get("response_status").map_err(db_error)?,
        &row.try_get::<String, _>("response_headers")
            .map_err(db_error)?,
        row.try_get("response_body").map_err(db_error)?,
    )
}

/// A completed key's response from its stored columns.
pub(crate) fn decode_response(
    status: i64,
    headers: &str,
    body: Vec<u8>,
) -> Result<StoredResponse, StoreError> {
    Ok(StoredResponse {
        status: u16::try_from(status).map_err(|e| StoreError::Internal(e.to_string()))?,
        headers: serde_json::from_str(headers).map_err(|e| StoreError::Internal(e.to_string()))?,
        body,
    })
}

#[async_trait::async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &[u8; 32],
        now: OffsetDateTime,
        locked_until: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(
            "SELECT fingerprint, state, locked_until, response_status, response_headers,
                    response_body
             FROM idempotency_keys WHERE org_id = ?1 AND user_id = ?2 AND key = ?3",
        )
        .bind(scope.org_id.0)
        .bind(scope.user_id.0)
        .bind(&scope.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let claim = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO idempotency_keys
                     (org_id, user_id, key, fingerprint, state, locked_until, created_at, holder)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
                )
                .bind(scope.org_id.0)
                .bind(scope.user_id.0)
                .bind(&scope.key)
                .bind(&fingerprint[..])
                .bind(micros(locked_until))
                .bind(micros(now))
                .bind(scope.holder)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                Claim::Acquired
            }
            Some(row) => {
                let stored: Vec<u8> = row.try_get("fingerprint").map_err(db_error)?;
                let state: String = row.try_get("state").map_err(db_error)?;
                let lock: i64 = row.try_get("locked_until").map_err(db_error)?;
                let same = stored == fingerprint[..];
                if state == "completed" {
                    if same {
                        Claim::Replay(stored_response(&row)?)
                    } else {
                        Claim::Mismatch
                    }
                } else if from_micros(lock)? > now {
                    if same {
                        Claim::InProgress
                    } else {
                        Claim::Mismatch
                    }
                } else {
                    // The request that held it died having stored nothing (a completion is
                    // in the write's own transaction): a retry takes it over, corrected or
                    // not, as a new request.
                    sqlx::query(
                        "UPDATE idempotency_keys
                         SET locked_until = ?4, holder = ?5, fingerprint = ?6, created_at = ?7
                         WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending'",
                    )
                    .bind(scope.org_id.0)
                    .bind(scope.user_id.0)
                    .bind(&scope.key)
                    .bind(micros(locked_until))
                    .bind(scope.holder)
                    .bind(&fingerprint[..])
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    Claim::Acquired
                }
            }
        };
        tx.commit().await.map_err(db_error)?;
        Ok(claim)
    }

    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending'
               AND holder = ?4",
        )
        .bind(scope.org_id.0)
        .bind(scope.user_id.0)
        .bind(&scope.key)
        .bind(scope.holder)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn purge_idempotency(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE rowid IN (
                 SELECT rowid FROM idempotency_keys
                 WHERE created_at < ?1 AND (state = 'completed' OR locked_until < ?1)
                 ORDER BY created_at LIMIT ?2)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

#[async_trait::async_trait]
impl trueline_store::EventLogMarks for SqliteStore {
    async fn event_log_mark(&self) -> Result<Option<trueline_store::EventLogMark>, StoreError> {
        let row = sqlx::query("SELECT log_id, position FROM event_log_mark")
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            let position: i64 = row.try_get("position").map_err(db_error)?;
            Ok(trueline_store::EventLogMark {
                log_id: row.try_get("log_id").map_err(db_error)?,
                position: position as u64,
            })
        })
        .transpose()
    }

    async fn set_event_log_mark(
        &self,
        mark: trueline_store::EventLogMark,
        now: OffsetDateTime,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(if replace {
            "INSERT INTO event_log_mark (singleton, log_id, position, updated_at)
             VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (singleton) DO UPDATE
             SET log_id = excluded.log_id, position = excluded.position,
                 updated_at = excluded.updated_at"
        } else {
            "INSERT INTO event_log_mark (singleton, log_id, position, updated_at)
             VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (singleton) DO UPDATE
             SET position = excluded.position, updated_at = excluded.updated_at
             WHERE event_log_mark.log_id = excluded.log_id
               AND event_log_mark.position < excluded.position"
        })
        .bind(mark.log_id)
        .bind(i64::try_from(mark.position).unwrap_or(i64::MAX))
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn outbox_ever_published(&self) -> Result<bool, StoreError> {
        // `AUTOINCREMENT` keeps the highest `seq` ever committed in `sqlite_sequence` (a
        // rollback takes it back), so a sequence past the row count means deleted rows.
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NOT NULL)
                 OR COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)
                    > (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)
    }
}
