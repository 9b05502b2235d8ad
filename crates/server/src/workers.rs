//! Background workers. Each runs until the shutdown flag flips, then finishes its current
//! step and returns, so the server exits only after they are done.

use crate::config::Config;
use crate::delivery::nats::NatsPublisher;
use crate::delivery::relay::{self, RelaySettings};
use crate::delivery::webhooks::{self, WebhookSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use trueline_http::State;
use trueline_store::{Destination, StoreError};

/// Starts every background worker.
pub fn spawn_all(
    state: &State,
    config: &Config,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let relay = RelaySettings {
        lease: Duration::from_secs(config.outbox.lease_s.max(1)),
        poll: Duration::from_millis(config.outbox.poll_ms.max(10)),
        ..RelaySettings::default()
    };
    let webhooks = WebhookSettings {
        timeout: Duration::from_millis(config.webhooks.timeout_ms),
        max_attempts: config.webhooks.max_attempts.max(1),
        backoff_base: Duration::from_millis(config.webhooks.backoff_base_ms),
        backoff_max: Duration::from_millis(config.webhooks.backoff_max_ms),
        allow_private_targets: config.webhooks.allow_private_targets,
        poll: Duration::from_millis(config.webhooks.poll_ms.max(10)),
        concurrency: config.webhooks.concurrency.max(1),
    };
    let mut workers = vec![
        tokio::spawn(purge_idempotency_keys(
            state.clone(),
            Duration::from_secs(config.idempotency.retention_hours * 3600),
            Duration::from_secs(config.idempotency.purge_interval_s.max(1)),
            stop.clone(),
        )),
        tokio::spawn(purge_outbox(
            state.clone(),
            Duration::from_secs(config.outbox.retention_hours * 3600),
            Duration::from_secs(config.outbox.purge_interval_s.max(1)),
            config.publish.nats.url.is_some(),
            stop.clone(),
        )),
        tokio::spawn(webhooks::run(state.clone(), webhooks, stop.clone())),
        tokio::spawn(watch_lag(state.clone(), stop.clone())),
        tokio::spawn(submit_overdue_attempts(
            state.clone(),
            Duration::from_secs(config.assessments.sweep_interval_s.max(1)),
            stop.clone(),
        )),
    ];
    if !config.outbox.relay_enabled {
        return workers;
    }
    workers.push(tokio::spawn(relay::run(
        state.clone(),
        Destination::EventLog,
        relay.clone(),
        None,
        state.outbox_wake.clone(),
        stop.clone(),
    )));
    if let Some(url) = config.publish.nats.url.clone() {
        let stream = config.publish.nats.stream.clone();
        let prefix = config.publish.nats.subject_prefix.clone();
        let state = state.clone();
        let mut stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = 0;
            let nats = loop {
                match NatsPublisher::connect(&url, &stream, &prefix).await {
                    Ok(nats) => break Arc::new(nats),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(event = "nats.connect_failed", error = %e);
                        let wait = crate::delivery::backoff(
                            failures,
                            relay.backoff_base,
                            relay.backoff_max,
                        );
                        tokio::select! {
                            _ = stop.changed() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            };
            // NATS follows the event log and has no wake-up of its own: it polls.
            let wake = Arc::new(tokio::sync::Notify::new());
            relay::run(state, Destination::Nats, relay, Some(nats), wake, stop).await;
        }));
    }
    workers
}

/// Auto-submits attempts left open past their deadline (plus grace) with their last saved
/// answers, so a candidate who walks away still gets a result and the attempt cannot be
/// submitted later.
async fn submit_overdue_attempts(
    state: State,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let grace = time::Duration::try_from(state.settings.submit_grace)
            .unwrap_or(time::Duration::seconds(30));
        let now = state.clock.now();
        match state.store.overdue_attempts(now - grace, 100).await {
            Ok(ids) => {
                for id in ids {
                    let submitted = async {
                        let session = state.store.attempt_session(id).await.ok()??;
                        let answers = session.attempt.as_ref()?.answers.clone();
                        let submission =
                            trueline_http::candidates::score(&session, &answers, true).ok()?;
                        state
                            .store
                            .submit_attempt(id, submission, now, None)
                            .await
                            .ok()
                    }
                    .await;
                    match submitted {
                        Some(s) => {
                            tracing::info!(event = "assessments.auto_submitted", attempt_id = %id, submission_id = %s.id)
                        }
                        None => {
                            tracing::warn!(event = "assessments.auto_submit_failed", attempt_id = %id)
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(event = "assessments.sweep_failed", error = %e),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Keeps the outbox lag gauges, and the value `/readyz` reads, up to date.
async fn watch_lag(state: State, mut stop: watch::Receiver<bool>) {
    loop {
        if let Some(lag) = relay::record_lag(&state, Destination::EventLog).await {
            state
                .outbox_lag_ms
                .store((lag * 1000.0) as u64, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Rows deleted per transaction by the purges: the single SQLite writer is held for one
/// batch at a time (the relay and the requests get it in between), not for a whole purge.
const PURGE_BATCH: u32 = 2_000;

/// Runs `purge(PURGE_BATCH)` until a batch comes back short; returns the total.
async fn in_batches<F, Fut>(stop: &watch::Receiver<bool>, mut purge: F) -> Result<u64, StoreError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = purge(PURGE_BATCH).await?;
        total += n;
        if n < u64::from(PURGE_BATCH) || *stop.borrow() {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes outbox rows every destination published, once older than the retention period.
async fn purge_outbox(
    state: State,
    retention: Duration,
    interval: Duration,
    nats: bool,
    mut stop: watch::Receiver<bool>,
) {
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::DAY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let before = state.clock.now() - retention;
        let store = &state.store;
        match in_batches(&stop, |limit| store.purge_outbox(before, nats, limit)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(event = "outbox.purged", purged),
            Err(e) => tracing::warn!(event = "outbox.purge_failed", error = %e),
        }
    }
}

/// Deletes idempotency records older than the retention period.
async fn purge_idempotency_keys(
    state: State,
    retention: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let retention = time::Duration::try_from(retention).unwrap_or(time::Duration::DAY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let before = state.clock.now() - retention;
        let store = &state.store;
        match in_batches(&stop, |limit| store.purge_idempotency(before, limit)).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(event = "idempotency.purged", purged),
            Err(e) => tracing::warn!(event = "idempotency.purge_failed", error = %e),
        }
    }
}
