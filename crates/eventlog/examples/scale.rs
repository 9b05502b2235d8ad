//! Scale check: writes N events (default 10 million), then measures clean restart time
//! (checkpoint load), full index rebuild rate (checkpoints deleted) and index RAM per event.
//!
//! `cargo run --release -p trueline-eventlog --example scale -- [DIR] [EVENTS] [RUNS]`
//! (default DIR `./eventlog-scale`, removed and recreated; about 3.3 GB for 10 M events).
//! Restart and rebuild are measured in fresh child processes (this binary with `open DIR`),
//! so RSS numbers are not polluted by the writer's allocations. `scale open DIR` runs one
//! restart; with `SCALE_OPEN_ONLY` set it exits right after the open (to profile just that).
// Example code: a panic is the clearest failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use trueline_eventlog::{EventId, EventLog, ExpectedVersion, NewEvent, Options, OrgId};

const ORGS: u64 = 1_000;
const STREAMS_PER_ORG: u64 = 100;
const BATCH: u64 = 100;
const WRITERS: u64 = 4;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A cheap deterministic PRNG (splitmix64) so runs are comparable.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn write(dir: &Path, events: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let (log, _) = EventLog::open(dir, Options::default()).unwrap();
    let log = Arc::new(log);
    let next = Arc::new(AtomicU64::new(0));
    let payload = format!(
        "{{\"item\":\"widget\",\"delta\":-2,\"pad\":\"{}\"}}",
        "x".repeat(162)
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            let (log, next, payload) = (log.clone(), next.clone(), payload.clone());
            s.spawn(move || {
                loop {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= events {
                        break;
                    }
                    let r = mix(first);
                    let org = OrgId(((r % ORGS) as u128).to_le_bytes());
                    let stream = format!("item-{}", (r >> 20) % STREAMS_PER_ORG);
                    let evs = (first..(first + BATCH).min(events))
                        .map(|n| {
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&mix(n).to_le_bytes());
                            id[8..].copy_from_slice(&mix(n ^ 0xABCD).to_le_bytes());
                            NewEvent {
                                id: EventId(id),
                                event_type: format!("inventory.item.{}", n % 8),
                                timestamp_micros: 1_700_000_000_000_000 + n as i64,
                                metadata: Vec::new(),
                                payload: payload.clone().into_bytes(),
                            }
                        })
                        .collect();
                    log.append(org, &stream, ExpectedVersion::Any, evs).unwrap();
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let stats = log.storage_stats();
    println!(
        "write: {events} events ({} segments, {:.2} GB) in {secs:.1} s = {:.0} events/s \
         (Always, {WRITERS} threads x {BATCH}-event appends)",
        stats.segments,
        stats.bytes as f64 / 1e9,
        events as f64 / secs
    );
    println!(
        "index estimate after writing: {} bytes = {:.1} bytes/event",
        stats.index_memory_bytes,
        stats.index_memory_bytes as f64 / stats.events as f64
    );
    let started = Instant::now();
    Arc::into_inner(log).unwrap().close().unwrap();
    println!(
        "close (checkpoint of the active segment): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// Child mode: open, report, close. One line of `key=value` pairs.
fn open_once(dir: &Path) {
    let rss_before = rss_bytes();
    let started = Instant::now();
    let (log, report) = EventLog::open(dir, Options::default()).unwrap();
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    if std::env::var("SCALE_OPEN_ONLY").is_ok() {
        println!("open_ms={open_ms:.1}");
        std::process::exit(0);
    }
    // Memory is measured in steady state: after the background id merge.
    while log.storage_stats().index_unmerged_segments > 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let rss_after = rss_bytes();
    let stats = log.storage_stats();
    println!(
        "open_ms={open_ms:.1} events={} from_checkpoint={} scanned={} index_bytes={} rss_delta={}",
        stats.events,
        report.records_from_checkpoint,
        report.records_scanned,
        stats.index_memory_bytes,
        rss_after.saturating_sub(rss_before)
    );
    drop(log);
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn child_open(dir: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("open")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn remove_checkpoints(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("open") {
        open_once(Path::new(&args[2]));
        return;
    }
    let dir = PathBuf::from(args.get(1).map_or("eventlog-scale", String::as_str));
    let events: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    if std::env::var("SCALE_SKIP_WRITE").is_err() {
        write(&dir, events);
    }
    let mut restart = Vec::new();
    let mut rss = Vec::new();
    let mut index_bytes = 0.0;
    let mut n = 0.0;
    for _ in 0..runs {
        let line = child_open(&dir);
        println!("restart: {line}");
        restart.push(field(&line, "open_ms"));
        rss.push(field(&line, "rss_delta"));
        index_bytes = field(&line, "index_bytes");
        n = field(&line, "events");
    }
    let mut rebuild = Vec::new();
    let mut rate = Vec::new();
    for _ in 0..runs {
        remove_checkpoints(&dir);
        let line = child_open(&dir);
        println!("rebuild: {line}");
        let ms = field(&line, "open_ms");
        rebuild.push(ms);
        rate.push(field(&line, "scanned") / (ms / 1e3));
    }
    println!("---");
    println!(
        "clean restart (checkpoints), median of {runs}: {:.0} ms",
        median(restart)
    );
    println!(
        "full rebuild (no checkpoints), median of {runs}: {:.0} ms = {:.2} M events/s",
        median(rebuild),
        median(rate) / 1e6
    );
    println!(
        "index memory: estimate {:.1} bytes/event; RSS delta of open {:.1} bytes/event (median)",
        index_bytes / n,
        median(rss) / n
    );
}
