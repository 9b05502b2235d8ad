//! `EventStore` on PostgreSQL: one `events` table, positions assigned under a per-organization
//! row lock (`event_heads`), live wake-ups through `LISTEN/NOTIFY` so a subscriber connected
//! to one instance sees appends made through another.

use crate::{PgStore, db_error};
use sqlx::Row;
use sqlx::postgres::{PgListener, PgRow};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use trueline_core::ids::{EventId, OrgId};
use trueline_store::StoreError;
use trueline_store::events::*;

const CHANNEL: &str = "trueline_events";
const COLUMNS: &str =
    "id, position, stream, stream_version, event_type, data, metadata, recorded_at";

#[derive(Clone)]
pub struct PgEventStore {
    pool: sqlx::PgPool,
    changes: watch::Sender<u64>,
    event_bytes_max: usize,
}

impl PgStore {
    /// The event log on this database. Spawns the `LISTEN` task that turns notifications
    /// (from any instance) into wake-ups of local subscribers.
    pub fn event_store(&self, event_bytes_max: usize) -> PgEventStore {
        let (changes, _) = watch::channel(0);
        let store = PgEventStore {
            pool: self.pool.clone(),
            changes,
            event_bytes_max,
        };
        tokio::spawn(listen(store.pool.clone(), store.changes.clone()));
        store
    }
}

/// Forwards notifications until every receiver is gone; reconnects with backoff.
async fn listen(pool: sqlx::PgPool, changes: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if changes.is_closed() && changes.receiver_count() == 0 && pool.is_closed() {
            return;
        }
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if listener.listen(CHANNEL).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    // A reconnect may have missed notifications: wake everyone once.
                    changes.send_modify(|n| *n += 1);
                    while listener.recv().await.is_ok() {
                        changes.send_modify(|n| *n += 1);
                    }
                }
            }
            Err(_) if pool.is_closed() => return,
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn record_from(row: &PgRow) -> Result<EventRecord, StoreError> {
    let position: i64 = row.try_get("position").map_err(db_error)?;
    let version: i64 = row.try_get("stream_version").map_err(db_error)?;
    Ok(EventRecord {
        id: EventId(row.try_get("id").map_err(db_error)?),
        position: position as u64,
        stream: row.try_get("stream").map_err(db_error)?,
        stream_version: version as u64,
        event_type: row.try_get("event_type").map_err(db_error)?,
        data: row.try_get("data").map_err(db_error)?,
        metadata: row.try_get("metadata").map_err(db_error)?,
        recorded_at: row.try_get("recorded_at").map_err(db_error)?,
    })
}

/// `limited` (a query of [`COLUMNS`] with its `ORDER BY … LIMIT`) bounded in bytes inside the
/// database, so rows past the bound are neither sent nor decoded: a row is kept while the rows
/// before it (in `order`) hold less than the bound, parameter `$bytes_param` (the row that
/// reaches it is the last).
fn bounded(limited: &str, order: &str, bytes_param: u8) -> String {
    format!(
        "SELECT {COLUMNS} FROM (
             SELECT {COLUMNS},
                    sum(octet_length(data) + octet_length(metadata)) OVER (ORDER BY {order})
                      - (octet_length(data) + octet_length(metadata)) AS bytes_before
             FROM ({limited}) limited
         ) bounded
         WHERE bytes_before < ${bytes_param}
         ORDER BY {order}"
    )
}

/// The byte bound as a parameter: at least 1 (the first event is always read).
fn bytes_bound(limit: ReadLimit) -> i64 {
    limit.bytes.clamp(1, i64::MAX as usize) as i64
}

/// An append's driver error. A full disk (53100) is the refusal the file engine gives for
/// `ENOSPC`, `507 storage_full` with nothing written, not a 503 that invites a retry at once.
fn write_error(e: sqlx::Error) -> EventStoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("53100") => {
            AppendRefusal::StorageFull.into()
        }
        _ => db_error(e).into(),
    }
}

fn check_limits(stream: &str, events: &[NewEvent], max: usize) -> Result<(), AppendRefusal> {
    for (i, e) in events.iter().enumerate() {
        let size = e.data.len() + e.metadata.len();
        if size > max {
            return Err(AppendRefusal::EventTooLarge { size, max });
        }
        if events[..i].iter().any(|o| o.id == e.id) {
            return Err(AppendRefusal::DuplicateIdInBatch { id: e.id });
        }
    }
    let size = trueline_store::events::append_stored_bytes(stream, events);
    if size > trueline_store::events::APPEND_BYTES_MAX {
        return Err(AppendRefusal::AppendTooLarge {
            size,
            max: trueline_store::events::APPEND_BYTES_MAX,
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl EventStore for PgEventStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn append(
        &self,
        org: OrgId,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: OffsetDateTime,
    ) -> Result<Vec<Appended>, EventStoreError> {
        check_limits(stream, &events, self.event_bytes_max)?;
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        sqlx::query("INSERT INTO event_heads (org_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(org.0)
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        let head: i64 = sqlx::query_scalar(
            "SELECT last_position FROM event_heads WHERE org_id = $1 FOR UPDATE",
        )
        .bind(org.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(write_error)?;
        // Idempotent retries: every id already present with the same content, as one
        // contiguous run of this stream, returns the originals.
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id.0).collect();
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM events WHERE org_id = $1 AND id = ANY($2) ORDER BY position"
        )))
        .bind(org.0)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(write_error)?;
        if !existing.is_empty() {
            let existing = existing
                .iter()
                .map(record_from)
                .collect::<Result<Vec<_>, _>>()?;
            return duplicates(stream, &events, &existing).map_err(Into::into);
        }
        let current: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT version FROM event_streams WHERE org_id = $1 AND stream = $2), 0)",
        )
        .bind(org.0)
        .bind(stream)
        .fetch_one(&mut *tx)
        .await
        .map_err(write_error)?;
        let current = current as u64;
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        };
        if !ok {
            return Err(AppendRefusal::WrongExpectedVersion { current }.into());
        }
        let count = events.len() as i64;
        let bytes: i64 = events
            .iter()
            .map(|e| event_stored_bytes(stream, e) as i64)
            .sum();
        let mut appended = Vec::with_capacity(events.len());
        let positions: Vec<i64> = (1..=count).map(|i| head + i).collect();
        let versions: Vec<i64> = (1..=count).map(|i| current as i64 + i).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_slice()).collect();
        let metadata: Vec<&[u8]> = events.iter().map(|e| e.metadata.as_slice()).collect();
        sqlx::query(
            "INSERT INTO events (org_id, position, id, stream, stream_version, event_type, data,
                                 metadata, recorded_at)
             SELECT $1, p, i, $2, v, t, d, m, $8
             FROM unnest($3::bigint[], $4::uuid[], $5::bigint[], $6::text[], $7::bytea[], $9::bytea[])
                  AS u(p, i, v, t, d, m)",
        )
        .bind(org.0)
        .bind(stream)
        .bind(&positions)
        .bind(&ids)
        .bind(&versions)
        .bind(&types)
        .bind(&data)
        .bind(now)
        .bind(&metadata)
        .execute(&mut *tx)
        .await
        .map_err(|e| match crate::constraint_name(&e) {
            // Only reachable if a concurrent transaction bypassed the head lock.
            Some("events_id_key") => EventStoreError::Refused(AppendRefusal::EventIdConflict { id: events[0].id }),
            _ => write_error(e),
        })?;
        sqlx::query(
            "INSERT INTO event_streams (org_id, stream, version) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, stream) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(org.0)
        .bind(stream)
        .bind(current as i64 + count)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        sqlx::query(
            "UPDATE event_heads SET last_position = $2, bytes = bytes + $3 WHERE org_id = $1",
        )
        .bind(org.0)
        .bind(head + count)
        .bind(bytes)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(org.0.to_string())
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        tx.commit().await.map_err(write_error)?;
        for (i, e) in events.iter().enumerate() {
            appended.push(Appended {
                id: e.id,
                position: positions[i] as u64,
                stream_version: versions[i] as u64,
                recorded_at: now,
                duplicate: false,
            });
        }
        self.changes.send_modify(|n| *n += 1);
        metrics::counter!("eventlog_events_total").increment(appended.len() as u64);
        Ok(appended)
    }

    async fn event(&self, org: OrgId, id: EventId) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM events WHERE org_id = $1 AND id = $2"
        )))
        .bind(org.0)
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(record_from).transpose()
    }

    async fn events_after(
        &self,
        org: OrgId,
        after: u64,
        limit: ReadLimit,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(bounded(
            &format!(
                "SELECT {COLUMNS} FROM events
             WHERE org_id = $1 AND position > $2
               AND ($3::text IS NULL OR event_type = $3)
               AND ($4::text IS NULL OR stream = $4)
             ORDER BY position LIMIT $5"
            ),
            "position",
            6,
        )))
        .bind(org.0)
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(filter.event_type.as_deref())
        .bind(filter.stream.as_deref())
        .bind(limit.events as i64)
        .bind(bytes_bound(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(record_from).collect()
    }

    async fn read_stream(
        &self,
        org: OrgId,
        stream: &str,
        from: u64,
        direction: ReadDirection,
        limit: ReadLimit,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (cmp, order) = match direction {
            ReadDirection::Forward => (">=", "ASC"),
            ReadDirection::Backward => ("<=", "DESC"),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(bounded(
            &format!(
                "SELECT {COLUMNS} FROM events
             WHERE org_id = $1 AND stream = $2 AND stream_version {cmp} $3
             ORDER BY stream_version {order} LIMIT $4"
            ),
            &format!("stream_version {order}"),
            5,
        )))
        .bind(org.0)
        .bind(stream)
        .bind(from.min(i64::MAX as u64) as i64)
        .bind(limit.events as i64)
        .bind(bytes_bound(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(record_from).collect()
    }

    async fn stats(&self, org: OrgId) -> Result<EventStats, StoreError> {
        let row = sqlx::query(
            "SELECT h.last_position, h.bytes,
                    (SELECT count(*) FROM event_streams s WHERE s.org_id = h.org_id) AS streams,
                    (SELECT min(position) FROM events e WHERE e.org_id = h.org_id) AS first
             FROM event_heads h WHERE h.org_id = $1",
        )
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(EventStats::default());
        };
        let last: i64 = row.try_get("last_position").map_err(db_error)?;
        let first: Option<i64> = row.try_get("first").map_err(db_error)?;
        Ok(EventStats {
            events: first.map_or(0, |f| (last - f + 1) as u64),
            bytes: row.try_get::<i64, _>("bytes").map_err(db_error)? as u64,
            streams: row.try_get::<i64, _>("streams").map_err(db_error)? as u64,
            first_position: first.unwrap_or(0) as u64,
            last_position: last as u64,
        })
    }

    async fn last_position(&self, org: OrgId) -> Result<u64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_position FROM event_heads WHERE org_id = $1")
                .bind(org.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(last.unwrap_or(0) as u64)
    }

    async fn stream_version(&self, org: OrgId, stream: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM event_streams WHERE org_id = $1 AND stream = $2",
        )
        .bind(org.0)
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(version.unwrap_or(0) as u64)
    }

    fn storage(&self) -> serde_json::Value {
        serde_json::json!({ "backend": "postgres" })
    }

    async fn health(&self) -> Result<(), String> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The retry rule shared with the embedded engine: all ids present, same content, one
/// contiguous run of `stream` (consecutive stream versions in batch order; other streams'
/// events may lie between them in the organization's order) → the originals; anything
/// else → a conflict, naming the event the engine names (checked in its order: the first
/// whose content differs, else the first existing one when some are new, else the first out
/// of the stream's order).
fn duplicates(
    stream: &str,
    events: &[NewEvent],
    existing: &[EventRecord],
) -> Result<Vec<Appended>, AppendRefusal> {
    let originals: Vec<Option<&EventRecord>> = events
        .iter()
        .map(|e| existing.iter().find(|x| x.id == e.id))
        .collect();
    for (e, found) in events.iter().zip(&originals) {
        let differs = found.is_some_and(|found| {
            found.stream != stream
                || found.event_type != e.event_type
                || found.data != e.data
                || found.metadata != e.metadata
        });
        if differs {
            return Err(AppendRefusal::EventIdConflict { id: e.id });
        }
    }
    if originals.iter().any(Option::is_none) {
        let first_existing = events
            .iter()
            .zip(&originals)
            .find_map(|(e, found)| found.map(|_| e.id));
        return Err(AppendRefusal::EventIdConflict {
            id: first_existing.unwrap_or(events[0].id),
        });
    }
    let mut out = Vec::with_capacity(events.len());
    for (i, (e, found)) in events.iter().zip(&originals).enumerate() {
        let Some(found) = found else {
            return Err(AppendRefusal::EventIdConflict { id: e.id });
        };
        let contiguous = i == 0
            || out
                .last()
                .is_some_and(|prev: &Appended| prev.stream_version + 1 == found.stream_version);
        if !contiguous {
            return Err(AppendRefusal::EventIdConflict { id: e.id });
        }
        out.push(Appended {
            id: found.id,
            position: found.position,
            stream_version: found.stream_version,
            recorded_at: found.recorded_at,
            duplicate: true,
        });
    }
    Ok(out)
}
