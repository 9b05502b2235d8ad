//! Append latency while type-filtered catch-up reads walk a large organization:
//! `cargo run --release -p trueline-eventlog --example filtered_reads -- [events] [seconds]`.
//!
//! One organization holds `events` (default 2,000,000) events of one type and a single event
//! of a rare type; a reader thread reads that organization's rare events over and over
//! (`read_org` with a type filter walks every position to fill its page). Meanwhile one writer
//! appends single events to another organization, durably, and the latency of each append
//! is recorded: first without the reader (the baseline), then with it. Reads walk the index
//! under its read lock, which the writer needs to publish each group commit.
// Example code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trueline_eventlog::{EventId, EventLog, ExpectedVersion, NewEvent, Options, OrgFilter, OrgId};

fn event(n: u64, ty: &str) -> NewEvent {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&0x5EED_F11E_u64.to_le_bytes());
    NewEvent {
        id: EventId(id),
        event_type: ty.to_owned(),
        timestamp_micros: 1_700_000_000_000_000,
        metadata: b"{}".to_vec(),
        payload: br#"{"n":1}"#.to_vec(),
    }
}

/// Appends single events to `org` for `run`; returns each append's latency in microseconds.
fn append_for(log: &EventLog, org: OrgId, first: u64, run: Duration) -> Vec<u64> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut n = first;
    while start.elapsed() < run {
        let t = Instant::now();
        log.append(org, "writer", ExpectedVersion::Any, vec![event(n, "w")])
            .unwrap();
        latencies.push(t.elapsed().as_micros() as u64);
        n += 1;
    }
    latencies
}

fn report(label: &str, mut latencies: Vec<u64>, run: Duration) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: {} appends/s, latency µs p50 {} p99 {} p99.9 {} max {}",
        (latencies.len() as f64 / run.as_secs_f64()).round(),
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().copied().unwrap_or(0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let run = Duration::from_secs(secs);
    let tmp = tempfile::Builder::new()
        .prefix("eventlog-filtered-reads")
        .tempdir()
        .unwrap();
    let (log, _) = EventLog::open(tmp.path(), Options::default()).unwrap();
    let log = Arc::new(log);
    let (big, writer_org) = (OrgId([1; 16]), OrgId([2; 16]));
    let loaded = Instant::now();
    log.append(big, "s", ExpectedVersion::Any, vec![event(0, "rare")])
        .unwrap();
    let mut n = 1;
    while n <= events {
        let batch: Vec<NewEvent> = (n..(n + 1000).min(events + 1))
            .map(|i| event(i, "common"))
            .collect();
        n += batch.len() as u64;
        log.append(big, "s", ExpectedVersion::Any, batch).unwrap();
    }
    println!(
        "loaded {events} events in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );

    report(
        "without reads",
        append_for(&log, writer_org, 10_000_000_000, run),
        run,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (log, stop, reads) = (log.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let filter = OrgFilter {
                event_type: Some("rare"),
                stream: None,
            };
            while !stop.load(Ordering::Relaxed) {
                let page = log.read_org(big, 0, 100, filter).unwrap();
                assert_eq!(page.len(), 1);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let with_reads = append_for(&log, writer_org, 20_000_000_000, run);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    report("with filtered reads", with_reads, run);
    println!(
        "filtered reads: {:.1}/s, each walking {} positions",
        reads.load(Ordering::Relaxed) as f64 / run.as_secs_f64(),
        events + 1
    );
}
