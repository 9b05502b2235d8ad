//! Hot-row combining for quantity deltas.
//!
//! With one transaction per request, a hot item is capped by the database's commit rate (one
//! `fsync` per commit on SQLite; a row-lock hand-off plus a WAL flush on PostgreSQL). The
//! combiner queues concurrent deltas, and one worker applies everything queued in ONE
//! transaction ([`ItemStore::apply_deltas`](trueline_store::ItemStore::apply_deltas)):
//! every delta is still checked by the guarded statement against the running quantity and
//! refused on its own, every applied delta still gets its own history record, outbox event
//! and idempotency record, and no response is sent before the batch committed. While one
//! batch commits the next one fills up, so throughput grows with load instead of queueing.
//!
//! Combining is per server instance; with several instances on PostgreSQL each combines its
//! own requests, rows and the outbox's per-organization commit locks are taken in one global
//! order (no deadlocks between instances), and the guarded statement stays the authority.

use crate::problem::{ApiError, codes};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use trueline_store::{DeltaJob, DeltaOutcome, Store, StoreError};

type Reply = oneshot::Sender<Result<DeltaOutcome, StoreError>>;

pub struct Combiner {
    queue: mpsc::Sender<(DeltaJob, Reply)>,
}

fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Domain(d) => StoreError::Domain(d.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

impl Combiner {
    /// Starts the worker. `max_batch`: deltas per transaction; `queue`: deltas waiting at
    /// most (beyond it requests are shed with 503). An error (no thread or runtime for the
    /// worker) stops the server from starting, rather than serving every quantity change
    /// a 500.
    pub fn start(
        store: Arc<dyn Store>,
        max_batch: usize,
        queue: usize,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        // Its own thread and runtime: each statement of a batch is an await, and on the
        // shared runtime every one of them would queue behind the HTTP tasks of all waiting
        // clients, stretching the batch (and the write lock) by the length of that queue.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("delta-combiner".into())
            .spawn(move || runtime.block_on(run(store, rx, max_batch.max(1))))?;
        Ok(Arc::new(Self { queue: tx }))
    }

    /// Queues one delta and waits for the outcome of the batch it lands in.
    pub async fn submit(&self, job: DeltaJob) -> Result<DeltaOutcome, ApiError> {
        let (reply, outcome) = oneshot::channel();
        self.queue.try_send((job, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::new(
                codes::OVERLOADED,
                "too many quantity changes are queued; retry shortly",
            )
            .retry_after(1),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::internal("the delta combiner stopped")
            }
        })?;
        let result = outcome
            .await
            .map_err(|_| ApiError::internal("the delta combiner dropped a job"))?;
        Ok(result?)
    }
}

/// Waits for a job, then takes everything queued behind it (up to `max_batch`): what arrived
/// while the previous batch committed joins this one. `None` once the queue is closed.
///
/// Jobs whose request is gone are left out. A request that timed out while queued has
/// answered `503 timeout` already, and its delta must not apply afterwards (a client
/// retrying without a key would apply it twice); only a batch already running when the
/// timeout fires can still commit one.
async fn next_batch<J>(
    rx: &mut mpsc::Receiver<(J, Reply)>,
    max_batch: usize,
) -> Option<Vec<(J, Reply)>> {
    loop {
        let first = rx.recv().await?;
        let mut batch = ready_batch(rx, max_batch.saturating_sub(1));
        if !first.1.is_closed() {
            batch.insert(0, first);
        }
        if !batch.is_empty() {
            return Some(batch);
        }
    }
}

/// Everything queued behind it (up to `max_batch`) without waiting, less the jobs whose
/// request is gone (see [`next_batch`]); empty when nothing is queued.
fn ready_batch<J>(rx: &mut mpsc::Receiver<(J, Reply)>, max_batch: usize) -> Vec<(J, Reply)> {
    let mut batch = Vec::new();
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch.retain(|(_, reply)| !reply.is_closed());
    batch
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(DeltaJob, Reply)>, max_batch: usize) {
    while let Some(first) = next_batch(&mut rx, max_batch).await {
        // The store runs the first batch and then every one that is ready when it is done
        // (on SQLite without giving the writer connection back in between).
        let mut batches = Batches {
            rx: &mut rx,
            max_batch,
            first: Some(first),
            replies: Vec::new(),
            started: std::time::Instant::now(),
        };
        store.apply_delta_batches(&mut batches).await;
    }
}

/// The queue, as the store's source of batches and sink of outcomes.
struct Batches<'a> {
    rx: &'a mut mpsc::Receiver<(DeltaJob, Reply)>,
    max_batch: usize,
    /// The batch the run starts with (waited for).
    first: Option<Vec<(DeltaJob, Reply)>>,
    /// Of the batch handed out last.
    replies: Vec<Reply>,
    started: std::time::Instant,
}

impl trueline_store::DeltaBatches for Batches<'_> {
    fn next_ready(&mut self) -> Option<Vec<DeltaJob>> {
        let batch = match self.first.take() {
            Some(first) => first,
            None => ready_batch(self.rx, self.max_batch),
        };
        if batch.is_empty() {
            return None;
        }
        let (jobs, replies): (Vec<DeltaJob>, Vec<Reply>) = batch.into_iter().unzip();
        metrics::histogram!("inventory_combined_batch_size").record(jobs.len() as f64);
        self.replies = replies;
        self.started = std::time::Instant::now();
        Some(jobs)
    }

    fn done(&mut self, outcome: Result<Vec<DeltaOutcome>, StoreError>) {
        metrics::histogram!("inventory_combined_batch_seconds")
            .record(self.started.elapsed().as_secs_f64());
        let replies = std::mem::take(&mut self.replies);
        match outcome {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(event = "inventory.combined_batch_failed", jobs = replies.len(), error = %e);
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&e)));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_whose_request_is_gone_are_left_out_of_the_batch() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut waiting = Vec::new();
        for job in 0..4 {
            let (reply, outcome) = oneshot::channel();
            tx.try_send((job, reply)).unwrap();
            waiting.push(outcome);
        }
        // Requests 1 and 3 timed out while queued.
        drop(waiting.remove(3));
        drop(waiting.remove(1));
        let batch = next_batch(&mut rx, 16).await.unwrap();
        assert_eq!(batch.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [0, 2]);
        // A batch of only abandoned jobs is skipped: the worker waits for the next one.
        let (reply, outcome) = oneshot::channel();
        tx.try_send((4, reply)).unwrap();
        drop(outcome);
        let (reply, _kept) = oneshot::channel();
        tx.try_send((5, reply)).unwrap();
        let batch = next_batch(&mut rx, 1).await.unwrap();
        assert_eq!(batch.iter().map(|(j, _)| *j).collect::<Vec<_>>(), [5]);
        drop(tx);
        assert!(next_batch(&mut rx, 16).await.is_none());
    }
}
