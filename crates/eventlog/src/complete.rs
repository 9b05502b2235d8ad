//! Acknowledging appends off the writer thread.
//!
//! Every acknowledgement wakes whoever waits for it (a blocked [`crate::EventLog::append`]
//! caller, an async task): a futex wake of a few microseconds of system time on this kind of
//! VM. With 64 blocking appenders a group commit holds ~47 appends, and those wakes took about
//! as long as the group's `fdatasync`, on the one thread every append waits for. So a large
//! group's acknowledgements go to this thread in one message and the writer starts on the next
//! group at once. Small groups (low concurrency, where one more thread hop would only add
//! latency) are acknowledged on the writer thread, unless earlier ones are still queued here:
//! acknowledgements are always delivered in commit order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::{JoinHandle, ThreadId};

use crate::error::AppendError;
use crate::types::Recorded;
use crate::writer::Completion;

/// One append's acknowledgement: its completion and its outcome.
pub(crate) type Outcome = (Completion, Result<Vec<Recorded>, AppendError>);

/// Groups of at most this many appends are acknowledged on the writer thread.
const INLINE_MAX: usize = 4;

pub(crate) struct Completer {
    tx: Option<Sender<Vec<Outcome>>>,
    thread: Option<JoinHandle<()>>,
    /// Groups sent and not yet fully acknowledged.
    queued: Arc<AtomicUsize>,
    /// Set to the thread's id when it starts (`EventLog::stop` must not wait for the writer
    /// from a callback running there).
    thread_id: Arc<std::sync::OnceLock<ThreadId>>,
    /// After `stop`: everything is delivered on the calling thread.
    stopped: bool,
}

impl Completer {
    pub fn new(thread_id: Arc<std::sync::OnceLock<ThreadId>>) -> Self {
        Completer {
            tx: None,
            thread: None,
            queued: Arc::default(),
            thread_id,
            stopped: false,
        }
    }

    /// Calls every completion with its outcome: here, or on the completer thread.
    pub fn complete(&mut self, outcomes: Vec<Outcome>) {
        // On the writer thread, before the outcomes may travel to the completer thread: the
        // writer prepares a chain's next append only after this.
        for (completion, outcome) in &outcomes {
            if outcome.is_err() {
                completion.break_chain();
            }
        }
        let offload = outcomes.len() > INLINE_MAX || self.queued.load(Ordering::Acquire) > 0;
        if !offload || !self.started() {
            return complete_all(outcomes);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let Some(tx) = &self.tx else {
            return complete_all(outcomes);
        };
        if let Err(mpsc::SendError(outcomes)) = tx.send(outcomes) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            complete_all(outcomes);
        }
    }

    fn started(&mut self) -> bool {
        if self.tx.is_some() {
            return true;
        }
        if self.stopped {
            return false;
        }
        let (tx, rx) = mpsc::channel::<Vec<Outcome>>();
        let queued = self.queued.clone();
        let spawned = std::thread::Builder::new()
            .name("eventlog-ack".into())
            .spawn(move || {
                while let Ok(outcomes) = rx.recv() {
                    complete_all(outcomes);
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = self.thread_id.set(handle.thread().id());
                self.thread = Some(handle);
                self.tx = Some(tx);
                true
            }
            Err(_) => false,
        }
    }

    /// Delivers what is queued, then stops the thread.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.tx = None;
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn complete_all(outcomes: Vec<Outcome>) {
    for (completion, outcome) in outcomes {
        completion.complete(outcome);
    }
}
