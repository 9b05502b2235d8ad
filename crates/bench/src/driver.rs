//! The two load loops.
//!
//! - **Closed loop** (`--clients C`): C tasks, each sending its next operation as soon as the
//!   previous one answered. Latency is from send to answer; throughput is what the server
//!   sustains at that concurrency.
//! - **Open loop** (`--rate R`): operation `i` is due at `start + i/R` whatever happened to the
//!   previous ones. Its latency is measured from that *intended* time, so when the server
//!   stalls, the requests queued behind the stall carry the wait in their latency instead of
//!   silently not being sent (coordinated omission). At most `--max-in-flight` operations
//!   run at once; one that finds no free slot waits for one (counted). One still unsent
//!   when the run ends is counted as unsent *and* recorded as a failed operation whose
//!   latency is at least the end of the drain minus its intended time: leaving it out of
//!   the percentiles would hide the stall that kept it unsent.
//!
//! Each operation is classified by [`Fixture::outcome`]: only successful ones count as
//! throughput and latency (see [`crate::stats`]).

use crate::schedule::{Schedule, is_late};
use crate::stats::{Recorded, Recorder};
use crate::workloads::{Fixture, OpEnd, Session};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct DriveConfig {
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub max_in_flight: usize,
    pub seed: u64,
    /// How long to wait for in-flight operations after the window closes.
    pub drain_timeout: Duration,
}

/// Open-loop bookkeeping for the measured window.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct OpenLoopStats {
    pub rate_per_s: f64,
    pub max_in_flight: usize,
    /// Operations due in the measured window.
    pub scheduled: u64,
    pub sent: u64,
    /// Sent more than 5 ms after their intended time (latency still counts from it).
    pub sent_late: u64,
    /// Found every in-flight slot taken at their intended time and waited for one.
    pub waited_for_slot: u64,
    /// Due in the measured window but never sent: failed operations, with the wait until
    /// the end of the drain in the latency as a lower bound.
    pub unsent: u64,
}

#[derive(Debug, Clone)]
pub struct DriveOutcome {
    pub recorded: Recorded,
    /// The measured wall time (shorter than `--duration` if the workload ran out of work).
    pub measured: Duration,
    pub open_loop: Option<OpenLoopStats>,
    /// The workload ran out of work before the end (submit: every invite used).
    pub exhausted: bool,
}

fn client_rng(seed: u64, n: u64) -> fastrand::Rng {
    // Distinct, reproducible streams per client (or per open-loop request).
    fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub async fn drive(
    fixture: Arc<Fixture>,
    session: Arc<Session>,
    config: &DriveConfig,
) -> anyhow::Result<DriveOutcome> {
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let end = measure_start + config.duration;
    let recorder = Arc::new(Recorder::new(measure_start));
    let exhausted = Arc::new(AtomicBool::new(false));
    let (finished, open_loop) = match config.rate {
        None => {
            let finished =
                closed_loop(&fixture, &session, config, &recorder, &exhausted, end).await;
            (finished, None)
        }
        Some(rate) => {
            let schedule = Schedule::new(rate).map_err(anyhow::Error::msg)?;
            let (finished, stats) = open_loop(
                &fixture, &session, config, &recorder, &exhausted, schedule, start,
            )
            .await;
            (finished, Some(stats))
        }
    };
    let measured = finished
        .min(end)
        .saturating_duration_since(measure_start)
        .max(Duration::from_millis(1));
    Ok(DriveOutcome {
        recorded: recorder.snapshot(measured.as_secs().max(1)),
        measured,
        open_loop,
        exhausted: exhausted.load(Ordering::Relaxed),
    })
}

/// Returns when the last client stopped.
async fn closed_loop(
    fixture: &Arc<Fixture>,
    session: &Arc<Session>,
    config: &DriveConfig,
    recorder: &Arc<Recorder>,
    exhausted: &Arc<AtomicBool>,
    end: Instant,
) -> Instant {
    let clients = config.clients.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (fixture, session, recorder) = (fixture.clone(), session.clone(), recorder.clone());
        let exhausted = exhausted.clone();
        let mut rng = client_rng(config.seed, client as u64);
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(4);
            // Unique across clients: client, client + C, client + 2C, …
            let mut seq = client as u64;
            loop {
                let started = Instant::now();
                if started >= end || exhausted.load(Ordering::Relaxed) {
                    break;
                }
                samples.clear();
                if fixture
                    .op(&session, client, seq, &mut rng, &mut samples)
                    .await
                    == OpEnd::Exhausted
                {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                }
                let done = Instant::now();
                let measured = started >= recorder.measure_start();
                let outcome = fixture.outcome(&samples);
                recorder.record(measured, outcome, done - started, done, &samples);
                seq += clients as u64;
            }
            Instant::now()
        });
    }
    let mut last = Instant::now();
    while let Some(result) = tasks.join_next().await {
        if let Ok(finished) = result {
            last = last.max(finished);
        }
    }
    last
}

async fn open_loop(
    fixture: &Arc<Fixture>,
    session: &Arc<Session>,
    config: &DriveConfig,
    recorder: &Arc<Recorder>,
    exhausted: &Arc<AtomicBool>,
    schedule: Schedule,
    start: Instant,
) -> (Instant, OpenLoopStats) {
    let max_in_flight = config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let first_measured = schedule.first_at_or_after(config.warmup);
    let due = schedule.due_before(config.warmup + config.duration);
    let end = start + config.warmup + config.duration;
    let mut stats = OpenLoopStats {
        rate_per_s: schedule.rate_per_s(),
        max_in_flight,
        scheduled: due.saturating_sub(first_measured),
        ..OpenLoopStats::default()
    };
    let clients = config.clients.max(1) as u64;
    let mut i = 0u64;
    while i < due && !exhausted.load(Ordering::Relaxed) {
        let intended = start + schedule.offset(i);
        tokio::time::sleep_until(intended).await;
        let measured = i >= first_measured;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if measured {
                    stats.waited_for_slot += 1;
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = tokio::time::sleep_until(end) => break,
                }
            }
        };
        if measured {
            stats.sent += 1;
            if is_late(Instant::now().saturating_duration_since(intended)) {
                stats.sent_late += 1;
            }
        }
        let (fixture, session, recorder) = (fixture.clone(), session.clone(), recorder.clone());
        let exhausted = exhausted.clone();
        let mut rng = client_rng(config.seed, i);
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(4);
            let client = (i % clients) as usize;
            if fixture
                .op(&session, client, i, &mut rng, &mut samples)
                .await
                == OpEnd::Exhausted
            {
                exhausted.store(true, Ordering::Relaxed);
            } else {
                let done = Instant::now();
                let outcome = fixture.outcome(&samples);
                recorder.record(measured, outcome, done - intended, done, &samples);
            }
            drop(permit);
        });
        i += 1;
    }
    let unsent = if exhausted.load(Ordering::Relaxed) {
        0..0
    } else {
        i.max(first_measured)..due.max(first_measured)
    };
    stats.unsent = unsent.end - unsent.start;
    let dispatched = Instant::now();
    // Wait for the operations still in flight (they are part of the run).
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(config.drain_timeout, slots.acquire_many(all)).await;
    let drained = Instant::now();
    for j in unsent {
        recorder.record_unsent(drained.saturating_duration_since(start + schedule.offset(j)));
    }
    (dispatched.max(drained.min(end)), stats)
}
