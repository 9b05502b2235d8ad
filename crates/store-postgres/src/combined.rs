//! Hot-row combining on PostgreSQL: a whole batch of quantity deltas in one transaction with
//! a fixed number of statements (array parameters, `UNNEST`), decided by the shared planner
//! [`trueline_store::combine::plan`].
//!
//! Lock order, the same in every write path: items (in id order), then idempotency keys (in
//! key order), then at commit the outbox's per-organization advisory locks (migration 9) in
//! the order of their hashes (a batch's outbox rows are inserted in that order, each
//! organization's in plan order). Combiners of several instances therefore cannot deadlock
//! with each other or with the single-request paths (which lock their item, complete their
//! own key, and write one organization's outbox rows).

use crate::inventory::{ITEM_COLUMNS, item_from};
use crate::platform::{Tx, stored_response};
use crate::{PgStore, db_error};
use sqlx::Row;
use std::collections::HashMap;
use time::OffsetDateTime;
use trueline_core::ids::ItemId;
use trueline_store::combine::{KeyId, KeyState, Plan, plan};
use trueline_store::{DeltaJob, DeltaOutcome, HistoryKind, InlineIdempotency, Item, StoreError};
use uuid::Uuid;

pub(crate) async fn apply_deltas(
    store: &PgStore,
    jobs: &[DeltaJob],
) -> Result<Vec<DeltaOutcome>, StoreError> {
    let mut tx = store.pool.begin().await.map_err(db_error)?;
    let items = lock_items(&mut tx, jobs).await?;
    let keys = claim_keys(&mut tx, jobs).await?;
    let plan = plan(jobs, items, &keys);
    write_items(&mut tx, &plan).await?;
    write_history(&mut tx, jobs, &plan).await?;
    write_outbox(&mut tx, &plan).await?;
    write_keys(&mut tx, jobs, &plan).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(plan.outcomes)
}

/// Locks the batch's items, each by (id, organization) of the job naming it: an id sent by a
/// member of another organization matches no row, so it neither locks that row (making the
/// owner's writers wait, and the sender's request wait on the owner's: a hint that the id
/// exists) nor is read. The planner checks the organization again.
async fn lock_items(tx: &mut Tx, jobs: &[DeltaJob]) -> Result<HashMap<ItemId, Item>, StoreError> {
    let mut pairs: Vec<(Uuid, Uuid)> = jobs
        .iter()
        .map(|j| (j.item_id.0, j.actor.org_id.0))
        .collect();
    pairs.sort();
    pairs.dedup();
    let (ids, orgs): (Vec<Uuid>, Vec<Uuid>) = pairs.into_iter().unzip();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM items
         WHERE (id, org_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
         ORDER BY id FOR UPDATE OF items"
    )))
    .bind(&ids)
    .bind(&orgs)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    rows.iter()
        .map(|row| item_from(row).map(|item| (item.id, item)))
        .collect()
}

fn key_id(idem: &InlineIdempotency) -> KeyId {
    (
        idem.scope.org_id.0,
        idem.scope.user_id.0,
        idem.scope.key.clone(),
    )
}

/// Inserts every new key as pending (ours now: a concurrent inserter of the same key waits
/// for our commit), then locks the keys that already existed and reads them.
async fn claim_keys(
    tx: &mut Tx,
    jobs: &[DeltaJob],
) -> Result<HashMap<KeyId, KeyState>, StoreError> {
    // The first job of each key, in key order.
    let mut firsts: Vec<(KeyId, &DeltaJob, &InlineIdempotency)> = Vec::new();
    for job in jobs {
        if let Some(idem) = &job.idempotency
            && !firsts.iter().any(|(id, _, _)| *id == key_id(idem))
        {
            firsts.push((key_id(idem), job, idem));
        }
    }
    if firsts.is_empty() {
        return Ok(HashMap::new());
    }
    firsts.sort_by(|a, b| a.0.cmp(&b.0));
    let orgs: Vec<Uuid> = firsts.iter().map(|(id, _, _)| id.0).collect();
    let users: Vec<Uuid> = firsts.iter().map(|(id, _, _)| id.1).collect();
    let names: Vec<String> = firsts.iter().map(|(id, _, _)| id.2.clone()).collect();
    let prints: Vec<Vec<u8>> = firsts
        .iter()
        .map(|(_, _, k)| k.fingerprint.to_vec())
        .collect();
    let locks: Vec<OffsetDateTime> = firsts.iter().map(|(_, _, k)| k.locked_until).collect();
    let nows: Vec<OffsetDateTime> = firsts.iter().map(|(_, j, _)| j.actor.now).collect();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (org_id, user_id, key, fingerprint, state, locked_until,
                                       created_at)
         SELECT o, u, k, f, 'pending', l, c
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $5::timestamptz[],
                     $6::timestamptz[]) WITH ORDINALITY AS t(o, u, k, f, l, c, n)
         ORDER BY n
         ON CONFLICT (org_id, user_id, key) DO NOTHING
         RETURNING org_id, user_id, key",
    )
    .bind(&orgs)
    .bind(&users)
    .bind(&names)
    .bind(&prints)
    .bind(&locks)
    .bind(&nows)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let mut keys = HashMap::with_capacity(firsts.len());
    for row in &inserted {
        let id: KeyId = (
            row.try_get("org_id").map_err(db_error)?,
            row.try_get("user_id").map_err(db_error)?,
            row.try_get("key").map_err(db_error)?,
        );
        if let Some((_, _, idem)) = firsts.iter().find(|(k, _, _)| *k == id) {
            keys.insert(
                id,
                KeyState {
                    fingerprint: idem.fingerprint,
                    completed: None,
                    locked_until: idem.locked_until,
                    fresh: true,
                },
            );
        }
    }
    let existing: Vec<&KeyId> = firsts
        .iter()
        .map(|(id, _, _)| id)
        .filter(|id| !keys.contains_key(*id))
        .collect();
    if existing.is_empty() {
        return Ok(keys);
    }
    let rows = sqlx::query(
        "SELECT org_id, user_id, key, fingerprint, state, locked_until, response_status,
                response_headers, response_body
         FROM idempotency_keys
         WHERE (org_id, user_id, key) IN (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]))
         ORDER BY org_id, user_id, key
         FOR UPDATE",
    )
    .bind(existing.iter().map(|id| id.0).collect::<Vec<_>>())
    .bind(existing.iter().map(|id| id.1).collect::<Vec<_>>())
    .bind(existing.iter().map(|id| id.2.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    for row in &rows {
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
        keys.insert(
            id,
            KeyState {
                fingerprint: fingerprint.try_into().map_err(|_| {
                    StoreError::Internal("a stored fingerprint is not 32 bytes".into())
                })?,
                completed,
                locked_until: row.try_get("locked_until").map_err(db_error)?,
                fresh: false,
            },
        );
    }
    // A key deleted between the insert and the read (released by a request with the same
    // key that failed, or purged) is missing here. Its job is refused on its own as "in use"
    // (the non-combined claim answers the same race that way; a retry claims it afresh)
    // rather than going ahead unclaimed and failing the whole batch.
    for (id, _, idem) in &firsts {
        keys.entry(id.clone()).or_insert_with(|| KeyState {
            fingerprint: idem.fingerprint,
            completed: None,
            locked_until: idem.locked_until,
            fresh: false,
        });
    }
    Ok(keys)
}

/// Every changed item once, guarded by the version it was loaded (and locked) at.
async fn write_items(tx: &mut Tx, plan: &Plan) -> Result<(), StoreError> {
    if plan.items.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "UPDATE items SET qty = v.qty, version = v.version, updated_at = v.at
         FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::bigint[])
              AS v(id, qty, version, at, loaded)
         WHERE items.id = v.id AND items.version = v.loaded",
    )
    .bind(plan.items.iter().map(|(i, _)| i.id.0).collect::<Vec<_>>())
    .bind(
        plan.items
            .iter()
            .map(|(i, _)| i.qty as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.items
            .iter()
            .map(|(i, _)| i.version as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.items
            .iter()
            .map(|(i, _)| i.updated_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        plan.items
            .iter()
            .map(|(_, v)| *v as i64)
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    if done.rows_affected() != plan.items.len() as u64 {
        return Err(StoreError::Internal(
            "a locked item changed under the combined batch".into(),
        ));
    }
    Ok(())
}

async fn write_history(tx: &mut Tx, jobs: &[DeltaJob], plan: &Plan) -> Result<(), StoreError> {
    if plan.changes.is_empty() {
        return Ok(());
    }
    let actor = |c: &trueline_store::combine::PlannedChange| &jobs[c.job].actor;
    let c = &plan.changes;
    sqlx::query(
        "INSERT INTO item_history (id, org_id, item_id, version, kind, delta, qty_after, name, sku,
                                   actor_user_id, request_id, at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[],
                              $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::uuid[],
                              $11::text[], $12::timestamptz[])",
    )
    .bind(c.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| actor(c).org_id.0).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.item.id.0).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.item.version as i64).collect::<Vec<_>>())
    .bind(
        c.iter()
            .map(|_| HistoryKind::QtyChanged.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(c.iter().map(|c| c.delta).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.item.qty as i64).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.item.name.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.item.sku.clone()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| actor(c).user_id.0).collect::<Vec<_>>())
    .bind(
        c.iter()
            .map(|c| actor(c).request_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(c.iter().map(|c| actor(c).now).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Grouped by organization in the order of the outbox lock's key, and in plan order within
/// each, so each item's events take sequence numbers in version order and the commit-order
/// trigger (migration 9), which fires row by row, takes the organizations' locks in one
/// global order: two batches with organizations A and B cannot each hold one and wait for
/// the other.
async fn write_outbox(tx: &mut Tx, plan: &Plan) -> Result<(), StoreError> {
    if plan.events.is_empty() {
        return Ok(());
    }
    let e = &plan.events;
    sqlx::query(
        "INSERT INTO outbox (event_id, org_id, event_type, stream, payload, created_at)
         SELECT i, o, t, s, p::jsonb, c
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[]) WITH ORDINALITY AS u(i, o, t, s, p, c, n)
         ORDER BY hashtextextended('trueline.outbox ' || o::text, 0), n",
    )
    .bind(e.iter().map(|e| e.event_id.0).collect::<Vec<_>>())
    .bind(e.iter().map(|e| e.org_id.0).collect::<Vec<_>>())
    .bind(e.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|e| e.stream.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|e| e.payload.get()).collect::<Vec<_>>())
    .bind(e.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Every key of the batch was claimed above, so applied jobs complete their row and refused
/// ones delete it (a refused request stores nothing).
async fn write_keys(tx: &mut Tx, jobs: &[DeltaJob], plan: &Plan) -> Result<(), StoreError> {
    if !plan.complete.is_empty() {
        let mut orgs = Vec::new();
        let mut users = Vec::new();
        let mut names = Vec::new();
        let mut prints = Vec::new();
        let mut statuses = Vec::new();
        let mut headers = Vec::new();
        let mut bodies = Vec::new();
        let mut ats = Vec::new();
        for done in &plan.complete {
            if !done.exists {
                return Err(StoreError::Internal(
                    "an unclaimed key in a combined batch".into(),
                ));
            }
            orgs.push(done.scope.org_id.0);
            users.push(done.scope.user_id.0);
            names.push(done.scope.key.clone());
            prints.push(done.fingerprint.to_vec());
            statuses.push(i32::from(done.response.status));
            headers.push(
                serde_json::to_string(&done.response.headers)
                    .map_err(|e| StoreError::Internal(format!("cannot encode headers: {e}")))?,
            );
            bodies.push(done.response.body.clone());
            ats.push(jobs[done.job].actor.now);
        }
        let updated = sqlx::query(
            "UPDATE idempotency_keys AS k
             SET state = 'completed', fingerprint = v.f, response_status = v.s,
                 response_headers = v.h::jsonb, response_body = v.b, completed_at = v.at,
                 created_at = v.at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $5::int[], $6::text[],
                         $7::bytea[], $8::timestamptz[]) AS v(o, u, k, f, s, h, b, at)
             WHERE k.org_id = v.o AND k.user_id = v.u AND k.key = v.k AND k.state = 'pending'",
        )
        .bind(&orgs)
        .bind(&users)
        .bind(&names)
        .bind(&prints)
        .bind(&statuses)
        .bind(&headers)
        .bind(&bodies)
        .bind(&ats)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() != plan.complete.len() as u64 {
            return Err(StoreError::Internal(
                "a claimed idempotency key changed under the combined batch".into(),
            ));
        }
    }
    if !plan.release.is_empty() {
        let scopes = &plan.release;
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE (org_id, user_id, key) IN
                   (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]))
               AND state = 'pending'",
        )
        .bind(scopes.iter().map(|s| s.org_id.0).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.user_id.0).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.key.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}
