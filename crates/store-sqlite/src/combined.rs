//! Hot-row combining on SQLite: a whole batch of quantity deltas in one `BEGIN IMMEDIATE`
//! transaction, decided by the shared planner [`trueline_store::combine::plan`].
//!
//! The batch runs on the caller's thread, straight on the writer connection's SQLite handle
//! ([`WriteConn::with_handle`](crate::writer::WriteConn::with_handle): sqlx's `lock_handle`,
//! wrapped by rusqlite), not as commands to the connection's worker thread. Each sqlx call
//! is a hand-off between two threads (and every row read comes back through a channel,
//! waking the caller): under `spread` the writer thread sat idle ~30 % of the time between
//! the calls of a batch, and was preempted ~3,300 times a second by the threads it woke
//! (`perf sched`, docs/benchmarks.md, 2026-12-04 midday). Here a batch costs SQLite's own
//! work and at most one hand-off (taking the handle), which a run of batches
//! ([`apply_delta_batches`]) shares until another writer waits; the statements are prepared
//! once per connection and run once per row.
//!
//! The combiner calls this from its own thread (a current-thread runtime that exists for
//! it), where blocking is the point; on a multi-thread runtime the work goes through
//! `block_in_place`. `BEGIN IMMEDIATE`, `COMMIT` and `ROLLBACK` are plain SQL that sqlx does
//! not track: the writer's untracked-transaction flag stays set until the handle says no
//! transaction is open (see `writer::WriteConn::begin_untracked`).

use crate::direct::{blocking, direct_error};
use crate::inventory::ITEM_COLUMNS;
use crate::platform::decode_response;
use crate::{SqliteStore, db_error, from_micros, micros};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use trueline_core::ids::{ItemId, OrgId, UserId};
use trueline_store::combine::{KeyId, KeyState, Plan, plan};
use trueline_store::{
    DeltaBatches, DeltaJob, DeltaOutcome, HistoryKind, IdempotencyScope, Item, StoreError,
};

/// One batch: a run of one (below).
pub(crate) async fn apply_deltas(
    store: &SqliteStore,
    jobs: &[DeltaJob],
) -> Result<Vec<DeltaOutcome>, StoreError> {
    struct One {
        jobs: Option<Vec<DeltaJob>>,
        outcome: Option<Result<Vec<DeltaOutcome>, StoreError>>,
    }
    impl DeltaBatches for One {
        fn next_ready(&mut self) -> Option<Vec<DeltaJob>> {
            self.jobs.take()
        }
        fn done(&mut self, outcome: Result<Vec<DeltaOutcome>, StoreError>) {
            self.outcome = Some(outcome);
        }
    }
    let mut one = One {
        jobs: Some(jobs.to_vec()),
        outcome: None,
    };
    apply_delta_batches(store, &mut one).await;
    one.outcome
        .unwrap_or_else(|| Err(StoreError::Internal("the batch did not run".into())))
}

/// Batch after batch while `batches` has one ready, keeping the writer connection and its
/// handle between them (one hand-off per run instead of one per batch) until another writer
/// waits for the connection. Each batch is its own transaction, committed before its outcome
/// goes back.
pub(crate) async fn apply_delta_batches(
    store: &SqliteStore,
    batches: &mut (dyn DeltaBatches + Send),
) {
    let mut next = batches.next_ready();
    while let Some(jobs) = next {
        next = hold_writer_for(store, jobs, batches).await;
    }
}

/// Takes the writer and runs `jobs`, then every batch ready after it while nobody else waits
/// for the writer; returns the batch taken but not run (it goes to the next hold).
async fn hold_writer_for(
    store: &SqliteStore,
    mut jobs: Vec<DeltaJob>,
    batches: &mut (dyn DeltaBatches + Send),
) -> Option<Vec<DeltaJob>> {
    let mut conn = match store.writer.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            batches.done(Err(e));
            return batches.next_ready();
        }
    };
    conn.begin_untracked();
    let writer = &store.writer;
    let ran = conn
        .with_handle(|db| {
            blocking(|| {
                loop {
                    let outcome = run_batch(db, &jobs);
                    let closed = db.is_autocommit();
                    batches.done(outcome);
                    // Still open: the writer rolls it back before its next use.
                    if !closed || writer.wanted() {
                        return (closed, batches.next_ready());
                    }
                    match batches.next_ready() {
                        Some(next) => jobs = next,
                        None => return (true, None),
                    }
                }
            })
        })
        .await;
    match ran {
        Err(e) => {
            conn.note_error(&e);
            batches.done(Err(db_error(e)));
            batches.next_ready()
        }
        Ok((closed, next)) => {
            if closed {
                conn.end_untracked();
            }
            next
        }
    }
}

/// The transaction: `BEGIN IMMEDIATE`, the reads, the plan, the writes, `COMMIT`; on any
/// failure `ROLLBACK` (the caller sees from the handle whether one is still open).
fn run_batch(db: &Connection, jobs: &[DeltaJob]) -> Result<Vec<DeltaOutcome>, StoreError> {
    db.execute_batch("BEGIN IMMEDIATE").map_err(direct_error)?;
    let applied = load(db, jobs).and_then(|(items, keys)| {
        let plan = plan(jobs, items, &keys);
        write(db, jobs, &plan)?;
        Ok(plan.outcomes)
    });
    let end = if applied.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    match (applied, db.execute_batch(end)) {
        (Ok(outcomes), Ok(())) => Ok(outcomes),
        (Ok(_), Err(e)) => {
            // A failed COMMIT can leave the transaction open.
            let _ = db.execute_batch("ROLLBACK");
            Err(direct_error(e))
        }
        (Err(e), _) => Err(e),
    }
}

/// What the plan decides on: the items, the stored keys.
type Loaded = (HashMap<ItemId, Item>, HashMap<KeyId, KeyState>);

/// The batch's items (by id, any organization: the plan checks the job's) and the key rows
/// it carries.
fn load(db: &Connection, jobs: &[DeltaJob]) -> Result<Loaded, StoreError> {
    let mut items = HashMap::with_capacity(jobs.len());
    let mut item_stmt = db
        .prepare_cached(&format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ?1"))
        .map_err(direct_error)?;
    for job in jobs {
        if items.contains_key(&job.item_id) {
            continue;
        }
        let found = item_stmt
            .query_row([job.item_id.0.as_bytes()], item_from)
            .optional()
            .map_err(direct_error)?;
        if let Some(item) = found {
            let item = item?;
            items.insert(item.id, item);
        }
    }
    let mut keys = HashMap::new();
    let mut key_stmt = db.prepare_cached(KEY_LOOKUP).map_err(direct_error)?;
    for scope in jobs
        .iter()
        .filter_map(|j| j.idempotency.as_ref().map(|k| &k.scope))
    {
        let found = key_stmt
            .query_row(
                params![
                    scope.org_id.0.as_bytes(),
                    scope.user_id.0.as_bytes(),
                    scope.key
                ],
                key_from,
            )
            .optional()
            .map_err(direct_error)?;
        if let Some(state) = found {
            keys.insert((scope.org_id.0, scope.user_id.0, scope.key.clone()), state?);
        }
    }
    Ok((items, keys))
}

/// One key row by its primary key.
const KEY_LOOKUP: &str = "SELECT fingerprint, state, locked_until, response_status,
        response_headers, response_body
    FROM idempotency_keys WHERE org_id = ?1 AND user_id = ?2 AND key = ?3";

/// An item from a row of `ITEM_COLUMNS`, in that order.
fn item_from(row: &Row<'_>) -> rusqlite::Result<Result<Item, StoreError>> {
    let qty: i64 = row.get(4)?;
    let version: i64 = row.get(5)?;
    let created_at: i64 = row.get(6)?;
    let updated_at: i64 = row.get(7)?;
    let fields = (
        uuid_at(row, 0)?,
        uuid_at(row, 1)?,
        row.get::<_, String>(2)?,
        row.get::<_, Option<String>>(3)?,
        uuid_at(row, 8)?,
        row.get::<_, String>(9)?,
    );
    let (id, org_id, name, sku, created_by, name_key) = fields;
    Ok((|| {
        Ok(Item {
            id: ItemId(id),
            org_id: OrgId(org_id),
            name,
            sku,
            qty: qty as u64,
            version: version as u64,
            created_at: from_micros(created_at)?,
            updated_at: from_micros(updated_at)?,
            created_by: UserId(created_by),
            name_key,
        })
    })())
}

/// A 16-byte BLOB column as a UUID (how sqlx stores `Uuid` on SQLite).
fn uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<uuid::Uuid> {
    let bytes: [u8; 16] = row.get(index)?;
    Ok(uuid::Uuid::from_bytes(bytes))
}

fn key_from(row: &Row<'_>) -> rusqlite::Result<Result<KeyState, StoreError>> {
    let fingerprint: Vec<u8> = row.get(0)?;
    let state: String = row.get(1)?;
    let locked_until: i64 = row.get(2)?;
    let status: Option<i64> = row.get(3)?;
    let headers: Option<String> = row.get(4)?;
    let body: Option<Vec<u8>> = row.get(5)?;
    Ok((|| {
        let completed = match (state.as_str(), status, headers, body) {
            ("completed", Some(status), Some(headers), Some(body)) => {
                Some(decode_response(status, &headers, body)?)
            }
            ("completed", ..) => {
                return Err(StoreError::Internal(
                    "a completed idempotency key without its response".into(),
                ));
            }
            _ => None,
        };
        Ok(KeyState {
            fingerprint: fingerprint
                .try_into()
                .map_err(|_| StoreError::Internal("a stored fingerprint is not 32 bytes".into()))?,
            completed,
            locked_until: from_micros(locked_until)?,
            fresh: false,
        })
    })())
}

/// Every row the batch adds or changes, one prepared statement per table run once per row:
/// every changed item once, guarded by the version it was loaded at (under the write lock
/// nothing can have moved it; if something did, the batch fails as a whole), its history
/// records, the outbox events, the new idempotency keys (inserted completed), the existing
/// ones (expired claims taken over) completed, and the claims of refused jobs deleted.
fn write(db: &Connection, jobs: &[DeltaJob], plan: &Plan) -> Result<(), StoreError> {
    let moved =
        || StoreError::Internal("an item changed under the combined batch's write lock".into());
    let mut update = db
        .prepare_cached(
            "UPDATE items SET qty = ?2, version = ?3, updated_at = ?4 WHERE id = ?1 AND version = ?5",
        )
        .map_err(direct_error)?;
    for (item, loaded) in &plan.items {
        let changed = update
            .execute(params![
                item.id.0.as_bytes(),
                item.qty as i64,
                item.version as i64,
                micros(item.updated_at),
                *loaded as i64,
            ])
            .map_err(direct_error)?;
        if changed != 1 {
            return Err(moved());
        }
    }
    let mut history = db.prepare_cached(HISTORY_INSERT).map_err(direct_error)?;
    for change in &plan.changes {
        let actor = &jobs[change.job].actor;
        history
            .execute(params![
                uuid::Uuid::now_v7().as_bytes(),
                actor.org_id.0.as_bytes(),
                change.item.id.0.as_bytes(),
                change.item.version as i64,
                HistoryKind::QtyChanged.as_str(),
                change.delta,
                change.item.qty as i64,
                change.item.name,
                change.item.sku,
                actor.user_id.0.as_bytes(),
                actor.request_id,
                micros(actor.now),
            ])
            .map_err(direct_error)?;
    }
    let mut outbox = db
        .prepare_cached(
            "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(direct_error)?;
    for event in &plan.events {
        outbox
            .execute(params![
                event.event_id.0.as_bytes(),
                event.org_id.0.as_bytes(),
                event.event_type,
                event.stream,
                event.payload.get(),
                micros(event.created_at),
            ])
            .map_err(direct_error)?;
    }
    write_keys(db, jobs, plan)
}

/// One history record of a quantity change (no reason: a delta carries none).
const HISTORY_INSERT: &str = "INSERT INTO item_history (id, org_id, item_id, version, kind,
        delta, qty_after, name, sku, reason, actor_user_id, request_id, at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11, ?12)";

/// The keys of applied jobs, stored completed with their response; the pending claims of
/// refused jobs deleted (a refused request stores nothing).
fn write_keys(db: &Connection, jobs: &[DeltaJob], plan: &Plan) -> Result<(), StoreError> {
    let mut insert = db
        .prepare_cached(
            "INSERT INTO idempotency_keys
             (org_id, user_id, key, fingerprint, state, locked_until, response_status,
              response_headers, response_body, created_at, completed_at)
             VALUES (?1, ?2, ?3, ?4, 'completed', ?5, ?6, ?7, ?8, ?9, ?9)",
        )
        .map_err(direct_error)?;
    for done in &plan.complete {
        let headers = serde_json::to_string(&done.response.headers)
            .map_err(|e| StoreError::Internal(format!("cannot encode headers: {e}")))?;
        let scope = &done.scope;
        let now = micros(jobs[done.job].actor.now);
        let changed = if done.exists {
            // A taken-over claim becomes this request's: its fingerprint and age too.
            db.prepare_cached(
                "UPDATE idempotency_keys
                 SET state = 'completed', response_status = ?4, response_headers = ?5,
                     response_body = ?6, completed_at = ?7, created_at = ?7, fingerprint = ?8
                 WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending'",
            )
            .and_then(|mut update| {
                update.execute(params![
                    scope.org_id.0.as_bytes(),
                    scope.user_id.0.as_bytes(),
                    scope.key,
                    i64::from(done.response.status),
                    headers,
                    done.response.body,
                    now,
                    &done.fingerprint[..],
                ])
            })
        } else {
            insert.execute(params![
                scope.org_id.0.as_bytes(),
                scope.user_id.0.as_bytes(),
                scope.key,
                &done.fingerprint[..],
                micros(done.locked_until),
                i64::from(done.response.status),
                headers,
                done.response.body,
                now,
            ])
        }
        .map_err(direct_error)?;
        if changed != 1 {
            return Err(StoreError::Internal(
                "an idempotency key changed under the combined batch's write lock".into(),
            ));
        }
    }
    for scope in &plan.release {
        release_claim(db, scope)?;
    }
    Ok(())
}

fn release_claim(db: &Connection, scope: &IdempotencyScope) -> Result<(), StoreError> {
    db.prepare_cached(
        "DELETE FROM idempotency_keys
         WHERE org_id = ?1 AND user_id = ?2 AND key = ?3 AND state = 'pending'",
    )
    .and_then(|mut delete| {
        delete.execute(params![
            scope.org_id.0.as_bytes(),
            scope.user_id.0.as_bytes(),
            scope.key
        ])
    })
    .map_err(direct_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan, not a timing: SQLite evaluates `x IN (…)` of more than two constants in a
    /// CHECK through an ephemeral b-tree built anew for every execution, an in-memory database
    /// opened and closed per history record (the reason for migration 15).
    #[tokio::test]
    async fn history_records_are_checked_without_an_ephemeral_table() {
        let (_dir, store) = crate::tests::migrated().await;
        let mut conn = store.writer.acquire().await.unwrap();
        let opcodes: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {HISTORY_INSERT}")))
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, "opcode"))
                .collect();
        assert!(opcodes.iter().any(|op| op == "Insert"), "{opcodes:?}");
        assert!(
            !opcodes.iter().any(|op| op == "OpenEphemeral"),
            "{opcodes:?}"
        );
    }

    /// The plan, not a timing: a scan of the key index costs every key ever stored.
    #[tokio::test]
    async fn idempotency_keys_are_looked_up_through_the_index() {
        let (_dir, store) = crate::tests::migrated().await;
        let mut conn = store.writer.acquire().await.unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {KEY_LOOKUP}"
        )))
        .bind(OrgId::new().0)
        .bind(UserId::new().0)
        .bind("key")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
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
