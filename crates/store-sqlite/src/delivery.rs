//! `DeliveryStore` on SQLite: outbox leases and progress, webhooks, delivery jobs.

use crate::accounts::audit;
use crate::direct::direct_error;
use crate::platform::complete_idempotency;
use crate::{SqliteStore, db_error, from_micros, micros};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;
use trueline_core::error::DomainError;
use trueline_core::ids::{EventId, OrgId, UserId};
use trueline_store::{
    Actor, AttemptOutcome, Delivery, DeliveryAttempt, DeliveryLease, DeliveryState, DeliveryStore,
    Destination, DueDelivery, Idempotency, LEASE_WINDOW, NewDelivery, NewWebhook, OutboxRow,
    OutboxStats, Page, PageRequest, StoreError, Webhook,
};
use uuid::Uuid;

/// The "not yet published to this destination" condition.
fn pending(destination: Destination) -> &'static str {
    match destination {
        Destination::EventLog => "published_at IS NULL",
        Destination::Nats => "published_at IS NOT NULL AND nats_published_at IS NULL",
    }
}

/// The organizations with rows pending for `destination`, oldest first (`?1`: how many), each
/// with its oldest row's `seq`. Organization by organization through the pending rows' index
/// (organization, seq): a few seeks each, where a `GROUP BY` over the pending rows read the
/// whole backlog every round (migration 14).
fn candidates_sql(destination: Destination) -> String {
    let pending = pending(destination);
    format!(
        "WITH RECURSIVE orgs(org_id) AS (
             SELECT (SELECT org_id FROM outbox WHERE {pending} ORDER BY org_id LIMIT 1)
             UNION ALL
             SELECT (SELECT o.org_id FROM outbox AS o
                     WHERE {pending} AND o.org_id > orgs.org_id ORDER BY o.org_id LIMIT 1)
             FROM orgs WHERE orgs.org_id IS NOT NULL
         )
         SELECT org_id,
                (SELECT min(seq) FROM outbox AS p WHERE {pending} AND p.org_id = orgs.org_id)
                    AS first
         FROM orgs WHERE org_id IS NOT NULL ORDER BY first LIMIT ?1"
    )
}

/// A round's rows of one organization (`?1`), oldest first (`?2`: how many).
fn rows_sql(destination: Destination) -> String {
    format!(
        "SELECT seq, event_id, org_id, event_type, stream, payload, created_at, attempts
         FROM outbox WHERE org_id = ?1 AND {} ORDER BY seq LIMIT ?2",
        pending(destination)
    )
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("stored JSON is invalid: {e}"))
}

/// An outbox row from a row of the relay's `SELECT` (`lease_outbox`), in its column order.
fn outbox_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxRow, StoreError>> {
    let seq: i64 = row.get(0)?;
    let event_id: [u8; 16] = row.get(1)?;
    let org_id: [u8; 16] = row.get(2)?;
    let event_type: String = row.get(3)?;
    let stream: String = row.get(4)?;
    let payload: String = row.get(5)?;
    let created_at: i64 = row.get(6)?;
    let attempts: i64 = row.get(7)?;
    Ok((|| {
        Ok(OutboxRow {
            seq,
            event_id: EventId(Uuid::from_bytes(event_id)),
            org_id: OrgId(Uuid::from_bytes(org_id)),
            event_type,
            stream,
            payload: serde_json::value::RawValue::from_string(payload).map_err(json_err)?,
            created_at: from_micros(created_at)?,
            attempts: attempts as u32,
        })
    })())
}

fn webhook_from(row: &SqliteRow) -> Result<Webhook, StoreError> {
    let types: String = row.try_get("event_types").map_err(db_error)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(db_error)?,
        org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
        url: row.try_get("url").map_err(db_error)?,
        event_types: serde_json::from_str(&types).map_err(json_err)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        created_by: UserId(row.try_get("created_by").map_err(db_error)?),
    })
}

fn delivery_from(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state").map_err(db_error)?;
    let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
    let status: Option<i64> = row.try_get("last_status").map_err(db_error)?;
    Ok(Delivery {
        id: row.try_get("id").map_err(db_error)?,
        webhook_id: row.try_get("webhook_id").map_err(db_error)?,
        event_id: EventId(row.try_get("event_id").map_err(db_error)?),
        event_type: row.try_get("event_type").map_err(db_error)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Internal(format!("unknown delivery state {state:?}")))?,
        attempts: attempts as u32,
        next_attempt_at: from_micros(row.try_get("next_attempt_at").map_err(db_error)?)?,
        last_status: status.map(|s| s as u16),
        last_error: row.try_get("last_error").map_err(db_error)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        updated_at: from_micros(row.try_get("updated_at").map_err(db_error)?)?,
        attempt_log: Vec::new(),
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, state, attempts, \
     next_attempt_at, last_status, last_error, created_at, updated_at";

async fn attempts_of<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    delivery: &mut Delivery,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT attempt, at, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY attempt",
    )
    .bind(delivery.id)
    .fetch_all(executor)
    .await
    .map_err(db_error)?;
    for row in rows {
        let attempt: i64 = row.try_get("attempt").map_err(db_error)?;
        let status: Option<i64> = row.try_get("status").map_err(db_error)?;
        let duration: i64 = row.try_get("duration_ms").map_err(db_error)?;
        delivery.attempt_log.push(DeliveryAttempt {
            attempt: attempt as u32,
            at: from_micros(row.try_get("at").map_err(db_error)?)?,
            status: status.map(|s| s as u16),
            error: row.try_get("error").map_err(db_error)?,
            duration_ms: duration as u64,
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl DeliveryStore for SqliteStore {
    /// Reads on a reader connection; takes the writer only to take or renew leases, which a
    /// busy relay needs about once per half lease: holding the single writer (and paying a
    /// commit) every round stalled every request that writes.
    async fn lease_outbox(
        &self,
        destination: Destination,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
        max_orgs: u32,
        max_rows: u32,
        skip: &[OrgId],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let candidates = sqlx::query(sqlx::AssertSqlSafe(candidates_sql(destination)))
            .bind(i64::from(max_orgs) * 4 + skip.len() as i64)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut candidate_orgs = Vec::with_capacity(candidates.len());
        for row in candidates {
            let org = OrgId(row.try_get("org_id").map_err(db_error)?);
            if !skip.contains(&org) {
                candidate_orgs.push(org);
            }
        }
        // Leases of ours with at least half their time left need no renewal this round.
        let fresh_until = now + (until - now) / 2;
        let ours: std::collections::HashSet<OrgId> = sqlx::query(
            "SELECT org_id FROM outbox_leases
             WHERE destination = ?1 AND holder = ?2 AND until >= ?3",
        )
        .bind(destination.as_str())
        .bind(holder)
        .bind(micros(fresh_until))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?
        .iter()
        .map(|row| row.try_get("org_id").map(OrgId))
        .collect::<Result<_, _>>()
        .map_err(db_error)?;
        let mut leased: Vec<OrgId> = Vec::new();
        let mut to_take: Vec<OrgId> = Vec::new();
        for org in candidate_orgs {
            if leased.len() + to_take.len() >= max_orgs as usize {
                break;
            }
            if ours.contains(&org) {
                leased.push(org);
            } else {
                to_take.push(org);
            }
        }
        if !to_take.is_empty() {
            let mut tx = self.begin_write().await?;
            for org in to_take {
                let taken = sqlx::query(
                    "INSERT INTO outbox_leases (destination, org_id, holder, until)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (destination, org_id) DO UPDATE
                     SET holder = excluded.holder, until = excluded.until
                     WHERE outbox_leases.until < ?5 OR outbox_leases.holder = excluded.holder",
                )
                .bind(destination.as_str())
                .bind(org.0)
                .bind(holder)
                .bind(micros(until))
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if taken.rows_affected() == 1 {
                    leased.push(org);
                }
            }
            tx.commit().await.map_err(db_error)?;
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        // The round's rows split evenly: one organization's backlog does not crowd out the
        // others', and a round holds at most `max_rows` (or one row of each organization).
        let per_org = (max_rows / (leased.len() as u32)).max(1);
        // On the reader's own handle: a round reads thousands of rows, and through sqlx each
        // came back to this task through a channel (the `direct` module).
        let sql = rows_sql(destination);
        self.read_direct(|db| {
            let mut select = db.prepare(&sql).map_err(direct_error)?;
            let mut out = Vec::new();
            for org in leased {
                let mut rows = select
                    .query(rusqlite::params![org.0.as_bytes(), i64::from(per_org)])
                    .map_err(direct_error)?;
                while let Some(row) = rows.next().map_err(direct_error)? {
                    out.push(outbox_row(row).map_err(direct_error)??);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn complete_outbox(
        &self,
        destination: Destination,
        seqs: &[i64],
        deliveries: &[NewDelivery],
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let column = match destination {
            Destination::EventLog => "published_at",
            Destination::Nats => "nats_published_at",
        };
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        // One statement per 500 rows (a relay round completes hundreds at once).
        for chunk in seqs.chunks(500) {
            let mut query =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!("UPDATE outbox SET {column} = "));
            query.push_bind(micros(now));
            query.push(format!(" WHERE {column} IS NULL AND seq IN ("));
            let mut list = query.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            query.push(")");
            changed += query
                .build()
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        }
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries
                 (id, webhook_id, org_id, event_id, event_type, payload, state, next_attempt_at,
                  created_at, updated_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?7
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?2)
                 ON CONFLICT (webhook_id, event_id) DO NOTHING",
            )
            .bind(d.id)
            .bind(d.webhook_id)
            .bind(d.org_id.0)
            .bind(d.event_id.0)
            .bind(&d.event_type)
            .bind(d.payload.to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(changed)
    }

    async fn fail_outbox(&self, seqs: &[i64], error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for seq in seqs {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
            )
            .bind(seq)
            .bind(error)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn purge_outbox(
        &self,
        before: OffsetDateTime,
        nats: bool,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox
                 WHERE created_at < ?1 AND published_at IS NOT NULL
                   AND (NOT ?2 OR nats_published_at IS NOT NULL)
                 ORDER BY seq LIMIT ?3)",
        )
        .bind(micros(before))
        .bind(nats)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn purge_deliveries(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE state <> 'pending' AND updated_at < ?1
                 ORDER BY updated_at LIMIT ?2)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn release_outbox(
        &self,
        destination: Destination,
        holder: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM outbox_leases WHERE destination = ?1 AND holder = ?2")
            .bind(destination.as_str())
            .bind(holder)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn outbox_stats(&self, destination: Destination) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) AS pending, min(created_at) AS oldest FROM outbox WHERE {}",
            pending(destination)
        )))
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)?;
        let pending: i64 = row.try_get("pending").map_err(db_error)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(db_error)?;
        Ok(OutboxStats {
            pending: pending as u64,
            oldest_pending_at: oldest.map(from_micros).transpose()?,
        })
    }

    async fn webhooks_of(&self, orgs: &[OrgId]) -> Result<Vec<Webhook>, StoreError> {
        let mut out = Vec::new();
        for org in orgs {
            let rows = sqlx::query(
                "SELECT id, org_id, url, event_types, created_at, created_by FROM webhooks
                 WHERE org_id = ?1",
            )
            .bind(org.0)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
            for row in &rows {
                out.push(webhook_from(row)?);
            }
        }
        Ok(out)
    }

    async fn create_webhook(
        &self,
        actor: &Actor,
        w: NewWebhook,
        idempotency: Option<Idempotency<'_, Webhook>>,
    ) -> Result<Webhook, StoreError> {
        let mut tx = self.begin_write().await?;
        let types = serde_json::to_string(&w.event_types).map_err(json_err)?;
        sqlx::query(
            "INSERT INTO webhooks (id, org_id, url, event_types, secret, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(w.id)
        .bind(actor.org_id.0)
        .bind(&w.url)
        .bind(&types)
        .bind(&w.secret)
        .bind(micros(actor.now))
        .bind(actor.user_id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let webhook = Webhook {
            id: w.id,
            org_id: actor.org_id,
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            created_at: actor.now,
            created_by: actor.user_id,
        };
        let detail = serde_json::json!({
            "origin": trueline_store::url_origin(&w.url),
            "event_types": w.event_types,
        });
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "webhook.created",
            Some(w.id),
            detail,
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &webhook, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(webhook)
    }

    async fn webhooks(
        &self,
        org: OrgId,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Webhook, Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, url, event_types, created_at, created_by FROM webhooks
             WHERE org_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(org.0)
        .bind(page.after.unwrap_or(Uuid::nil()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        let items = rows
            .iter()
            .map(webhook_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, page.limit, |w| w.id))
    }

    async fn webhook(&self, org: OrgId, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, url, event_types, created_at, created_by FROM webhooks
             WHERE org_id = ?1 AND id = ?2",
        )
        .bind(org.0)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(webhook_from).transpose()
    }

    async fn delete_webhook(&self, actor: &Actor, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE org_id = ?1 AND id = ?2")
            .bind(actor.org_id.0)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "webhook.deleted",
            Some(id),
            serde_json::json!({}),
            actor.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn lease_deliveries(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: u32,
        lease: DeliveryLease<'_>,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // Compared for equality when the attempt is recorded: as stored, to the microsecond.
        let until = trueline_core::clock::truncate_to_micros(until);
        let mut tx = self.begin_write().await?;
        let mut query = QueryBuilder::<Sqlite>::new(
            "WITH due AS (
                 SELECT id, org_id, next_attempt_at FROM webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= ",
        );
        query
            .push_bind(micros(now))
            .push(" AND (locked_until IS NULL OR locked_until < ")
            .push_bind(micros(now))
            .push(") AND org_id NOT IN (");
        let mut skipped = query.separated(", ");
        for org in lease.saturated() {
            skipped.push_bind(org.0);
        }
        query
            .push(") ORDER BY next_attempt_at LIMIT ")
            .push_bind(i64::from(LEASE_WINDOW));
        query.push(
            "), turns AS (
                 SELECT id, org_id, next_attempt_at,
                        row_number() OVER (PARTITION BY org_id ORDER BY next_attempt_at, id) AS turn
                 FROM due
             )
             SELECT d.id, d.webhook_id, d.org_id, d.event_id, d.event_type, d.payload, d.attempts,
                    w.url, w.secret
             FROM turns t JOIN webhook_deliveries d ON d.id = t.id
                  JOIN webhooks w ON w.id = d.webhook_id
             WHERE t.turn <= ",
        );
        query.push_bind(i64::from(lease.per_org));
        // Less what the organization has in flight already.
        let busy: Vec<_> = lease.in_flight.iter().filter(|(_, n)| *n > 0).collect();
        if !busy.is_empty() {
            query.push(" - CASE t.org_id");
            for (org, n) in busy {
                query
                    .push(" WHEN ")
                    .push_bind(org.0)
                    .push(" THEN ")
                    .push_bind(i64::from(*n));
            }
            query.push(" ELSE 0 END");
        }
        query
            .push(" ORDER BY t.turn, t.next_attempt_at, t.id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&mut *tx).await.map_err(db_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("id").map_err(db_error)?;
            sqlx::query("UPDATE webhook_deliveries SET locked_until = ?2 WHERE id = ?1")
                .bind(id)
                .bind(micros(until))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let payload: String = row.try_get("payload").map_err(db_error)?;
            let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
            out.push(DueDelivery {
                id,
                webhook_id: row.try_get("webhook_id").map_err(db_error)?,
                org_id: OrgId(row.try_get("org_id").map_err(db_error)?),
                event_id: EventId(row.try_get("event_id").map_err(db_error)?),
                event_type: row.try_get("event_type").map_err(db_error)?,
                url: row.try_get("url").map_err(db_error)?,
                secret: row.try_get("secret").map_err(db_error)?,
                payload: serde_json::from_str(&payload).map_err(json_err)?,
                attempts: attempts as u32,
                leased_until: until,
            });
        }
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    async fn record_attempt(
        &self,
        leased: &DueDelivery,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let (state, next) = match outcome {
            AttemptOutcome::Succeeded => ("succeeded", attempt.at),
            AttemptOutcome::RetryAt(at) => ("pending", at),
            AttemptOutcome::Dead => ("dead", attempt.at),
        };
        // Only under the lease this attempt was made with: a redelivery or a takeover since
        // (another worker, the same attempt number) owns the delivery now.
        let updated = sqlx::query(
            "UPDATE webhook_deliveries
             SET state = ?2, attempts = ?3, next_attempt_at = ?4, locked_until = NULL,
                 last_status = ?5, last_error = ?6, updated_at = ?7
             WHERE id = ?1 AND state = 'pending' AND locked_until = ?8 AND attempts = ?9",
        )
        .bind(leased.id)
        .bind(state)
        .bind(i64::from(attempt.attempt))
        .bind(micros(next))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(micros(attempt.at))
        .bind(micros(leased.leased_until))
        .bind(i64::from(leased.attempts))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(leased.id)
        .bind(i64::from(attempt.attempt))
        .bind(micros(attempt.at))
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.duration_ms as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn deliveries(
        &self,
        org: OrgId,
        webhook_id: Uuid,
        state: Option<DeliveryState>,
        page: PageRequest<Uuid>,
    ) -> Result<Page<Delivery, Uuid>, StoreError> {
        if self.webhook(org, webhook_id).await?.is_none() {
            return Err(StoreError::not_found("webhook"));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE webhook_id = ?1 AND org_id = ?2 AND (?3 IS NULL OR state = ?3) AND id < ?4
             ORDER BY id DESC LIMIT ?5"
        )))
        .bind(webhook_id)
        .bind(org.0)
        .bind(state.map(DeliveryState::as_str))
        .bind(page.after.unwrap_or(Uuid::max()))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        let mut items = rows
            .iter()
            .map(delivery_from)
            .collect::<Result<Vec<_>, _>>()?;
        for d in &mut items {
            attempts_of(&self.reader, d).await?;
        }
        Ok(Page::from_overfetch(items, page.limit, |d| d.id))
    }

    async fn redeliver(
        &self,
        actor: &Actor,
        webhook_id: Uuid,
        delivery_id: Uuid,
        idempotency: Option<Idempotency<'_, Delivery>>,
    ) -> Result<Delivery, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ?4,
                    locked_until = NULL, updated_at = ?4
             WHERE id = ?1 AND webhook_id = ?2 AND org_id = ?3
               AND NOT (state = 'pending' AND locked_until IS NOT NULL AND locked_until > ?4)
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(delivery_id)
        .bind(webhook_id)
        .bind(actor.org_id.0)
        .bind(micros(actor.now))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            // Unknown, or an attempt of it is running: its worker records the outcome, which
            // a redelivery now would be overwritten by (or would overwrite).
            let exists = sqlx::query(
                "SELECT 1 FROM webhook_deliveries
                 WHERE id = ?1 AND webhook_id = ?2 AND org_id = ?3",
            )
            .bind(delivery_id)
            .bind(webhook_id)
            .bind(actor.org_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .is_some();
            return Err(if exists {
                DomainError::InvalidTransition {
                    from: "attempt_in_progress",
                    to: "pending",
                }
                .into()
            } else {
                StoreError::not_found("delivery")
            });
        };
        let mut delivery = delivery_from(&row)?;
        // The answer (and what the key replays) shows the attempts made so far, as a read does.
        attempts_of(&mut *tx, &mut delivery).await?;
        let detail = serde_json::json!({ "webhook_id": webhook_id });
        audit(
            &mut tx,
            actor.org_id,
            actor.user_id,
            &actor.request_id,
            "webhook.redelivered",
            Some(delivery_id),
            detail,
            actor.now,
        )
        .await?;
        complete_idempotency(&mut tx, idempotency, &delivery, actor.now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(delivery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plans, not a timing: the relay's queries seek through the pending rows' index by
    /// organization; a scan of it costs the whole backlog, every round.
    #[tokio::test]
    async fn the_relay_finds_pending_rows_by_organization_without_reading_the_backlog() {
        let (_dir, store) = crate::tests::migrated().await;
        let mut conn = store.writer.acquire().await.unwrap();
        for destination in [Destination::EventLog, Destination::Nats] {
            for (sql, of_one_org) in [
                (candidates_sql(destination), false),
                (rows_sql(destination), true),
            ] {
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let explain = sqlx::query(sqlx::AssertSqlSafe(explain));
                let explain = if of_one_org {
                    explain.bind(OrgId::new().0)
                } else {
                    explain
                };
                let plan: Vec<String> = explain
                    .bind(10)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get::<String, _>("detail"))
                    .collect();
                let index = match destination {
                    Destination::EventLog => "outbox_pending",
                    Destination::Nats => "outbox_nats_pending",
                };
                let searches = plan
                    .iter()
                    .filter(|step| step.starts_with("SEARCH") && step.contains(index))
                    .count();
                assert!(
                    searches >= 1 && !plan.iter().any(|step| step.contains("GROUP BY")),
                    "{destination:?}: {plan:?}"
                );
                // Scans: only the first organization's, which stops at its first entry.
                assert!(
                    plan.iter()
                        .filter(|step| step.starts_with("SCAN outbox"))
                        .count()
                        <= 1,
                    "{destination:?}: {plan:?}"
                );
            }
        }
    }
}
