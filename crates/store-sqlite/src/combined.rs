//! Hot-row combining on SQLite: a whole batch of quantity deltas in one `BEGIN IMMEDIATE`
//! transaction with a fixed number of calls (begin with the two reads, one multi-statement
//! write, commit), decided by the shared planner [`trueline_store::combine::plan`].
//!
//! Every call is a round trip to the connection's worker thread, which on two busy cores
//! costs ~0.2 ms of scheduling: that, not SQLite's work, was most of a batch beside its
//! `fsync`. So `BEGIN IMMEDIATE` goes out as plain SQL together with the reads, and the
//! transaction ends with plain `COMMIT` or `ROLLBACK`; the writer rolls back such a
//! transaction if a failure leaves it open (see `writer::WriteConn::begin_untracked`).

use crate::inventory::{ITEM_COLUMNS, item_from};
use crate::platform::stored_response;
use crate::{SqliteStore, db_error, from_micros, micros};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::HashMap;
use trueline_core::ids::ItemId;
use trueline_store::combine::{KeyId, KeyState, Plan, PlannedKey, plan};
use trueline_store::{DeltaJob, DeltaOutcome, HistoryKind, IdempotencyScope, Item, StoreError};

/// Rows per multi-row statement: well under SQLite's 32766 bound parameters at 13 per row.
const ROWS_PER_STATEMENT: usize = 500;

type Tx = crate::platform::Tx;

pub(crate) async fn apply_deltas(
    store: &SqliteStore,
    jobs: &[DeltaJob],
) -> Result<Vec<DeltaOutcome>, StoreError> {
    let mut conn = store.writer.acquire().await?;
    conn.begin_untracked();
    let outcome = apply_in_transaction(&mut conn, jobs).await;
    let ended = match &outcome {
        Ok(_) => sqlx::query("COMMIT").execute(&mut *conn).await,
        Err(_) => sqlx::query("ROLLBACK").execute(&mut *conn).await,
    };
    if let Err(e) = &ended {
        conn.note_error(e);
    }
    match (outcome, ended) {
        (Ok(outcomes), Ok(_)) => {
            conn.end_untracked();
            Ok(outcomes)
        }
        // A failed COMMIT may leave the transaction open: the flag stays set, and the writer
        // rolls it back before anyone else uses the connection.
        (Ok(_), Err(e)) => Err(db_error(e)),
        (Err(e), rolled_back) => {
            if rolled_back.is_ok() {
                conn.end_untracked();
            }
            Err(e)
        }
    }
}

/// `BEGIN IMMEDIATE` with the reads (one call), the plan, the writes.
async fn apply_in_transaction(
    conn: &mut Tx,
    jobs: &[DeltaJob],
) -> Result<Vec<DeltaOutcome>, StoreError> {
    let (items, keys) = begin_and_load(conn, jobs).await?;
    let plan = plan(jobs, items, &keys);
    write_rows(conn, jobs, &plan).await?;
    write_existing_keys(conn, jobs, &plan).await?;
    Ok(plan.outcomes)
}

/// Starts the transaction and reads the batch's items and idempotency keys in one call;
/// each row names the query it answers in its first column.
async fn begin_and_load(
    conn: &mut Tx,
    jobs: &[DeltaJob],
) -> Result<(HashMap<ItemId, Item>, HashMap<KeyId, KeyState>), StoreError> {
    let mut ids: Vec<ItemId> = jobs.iter().map(|j| j.item_id).collect();
    ids.sort();
    ids.dedup();
    let scopes: Vec<_> = jobs
        .iter()
        .filter_map(|j| j.idempotency.as_ref().map(|k| &k.scope))
        .collect();
    let mut query = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE");
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        query.push(format!(
            ";\nSELECT 'item' AS answer, {ITEM_COLUMNS} FROM items WHERE id IN ("
        ));
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(id.0);
        }
        query.push(")");
    }
    for chunk in scopes.chunks(ROWS_PER_STATEMENT) {
        query.push(";\n");
        push_key_lookup(&mut query, chunk);
    }
    let rows = query
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    let mut items = HashMap::with_capacity(ids.len());
    let mut keys = HashMap::new();
    for row in rows {
        let answer: &str = row.try_get("answer").map_err(db_error)?;
        if answer == "item" {
            let item = item_from(&row)?;
            items.insert(item.id, item);
        } else {
            let (id, key) = key_from(&row)?;
            keys.insert(id, key);
        }
    }
    Ok((items, keys))
}

/// Reads the idempotency keys of `scopes` (rows answer `key`). The bundled SQLite searches
/// the key index once per listed key for this row-value `IN` (older versions, e.g. 3.40,
/// scan the whole index: every key ever stored, on every batch); a test holds the plan.
fn push_key_lookup(query: &mut QueryBuilder<Sqlite>, scopes: &[&IdempotencyScope]) {
    query.push(
        "SELECT 'key' AS answer, org_id, user_id, key, fingerprint, state, locked_until,
                response_status, response_headers, response_body
         FROM idempotency_keys WHERE (org_id, user_id, key) IN (",
    );
    query.push_values(scopes, |mut row, scope| {
        row.push_bind(scope.org_id.0)
            .push_bind(scope.user_id.0)
            .push_bind(&scope.key);
    });
    query.push(")");
}

fn key_from(row: &SqliteRow) -> Result<(KeyId, KeyState), StoreError> {
    let id: KeyId = (
        row.try_get("org_id").map_err(db_error)?,
        row.try_get("user_id").map_err(db_error)?,
        row.try_get("key").map_err(db_error)?,
    );
    let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(db_error)?;
    let state: String = row.try_get("state").map_err(db_error)?;
    let completed = if state == "completed" {
        Some(stored_response(row)?)
    } else {
        None
    };
    let key = KeyState {
        fingerprint: fingerprint
            .try_into()
            .map_err(|_| StoreError::Internal("a stored fingerprint is not 32 bytes".into()))?,
        completed,
        locked_until: from_micros(row.try_get("locked_until").map_err(db_error)?)?,
        fresh: false,
    };
    Ok((id, key))
}

/// Every row the batch adds or changes, as one multi-statement string sent to SQLite in a
/// single call: each statement is a round trip to the connection's worker thread, and those
/// hand-offs, not SQLite's own work, were most of a batch's time (perf: context switches).
/// The parameters are anonymous `?`, which SQLite numbers across the statements in order.
///
/// Every changed item once, guarded by the version it was loaded at (under the write lock
/// nothing can have moved it; if something did, the batch fails as a whole), its history
/// records, the outbox events, and the new idempotency keys, inserted completed. Inserts
/// affect exactly their rows, so the total tells whether every guarded update matched.
async fn write_rows(tx: &mut Tx, jobs: &[DeltaJob], plan: &Plan) -> Result<(), StoreError> {
    let mut query = QueryBuilder::<Sqlite>::new("");
    let mut expected = 0u64;
    let mut separator = "";
    for chunk in plan.items.chunks(ROWS_PER_STATEMENT) {
        query.push(separator);
        separator = ";\n";
        query.push(
            "UPDATE items SET qty = v.column2, version = v.column3, updated_at = v.column4
             FROM (",
        );
        query.push_values(chunk, |mut row, (item, loaded)| {
            row.push_bind(item.id.0)
                .push_bind(item.qty as i64)
                .push_bind(item.version as i64)
                .push_bind(micros(item.updated_at))
                .push_bind(*loaded as i64);
        });
        query.push(") AS v WHERE items.id = v.column1 AND items.version = v.column5");
        expected += chunk.len() as u64;
    }
    for chunk in plan.changes.chunks(ROWS_PER_STATEMENT) {
        query.push(separator);
        separator = ";\n";
        query.push(
            "INSERT INTO item_history (id, org_id, item_id, version, kind, delta, qty_after, name,
                                       sku, reason, actor_user_id, request_id, at) ",
        );
        query.push_values(chunk, |mut row, change| {
            let actor = &jobs[change.job].actor;
            row.push_bind(uuid::Uuid::now_v7())
                .push_bind(actor.org_id.0)
                .push_bind(change.item.id.0)
                .push_bind(change.item.version as i64)
                .push_bind(HistoryKind::QtyChanged.as_str())
                .push_bind(change.delta)
                .push_bind(change.item.qty as i64)
                .push_bind(change.item.name.clone())
                .push_bind(change.item.sku.clone())
                .push_bind(None::<String>)
                .push_bind(actor.user_id.0)
                .push_bind(actor.request_id.clone())
                .push_bind(micros(actor.now));
        });
        expected += chunk.len() as u64;
    }
    for chunk in plan.events.chunks(ROWS_PER_STATEMENT) {
        query.push(separator);
        separator = ";\n";
        query.push(
            "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at) ",
        );
        query.push_values(chunk, |mut row, event| {
            row.push_bind(event.event_id.0)
                .push_bind(event.org_id.0)
                .push_bind(event.event_type.clone())
                .push_bind(event.stream.clone())
                .push_bind(event.payload.to_string())
                .push_bind(micros(event.created_at));
        });
        expected += chunk.len() as u64;
    }
    let mut new = Vec::new();
    for done in plan.complete.iter().filter(|done| !done.exists) {
        new.push((done, encode_headers(done)?));
    }
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        query.push(separator);
        separator = ";\n";
        query.push(
            "INSERT INTO idempotency_keys
             (org_id, user_id, key, fingerprint, state, locked_until, response_status,
              response_headers, response_body, created_at, completed_at) ",
        );
        query.push_values(chunk, |mut row, (done, headers)| {
            let now = micros(jobs[done.job].actor.now);
            row.push_bind(done.scope.org_id.0)
                .push_bind(done.scope.user_id.0)
                .push_bind(done.scope.key.clone())
                .push_bind(done.fingerprint.to_vec())
                .push_bind("completed")
                .push_bind(micros(done.locked_until))
                .push_bind(i64::from(done.response.status))
                .push_bind(headers.clone())
                .push_bind(done.response.body.clone())
                .push_bind(now)
                .push_bind(now);
        });
        expected += chunk.len() as u64;
    }
    if expected == 0 {
        return Ok(());
    }
    let done = query.build().execute(&mut *tx).await.map_err(db_error)?;
    if done.rows_affected() != expected {
        return Err(StoreError::Internal(
            "an item changed under the combined batch's write lock".into(),
        ));
    }
    Ok(())
}

/// Rows that existed (expired claims taken over) are completed or, if their job was
/// refused, deleted. Rare: one statement each.
async fn write_existing_keys(
    tx: &mut Tx,
    jobs: &[DeltaJob],
    plan: &Plan,
) -> Result<(), StoreError> {
    let existing = plan.complete.iter().filter(|done| done.exists);
    for planned in existing {
        let headers = encode_headers(planned)?;
        let scope = &planned.scope;
        let done = sqlx::query(
            // A taken-over claim becomes this request's: its fingerprint and age too.
            "UPDATE idempotency_keys
             SET state = 'completed', response_status = ?4, response_headers = ?5,
                 response_body = ?6, completed_at = ?7, created_at = ?7, fingerprint = ?8
             WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending'",
        )
        .bind(scope.org_id.0)
        .bind(scope.user_id.0)
        .bind(&scope.key)
        .bind(i64::from(planned.response.status))
        .bind(headers)
        .bind(&planned.response.body)
        .bind(micros(jobs[planned.job].actor.now))
        .bind(planned.fingerprint.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Internal(
                "an idempotency key changed under the combined batch's write lock".into(),
            ));
        }
    }
    for scope in &plan.release {
        crate::platform::drop_inline_claim(tx, scope).await?;
    }
    Ok(())
}

fn encode_headers(done: &PlannedKey) -> Result<String, StoreError> {
    serde_json::to_string(&done.response.headers)
        .map_err(|e| StoreError::Internal(format!("cannot encode headers: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trueline_core::ids::{OrgId, UserId};
    use trueline_store::Migrations;

    /// The plan, not a timing: a scan of the key index costs every key ever stored.
    #[tokio::test]
    async fn idempotency_keys_are_looked_up_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url, crate::SqliteOptions::default())
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        let scopes: Vec<IdempotencyScope> = (0..3)
            .map(|i| IdempotencyScope::new(OrgId::new(), UserId::new(), format!("key-{i}")))
            .collect();
        let refs: Vec<&IdempotencyScope> = scopes.iter().collect();
        let mut query = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
        push_key_lookup(&mut query, &refs);
        let mut conn = store.writer.acquire().await.unwrap();
        let plan: Vec<String> = query
            .build()
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH idempotency_keys USING")
                    && step.contains("key=?")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN idempotency_keys")),
            "{plan:?}"
        );
    }
}
