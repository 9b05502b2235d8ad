//! Append throughput for one configuration, for quick experiments outside criterion:
//! `cargo run --release -p trueline-eventlog --example throughput -- [always|never|interval]
//! [writers] [events_per_append] [seconds] [dir] [--callback]`. With `--callback`, `writers`
//! is the number of appends in flight, driven through `append_with` by two client threads.
// Example code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trueline_eventlog::{Durability, EventId, EventLog, ExpectedVersion, NewEvent, Options, OrgId};

fn main() {
    let all: Vec<String> = std::env::args().collect();
    let callback = all.iter().any(|a| a == "--callback");
    // Positional arguments only (flags such as `--callback` are not a directory).
    let args: Vec<String> = all.into_iter().filter(|a| !a.starts_with("--")).collect();
    let durability = match args.get(1).map(String::as_str).unwrap_or("always") {
        "never" => Durability::Never,
        "interval" => Durability::IntervalMs(10),
        _ => Durability::Always,
    };
    let writers: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let batch: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5);
    let tmp = tempfile::Builder::new()
        .prefix("eventlog-throughput")
        .tempdir()
        .unwrap();
    let dir = args
        .get(5)
        .map_or(tmp.path().to_path_buf(), std::path::PathBuf::from);
    let (log, _) = EventLog::open(
        &dir,
        Options {
            durability,
            ..Options::default()
        },
    )
    .unwrap();
    let log = Arc::new(log);
    // Group commits, events and time in fdatasync, to tell a CPU-bound writer from a
    // sync-bound one.
    let commits = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let seen = commits.clone();
    log.set_commit_listener(Arc::new(move |n: trueline_eventlog::CommitNotice| {
        seen[0].fetch_add(1, Ordering::Relaxed);
        seen[1].fetch_add(n.events as u64, Ordering::Relaxed);
        seen[2].fetch_add(
            n.fsync.map_or(0, |d| d.as_micros() as u64),
            Ordering::Relaxed,
        );
    }));
    let report_commits = |elapsed: f64| {
        let (c, e, us) = (
            commits[0].load(Ordering::Relaxed) as f64,
            commits[1].load(Ordering::Relaxed) as f64,
            commits[2].load(Ordering::Relaxed) as f64,
        );
        println!(
            "  {:.0} group commits/s, {:.1} events each, writer in fdatasync {:.0} % of the time \
             ({:.0} µs each)",
            c / elapsed,
            e / c.max(1.0),
            us / 1e4 / elapsed,
            us / c.max(1.0)
        );
    };
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    // Ids salted with the clock so reruns against the same directory never collide.
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let next = Arc::new(AtomicU64::new(1));
    let payload = format!(
        "{{\"item\":\"widget\",\"delta\":-2,\"pad\":\"{}\"}}",
        "x".repeat(162)
    );
    let start = Instant::now();
    if callback {
        run_callback(&log, writers, secs, batch, &count, &next, salt, &payload);
        let elapsed = start.elapsed().as_secs_f64();
        let n = count.load(Ordering::Relaxed);
        println!(
            "{durability:?} callback window={writers} events/append={batch}: {n} events in {elapsed:.2}s = {:.0} events/s",
            n as f64 / elapsed
        );
        report_commits(elapsed);
        return;
    }
    std::thread::scope(|s| {
        for t in 0..writers {
            let (log, stop, count, next, payload) = (
                log.clone(),
                stop.clone(),
                count.clone(),
                next.clone(),
                payload.clone(),
            );
            s.spawn(move || {
                let stream = format!("stream-{}", t % 16);
                while !stop.load(Ordering::Relaxed) {
                    let evs: Vec<NewEvent> = (0..batch)
                        .map(|_| {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&n.to_le_bytes());
                            id[8..].copy_from_slice(&salt.to_le_bytes());
                            NewEvent {
                                id: EventId(id),
                                event_type: "inventory.item.adjusted".into(),
                                timestamp_micros: 0,
                                metadata: Vec::new(),
                                payload: payload.clone().into_bytes(),
                            }
                        })
                        .collect();
                    log.append(
                        OrgId([(t % 8) as u8; 16]),
                        &stream,
                        ExpectedVersion::Any,
                        evs,
                    )
                    .unwrap();
                    count.fetch_add(batch as u64, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "{durability:?} writers={writers} events/append={batch}: {n} events in {elapsed:.2}s = {:.0} events/s",
        n as f64 / elapsed
    );
    report_commits(elapsed);
}

/// `window` appends in flight, driven by two client threads through `append_with` (the way an
/// async server uses the engine: no thread blocked per appender).
#[allow(clippy::too_many_arguments)]
fn run_callback(
    log: &Arc<EventLog>,
    window: u64,
    secs: u64,
    batch: usize,
    count: &Arc<AtomicU64>,
    next: &Arc<AtomicU64>,
    salt: u64,
    payload: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for c in 0..2u64 {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (log, count, next) = (log.clone(), count.clone(), next.clone());
            s.spawn(move || {
                let mut in_flight = window / 2;
                let mut tokens = in_flight;
                loop {
                    while tokens > 0 {
                        tokens -= 1;
                        if Instant::now() >= deadline {
                            in_flight -= 1;
                            continue;
                        }
                        let evs: Vec<NewEvent> = (0..batch)
                            .map(|_| {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                let mut id = [0u8; 16];
                                id[..8].copy_from_slice(&n.to_le_bytes());
                                id[8..].copy_from_slice(&salt.to_le_bytes());
                                NewEvent {
                                    id: EventId(id),
                                    event_type: "inventory.item.adjusted".into(),
                                    timestamp_micros: 0,
                                    metadata: Vec::new(),
                                    payload: payload.as_bytes().to_vec(),
                                }
                            })
                            .collect();
                        let (tx, count) = (tx.clone(), count.clone());
                        log.append_with(
                            OrgId([c as u8; 16]),
                            &format!("stream-{}", next.load(Ordering::Relaxed) % 16),
                            ExpectedVersion::Any,
                            evs,
                            Box::new(move |r| {
                                if r.is_ok() {
                                    count.fetch_add(batch as u64, Ordering::Relaxed);
                                }
                                let _ = tx.send(());
                            }),
                        );
                    }
                    if in_flight == 0 {
                        return;
                    }
                    if rx.recv().is_err() {
                        return;
                    }
                    tokens += 1;
                    while rx.try_recv().is_ok() {
                        tokens += 1;
                    }
                }
            });
        }
    });
}
