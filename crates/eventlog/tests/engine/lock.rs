use trueline_eventlog::{EventLog, OpenError, Options};

use crate::support::{open, tempdir};

#[test]
fn second_open_of_the_same_directory_fails_naming_the_directory() {
    let dir = tempdir();
    let (_log, _) = open(dir.path());
    let err = EventLog::open(dir.path(), Options::default()).unwrap_err();
    match &err {
        OpenError::Locked { dir: d } => assert_eq!(d, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn directory_can_be_reopened_after_the_log_is_closed() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    log.close().unwrap();
    let (_log, report) = open(dir.path());
    assert!(report.is_clean());
}

const LOCK_CHILD_ENV: &str = "TRUELINE_EVENTLOG_LOCK_CHILD_DIR";

/// Child mode: tries to open the directory and reports the outcome on stdout.
#[test]
#[ignore = "child process of open_from_another_process_fails_while_the_log_is_open"]
fn lock_child_tries_to_open() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else {
        return;
    };
    match EventLog::open(&dir, Options::default()) {
        Err(OpenError::Locked { .. }) => println!("RESULT LOCKED"),
        Err(e) => println!("RESULT ERROR {e}"),
        Ok(_) => println!("RESULT OPENED"),
    }
}

#[test]
fn open_from_another_process_fails_while_the_log_is_open() {
    let dir = tempdir();
    let (log, _) = open(dir.path());
    let run = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "lock::lock_child_tries_to_open",
                "--nocapture",
            ])
            .env(LOCK_CHILD_ENV, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
            .unwrap()
    };
    assert_eq!(run(), "LOCKED");
    drop(log);
    assert_eq!(run(), "OPENED");
}

#[test]
fn dropping_the_last_handle_inside_a_callback_neither_deadlocks_nor_loses_the_lock() {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    use trueline_eventlog::ExpectedVersion;

    use crate::support::{event, org};

    let dir = tempdir();
    let log = Arc::new(open(dir.path()).0);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let held = log.clone();
    log.append_with(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}")],
        Box::new(move |r| {
            r.unwrap();
            go_rx.recv().unwrap(); // until the test has dropped its own handle
            drop(held); // the last handle, dropped on the writer thread
            done_tx.send(()).unwrap();
        }),
    );
    drop(log);
    go_tx.send(()).unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("drop inside a callback deadlocked");
    // The lock is released once the writer finished; then the log opens with the event.
    let (log, _) = open_when_unlocked(dir.path(), Options::default());
    assert_eq!(log.last_global_position(), 1);
}

#[test]
fn dropping_the_last_handle_inside_any_of_many_callbacks_neither_deadlocks_nor_loses_one() {
    // Many appends queued at once form large groups, whose acknowledgements run on the
    // acknowledging thread: each callback drops a handle, the last one the last handle.
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;
    use trueline_eventlog::ExpectedVersion;

    use crate::support::{event, org};

    let dir = tempdir();
    let log = Arc::new(open(dir.path()).0);
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    for n in 1..=64u64 {
        let held = Mutex::new(Some(log.clone()));
        let done_tx = done_tx.clone();
        log.append_with(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(n, "t", b"{}")],
            Box::new(move |r| {
                r.unwrap();
                drop(held.lock().unwrap().take());
                done_tx.send(n).unwrap();
            }),
        );
    }
    drop(log);
    let mut acked: Vec<u64> = (0..64)
        .map(|_| {
            done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a callback never ran or deadlocked")
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=64).collect::<Vec<_>>());
    let (log, _) = open_when_unlocked(dir.path(), Options::default());
    assert_eq!(log.last_global_position(), 64);
}

#[test]
fn segments_sealed_after_the_last_handle_was_dropped_in_a_callback_keep_their_checkpoints() {
    // The last handle is dropped inside a callback while appends that roll segments are
    // still queued behind it: the writer seals those segments after the drop, and their
    // checkpoints must still be written (else the next open scans them).
    use std::sync::{Arc, mpsc};
    use trueline_eventlog::ExpectedVersion;

    use crate::support::{event, open_with, org};

    let dir = tempdir();
    let options = Options {
        segment_size_bytes: 8 * 1024,
        ..Options::default()
    };
    let log = Arc::new(open_with(dir.path(), options.clone()).0);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let held = log.clone();
    log.append_with(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}")],
        Box::new(move |r| {
            r.unwrap();
            go_rx.recv().unwrap();
            drop(held);
        }),
    );
    // Queued behind the blocked callback: about 60 KiB, several segments' worth.
    for n in 2..=200u64 {
        log.append_with(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(n, "t", &[b'x'; 300])],
            Box::new(|r| {
                r.unwrap();
            }),
        );
    }
    drop(log);
    go_tx.send(()).unwrap();
    let (log, report) = open_when_unlocked(dir.path(), options);
    assert_eq!(log.last_global_position(), 200);
    assert!(report.segments > 2, "{report:?}");
    assert_eq!(
        (report.records_scanned, report.records_from_checkpoint),
        (0, 200),
        "every segment from its checkpoint: {report:?}"
    );
}

/// Opens `dir` as soon as the background threads of a dropped log let go of its lock.
fn open_when_unlocked(
    dir: &std::path::Path,
    options: Options,
) -> (EventLog, trueline_eventlog::RecoveryReport) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match EventLog::open(dir, options.clone()) {
            Ok(opened) => return opened,
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
