//! `ItemStore` on PostgreSQL. Every mutation: one transaction holding the guarded
//! statement, the history record, the outbox event and the idempotency record.

use crate::platform::{Tx, complete_idempotency, write_outbox};
use crate::{PgStore, constraint_name, db_error};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::collections::HashMap;
use trueline_core::DomainError;
use trueline_core::error::LineRejection;
use trueline_core::ids::{ItemId, OrgId, UserId};
use trueline_core::inventory::{Delta, JSON_SAFE_INTEGER_MAX, Quantity, QuantityRejection};
use trueline_store::{
    Actor, CursorKey, DeltaJob, DeltaOutcome, HistoryKind, HistoryRecord, Idempotency, Item,
    ItemChange, ItemCursor, ItemFilter, ItemPatch, ItemSort, ItemStore, NewItem, Page, PageRequest,
    QtyChange, StoreError, item_event,
};

pub(crate) const ITEM_COLUMNS: &str =
    "id, org_id, name, sku, qty, version, created_at, updated_at, created_by, name_key";

pub(crate) fn item_from(row: &PgRow) -> Result<Item, StoreError> {
    let qty: i64 = row.try_get("qty").map_err(db_error)?;
    let version: i64 = row.try_get("version").map_err(db_error)?;
    Ok(Item {
        id: ItemId(row.try_get("id").map_err(db_error)?),
        org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
        name: row.try_get("name").map_err(db_error)?,
        sku: row.try_get("sku").map_err(db_error)?,
        qty: qty as u64,
        version: version as u64,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        created_by: UserId(row.try_get("created_by").map_err(db_error)?),
        name_key: row.try_get("name_key").map_err(db_error)?,
    })
}

fn history_from(row: &PgRow) -> Result<HistoryRecord, StoreError> {
    let kind: String = row.try_get("kind").map_err(db_error)?;
    let version: i64 = row.try_get("version").map_err(db_error)?;
    let qty_after: i64 = row.try_get("qty_after").map_err(db_error)?;
    Ok(HistoryRecord {
        id: row.try_get("id").map_err(db_error)?,
        item_id: ItemId(row.try_get("item_id").map_err(db_error)?),
        version: version as u64,
        kind: HistoryKind::parse(&kind)
            .ok_or_else(|| StoreError::Internal(format!("unknown history kind {kind:?}")))?,
        delta: row.try_get("delta").map_err(db_error)?,
        qty_after: qty_after as u64,
        name: row.try_get("name").map_err(db_error)?,
        sku: row.try_get("sku").map_err(db_error)?,
        reason: row.try_get("reason").map_err(db_error)?,
        actor_user_id: UserId(row.try_get("actor_user_id").map_err(db_error)?),
        request_id: row.try_get("request_id").map_err(db_error)?,
        at: row.try_get("at").map_err(db_error)?,
    })
}

fn name_error(e: sqlx::Error, name: &str) -> StoreError {
    match constraint_name(&e) {
        Some("items_org_name_key") => DomainError::NameTaken {
            name: name.to_owned(),
        }
        .into(),
        _ => db_error(e),
    }
}

/// Appends one history record for `item` as it is after the change.
async fn record(
    tx: &mut Tx,
    actor: &Actor,
    item: &Item,
    kind: HistoryKind,
    delta: i64,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO item_history (id, org_id, item_id, version, kind, delta, qty_after, name, sku,
                                   reason, actor_user_id, request_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(actor.org_id.0)
    .bind(item.id.0)
    .bind(item.version as i64)
    .bind(kind.as_str())
    .bind(delta)
    .bind(item.qty as i64)
    .bind(&item.name)
    .bind(&item.sku)
    .bind(reason)
    .bind(actor.user_id.0)
    .bind(&actor.request_id)
    .bind(actor.now)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Reads an item inside a transaction, locking its row until the transaction ends.
async fn fetch_item(tx: &mut Tx, org_id: OrgId, id: ItemId) -> Result<Option<Item>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE id = $1 AND org_id = $2 FOR UPDATE"
    )))
    .bind(id.0)
    .bind(org_id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    row.as_ref().map(item_from).transpose()
}

/// The guarded transition: applies `delta` only if the result stays within `0..=2^53-1`.
/// On refusal, reads the row (locking it) to say why (not found, insufficient, overflow). A
/// change committed between the two statements may have made room: then the delta applies
/// after all, on the locked row, rather than being refused with a quantity that accepts it.
pub(crate) async fn apply_delta(
    tx: &mut Tx,
    actor: &Actor,
    id: ItemId,
    delta: Delta,
    reason: Option<&str>,
) -> Result<Item, StoreError> {
    let mut row = guarded_update(tx, actor, id, delta).await?;
    if row.is_none() {
        let Some(locked) = fetch_item(tx, actor.org_id, id).await? else {
            return Err(StoreError::not_found("item"));
        };
        let fits = Quantity::new(locked.qty).is_ok_and(|q| q.apply(delta).is_ok());
        if !fits {
            return Err(refusal(id, locked.qty, delta).into());
        }
        row = guarded_update(tx, actor, id, delta).await?;
    }
    let Some(row) = row else {
        return Err(StoreError::Internal(
            "the guarded update refused a locked row it fits".into(),
        ));
    };
    let item = item_from(&row)?;
    record(
        tx,
        actor,
        &item,
        HistoryKind::QtyChanged,
        delta.get(),
        reason,
    )
    .await?;
    write_outbox(
        tx,
        &item_event(
            actor,
            &item,
            ItemChange::QtyChanged {
                delta: delta.get(),
                reason,
            },
        ),
    )
    .await?;
    Ok(item)
}

async fn guarded_update(
    tx: &mut Tx,
    actor: &Actor,
    id: ItemId,
    delta: Delta,
) -> Result<Option<sqlx::postgres::PgRow>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE items SET qty = qty + $3, version = version + 1, updated_at = $4
         WHERE id = $1 AND org_id = $2 AND qty + $3 >= 0 AND qty + $3 <= {JSON_SAFE_INTEGER_MAX}
         RETURNING {ITEM_COLUMNS}"
    )))
    .bind(id.0)
    .bind(actor.org_id.0)
    .bind(delta.get())
    .bind(actor.now)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)
}

fn refusal(item_id: ItemId, current: u64, delta: Delta) -> DomainError {
    let rejection = Quantity::new(current).map_or(QuantityRejection::Overflow, |q| {
        q.apply(delta)
            .err()
            .unwrap_or(QuantityRejection::Insufficient)
    });
    match rejection {
        QuantityRejection::Insufficient => DomainError::InsufficientQuantity {
            item_id,
            current,
            delta: delta.get(),
        },
        QuantityRejection::Overflow => DomainError::QuantityOverflow {
            item_id,
            current,
            delta: delta.get(),
        },
    }
}

/// ORDER BY and keyset comparison for a sort, as (column, descending).
fn sort_column(sort: ItemSort) -> (&'static str, bool) {
    match sort {
        ItemSort::NameAsc => ("name_key", false),
        ItemSort::NameDesc => ("name_key", true),
        ItemSort::QtyAsc => ("qty", false),
        ItemSort::QtyDesc => ("qty", true),
        ItemSort::CreatedAsc => ("created_at", false),
        ItemSort::CreatedDesc => ("created_at", true),
    }
}

fn cursor_of(sort: ItemSort, item: &Item) -> ItemCursor {
    let key = match sort {
        ItemSort::NameAsc | ItemSort::NameDesc => CursorKey::Text(item.name_key.clone()),
        ItemSort::QtyAsc | ItemSort::QtyDesc => CursorKey::Int(item.qty as i64),
        ItemSort::CreatedAsc | ItemSort::CreatedDesc => {
            CursorKey::Int((item.created_at.unix_timestamp_nanos() / 1_000) as i64)
        }
    };
    ItemCursor {
        sort,
        key,
        id: item.id.0,
    }
}

#[async_trait::async_trait]
impl ItemStore for PgStore {
    async fn create_item(
        &self,
        actor: &Actor,
        new: NewItem,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO items (id, org_id, name, name_key, sku, qty, version, created_at,
                                updated_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8)
             RETURNING {ITEM_COLUMNS}"
        )))
        .bind(new.id.0)
        .bind(actor.org_id.0)
        .bind(new.name.as_str())
        .bind(new.name.key())
        .bind(new.sku.as_ref().map(|s| s.as_str()))
        .bind(new.qty.get() as i64)
        .bind(actor.now)
        .bind(actor.user_id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_error(e, new.name.as_str()))?;
        let item = item_from(&row)?;
        record(
            &mut tx,
            actor,
            &item,
            HistoryKind::Created,
            item.qty as i64,
            None,
        )
        .await?;
        write_outbox(&mut tx, &item_event(actor, &item, ItemChange::Created)).await?;
        complete_idempotency(&mut tx, idempotency, &item, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(item)
    }

    async fn item(&self, org_id: OrgId, id: ItemId) -> Result<Option<Item>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE id = $1 AND org_id = $2"
        )))
        .bind(id.0)
        .bind(org_id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(item_from).transpose()
    }

    async fn items(
        &self,
        org_id: OrgId,
        filter: &ItemFilter,
        page: PageRequest<ItemCursor>,
    ) -> Result<Page<Item, ItemCursor>, StoreError> {
        let (column, descending) = sort_column(filter.sort);
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE org_id = "
        ));
        query.push_bind(org_id.0);
        if let Some(q) = &filter.name_contains {
            query
                .push(" AND strpos(name_key, ")
                .push_bind(q.clone())
                .push(") > 0");
        }
        if let Some(min) = filter.min_qty {
            query
                .push(" AND qty >= ")
                .push_bind(min.min(i64::MAX as u64) as i64);
        }
        if let Some(max) = filter.max_qty {
            query
                .push(" AND qty <= ")
                .push_bind(max.min(i64::MAX as u64) as i64);
        }
        let order = if descending { "DESC" } else { "ASC" };
        if let Some(cursor) = &page.after {
            let cmp = if descending { "<" } else { ">" };
            query.push(format!(" AND ({column}, id) {cmp} ("));
            match (&cursor.key, filter.sort) {
                (CursorKey::Int(micros), ItemSort::CreatedAsc | ItemSort::CreatedDesc) => {
                    let at = time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(*micros) * 1_000,
                    )
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                    query.push_bind(at);
                }
                (CursorKey::Int(k), _) => {
                    query.push_bind(*k);
                }
                (CursorKey::Text(k), _) => {
                    query.push_bind(k.clone());
                }
            }
            query.push(", ").push_bind(cursor.id).push(")");
        }
        query.push(format!(" ORDER BY {column} {order}, id {order} LIMIT "));
        query.push_bind(i64::from(page.limit) + 1);
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let items = rows.iter().map(item_from).collect::<Result<Vec<_>, _>>()?;
        let sort = filter.sort;
        Ok(Page::from_overfetch(items, page.limit, |item| {
            cursor_of(sort, item)
        }))
    }

    async fn update_item(
        &self,
        actor: &Actor,
        id: ItemId,
        expected_version: Option<u64>,
        patch: ItemPatch,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = fetch_item(&mut tx, actor.org_id, id)
            .await?
            .ok_or(StoreError::not_found("item"))?;
        if let Some(expected) = expected_version
            && expected != current.version
        {
            return Err(DomainError::VersionMismatch {
                expected,
                current: current.version,
            }
            .into());
        }
        let name = patch
            .name
            .as_ref()
            .map_or(current.name.clone(), |n| n.as_str().to_owned());
        // An unchanged name (absent, or sent again as it is) keeps its stored key (see
        // `Item::name_key`).
        let name_key = patch
            .name
            .as_ref()
            .filter(|n| n.as_str() != current.name)
            .map_or_else(|| current.name_key.clone(), |n| n.key().to_owned());
        let sku = match &patch.sku {
            Some(sku) => sku.as_ref().map(|s| s.as_str().to_owned()),
            None => current.sku.clone(),
        };
        if name == current.name && sku == current.sku {
            complete_idempotency(&mut tx, idempotency, &current, actor.now).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(current);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE items SET name = $3, name_key = $4, sku = $5, version = version + 1,
                              updated_at = $6
             WHERE id = $1 AND org_id = $2 AND version = $7
             RETURNING {ITEM_COLUMNS}"
        )))
        .bind(id.0)
        .bind(actor.org_id.0)
        .bind(&name)
        .bind(&name_key)
        .bind(&sku)
        .bind(actor.now)
        .bind(current.version as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_error(e, &name))?;
        let item = item_from(&row)?;
        let kind = if item.name != current.name {
            HistoryKind::Renamed
        } else {
            HistoryKind::Updated
        };
        record(&mut tx, actor, &item, kind, 0, None).await?;
        write_outbox(
            &mut tx,
            &item_event(
                actor,
                &item,
                ItemChange::Updated {
                    previous_name: &current.name,
                    previous_sku: current.sku.as_deref(),
                },
            ),
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &item, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(item)
    }

    async fn delete_item(&self, actor: &Actor, id: ItemId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM items WHERE id = $1 AND org_id = $2 RETURNING {ITEM_COLUMNS}"
        )))
        .bind(id.0)
        .bind(actor.org_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(false) };
        let mut item = item_from(&row)?;
        let removed = item.qty as i64;
        item.qty = 0;
        item.version += 1;
        record(&mut tx, actor, &item, HistoryKind::Deleted, -removed, None).await?;
        write_outbox(&mut tx, &item_event(actor, &item, ItemChange::Deleted)).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn adjust_qty(
        &self,
        actor: &Actor,
        id: ItemId,
        delta: Delta,
        idempotency: Option<Idempotency<'_, Item>>,
    ) -> Result<Item, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let item = apply_delta(&mut tx, actor, id, delta, None).await?;
        complete_idempotency(&mut tx, idempotency, &item, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(item)
    }

    async fn apply_deltas(&self, jobs: &[DeltaJob]) -> Result<Vec<DeltaOutcome>, StoreError> {
        crate::combined::apply_deltas(self, jobs).await
    }

    async fn adjust_batch(
        &self,
        actor: &Actor,
        reason: Option<String>,
        lines: &[QtyChange],
        idempotency: Option<Idempotency<'_, Vec<Item>>>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Read every item once (canonical id order), then check each line in request order
        // against the running quantity, collecting every failing line.
        let mut ids: Vec<ItemId> = lines.iter().map(|l| l.item_id).collect();
        ids.sort();
        ids.dedup();
        // One statement locks every row in id order: two batches crossing the same items
        // always lock them in the same order, so they queue instead of deadlocking.
        let raw_ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = sqlx::query(
            "SELECT id, qty FROM items WHERE org_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
        )
        .bind(actor.org_id.0)
        .bind(&raw_ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut running: HashMap<ItemId, Option<u64>> = ids.iter().map(|id| (*id, None)).collect();
        for row in &rows {
            let id = ItemId(row.try_get("id").map_err(db_error)?);
            let qty: i64 = row.try_get("qty").map_err(db_error)?;
            running.insert(id, Some(qty as u64));
        }
        let mut rejections = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            match running.get_mut(&line.item_id).and_then(Option::as_mut) {
                None => rejections.push(LineRejection {
                    index,
                    error: DomainError::NotFound("item"),
                }),
                Some(qty) => match Quantity::new(*qty).map(|q| q.apply(line.delta)) {
                    Ok(Ok(after)) => *qty = after.get(),
                    _ => rejections.push(LineRejection {
                        index,
                        error: refusal(line.item_id, *qty, line.delta),
                    }),
                },
            }
        }
        if !rejections.is_empty() {
            return Err(DomainError::AdjustmentsRejected(rejections).into());
        }
        let mut after: Vec<Item> = Vec::new();
        for line in lines {
            let item =
                apply_delta(&mut tx, actor, line.item_id, line.delta, reason.as_deref()).await?;
            match after.iter_mut().find(|i| i.id == item.id) {
                Some(slot) => *slot = item,
                None => after.push(item),
            }
        }
        complete_idempotency(&mut tx, idempotency, &after, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(after)
    }

    async fn history(
        &self,
        org_id: OrgId,
        id: ItemId,
        page: PageRequest<u64>,
    ) -> Result<Page<HistoryRecord, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, item_id, version, kind, delta, qty_after, name, sku, reason,
                    actor_user_id, request_id, at
             FROM item_history WHERE org_id = $1 AND item_id = $2 AND version > $3
             ORDER BY version LIMIT $4",
        )
        .bind(org_id.0)
        .bind(id.0)
        .bind(page.after.unwrap_or(0) as i64)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        // An empty page of an item without any history is a 404 also past a cursor (a
        // made-up cursor answered an empty 200 for any id). History is never deleted, so a
        // second look cannot miss records the first saw.
        if rows.is_empty()
            && (page.after.is_none()
                || !sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM item_history WHERE org_id = $1 AND item_id = $2)",
                )
                .bind(org_id.0)
                .bind(id.0)
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?)
        {
            return Err(StoreError::not_found("item"));
        }
        let records = rows
            .iter()
            .map(history_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(records, page.limit, |r| r.version))
    }
}
