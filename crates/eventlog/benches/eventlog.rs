//! Criterion benchmarks of the engine: durable appends (1 and 64 writer threads, 200-byte
//! payloads, `Durability::Always`), append latency percentiles, and get-by-id latency.
//!
//! Run: `cargo bench -p trueline-eventlog --bench eventlog`. The log lives in a temporary
//! directory on the same disk as `$TMPDIR`.
// Benchmark code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use trueline_eventlog::{EventId, EventLog, ExpectedVersion, NewEvent, Options, OrgId};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_id() -> EventId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    EventId(b)
}

/// 200 bytes of JSON payload, built once: formatting it per event cost the appending threads
/// (which share the two cores with the writer) more than the engine's own work per event.
static PAYLOAD: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    format!(
        "{{\"item\":\"widget\",\"delta\":-2,\"pad\":\"{}\"}}",
        "x".repeat(162)
    )
    .into_bytes()
});

fn event() -> NewEvent {
    NewEvent {
        id: new_id(),
        event_type: "inventory.item.adjusted".into(),
        timestamp_micros: 1_700_000_000_000_000,
        metadata: br#"{"request_id":"0192f0c4-9a43-7cc1-b5e1-2f8e0d8f3a11"}"#.to_vec(),
        payload: PAYLOAD.clone(),
    }
}

fn org(t: u64) -> OrgId {
    OrgId([(t % 8) as u8; 16])
}

/// Runs `total` appends of `batch` events split over `writers` threads; returns elapsed time
/// and (when `latencies` is set) every append's latency.
fn run(
    log: &Arc<EventLog>,
    writers: u64,
    total: u64,
    batch: usize,
    latencies: bool,
) -> (Duration, Vec<Duration>) {
    let per = total.div_ceil(writers);
    let start = Instant::now();
    let lats = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    let mut lats = Vec::new();
                    let stream = format!("stream-{}", t % 16);
                    for _ in 0..per {
                        let evs = (0..batch).map(|_| event()).collect();
                        let t0 = Instant::now();
                        black_box(
                            log.append(org(t), &stream, ExpectedVersion::Any, evs)
                                .unwrap(),
                        );
                        if latencies {
                            lats.push(t0.elapsed());
                        }
                    }
                    lats
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    (start.elapsed(), lats)
}

/// Callback form, as an async server uses it: `window` appends in flight at any time, driven by
/// two client threads (like a small async runtime) instead of one blocked thread per appender.
/// Each completion hands a token back to a client thread, which submits the next append.
fn run_callback(log: &Arc<EventLog>, window: u64, total: u64, batch: usize) -> Duration {
    let submitted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            senders.push(tx);
            receivers.push(rx);
        }
        for (c, rx) in receivers.into_iter().enumerate() {
            let log = log.clone();
            let tx = senders[c].clone();
            let submitted = submitted.clone();
            s.spawn(move || {
                let mut in_flight = window / 2;
                let mut tokens = in_flight; // start by filling this client's half of the window
                loop {
                    while tokens > 0 {
                        tokens -= 1;
                        if submitted.fetch_add(batch as u64, Ordering::Relaxed) >= total {
                            in_flight -= 1;
                            continue;
                        }
                        let tx = tx.clone();
                        let evs = (0..batch).map(|_| event()).collect();
                        log.append_with(
                            org(c as u64),
                            &format!("stream-{c}"),
                            ExpectedVersion::Any,
                            evs,
                            Box::new(move |r| {
                                r.unwrap();
                                let _ = tx.send(());
                            }),
                        );
                    }
                    if in_flight == 0 {
                        return;
                    }
                    rx.recv().unwrap();
                    tokens += 1;
                    while rx.try_recv().is_ok() {
                        tokens += 1;
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn open_log() -> (tempfile::TempDir, Arc<EventLog>) {
    let dir = tempfile::Builder::new()
        .prefix("eventlog-bench")
        .tempdir()
        .unwrap();
    let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
    (dir, Arc::new(log))
}

fn bench_appends(c: &mut Criterion) {
    let (_dir, log) = open_log();
    let mut g = c.benchmark_group("append_durable_200B");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    for writers in [1u64, 64] {
        g.bench_function(
            BenchmarkId::new("events_1_per_append", format!("{writers}_writers")),
            |b| {
                b.iter_custom(|iters| {
                    let (elapsed, _) = run(&log, writers, iters, 1, false);
                    let done = iters.div_ceil(writers) * writers;
                    elapsed.mul_f64(iters as f64 / done as f64)
                })
            },
        );
    }
    for window in [64u64, 1024] {
        g.bench_function(
            BenchmarkId::new(
                "events_1_per_append_callback",
                format!("{window}_in_flight"),
            ),
            |b| {
                b.iter_custom(|iters| {
                    run_callback(&log, window, iters.max(window), 1)
                        .mul_f64(iters as f64 / iters.max(window) as f64)
                })
            },
        );
    }
    // The same with 10-event appends (e.g. a relay forwarding outbox rows in small batches).
    g.throughput(Throughput::Elements(10));
    g.bench_function(
        BenchmarkId::new("events_10_per_append", "64_writers"),
        |b| {
            b.iter_custom(|iters| {
                let (elapsed, _) = run(&log, 64, iters, 10, false);
                let done = iters.div_ceil(64) * 64;
                elapsed.mul_f64(iters as f64 / done as f64)
            })
        },
    );
    g.finish();
}

fn bench_get(c: &mut Criterion) {
    let (_dir, log) = open_log();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let evs: Vec<NewEvent> = (0..1000).map(|_| event()).collect();
        ids.extend(evs.iter().map(|e| e.id));
        log.append(org(0), "s", ExpectedVersion::Any, evs).unwrap();
    }
    let mut i = 0usize;
    c.bench_function("get_by_id_100k_events", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(log.get(ids[i]).unwrap().unwrap())
        })
    });
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Latency percentiles are not a criterion statistic: measured and printed here.
fn report_latency() {
    for (writers, total) in [(1u64, 3_000u64), (64, 64_000)] {
        let (_dir, log) = open_log();
        run(&log, writers, total / 10, 1, false); // warm up
        let (elapsed, mut lats) = run(&log, writers, total, 1, true);
        lats.sort_unstable();
        println!(
            "append latency, {writers} writers, 200 B events, Always: p50 {:?} p99 {:?} max {:?} \
             ({:.0} appends/s over {} appends)",
            pct(&lats, 0.50),
            pct(&lats, 0.99),
            lats[lats.len() - 1],
            lats.len() as f64 / elapsed.as_secs_f64(),
            lats.len()
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_appends(&mut c);
    bench_get(&mut c);
    c.final_summary();
    // Only when benchmarking for real (`cargo bench` passes --bench), not in `cargo test`.
    if std::env::args().any(|a| a == "--bench") {
        report_latency();
    }
}
