//! Crash test: a child process (this test binary, in child mode) appends as fast as it can and
//! is killed with SIGKILL at random moments; every acknowledged event must survive.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use trueline_eventlog::{EventLog, ExpectedVersion, NewEvent, Options};

use crate::support::{Rng, assert_gapless, id, open, org, segment_files, tempdir};

const CHILD_DIR_ENV: &str = "TRUELINE_EVENTLOG_CRASH_CHILD_DIR";
const CHILD_BASE_ENV: &str = "TRUELINE_EVENTLOG_CRASH_CHILD_BASE";

fn payload(n: u64) -> Vec<u8> {
    format!(
        "{{\"n\":{n},\"pad\":\"{}\",\"u\":\"\u{2028}🎉\"}}",
        "x".repeat((n % 257) as usize)
    )
    .into_bytes()
}

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        id: id(n),
        event_type: "crash.test".into(),
        timestamp_micros: n as i64,
        metadata: Vec::new(),
        payload: payload(n),
    }
}

/// Child mode: does nothing unless started by the crash test with its environment.
#[test]
#[ignore = "child process of crash_test_acknowledged_events_survive_sigkill"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let base: u64 = std::env::var(CHILD_BASE_ENV).unwrap().parse().unwrap();
    let options = Options {
        segment_size_bytes: 256 * 1024,
        ..Options::default()
    };
    let (log, _) = EventLog::open(&dir, options).unwrap();
    let log = Arc::new(log);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    // Four threads so appends are grouped; each event id is base + thread + 4 * k.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = log.clone();
            let out = out.clone();
            s.spawn(move || {
                let mut k = 0u64;
                loop {
                    let n = base + t + 4 * k;
                    let batch: Vec<_> = if k.is_multiple_of(3) {
                        vec![new_event(n)]
                    } else {
                        // Two-event batches exercise all-or-nothing on a torn tail.
                        k += 1;
                        vec![new_event(n), new_event(base + t + 4 * k)]
                    };
                    k += 1;
                    let recs = log
                        .append(org(1), &format!("s{t}"), ExpectedVersion::Any, batch)
                        .unwrap();
                    let mut o = out.lock().unwrap();
                    for r in recs {
                        let n = u64::from_be_bytes(r.id.0[..8].try_into().unwrap());
                        writeln!(o, "ACK {n} {}", r.global_position).unwrap();
                    }
                    o.flush().unwrap();
                }
            });
        }
    });
}

fn run_child_round(dir: &Path, base: u64, kill_after: Duration) -> Vec<(u64, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash::crash_child_appends_until_killed",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_BASE_ENV, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() == Some("ACK") {
                let n = parts.next().unwrap().parse().unwrap();
                let pos = parts.next().unwrap().parse().unwrap();
                acks.push((n, pos));
            }
        }
        acks
    });
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn crash_test_acknowledged_events_survive_sigkill() {
    let rounds: u64 = std::env::var("TRUELINE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempdir();
    let mut rng = Rng::new(42);
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut torn_rounds = 0;
    for round in 0..rounds {
        let base = 1_000_000 * (round + 1);
        let acks = run_child_round(dir.path(), base, Duration::from_millis(20 + rng.below(120)));
        acked.extend(acks);
        // A SIGKILL rarely tears a write (the page cache survives), so half the rounds also
        // append a partial record, as a crash mid-write would leave.
        if round % 2 == 1 {
            let last = segment_files(dir.path()).pop().unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&last)
                .unwrap();
            let mut junk = Vec::new();
            let len = 1 + rng.below(400) as usize;
            // Start like a plausible record (a length) and stop short.
            junk.extend_from_slice(&(300u32).to_le_bytes());
            junk.extend((0..len).map(|_| rng.next() as u8));
            f.write_all(&junk).unwrap();
        }
        let (log, report) = open(dir.path());
        if report.truncated.is_some() {
            torn_rounds += 1;
        }
        for (n, pos) in &acked {
            let ev = log
                .get(id(*n))
                .unwrap()
                .unwrap_or_else(|| panic!("acked event {n} lost (round {round})"));
            assert_eq!(ev.global_position, *pos);
            assert_eq!(ev.payload, payload(*n));
        }
        assert_gapless(&log);
        drop(log);
    }
    eprintln!(
        "crash test: {rounds} rounds, {} acknowledged events, {torn_rounds} torn tails",
        acked.len()
    );
    assert!(
        acked.len() as u64 > rounds,
        "children acknowledged too few events"
    );
    assert!(
        torn_rounds >= rounds / 2,
        "torn tails were not truncated ({torn_rounds})"
    );
}
