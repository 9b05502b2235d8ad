use std::sync::Arc;

use trueline_eventlog::{
    AppendError, Durability, EventLog, ExpectedVersion, Fault, FaultSwitch, Options,
};

use crate::support::{
    assert_gapless, event, id, open, open_with, org, tempdir, wait_for_prepared_segment,
};

fn faulty(dir: &std::path::Path, durability: Durability) -> (EventLog, Arc<FaultSwitch>) {
    let switch = Arc::new(FaultSwitch::default());
    let options = Options {
        durability,
        fault_hook: Some(switch.clone()),
        ..Options::default()
    };
    (open_with(dir, options).0, switch)
}

fn is_full(e: &AppendError) -> bool {
    matches!(e, AppendError::StorageFull { .. })
}

fn is_io(e: &AppendError) -> bool {
    matches!(e, AppendError::Io { .. })
}

#[test]
fn write_and_fsync_faults_fail_the_append_leave_no_trace_and_appends_resume() {
    type KindCheck = fn(&AppendError) -> bool;
    let cases: [(Fault, KindCheck); 5] = [
        (Fault::WriteNoSpace { after_bytes: 0 }, is_full),
        (Fault::WriteNoSpace { after_bytes: 57 }, is_full),
        (Fault::WriteIo { after_bytes: 200 }, is_io),
        (Fault::SyncNoSpace, is_full),
        (Fault::SyncIo, is_io),
    ];
    for (fault, kind_ok) in cases {
        let dir = tempdir();
        let (log, switch) = faulty(dir.path(), Durability::Always);
        let o = org(1);
        log.append(o, "s", ExpectedVersion::Any, vec![event(1, "t", b"{}")])
            .unwrap();
        switch.set(Some(fault));
        let batch = vec![event(2, "t", b"{\"big\":1}"), event(3, "t", b"{}")];
        let err = log
            .append(o, "s", ExpectedVersion::Any, batch.clone())
            .unwrap_err();
        assert!(kind_ok(&err), "{fault:?} gave {err:?}");
        assert!(
            log.get(id(2)).unwrap().is_none(),
            "{fault:?}: failed event visible"
        );
        assert_eq!(log.stream_version(o, "s"), 1);
        // Still failing while the fault lasts, and nothing sticks.
        assert!(
            log.append(o, "s", ExpectedVersion::Any, batch.clone())
                .is_err()
        );
        switch.set(None);
        let r = log
            .append(o, "s", ExpectedVersion::Exact(1), batch)
            .unwrap();
        assert_eq!(
            (r[0].global_position, r[1].global_position),
            (2, 3),
            "{fault:?}"
        );
        assert!(!r[0].duplicate);
        assert!(log.storage_stats().writer_failure.is_none());
        drop(log);
        let (log, report) = open(dir.path());
        assert!(report.is_clean(), "{fault:?}: {report:?}");
        assert_eq!(log.last_global_position(), 3);
        assert_eq!(log.get(id(2)).unwrap().unwrap().payload, b"{\"big\":1}");
        assert_gapless(&log);
    }
}

#[test]
fn fsync_failure_in_interval_mode_stops_the_writer_until_reopen() {
    let dir = tempdir();
    let (log, switch) = faulty(dir.path(), Durability::IntervalMs(0));
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}")],
    )
    .unwrap();
    switch.set(Some(Fault::SyncIo));
    // Acknowledged after the write; the periodic sync that follows fails.
    let _ = log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(2, "t", b"{}")],
    );
    let err = log
        .append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(3, "t", b"{}")],
        )
        .unwrap_err();
    assert!(matches!(err, AppendError::WriterFailed { .. }), "{err:?}");
    assert!(log.storage_stats().writer_failure.is_some());
    switch.set(None);
    assert!(matches!(
        log.append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(4, "t", b"{}")]
        ),
        Err(AppendError::WriterFailed { .. })
    ));
    drop(log);
    let (log, _) = open(dir.path());
    assert!(log.last_global_position() >= 1);
    assert_gapless(&log);
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(5, "t", b"{}")],
    )
    .unwrap();
}

#[test]
fn write_fault_in_never_mode_fails_the_append_and_appends_resume() {
    let dir = tempdir();
    let (log, switch) = faulty(dir.path(), Durability::Never);
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(1, "t", b"{}")],
    )
    .unwrap();
    switch.set(Some(Fault::WriteNoSpace { after_bytes: 10 }));
    let err = log
        .append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(2, "t", b"{}")],
        )
        .unwrap_err();
    assert!(is_full(&err));
    switch.set(None);
    let r = log
        .append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(2, "t", b"{}")],
        )
        .unwrap();
    assert_eq!(r[0].global_position, 2);
    drop(log);
    let (log, report) = open(dir.path());
    assert!(report.is_clean());
    assert_gapless(&log);
    assert_eq!(log.last_global_position(), 2);
}

/// A log with 64 KiB segments and `hook`, filled past half of its first segment, once the
/// next segment is prepared (zero-filled) in the background. Returns the events written.
fn with_a_prepared_segment(
    dir: &std::path::Path,
    hook: Arc<dyn trueline_eventlog::FaultHook>,
) -> (EventLog, u64) {
    let options = Options {
        segment_size_bytes: 64 * 1024,
        fault_hook: Some(hook),
        ..Options::default()
    };
    let (log, _) = open_with(dir, options);
    let mut n = 0;
    while log.storage_stats().bytes < 40 * 1024 {
        n += 1;
        log.append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(n, "t", &[b'x'; 400])],
        )
        .unwrap();
    }
    wait_for_prepared_segment(dir, 64 * 1024);
    (log, n)
}

#[test]
fn a_full_disk_gives_back_the_segment_prepared_ahead_at_once() {
    let dir = tempdir();
    let switch = Arc::new(FaultSwitch::default());
    let (log, n) = with_a_prepared_segment(dir.path(), switch.clone());
    let o = org(1);
    let prepared = dir.path().join("next-segment.seg.tmp");
    // The disk fills up: the append fails, and the prepared file's space is freed with it.
    switch.set(Some(Fault::WriteNoSpace { after_bytes: 0 }));
    let err = log
        .append(o, "s", ExpectedVersion::Any, vec![event(n + 1, "t", b"{}")])
        .unwrap_err();
    assert!(is_full(&err), "{err:?}");
    assert!(
        !prepared.exists(),
        "the prepared segment still holds its space"
    );
    switch.set(None);
    // Appends resume, and the log rolls on with segments it creates itself.
    for k in n + 1..n + 200 {
        log.append(
            o,
            "s",
            ExpectedVersion::Any,
            vec![event(k, "t", &[b'y'; 400])],
        )
        .unwrap();
    }
    assert!(log.storage_stats().segments >= 2);
    assert_gapless(&log);
}

/// Fails the next write with ENOSPC, once: a disk whose last free space the prepared segment
/// had taken.
#[derive(Debug, Default)]
struct NoSpaceOnce(std::sync::atomic::AtomicBool);

impl trueline_eventlog::FaultHook for NoSpaceOnce {
    fn on_write(&self, _len: usize) -> Option<(usize, std::io::Error)> {
        self.0
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            .then(|| (0, std::io::Error::from_raw_os_error(28)))
    }
    fn on_sync(&self) -> Option<std::io::Error> {
        None
    }
}

#[test]
fn an_append_that_only_lacked_the_prepared_segments_space_succeeds() {
    let dir = tempdir();
    let hook = Arc::new(NoSpaceOnce::default());
    let (log, n) = with_a_prepared_segment(dir.path(), hook.clone());
    let o = org(1);
    let prepared = dir.path().join("next-segment.seg.tmp");
    hook.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = log
        .append(o, "s", ExpectedVersion::Any, vec![event(n + 1, "t", b"{}")])
        .expect("written once the prepared segment's space was given back");
    assert_eq!(r[0].global_position, n + 1);
    assert!(!prepared.exists());
    drop(log);
    let (log, report) = open(dir.path());
    assert!(report.truncated.is_none(), "{report:?}");
    assert_eq!(log.last_global_position(), n + 1);
    assert_gapless(&log);
}

#[test]
fn a_roll_failing_after_the_new_file_exists_stops_the_writer_and_the_log_reopens_whole() {
    let dir = tempdir();
    let switch = Arc::new(FaultSwitch::default());
    let options = Options {
        segment_size_bytes: 8 * 1024,
        fault_hook: Some(switch.clone()),
        ..Options::default()
    };
    let (log, _) = open_with(dir.path(), options);
    let o = org(1);
    let mut n = 0;
    // Up to the last append that fits the first segment.
    while log.storage_stats().segments == 1 {
        n += 1;
        switch.set(Some(Fault::OpenNewSegment));
        let r = log.append(
            o,
            "s",
            ExpectedVersion::Any,
            vec![event(n, "t", &[b'p'; 150])],
        );
        if r.is_err() {
            break;
        }
    }
    let failed_at = n;
    switch.set(None);
    // The writer stopped: nothing more goes into the old segment, whose last position the
    // new file's header follows.
    for _ in 0..3 {
        n += 1;
        let r = log.append(o, "s", ExpectedVersion::Any, vec![event(n, "t", b"{}")]);
        assert!(
            matches!(r, Err(AppendError::WriterFailed { .. })),
            "appended on after a failed roll: {r:?}"
        );
    }
    drop(log);
    let (log, report) = open(dir.path());
    assert!(report.truncated.is_none(), "{report:?}");
    assert_eq!(log.last_global_position(), failed_at - 1);
    assert_gapless(&log);
    let next = log
        .append(o, "s", ExpectedVersion::Any, vec![event(n + 1, "t", b"{}")])
        .unwrap();
    assert_eq!(next[0].global_position, failed_at);
}

/// Sends one append of `chain` and waits for its outcome.
fn chained(
    log: &EventLog,
    chain: &trueline_eventlog::AppendChain,
    stream: &str,
    expected: ExpectedVersion,
    n: u64,
) -> std::sync::mpsc::Receiver<Result<Vec<trueline_eventlog::Recorded>, AppendError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    log.append_chained(
        chain,
        org(1),
        stream,
        expected,
        vec![event(n, "t", b"{}")],
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx
}

/// A full disk fails one append of a chain and frees up before the next is sent: the next
/// must not be written without the earlier one (a relay would then retry the earlier one and
/// put the two in the log out of order).
#[test]
fn a_chain_writes_nothing_after_an_append_that_failed() {
    let dir = tempdir();
    let (log, switch) = faulty(dir.path(), Durability::Always);
    let chain = trueline_eventlog::AppendChain::new();
    assert!(
        chained(&log, &chain, "a", ExpectedVersion::Any, 1)
            .recv()
            .unwrap()
            .is_ok()
    );
    switch.set(Some(Fault::WriteNoSpace { after_bytes: 0 }));
    let failed = chained(&log, &chain, "b", ExpectedVersion::Any, 2)
        .recv()
        .unwrap();
    assert!(
        matches!(failed, Err(AppendError::StorageFull { .. })),
        "{failed:?}"
    );
    switch.set(None);
    let later = chained(&log, &chain, "c", ExpectedVersion::Any, 3)
        .recv()
        .unwrap();
    assert!(
        matches!(later, Err(AppendError::EarlierInChainFailed)),
        "{later:?}"
    );
    assert!(log.get(id(3)).unwrap().is_none());
    assert_eq!(log.last_global_position(), 1);
    // Another chain (or a plain append) is not held back.
    let fresh = trueline_eventlog::AppendChain::new();
    assert!(
        chained(&log, &fresh, "c", ExpectedVersion::Any, 3)
            .recv()
            .unwrap()
            .is_ok()
    );
    assert_gapless(&log);
}

/// Submitted together (one group commit), a chain's append refused when prepared stops the
/// ones after it in the same group; without a chain they are written.
#[test]
fn a_refused_append_stops_the_rest_of_its_chain_in_the_same_group() {
    let dir = tempdir();
    let (log, _switch) = faulty(dir.path(), Durability::Always);
    let chain = trueline_eventlog::AppendChain::new();
    let first = chained(&log, &chain, "a", ExpectedVersion::Any, 1);
    let refused = chained(&log, &chain, "b", ExpectedVersion::Exact(7), 2);
    let after = chained(&log, &chain, "c", ExpectedVersion::Any, 3);
    assert!(first.recv().unwrap().is_ok());
    assert!(matches!(
        refused.recv().unwrap(),
        Err(AppendError::WrongExpectedVersion { current: 0 })
    ));
    assert!(matches!(
        after.recv().unwrap(),
        Err(AppendError::EarlierInChainFailed)
    ));
    assert_eq!(log.last_global_position(), 1);
    // The same appends without a chain: each stands alone.
    let (tx, rx) = std::sync::mpsc::channel();
    for (stream, expected, n) in [
        ("b", ExpectedVersion::Exact(7), 4u64),
        ("c", ExpectedVersion::Any, 5),
    ] {
        let tx = tx.clone();
        log.append_with(
            org(1),
            stream,
            expected,
            vec![event(n, "t", b"{}")],
            Box::new(move |r| {
                let _ = tx.send((n, r.is_ok()));
            }),
        );
    }
    let mut outcomes: Vec<(u64, bool)> = (0..2).map(|_| rx.recv().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, vec![(4, false), (5, true)]);
}

/// A failure counts for the appends after it only: one refused up front (before it reaches
/// the writer) does not fail an earlier append of its chain still queued there.
#[test]
fn a_failure_in_a_chain_holds_back_only_the_appends_after_it() {
    let dir = tempdir();
    let (log, _switch) = faulty(dir.path(), Durability::Always);
    let chain = trueline_eventlog::AppendChain::new();
    let first = chained(&log, &chain, "a", ExpectedVersion::Any, 1);
    let refused = chained(&log, &chain, "", ExpectedVersion::Any, 2);
    let after = chained(&log, &chain, "a", ExpectedVersion::Any, 3);
    assert!(matches!(
        refused.recv().unwrap(),
        Err(AppendError::EmptyStreamName)
    ));
    assert!(first.recv().unwrap().is_ok());
    assert!(matches!(
        after.recv().unwrap(),
        Err(AppendError::EarlierInChainFailed)
    ));
    assert_eq!(log.last_global_position(), 1);
}

/// Counts `fdatasync`s and fails the next one when asked.
#[derive(Debug, Default)]
struct SyncCounter {
    fail_next: std::sync::atomic::AtomicBool,
    syncs: std::sync::atomic::AtomicUsize,
}

impl trueline_eventlog::FaultHook for SyncCounter {
    fn on_write(&self, _len: usize) -> Option<(usize, std::io::Error)> {
        None
    }
    fn on_sync(&self) -> Option<std::io::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        self.syncs.fetch_add(1, SeqCst);
        self.fail_next
            .swap(false, SeqCst)
            .then(|| std::io::Error::from_raw_os_error(5))
    }
}

/// The `fdatasync`s of an append that rolls the segment, after a small append whose sync
/// failed (`fail`) or succeeded.
fn syncs_of_a_roll_after_a_small_append(fail: bool) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempdir();
    let hook = Arc::new(SyncCounter::default());
    let options = Options {
        segment_size_bytes: 8 * 1024,
        fault_hook: Some(hook.clone()),
        ..Options::default()
    };
    let (log, _) = open_with(dir.path(), options);
    let o = org(1);
    for n in 1..=24 {
        log.append(
            o,
            "s",
            ExpectedVersion::Any,
            vec![event(n, "t", &[b'p'; 150])],
        )
        .unwrap();
    }
    assert_eq!(log.storage_stats().segments, 1);
    hook.fail_next.store(fail, SeqCst);
    let small = log.append(o, "s", ExpectedVersion::Any, vec![event(100, "t", b"{}")]);
    assert_eq!(small.is_err(), fail);
    // A thread prepares the next segment ahead; whether it is ready at the roll decides
    // whether the writer extends the new segment itself (one more sync). Both runs wait for
    // it, so they roll alike (under load the count differed by that sync alone).
    let prepared = dir.path().join("next-segment.seg.tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&prepared).map_or(true, |m| m.len() < 8 * 1024)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = hook.syncs.load(SeqCst);
    log.append(
        o,
        "s",
        ExpectedVersion::Any,
        vec![event(101, "t", &[b'b'; 5000])],
    )
    .unwrap();
    assert_eq!(log.storage_stats().segments, 2, "the big append rolled");
    hook.syncs.load(SeqCst) - before
}

/// A batch whose `fdatasync` failed is cut off the segment; a roll right after must sync
/// that cut before sealing the segment (it did not: nothing looked unsynced, and a crash
/// could bring the failed batch back into a sealed segment, which the next open refuses).
#[test]
fn a_roll_right_after_a_failed_batch_syncs_the_cut_first() {
    assert_eq!(
        syncs_of_a_roll_after_a_small_append(true),
        syncs_of_a_roll_after_a_small_append(false)
    );
}
