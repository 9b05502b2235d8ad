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

/// Spawns a background worker whose panic is reported (a JSON `server.worker_panicked` line
/// and `worker_panics_total{worker}`) instead of ending it in silence. It is not restarted:
/// whatever it held may be half-changed, and the outbox lag it leaves behind is reported on
/// its own (`outbox_lag_seconds`, and `/readyz` warns past `outbox.lag_warn_s`).
fn spawn_worker<F>(name: &'static str, work: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use futures_util::FutureExt as _;
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
            let message = panic
                .downcast_ref::<&str>()
                .map(|m| (*m).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            metrics::counter!("worker_panics_total", "worker" => name).increment(1);
            tracing::error!(event = "server.worker_panicked", worker = name, message);
        }
    })
}

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
    let nats = config.publish.nats.url.is_some();
    let mut workers = vec![
        // Idempotency records older than their retention.
        spawn_worker(
            "idempotency_purge",
            purge_periodically(
                state.clone(),
                Purge {
                    retention: Duration::from_secs(config.idempotency.retention_hours * 3600),
                    interval: Duration::from_secs(config.idempotency.purge_interval_s.max(1)),
                    purged: "idempotency.purged",
                    failed: "idempotency.purge_failed",
                },
                stop.clone(),
                |state, before, limit| async move { state.store.purge_idempotency(before, limit).await },
            ),
        ),
        // Outbox rows every destination published, older than their retention.
        spawn_worker(
            "outbox_purge",
            purge_periodically(
                state.clone(),
                Purge {
                    retention: Duration::from_secs(config.outbox.retention_hours * 3600),
                    interval: Duration::from_secs(config.outbox.purge_interval_s.max(1)),
                    purged: "outbox.purged",
                    failed: "outbox.purge_failed",
                },
                stop.clone(),
                move |state, before, limit| async move {
                    state.store.purge_outbox(before, nats, limit).await
                },
            ),
        ),
        // Finished webhook deliveries older than their retention (the outbox's interval).
        spawn_worker(
            "delivery_purge",
            purge_periodically(
                state.clone(),
                Purge {
                    retention: Duration::from_secs(config.webhooks.delivery_retention_hours * 3600),
                    interval: Duration::from_secs(config.outbox.purge_interval_s.max(1)),
                    purged: "webhook.deliveries_purged",
                    failed: "webhook.purge_failed",
                },
                stop.clone(),
                |state, before, limit| async move { state.store.purge_deliveries(before, limit).await },
            ),
        ),
        spawn_worker(
            "webhooks",
            webhooks::run(state.clone(), webhooks, stop.clone()),
        ),
        spawn_worker("outbox_lag", watch_lag(state.clone(), stop.clone())),
        spawn_worker(
            "metrics_upkeep",
            every(METRICS_UPKEEP_INTERVAL, stop.clone(), || {
                crate::telemetry::metrics_handle().run_upkeep();
            }),
        ),
        spawn_worker(
            "assessment_sweeper",
            submit_overdue_attempts(
                state.clone(),
                Duration::from_secs(config.assessments.sweep_interval_s.max(1)),
                stop.clone(),
            ),
        ),
    ];
    if !config.outbox.relay_enabled {
        return workers;
    }
    workers.push(spawn_worker(
        "relay_eventlog",
        relay::run(
            state.clone(),
            Destination::EventLog,
            relay.clone(),
            None,
            state.outbox_wake.clone(),
            stop.clone(),
        ),
    ));
    if let Some(url) = config.publish.nats.url.clone() {
        let stream = config.publish.nats.stream.clone();
        let prefix = config.publish.nats.subject_prefix.clone();
        let window = std::time::Duration::from_secs(config.publish.nats.duplicate_window_s);
        let state = state.clone();
        let mut stop = stop.clone();
        workers.push(spawn_worker("relay_nats", async move {
            let mut failures = 0;
            let mut client = None;
            let nats = loop {
                let ready = match &client {
                    Some(client) => NatsPublisher::ready(client, &stream, &prefix, window).await,
                    None => match NatsPublisher::client(&url).await {
                        Ok(made) => {
                            let made = client.insert(made);
                            NatsPublisher::ready(made, &stream, &prefix, window).await
                        }
                        Err(e) => Err(e),
                    },
                };
                match ready {
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
            // NATS takes one acknowledged publish at a time per organization: rounds as
            // large as the event log's could outlast the lease (`outbox.lease_s`).
            let relay = RelaySettings {
                rows_per_round: NATS_ROWS_PER_ROUND,
                ..relay
            };
            relay::run(state, Destination::Nats, relay, Some(nats), wake, stop).await;
        }));
    }
    workers
}

/// Rows a NATS relay round takes in all (500 per organization before rounds were counted in
/// all, 2026-12-04).
const NATS_ROWS_PER_ROUND: u32 = 500;

/// Attempts the sweeper auto-submits per pass.
const SWEEP_BATCH: u32 = 100;
/// How long an attempt whose auto-submission failed is left out of the passes.
const SWEEP_FAILURE_BACKOFF: Duration = Duration::from_secs(60);

/// Attempts whose auto-submission failed, each left alone until its back-off time.
///
/// The store lists overdue attempts oldest first, so a pass always starts from the same head:
/// without this, `SWEEP_BATCH` attempts that keep failing would fill every batch and no later
/// attempt would ever be submitted. A pass asks for `SWEEP_BATCH` more than it is skipping and
/// leaves the skipped out, so it always gets up to `SWEEP_BATCH` attempts it can try. Kept in
/// memory only: a restart (or another instance) simply tries them again.
#[derive(Debug, Default)]
struct SweepBackoff {
    until: std::collections::HashMap<uuid::Uuid, std::time::Instant>,
}

impl SweepBackoff {
    /// Forgets the attempts whose back-off is over (they are tried again).
    fn expire(&mut self, now: std::time::Instant) {
        self.until.retain(|_, until| *until > now);
    }

    /// How many overdue attempts to ask for: enough to fill a batch past the skipped ones.
    fn fetch_limit(&self) -> u32 {
        SWEEP_BATCH.saturating_add(u32::try_from(self.until.len()).unwrap_or(u32::MAX))
    }

    /// The attempts of `overdue` to try in this pass, in order, at most `SWEEP_BATCH`.
    fn pick(&self, overdue: Vec<uuid::Uuid>) -> Vec<uuid::Uuid> {
        overdue
            .into_iter()
            .filter(|id| !self.until.contains_key(id))
            .take(SWEEP_BATCH as usize)
            .collect()
    }

    fn failed(&mut self, id: uuid::Uuid, now: std::time::Instant) {
        self.until.insert(id, now + SWEEP_FAILURE_BACKOFF);
    }
}

/// Why an attempt was not auto-submitted in this pass.
enum AutoSubmit {
    /// Someone else submitted it first (the candidate, or another instance's sweeper): done.
    AlreadySubmitted,
    Failed,
}

/// Auto-submits attempts left open past their deadline (plus grace, plus a request timeout)
/// with their last saved
/// answers, so a candidate who walks away still gets a result and the attempt cannot be
/// submitted later.
async fn submit_overdue_attempts(
    state: State,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = SweepBackoff::default();
    loop {
        // Beyond the grace, one more request timeout: a submit that arrived within the grace
        // may still be waiting for the store (its time was taken on arrival), and it, not
        // this pass, must decide the attempt.
        let grace = time::Duration::try_from(state.settings.submit_grace)
            .unwrap_or(time::Duration::seconds(30));
        let in_flight = time::Duration::try_from(state.settings.request_timeout)
            .unwrap_or(time::Duration::seconds(30));
        let now = state.clock.now();
        backoff.expire(std::time::Instant::now());
        match state
            .store
            .overdue_attempts(now - grace - in_flight, backoff.fetch_limit())
            .await
        {
            Ok(ids) => {
                for id in backoff.pick(ids) {
                    let submitted = async {
                        let session = state
                            .store
                            .attempt_session(id)
                            .await
                            .ok()
                            .flatten()
                            .ok_or(AutoSubmit::Failed)?;
                        let attempt = session.attempt.as_ref().ok_or(AutoSubmit::Failed)?;
                        // Guarded by `saved_at`: a save that was still in flight when the
                        // deadline passed makes this pass fail, and a later one scores it.
                        let source = trueline_store::AnswersSource::Saved {
                            saved_at: attempt.saved_at,
                        };
                        let submission = trueline_http::candidates::score(
                            &session,
                            &attempt.answers,
                            source,
                            true,
                        )
                        .map_err(|_| AutoSubmit::Failed)?;
                        state
                            .store
                            .submit_attempt(id, submission, now, None)
                            .await
                            .map_err(|e| match e {
                                StoreError::Domain(
                                    trueline_core::DomainError::AlreadySubmitted,
                                ) => AutoSubmit::AlreadySubmitted,
                                _ => AutoSubmit::Failed,
                            })
                    }
                    .await;
                    match submitted {
                        Ok(s) => {
                            tracing::info!(event = "assessments.auto_submitted", attempt_id = %id, submission_id = %s.id)
                        }
                        // Between listing it and submitting it, the candidate's submit or
                        // another instance's sweeper got there: the attempt is closed.
                        Err(AutoSubmit::AlreadySubmitted) => {
                            tracing::debug!(event = "assessments.auto_submit_superseded", attempt_id = %id)
                        }
                        Err(AutoSubmit::Failed) => {
                            backoff.failed(id, std::time::Instant::now());
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

/// How often the histograms' samples are folded into their buckets (the interval the
/// Prometheus exporter's own upkeep task would use).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Calls `work` every `interval` until the shutdown flag flips.
///
/// The metrics upkeep runs on it: the Prometheus recorder keeps every histogram sample
/// recorded since the last scrape of `/metrics` or the last upkeep, and we build the recorder
/// ourselves (`telemetry::metrics_handle`), which starts no upkeep task. A server nobody
/// scraped held every request's samples for ever: ~22 bytes a request, its RSS growing by
/// ~0.5 MB/s under `hot-item` (docs/benchmarks.md, "2026-12-05, midday").
async fn every(interval: Duration, mut stop: watch::Receiver<bool>, work: impl Fn()) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(interval) => work(),
        }
    }
}

/// Rows deleted per transaction by the purges: the single SQLite writer is held for one
/// batch at a time (the relay and the requests get it in between), not for a whole purge.
const PURGE_BATCH: u32 = 2_000;

/// A periodic purge: what is older than `retention` goes every `interval`; its log events.
struct Purge {
    retention: Duration,
    interval: Duration,
    purged: &'static str,
    failed: &'static str,
}

/// Every `purge.interval`, runs `delete(state, now - retention, PURGE_BATCH)` until a batch
/// comes back short (each call deletes at most that many rows and returns how many).
async fn purge_periodically<F, Fut>(
    state: State,
    purge: Purge,
    mut stop: watch::Receiver<bool>,
    delete: F,
) where
    F: Fn(State, time::OffsetDateTime, u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let retention = time::Duration::try_from(purge.retention).unwrap_or(time::Duration::DAY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(purge.interval) => {}
        }
        let before = state.clock.now() - retention;
        let mut total = 0;
        let outcome = loop {
            match delete(state.clone(), before, PURGE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(PURGE_BATCH) || *stop.borrow() {
                        break Ok(total);
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(0) => {}
            Ok(purged) => tracing::info!(event = purge.purged, purged),
            Err(e) => tracing::warn!(event = purge.failed, purged = total, error = %e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use uuid::Uuid;

    #[tokio::test(start_paused = true)]
    async fn periodic_work_runs_every_interval_until_the_server_stops() {
        let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let counted = runs.clone();
        let worker = tokio::spawn(every(Duration::from_secs(5), stop, move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        tokio::time::sleep(Duration::from_millis(14_900)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        stop_tx.send(true).unwrap();
        worker.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn attempts_that_keep_failing_do_not_block_the_ones_after_them() {
        let mut backoff = SweepBackoff::default();
        let overdue: Vec<Uuid> = (0..250).map(|_| Uuid::now_v7()).collect();
        let now = Instant::now();
        assert_eq!(backoff.fetch_limit(), SWEEP_BATCH);
        let first = backoff.pick(overdue[..SWEEP_BATCH as usize].to_vec());
        assert_eq!(first, overdue[..100]);
        // The whole first batch fails: the next pass asks for enough to get past it, and
        // tries the next 100.
        for id in &first {
            backoff.failed(*id, now);
        }
        assert_eq!(backoff.fetch_limit(), 2 * SWEEP_BATCH);
        let limit = backoff.fetch_limit() as usize;
        assert_eq!(backoff.pick(overdue[..limit].to_vec()), overdue[100..200]);
        // Still backed off just before the time is up; tried again after it.
        backoff.expire(now + SWEEP_FAILURE_BACKOFF - Duration::from_millis(1));
        assert_eq!(backoff.fetch_limit(), 2 * SWEEP_BATCH);
        backoff.expire(now + SWEEP_FAILURE_BACKOFF);
        assert_eq!(backoff.fetch_limit(), SWEEP_BATCH);
        assert_eq!(backoff.pick(overdue.clone()), overdue[..100]);
    }
}
