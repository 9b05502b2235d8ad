//! The outbox relay to the event log (and, through [`super::nats`], to NATS).
//!
//! One loop per destination per server instance. Each round leases a few organizations
//! (several instances never interleave one organization's rows), publishes their pending
//! rows in sequence order, then completes them. Rows of one stream that follow each other
//! are appended as one batch; if such a batch partly exists already (a retry after a crash),
//! the rows are appended one by one and the duplicates are recognised by event id.

use super::backoff;
use crate::delivery::nats::NatsPublisher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use trueline_core::ids::OrgId;
use trueline_http::State;
use trueline_store::events::{
    AppendRefusal, EventStoreError, ExpectedVersion, NewEvent, StreamBatch,
};
use trueline_store::{Destination, NewDelivery, OutboxRow, Webhook};
use uuid::Uuid;

/// Tunables of the relay.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// This instance's lease holder name.
    pub holder: String,
    pub lease: Duration,
    /// How often to look for rows without a wake-up (other instances' commits).
    pub poll: Duration,
    pub orgs_per_round: u32,
    /// Rows a round takes in all, split evenly among its organizations. 4,000 (was 500 per
    /// organization, up to 8,000 a round), with `gather` at 250 ms: with 500 every `spread`
    /// round was full, so the relay went again at once, ~20 rounds a second, each with its
    /// reads, its group commit in the event log and its durable completion on the SQLite
    /// writer. Four rounds a second left more of the writer and the CPU to the requests
    /// (`spread` +3.5–7.7 %, `hot-item` +1.8 %, p99 +2.5 ms; docs/benchmarks.md,
    /// "2026-12-04, night"). A round holds its rows in memory, so this also bounds that (see
    /// the allocator's options in `main.rs`).
    pub rows_per_round: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// After a round that caught up, how long to let new rows gather before the next one:
    /// under load, fewer and larger rounds (each costs a durable write transaction, the
    /// completion; on PostgreSQL also the lease) leave the database's writer to the requests.
    /// 50 ms (was 10): under `hot-item` a combined batch waited ~0.8 ms instead of ~0.6 ms
    /// for the SQLite writer at 10 ms; 250 ms since `rows_per_round` went to 4,000 (see
    /// there). Under load, events reach the log (and subscribers) up to this much later; a
    /// commit after an idle round still wakes the relay at once.
    pub gather: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            holder: format!("relay-{}", Uuid::now_v7()),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(1000),
            orgs_per_round: 16,
            rows_per_round: 4000,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            gather: Duration::from_millis(250),
        }
    }
}

/// The metadata recorded with a relayed event: deterministic per row, so a republished row
/// is recognised as the same event.
fn metadata(row: &OutboxRow) -> Vec<u8> {
    let committed = row
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // Written out rather than through a `serde_json::Value` (one map and three strings per
    // row): the same bytes, keys in serde_json's order, and an RFC 3339 time has nothing to
    // escape (test `metadata_is_the_json_it_always_was`).
    format!(r#"{{"committed_at":"{committed}","source":"outbox"}}"#).into_bytes()
}

fn event_of(row: &OutboxRow) -> NewEvent {
    NewEvent {
        id: row.event_id,
        event_type: row.event_type.clone(),
        data: row.payload.get().as_bytes().to_vec(),
        metadata: metadata(row),
    }
}

/// Publishes one organization's rows to the event log in order; returns the sequence
/// numbers published, stopping at the first failure (which is returned with the rows it
/// concerns).
///
/// One organization's rows reach the log in sequence order (one relay loop, one lease), so
/// what a crashed process published of them before it could complete them is a prefix. If
/// the first row is not in the log, none is: every run is handed over at once
/// ([`EventStore::append_many`](trueline_store::events::EventStore::append_many): one group
/// commit for all of them on the file engine, where waiting for each cost one `fdatasync`
/// per run, and under deltas spread over many items most runs are one event). Otherwise the
/// runs go one by one, so the run that was cut can be completed in order.
pub async fn publish_to_log(
    state: &State,
    org: OrgId,
    rows: &[OutboxRow],
) -> (Vec<i64>, Option<(Vec<i64>, String)>) {
    let Some(first) = rows.first() else {
        return (Vec::new(), None);
    };
    if let Ok(None) = state.events.event(org, first.event_id).await {
        return publish_at_once(state, org, rows).await;
    }
    publish_in_order(state, org, rows).await
}

/// The runs of `rows` one after the other, each waited for; a run refused because part of
/// it is in the log already goes row by row.
async fn publish_in_order(
    state: &State,
    org: OrgId,
    rows: &[OutboxRow],
) -> (Vec<i64>, Option<(Vec<i64>, String)>) {
    let mut done = Vec::with_capacity(rows.len());
    let mut i = 0;
    while i < rows.len() {
        let stream = &rows[i].stream;
        let run = run_length(&rows[i..]);
        let batch = &rows[i..i + run];
        let events: Vec<NewEvent> = batch.iter().map(event_of).collect();
        let now = state.clock.now();
        let result = state
            .events
            .append(org, stream, ExpectedVersion::Any, events, now)
            .await;
        match result {
            Ok(_) => done.extend(batch.iter().map(|r| r.seq)),
            Err(EventStoreError::Refused(AppendRefusal::EventIdConflict { .. })) if run > 1 => {
                // Part of this run was published before a crash: go one by one.
                for row in batch {
                    match state
                        .events
                        .append(org, stream, ExpectedVersion::Any, vec![event_of(row)], now)
                        .await
                    {
                        Ok(_) => done.push(row.seq),
                        Err(e) => return (done, Some((vec![row.seq], e.to_string()))),
                    }
                }
            }
            Err(e) => {
                return (
                    done,
                    Some((batch.iter().map(|r| r.seq).collect(), e.to_string())),
                );
            }
        }
        i += run;
    }
    (done, None)
}

/// The rows at the start of `rows` that go to the log as one append: same stream, at most
/// an append's 1,000 events.
fn run_length(rows: &[OutboxRow]) -> usize {
    let stream = &rows[0].stream;
    rows.iter()
        .take_while(|r| &r.stream == stream)
        .take(1000)
        .count()
}

/// Every run of `rows` handed to the event log before any is waited for. Nothing after a
/// failed run is appended (see `EventStore::append_many`): those rows wait for the next round,
/// which starts at the failed run, so the log keeps the outbox's order.
async fn publish_at_once(
    state: &State,
    org: OrgId,
    rows: &[OutboxRow],
) -> (Vec<i64>, Option<(Vec<i64>, String)>) {
    let mut runs = Vec::new();
    let mut batches = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let run = &rows[i..i + run_length(&rows[i..])];
        batches.push(StreamBatch {
            stream: run[0].stream.clone(),
            expected: ExpectedVersion::Any,
            events: run.iter().map(event_of).collect(),
        });
        runs.push((i, run));
        i += run.len();
    }
    let outcomes = state
        .events
        .append_many(org, batches, state.clock.now())
        .await;
    let mut done = Vec::with_capacity(rows.len());
    let mut failure: Option<(Vec<i64>, String)> = None;
    for (k, (first, run)) in runs.iter().enumerate() {
        let seqs = run.iter().map(|r| r.seq);
        if failure.is_none()
            && let Some(Err(EventStoreError::Refused(AppendRefusal::EventIdConflict { .. }))) =
                outcomes.get(k)
        {
            // Part of this run is in the log already although its first row was not. Rows are
            // published in commit order and a failed run holds back the ones after it, so
            // this should not happen any more (it did while PostgreSQL's relay ordered by
            // transaction id); but refused whole round after round, such a run would stop
            // the organization's publishing for good: from here on the rows go in order, the
            // mixed run row by row (rows already in the log are duplicates and count as
            // published).
            // By place, not by `seq`: rows come in commit order, which on PostgreSQL is not
            // `seq` order when transactions commit in another order than they began.
            let (more, failed) = publish_in_order(state, org, &rows[*first..]).await;
            done.extend(more);
            return (done, failed);
        }
        match outcomes.get(k) {
            // In the log (after a failure this cannot happen; if it did, the rows are there).
            Some(Ok(_)) => done.extend(seqs),
            Some(Err(e)) if failure.is_none() => failure = Some((seqs.collect(), e.to_string())),
            // Held back by the failure, or not submitted: left for the next round.
            Some(Err(_)) | None => {}
        }
    }
    (done, failure)
}

/// The webhook deliveries the published rows call for.
fn deliveries(
    rows: &[OutboxRow],
    published: &[i64],
    hooks: &[Webhook],
) -> Result<Vec<NewDelivery>, String> {
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    // A set: a round publishes up to 4,000 rows, and a linear `contains` per row made
    // 64 million comparisons when a round could hold 8,000.
    let published: std::collections::HashSet<i64> = published.iter().copied().collect();
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| published.contains(&r.seq)) {
        let mut payload = None;
        for h in hooks
            .iter()
            .filter(|h| h.org_id == r.org_id && h.matches(&r.event_type))
        {
            // Parsed only for rows a webhook wants (a delivery job stores it as a value). A
            // payload that does not parse (deeper than serde_json's 128 levels; the server
            // writes none) fails the round before its completion, as it failed the lease
            // before payloads were kept as text: a stalled relay shows in `outbox_lag_seconds`
            // and the log, a webhook delivery skipped would show nowhere.
            let payload = match &payload {
                Some(parsed) => parsed,
                None => payload.insert(
                    serde_json::from_str::<serde_json::Value>(r.payload.get())
                        .map_err(|e| format!("an outbox payload is not JSON: {e}"))?,
                ),
            };
            out.push(NewDelivery {
                id: Uuid::now_v7(),
                webhook_id: h.id,
                org_id: r.org_id,
                event_id: r.event_id,
                event_type: r.event_type.clone(),
                payload: payload.clone(),
            });
        }
    }
    Ok(out)
}

/// What one round did.
struct Round {
    published: usize,
    /// Rows were found (so this instance holds leases).
    found: bool,
    /// The round was limited by `rows_per_round` or `orgs_per_round`: more is waiting.
    full: bool,
}

/// Organizations whose last attempt failed: their count of failures in a row and when to try
/// again. One organization's failing row (say, an event over a lowered size limit) backs off
/// that organization alone; the others publish at their pace.
type OrgBackoff = std::collections::HashMap<OrgId, (u32, std::time::Instant)>;

/// One round for `destination`. The leases it takes are kept (renewed by the next rounds)
/// and released when a round finds nothing, so a busy relay does not pay for a release each
/// round and another instance takes over an organization at most `lease` after a crash.
async fn round(
    state: &State,
    destination: Destination,
    settings: &RelaySettings,
    nats: Option<&NatsPublisher>,
    backing_off: &mut OrgBackoff,
) -> Result<Round, String> {
    let now = state.clock.now();
    let lease = time::Duration::try_from(settings.lease).unwrap_or(time::Duration::seconds(30));
    // Organizations backing off are not leased at all: leased and then set aside, the ones
    // failing longest (they hold the oldest rows) took every place of a round, and healthy
    // organizations behind them waited for as long as they failed.
    let started = std::time::Instant::now();
    let waiting: Vec<OrgId> = backing_off
        .iter()
        .filter(|(_, (_, until))| *until > started)
        .map(|(org, _)| *org)
        .collect();
    let rows = state
        .store
        .lease_outbox(
            destination,
            &settings.holder,
            now,
            now + lease,
            settings.orgs_per_round,
            settings.rows_per_round,
            &waiting,
        )
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(Round {
            published: 0,
            found: false,
            full: false,
        });
    }
    let mut by_org: Vec<(OrgId, Vec<OutboxRow>)> = Vec::new();
    for row in rows {
        match by_org.last_mut() {
            Some((org, list)) if *org == row.org_id => list.push(row),
            _ => by_org.push((row.org_id, vec![row])),
        }
    }
    // Entries long past their time (the organization moved to another instance, or its rows
    // were dealt with) are forgotten, so the map holds only organizations failing now.
    backing_off.retain(|_, (_, until)| *until + settings.backoff_max > started);
    by_org.retain(|(org, _)| {
        backing_off
            .get(org)
            .is_none_or(|(_, until)| *until <= started)
    });
    // The store's share per organization (see `lease_outbox`). It divides by the
    // organizations it leased; one that came back without rows (another instance published
    // them meanwhile) makes this share larger, so such a round may count as not full and
    // wait `gather` once: a delay, never a row skipped.
    let per_org = (settings.rows_per_round / (by_org.len().max(1) as u32)).max(1);
    let full = by_org.len() as u32 >= settings.orgs_per_round
        || by_org.iter().any(|(_, rows)| rows.len() as u32 >= per_org);
    // Organizations are independent: publish them concurrently, each in order.
    let results = futures_util::future::join_all(by_org.iter().map(|(org, rows)| async move {
        match (destination, nats) {
            (Destination::EventLog, _) => publish_to_log(state, *org, rows).await,
            (Destination::Nats, Some(nats)) => nats.publish(rows).await,
            (Destination::Nats, None) => (Vec::new(), None),
        }
    }))
    .await;
    let mut published = Vec::new();
    for ((org, _), (done, failure)) in by_org.iter().zip(results) {
        published.extend(done);
        if failure.is_none() {
            backing_off.remove(org);
        }
        if let Some((seqs, error)) = failure {
            let failures = backing_off.get(org).map_or(1, |(n, _)| n + 1);
            let wait = backoff(failures, settings.backoff_base, settings.backoff_max);
            backing_off.insert(*org, (failures, std::time::Instant::now() + wait));
            tracing::warn!(event = "outbox.failed", destination = destination.as_str(), rows = seqs.len(), error = %error);
            metrics::counter!("outbox_failures_total", "destination" => destination.as_str())
                .increment(1);
            let _ = state.store.fail_outbox(&seqs, &error).await;
        }
    }
    let deliveries = if destination == Destination::EventLog && !published.is_empty() {
        let orgs: Vec<OrgId> = by_org.iter().map(|(o, _)| *o).collect();
        let hooks = state
            .store
            .webhooks_of(&orgs)
            .await
            .map_err(|e| e.to_string())?;
        let all: Vec<OutboxRow> = by_org.into_iter().flat_map(|(_, rows)| rows).collect();
        deliveries(&all, &published, &hooks)?
    } else {
        Vec::new()
    };
    if !published.is_empty() {
        state
            .store
            .complete_outbox(destination, &published, &deliveries, state.clock.now())
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            event = "outbox.published",
            destination = destination.as_str(),
            rows = published.len(),
            webhook_deliveries = deliveries.len(),
        );
        metrics::counter!("outbox_published_total", "destination" => destination.as_str())
            .increment(published.len() as u64);
    }
    // Failing organizations back off each on their own, and are not leased while they wait;
    // the relay as a whole backs off only when it cannot work at all (`Err`). (It also did
    // when every organization a round tried failed: with more failing organizations than a
    // round takes, that was every round, and healthy organizations waited for up to
    // `backoff_max` each time. A destination that is down costs one attempt per
    // organization per backoff period.)
    Ok(Round {
        published: published.len(),
        found: true,
        full,
    })
}

/// Runs the relay for `destination` until `stop` flips.
pub async fn run(
    state: State,
    destination: Destination,
    settings: RelaySettings,
    nats: Option<Arc<NatsPublisher>>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut holding = false;
    let mut backing_off = OrgBackoff::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let outcome = round(
            &state,
            destination,
            &settings,
            nats.as_deref(),
            &mut backing_off,
        )
        .await;
        let wait = match outcome {
            Ok(round) => {
                failures = 0;
                holding = round.found;
                if !round.found {
                    // Idle: let other instances have our organizations.
                    let _ = state
                        .store
                        .release_outbox(destination, &settings.holder)
                        .await;
                }
                if round.full {
                    continue; // A backlog: go again at once.
                }
                if round.published > 0 {
                    Some(settings.gather)
                } else {
                    None
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(event = "outbox.failed", destination = destination.as_str(), error = %error);
                Some(backoff(
                    failures,
                    settings.backoff_base,
                    settings.backoff_max,
                ))
            }
        };
        match wait {
            Some(delay) => {
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            None => {
                tokio::select! {
                    _ = stop.changed() => {}
                    () = wake.notified() => {}
                    () = tokio::time::sleep(settings.poll) => {}
                }
            }
        }
    }
    if holding {
        let _ = state
            .store
            .release_outbox(destination, &settings.holder)
            .await;
    }
}

/// Refreshes the `outbox_pending` and `outbox_lag_seconds` gauges.
pub async fn record_lag(state: &State, destination: Destination) -> Option<f64> {
    let stats = state.store.outbox_stats(destination).await.ok()?;
    let lag = stats
        .oldest_pending_at
        .map_or(0.0, |at| (state.clock.now() - at).as_seconds_f64().max(0.0));
    metrics::gauge!("outbox_pending", "destination" => destination.as_str())
        .set(stats.pending as f64);
    metrics::gauge!("outbox_lag_seconds", "destination" => destination.as_str()).set(lag);
    Some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trueline_core::ids::EventId;

    fn row(created_at: time::OffsetDateTime, payload: &str) -> OutboxRow {
        OutboxRow {
            seq: 1,
            event_id: EventId(Uuid::now_v7()),
            org_id: OrgId(Uuid::now_v7()),
            event_type: "inventory.item.qty_changed".into(),
            stream: "item-1".into(),
            payload: serde_json::value::RawValue::from_string(payload.into()).unwrap(),
            created_at,
            attempts: 0,
        }
    }

    /// The metadata and data of a relayed event are byte for byte what they were when both
    /// went through `serde_json::Value`: a row republished after a crash is compared with
    /// the stored event by these bytes (event id duplicates must match exactly). Payloads as
    /// the stores write them (`Value::to_string`); that parsing such text and writing it
    /// again gives it back exactly relies on serde_json's `float_roundtrip` (enabled by
    /// `trueline-core`).
    #[test]
    fn metadata_is_the_json_it_always_was() {
        let payloads = [
            serde_json::json!({"delta": -1, "item_id": "x", "qty_after": 4}),
            serde_json::json!({"f": [0.1, 5e-324, 1.7976931348623157e308, -0.0, 1e21, 2.5e-7]}),
            serde_json::json!({"big": u64::MAX, "small": i64::MIN, "z": null, "t": true}),
            serde_json::json!({"s": "é\u{301} \"quoted\" \\ \n\t\u{1} 😀 </script>"}),
            serde_json::json!({"b": {"nested": [1, {"a": []}]}, "a": "keys sorted"}),
        ];
        let times = [
            time::macros::datetime!(2026-12-04 23:59:59.123456 UTC),
            time::macros::datetime!(1970-01-01 00:00:00 UTC),
            time::OffsetDateTime::now_utc(),
        ];
        for (at, payload) in times.iter().cycle().zip(&payloads) {
            let at = *at;
            let stored = payload.to_string();
            let row = row(at, &stored);
            let committed = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let before = serde_json::to_vec(
                &serde_json::json!({ "source": "outbox", "committed_at": committed }),
            )
            .unwrap();
            let event = event_of(&row);
            assert_eq!(event.metadata, before, "{at}");
            let value: serde_json::Value = serde_json::from_str(&stored).unwrap();
            assert_eq!(event.data, serde_json::to_vec(&value).unwrap(), "{stored}");
        }
    }
}
