use std::time::Duration;

use trueline_eventlog::{Direction, ExpectedVersion, NewEvent, Options, OrgFilter, Retention};

use crate::support::{
    assert_gapless, checkpoint_files, event, id, open_with, org, segment_files, tempdir,
    wait_for_prepared_segment,
};

fn small_segments() -> Options {
    Options {
        segment_size_bytes: 8 * 1024,
        ..Options::default()
    }
}

fn fill(log: &trueline_eventlog::EventLog, from: u64, to: u64) {
    for n in from..=to {
        let o = org(1 + (n % 3) as u8);
        log.append(
            o,
            &format!("s{}", n % 5),
            ExpectedVersion::Any,
            vec![event(n, "t", &[b'p'; 150])],
        )
        .unwrap();
    }
}

#[test]
fn clean_close_then_reopen_loads_checkpoints_without_scanning() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 300);
    let segments = log.storage_stats().segments;
    assert!(segments > 3);
    log.close().unwrap();
    assert_eq!(checkpoint_files(dir.path()).len(), segments);
    let (log, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.segments, segments);
    assert_eq!(report.segments_from_checkpoint, segments);
    assert_eq!(report.records_scanned, 0);
    assert_eq!(report.records_from_checkpoint, 300);
    assert!(report.checkpoints_rejected.is_empty());
    assert_gapless(&log);
    for n in 1..=300 {
        assert_eq!(log.get(id(n)).unwrap().unwrap().global_position, n);
    }
    // Once the background indexer merged the sealed segments' ids, lookups still find all.
    while log.storage_stats().index_unmerged_segments > 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for n in 1..=300 {
        assert_eq!(log.get(id(n)).unwrap().unwrap().global_position, n);
    }
    assert!(log.get(id(301)).unwrap().is_none());
    // Appends continue after a checkpoint load, and versions continue too.
    fill(&log, 301, 310);
    let expected = (1..=310u64).filter(|n| n % 3 == 1 && n % 5 == 0).count() as u64;
    assert_eq!(log.stream_version(org(2), "s0"), expected);
}

#[test]
fn reopen_after_a_crash_scans_only_the_active_segment() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 300);
    drop(log);
    // No clean close of the active segment: remove its checkpoint as a crash would.
    let active = segment_files(dir.path()).pop().unwrap();
    std::fs::remove_file(active.with_extension("idx")).unwrap();
    let (log, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.segments_from_checkpoint, report.segments - 1);
    assert!(report.records_scanned > 0 && report.records_scanned < 100);
    assert_gapless(&log);
}

#[test]
fn damaged_checkpoint_is_ignored_and_the_index_rebuilt() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 200);
    drop(log);
    let cps = checkpoint_files(dir.path());
    let victim = &cps[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, bytes).unwrap();
    // And one truncated checkpoint.
    let other = &cps[0];
    let len = std::fs::metadata(other).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(other)
        .unwrap()
        .set_len(len - 9)
        .unwrap();
    let (log, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.checkpoints_rejected.len(), 2);
    assert!(report.records_scanned > 0);
    assert_gapless(&log);
    for n in 1..=200 {
        assert!(log.get(id(n)).unwrap().is_some());
    }
    drop(log);
    // The rebuilt segments got fresh checkpoints.
    let (_log, report) = open_with(dir.path(), small_segments());
    assert!(report.checkpoints_rejected.is_empty());
    assert_eq!(report.records_scanned, 0);
}

#[test]
fn damaged_stream_registry_is_ignored_and_the_index_rebuilt() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 200);
    drop(log);
    let registry = dir.path().join("streams.idx");
    let mut bytes = std::fs::read(&registry).unwrap();
    bytes[30] ^= 1;
    std::fs::write(&registry, bytes).unwrap();
    let (log, report) = open_with(dir.path(), small_segments());
    assert!(report.checkpoints_rejected.contains(&registry));
    assert_eq!(report.records_scanned, 200);
    assert_gapless(&log);
    let expected = (1..=200u64).filter(|n| n % 3 == 1 && n % 5 == 0).count() as u64;
    assert_eq!(log.stream_version(org(2), "s0"), expected);
    drop(log);
    let (_log, report) = open_with(dir.path(), small_segments());
    assert!(report.checkpoints_rejected.is_empty(), "{report:?}");
    assert_eq!(report.records_scanned, 0, "{report:?}");
}

#[test]
fn missing_checkpoints_rebuild_the_whole_index() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 200);
    drop(log);
    for cp in checkpoint_files(dir.path()) {
        std::fs::remove_file(cp).unwrap();
    }
    let (log, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.records_scanned, 200);
    assert_eq!(report.segments_from_checkpoint, 0);
    assert_gapless(&log);
}

/// Small segments and at most `max_total_bytes` of them kept.
fn trimmed_to(max_total_bytes: u64) -> Options {
    Options {
        retention: Retention {
            max_total_bytes: Some(max_total_bytes),
            max_age: None,
        },
        ..small_segments()
    }
}

/// Org 7's stream "early" gets the log's first event (which retention will drop), then
/// events 1..=400 follow.
fn early_then_filled(log: &trueline_eventlog::EventLog) {
    log.append(
        org(7),
        "early",
        ExpectedVersion::NoStream,
        vec![event(100_000, "t", b"{}")],
    )
    .unwrap();
    fill(log, 1, 400);
}

#[test]
fn retention_by_size_drops_sealed_segments_only() {
    let dir = tempdir();
    let options = trimmed_to(20 * 1024);
    let (log, _) = open_with(dir.path(), options.clone());
    // A stream whose only event retention will drop.
    early_then_filled(&log);
    let stats = log.storage_stats();
    assert!(stats.first_global_position > 1, "nothing dropped");
    assert!(stats.bytes <= 20 * 1024 + 8 * 1024);
    assert_eq!(stats.last_global_position, 401);
    assert_eq!(segment_files(dir.path()).len(), stats.segments);
    let first = stats.first_global_position;
    // Dropped positions read as absent; retained ones as usual.
    assert!(log.get(id(1)).unwrap().is_none());
    assert!(log.get(id(100_000)).unwrap().is_none());
    assert!(log.get_by_position(first - 1).unwrap().is_none());
    // (Event n is at position n + 1: "early" took position 1.)
    assert_eq!(
        log.get(id(first - 1)).unwrap().unwrap().global_position,
        first
    );
    // Versions and org positions keep counting; reads start at the oldest retained event.
    assert_eq!(log.stream_version(org(1), "s0"), 400 / 15);
    let s = log
        .read_stream(org(1), "s0", 1, Direction::Forward, 1000)
        .unwrap();
    assert!(s[0].stream_version > 1);
    let o = log.org_stats(org(1));
    assert!(o.first_org_position > 1);
    let evs = log.read_org(org(1), 0, 1000, OrgFilter::default()).unwrap();
    assert_eq!(evs[0].org_position, o.first_org_position);
    assert_eq!(evs.len() as u64, o.events);
    drop(log);
    // Reopen a log that no longer starts at position 1 and keep appending.
    let (log, report) = open_with(dir.path(), options);
    assert!(report.is_clean());
    // Versions and org positions of fully dropped streams/orgs survive the reopen.
    assert_eq!(log.stream_version(org(7), "early"), 1);
    assert_eq!(log.org_stats(org(7)).last_org_position, 1);
    let again = log.append(
        org(7),
        "early",
        ExpectedVersion::NoStream,
        vec![event(100_001, "t", b"{}")],
    );
    assert_eq!(
        again,
        Err(trueline_eventlog::AppendError::WrongExpectedVersion { current: 1 })
    );
    let r = log.append(
        org(7),
        "early",
        ExpectedVersion::Exact(1),
        vec![event(100_001, "t", b"{}")],
    );
    assert_eq!(
        (
            r.as_ref().unwrap()[0].stream_version,
            r.unwrap()[0].org_position
        ),
        (2, 2)
    );
    fill(&log, 401, 420);
    assert_eq!(log.last_global_position(), 422);
    drop(log);
    for cp in checkpoint_files(dir.path()) {
        std::fs::remove_file(cp).unwrap();
    }
    let (log, report) = open_with(dir.path(), small_segments());
    assert_eq!(report.segments_from_checkpoint, 0);
    assert_eq!(log.stream_version(org(1), "s0"), 420 / 15);
    assert_eq!(log.stream_version(org(7), "early"), 2);
}

/// The directory as a crash at this moment would leave it (every file but the lock), in a
/// new directory: appends acknowledged so far are durable, so their bytes are all there.
fn crash_copy(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempdir();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && name != "LOCK" {
            std::fs::copy(&path, copy.path().join(name)).unwrap();
        }
    }
    copy
}

#[test]
fn a_crash_right_after_retention_keeps_the_numbers_of_dropped_streams_and_orgs() {
    let dir = tempdir();
    // Less than one segment: every roll drops the segment it just sealed, before the indexer
    // (which writes the registry after sealing) could look at it.
    let options = trimmed_to(1024);
    let (log, _) = open_with(dir.path(), options.clone());
    log.append(
        org(7),
        "early",
        ExpectedVersion::NoStream,
        vec![event(100_000, "t", b"{}")],
    )
    .unwrap();
    // Up to the first roll, which drops segment 1 and with it org 7's only event.
    let mut n = 1;
    while log.storage_stats().first_global_position == 1 {
        fill(&log, n, n);
        n += 1;
    }
    let crashed = crash_copy(dir.path());
    drop(log);
    let (log, _) = open_with(crashed.path(), options);
    assert_eq!(log.stream_version(org(7), "early"), 1);
    let next = log
        .append(
            org(7),
            "early",
            ExpectedVersion::Exact(1),
            vec![event(100_001, "t", b"{}")],
        )
        .unwrap();
    assert_eq!(
        (next[0].stream_version, next[0].org_position),
        (2, 2),
        "a number handed out before the crash was handed out again"
    );
}

#[test]
fn retention_by_age_keeps_the_active_segment() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    for n in 1..=200u64 {
        let ev = NewEvent {
            timestamp_micros: 0,
            ..event(n, "t", &[b'p'; 150])
        };
        log.append(org(1), "s", ExpectedVersion::Any, vec![ev])
            .unwrap();
    }
    drop(log);
    let options = Options {
        retention: Retention {
            max_age: Some(Duration::from_secs(3600)),
            max_total_bytes: None,
        },
        ..small_segments()
    };
    let (log, _) = open_with(dir.path(), options);
    let before = log.storage_stats().segments;
    assert!(before > 2);
    assert_eq!(log.apply_retention().unwrap(), before - 1);
    let stats = log.storage_stats();
    assert_eq!(stats.segments, 1);
    assert_eq!(log.stream_version(org(1), "s"), 200);
    assert_eq!(log.get(id(200)).unwrap().unwrap().global_position, 200);
}

#[test]
fn a_segment_prepared_ahead_becomes_the_next_segment_and_nothing_is_left_over() {
    let dir = tempdir();
    let options = small_segments();
    let size = options.segment_size_bytes;
    let (log, _) = open_with(dir.path(), options.clone());
    // Past half of the first segment the next one is zero-filled in the background.
    fill(&log, 1, 30);
    wait_for_prepared_segment(dir.path(), size);
    fill(&log, 31, 60);
    let segments = segment_files(dir.path());
    assert_eq!(segments.len(), 2, "rolled once");
    // The new active segment is the prepared file: full size, zeros after its records.
    assert_eq!(std::fs::metadata(&segments[1]).unwrap().len(), size);
    // Sealed segments end exactly after their last record.
    let sealed_len = std::fs::metadata(&segments[0]).unwrap().len();
    assert!(sealed_len < size);
    fill(&log, 61, 200);
    log.close().unwrap();
    assert!(!dir.path().join("next-segment.seg.tmp").exists());
    let report = trueline_eventlog::verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let (log, recovery) = open_with(dir.path(), options);
    assert_eq!(recovery.trimmed_zero_bytes, 0, "close trimmed the zeros");
    assert!(recovery.truncated.is_none());
    assert_gapless(&log);
    assert_eq!(log.last_global_position(), 200);
}

#[test]
fn after_a_crash_the_prepared_file_and_the_zeros_of_the_active_segment_are_not_events() {
    let dir = tempdir();
    let options = small_segments();
    let size = options.segment_size_bytes;
    let (log, _) = open_with(dir.path(), options.clone());
    fill(&log, 1, 30);
    wait_for_prepared_segment(dir.path(), size);
    // Into the second segment (a prepared one) and past its half: the third is prepared.
    fill(&log, 31, 60);
    assert_eq!(segment_files(dir.path()).len(), 2);
    wait_for_prepared_segment(dir.path(), size);
    // A crash: the files stay as they are (the copy is what a killed process leaves).
    let crashed = tempdir();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::copy(&p, crashed.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    drop(log);
    assert!(crashed.path().join("next-segment.seg.tmp").exists());
    let (log, recovery) = open_with(crashed.path(), options);
    assert!(!crashed.path().join("next-segment.seg.tmp").exists());
    assert!(recovery.truncated.is_none(), "{:?}", recovery.truncated);
    assert!(recovery.trimmed_zero_bytes > 0);
    assert_eq!(log.last_global_position(), 60);
    assert_gapless(&log);
    fill(&log, 61, 120);
    assert_gapless(&log);
}

#[test]
fn a_checkpoint_without_its_segment_is_removed_at_open() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 100);
    log.close().unwrap();
    let kept = checkpoint_files(dir.path());
    // As if retention dropped segment 99999 while its checkpoint was being written.
    let orphan = dir.path().join("00000000000000099999.idx");
    std::fs::write(&orphan, b"stale").unwrap();
    let (log, report) = open_with(dir.path(), small_segments());
    assert!(!orphan.exists());
    assert_eq!(checkpoint_files(dir.path()), kept);
    assert!(report.checkpoints_rejected.is_empty());
    assert_eq!(log.last_global_position(), 100);
}

/// Checkpoints of big segments lay their arrays out to be mapped at open instead of copied
/// (see the crate docs): the mapped index must answer exactly as one built by scanning, also
/// for the active segment, whose arrays are copied when appends continue after the reopen.
#[test]
fn big_checkpoints_are_mapped_and_answer_like_a_scan() {
    const BATCH: u64 = 100;
    let options = Options {
        segment_size_bytes: 4 * 1024 * 1024,
        ..Options::default()
    };
    // Types first appear in a different order in each segment, so a segment's local type
    // ids differ from the index's.
    let ty = |n: u64| format!("t{}", (n + n / 9_000) % 5);
    let append = |log: &trueline_eventlog::EventLog, from: u64, to: u64| {
        for first in (from..=to).step_by(BATCH as usize) {
            let batch = first / BATCH;
            let evs = (first..(first + BATCH).min(to + 1))
                .map(|n| event(n, &ty(n), &n.to_le_bytes()))
                .collect();
            let stream = format!("s{}", batch % 7);
            log.append(
                org(1 + (batch % 3) as u8),
                &stream,
                ExpectedVersion::Any,
                evs,
            )
            .unwrap();
        }
    };
    let check = |log: &trueline_eventlog::EventLog, last: u64| {
        assert_gapless(log);
        for n in 1..=last {
            let e = log.get(id(n)).unwrap().unwrap();
            assert_eq!(e.global_position, n);
            assert_eq!(e.event_type, ty(n));
            assert_eq!(e.payload, n.to_le_bytes());
        }
        // The type filter goes through the (translated) type ids.
        let mut seen = 0;
        let mut after = 0;
        loop {
            let filter = OrgFilter {
                event_type: Some("t3"),
                stream: None,
            };
            let page = log.read_org(org(2), after, 1000, filter).unwrap();
            let Some(e) = page.last() else { break };
            after = e.org_position;
            seen += page.len();
            assert!(page.iter().all(|e| e.event_type == "t3"));
        }
        let expected = (1..=last)
            .filter(|n| (n / BATCH) % 3 == 1 && ty(*n) == "t3")
            .count();
        assert_eq!(seen, expected);
    };
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), options.clone());
    append(&log, 1, 60_000);
    log.close().unwrap();
    // Each array of a big checkpoint starts at a 4 KiB boundary (header: version at byte 8,
    // alignment at byte 12).
    let aligned = checkpoint_files(dir.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .filter(|b| {
            b.len() > 16 && b[8..12] == 3u32.to_le_bytes() && b[12..16] == 12u32.to_le_bytes()
        })
        .count();
    assert!(aligned >= 2, "{aligned} aligned checkpoints");

    let (log, report) = open_with(dir.path(), options.clone());
    assert_eq!(report.records_scanned, 0, "{report:?}");
    assert_eq!(report.segments_from_checkpoint, report.segments);
    check(&log, 60_000);
    append(&log, 60_001, 70_000);
    check(&log, 70_000);
    log.close().unwrap();
    let (log, report) = open_with(dir.path(), options);
    assert_eq!(report.records_scanned, 0, "{report:?}");
    check(&log, 70_000);
}

/// With many streams the stream lists are refilled at open by two threads, half the streams
/// each (see `Index::flush_deferred`): every stream's events, spread over several segments,
/// come back complete and in order.
#[test]
fn many_streams_spread_over_segments_reload_complete_and_in_order() {
    const STREAMS: u64 = 20_000;
    const ROUNDS: u64 = 3;
    let options = Options {
        segment_size_bytes: 2 * 1024 * 1024,
        durability: trueline_eventlog::Durability::Never,
        ..Options::default()
    };
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), options.clone());
    // Round r appends event r of every stream, so a stream's events lie in different
    // segments. Four threads, a quarter of the streams each.
    for round in 0..ROUNDS {
        std::thread::scope(|scope| {
            for part in 0..4 {
                let log = &log;
                scope.spawn(move || {
                    for s in (part..STREAMS).step_by(4) {
                        let n = round * STREAMS + s + 1;
                        let org = org(1 + (s % 3) as u8);
                        let ev = event(n, "t", &s.to_le_bytes());
                        let stream = format!("s{s}");
                        log.append(org, &stream, ExpectedVersion::Any, vec![ev])
                            .unwrap();
                    }
                });
            }
        });
    }
    let segments = log.storage_stats().segments;
    assert!(segments >= 3, "{segments} segments");
    log.close().unwrap();
    let (log, report) = open_with(dir.path(), options);
    assert_eq!(report.records_scanned, 0, "{report:?}");
    assert_gapless(&log);
    for s in 0..STREAMS {
        let org = org(1 + (s % 3) as u8);
        let stream = format!("s{s}");
        assert_eq!(log.stream_version(org, &stream), ROUNDS);
        let evs = log
            .read_stream(org, &stream, 1, Direction::Forward, 10)
            .unwrap();
        let ids: Vec<_> = evs.iter().map(|e| e.id).collect();
        let expected: Vec<_> = (0..ROUNDS).map(|r| id(r * STREAMS + s + 1)).collect();
        assert_eq!(ids, expected, "stream {s}");
    }
}

/// Bytes of `path` in the page cache, from util-linux's `fincore` (on every Debian; the
/// engine only gives advice, so the test asks the kernel through the tool).
fn cached_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(out.status.success(), "fincore failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn sealed_segments_beyond_the_cached_ones_leave_the_page_cache_and_still_read_exactly() {
    for keep in [0, 1, 3] {
        // Under the target directory, not /tmp: on a tmpfs /tmp (Fedora, Arch) files live in
        // the page cache and advice cannot drop them.
        let dir = tempfile::Builder::new()
            .prefix("eventlog-test")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let options = Options {
            cached_sealed_segments: keep,
            ..small_segments()
        };
        let (log, _) = open_with(dir.path(), options);
        fill(&log, 1, 300);
        let segments = segment_files(dir.path());
        assert!(segments.len() > 5, "{} segments", segments.len());
        // The active segment and the last `keep` sealed ones stay.
        let (older, recent) = segments.split_at(segments.len() - 1 - keep as usize);
        // The indexer gives the advice after each roll: wait for it to reach the last one.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while older.iter().any(|p| cached_bytes(p) > 0) {
            assert!(
                std::time::Instant::now() < deadline,
                "keep {keep}: still cached: {:?}",
                older
                    .iter()
                    .map(|p| (p, cached_bytes(p)))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in recent {
            assert!(
                cached_bytes(p) > 0,
                "keep {keep}: {} not cached",
                p.display()
            );
        }
        // Reads of the dropped segments come from the disk, byte for byte.
        for n in 1..=300 {
            let stored = log.get(id(n)).unwrap().expect("readable");
            assert_eq!(stored.payload, vec![b'p'; 150]);
            assert_eq!(stored.id, id(n));
        }
    }
}

/// The oldest segment of a trimmed log damaged at its header only: repair rewrites the header
/// from the file name and nothing moves. Damaged from its header on (its first record too):
/// repair moves it aside as retention would have dropped it, once the caller accepts losing
/// the intact records after the damage, and the log goes on from the next one with its
/// positions. When it is the only segment, repair refuses even then (the log would start over
/// at position 1, handing positions out a second time) and moves nothing.
#[test]
fn repair_drops_a_trimmed_logs_oldest_segment_but_never_empties_it() {
    use trueline_eventlog::{OpenError, RepairOptions, repair};
    let discard = RepairOptions {
        discard_valid_records: true,
    };
    let dir = tempdir();
    let options = trimmed_to(20 * 1024);
    let (log, _) = open_with(dir.path(), options.clone());
    early_then_filled(&log);
    assert!(
        log.storage_stats().first_global_position > 1,
        "nothing dropped"
    );
    let last = log.last_global_position();
    drop(log);
    let segments = || segment_files(dir.path());
    let damage_header = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[8] ^= 0xFF;
        std::fs::write(path, &bytes).unwrap();
    };
    // The header and the first record after it.
    let damage_from_header_on = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[8] ^= 0xFF;
        bytes[32 + 50] ^= 0x01;
        std::fs::write(path, &bytes).unwrap();
    };
    let before = segments();
    assert!(before.len() > 2, "{before:?}");
    let intact = std::fs::read(&before[0]).unwrap();
    damage_header(&before[0]);
    let repaired = repair(dir.path(), RepairOptions::default()).unwrap();
    assert_eq!(repaired.headers_rebuilt, vec![before[0].clone()]);
    assert!(repaired.truncated.is_none());
    assert_eq!(repaired.records_moved_aside, 0);
    assert_eq!(segments(), before);
    assert_eq!(std::fs::read(&before[0]).unwrap(), intact);
    assert_eq!(repaired.last_global_position, last);

    damage_from_header_on(&before[0]);
    let unchanged = std::fs::read(&before[0]).unwrap();
    let refused = repair(dir.path(), RepairOptions::default());
    assert!(
        matches!(refused, Err(OpenError::RepairWouldDiscard { ref segment, .. }) if *segment == before[0]),
        "{refused:?}"
    );
    assert_eq!(segments(), before);
    assert_eq!(std::fs::read(&before[0]).unwrap(), unchanged);
    let repaired = repair(dir.path(), discard).unwrap();
    assert!(repaired.truncated.is_none());
    assert_eq!(repaired.segments_moved_aside, 1);
    assert!(repaired.records_moved_aside > 0, "{repaired:?}");
    assert_eq!(segments(), before[1..].to_vec());
    assert_eq!(repaired.last_global_position, last);
    let (log, _) = open_with(dir.path(), options.clone());
    assert_eq!(log.last_global_position(), last, "positions go on");
    drop(log);

    // Down to one segment: a damaged header is rewritten; damaged from the header on, repair
    // refuses even when allowed to discard intact records, and nothing moves.
    for extra in &segments()[1..] {
        std::fs::remove_file(extra).unwrap();
        let _ = std::fs::remove_file(extra.with_extension("idx"));
    }
    let only = segments();
    assert_eq!(only.len(), 1);
    damage_header(&only[0]);
    let repaired = repair(dir.path(), RepairOptions::default()).unwrap();
    assert_eq!(repaired.headers_rebuilt, only);
    damage_from_header_on(&only[0]);
    let bytes = std::fs::read(&only[0]).unwrap();
    let refused = repair(dir.path(), discard);
    assert!(
        matches!(refused, Err(OpenError::Corrupt { .. })),
        "{refused:?}"
    );
    assert_eq!(segments(), only);
    assert_eq!(
        std::fs::read(&only[0]).unwrap(),
        bytes,
        "the refused repair moved nothing"
    );
}

#[test]
fn a_lost_registry_in_a_trimmed_log_refuses_open_until_repair_accepts_it() {
    let dir = tempdir();
    let options = trimmed_to(20 * 1024);
    let (log, _) = open_with(dir.path(), options.clone());
    early_then_filled(&log);
    assert!(
        log.storage_stats().first_global_position > 1,
        "nothing dropped"
    );
    drop(log);
    let registry = dir.path().join("streams.idx");
    for damage in ["delete", "flip"] {
        if damage == "delete" {
            std::fs::remove_file(&registry).unwrap();
        } else {
            let mut bytes = std::fs::read(&registry).unwrap();
            bytes[30] ^= 1;
            std::fs::write(&registry, bytes).unwrap();
        }
        let refused = trueline_eventlog::EventLog::open(dir.path(), options.clone());
        assert!(
            matches!(
                refused,
                Err(trueline_eventlog::OpenError::RegistryLost { .. })
            ),
            "{damage}: {:?}",
            refused.map(|(_, r)| r)
        );
        let verified = trueline_eventlog::verify(dir.path(), &mut |_, _| {}).unwrap();
        assert!(!verified.is_clean());
        assert!(
            verified
                .problems
                .iter()
                .any(|p| p.kind == trueline_eventlog::ProblemKind::RegistryLost)
        );
        let repaired =
            trueline_eventlog::repair(dir.path(), trueline_eventlog::RepairOptions::default())
                .unwrap();
        assert!(repaired.registry_rebuilt);
        assert!(repaired.truncated.is_none());
        let (log, _) = open_with(dir.path(), options.clone());
        // What the log holds is intact; the stream whose only event was dropped is gone
        // (the loss `repair` accepted).
        assert_eq!(log.last_global_position(), 401);
        assert_eq!(log.stream_version(org(1), "s0"), 400 / 15);
        assert_eq!(log.stream_version(org(7), "early"), 0);
        drop(log);
        // The rebuilt registry is kept by later opens.
        let (log, report) = open_with(dir.path(), options.clone());
        assert!(report.is_clean(), "{report:?}");
        drop(log);
    }
    // An untrimmed log still rebuilds a lost registry silently (it is disposable there).
    let fresh = tempdir();
    let (log, _) = open_with(fresh.path(), small_segments());
    fill(&log, 1, 200);
    drop(log);
    std::fs::remove_file(fresh.path().join("streams.idx")).unwrap();
    let (log, _) = open_with(fresh.path(), small_segments());
    assert_gapless(&log);
}

/// In a log that still starts at position 1 the segments are the truth: a stream registry
/// naming numbers the log does not hold (written from events a power loss then took in
/// `never`/`interval_ms` mode, or restored newer than the segments) must not carry them on.
/// It did: the stream began at version 2 with no version 1, and the next open refused the log.
#[test]
fn in_an_untrimmed_log_a_registry_ahead_of_the_segments_is_ignored() {
    let dir = tempdir();
    let (log, _) = open_with(dir.path(), small_segments());
    fill(&log, 1, 100);
    let behind = crash_copy(dir.path());
    log.append(
        org(9),
        "late",
        ExpectedVersion::NoStream,
        vec![event(1_000, "t", b"{}")],
    )
    .unwrap();
    drop(log);
    std::fs::copy(
        dir.path().join("streams.idx"),
        behind.path().join("streams.idx"),
    )
    .unwrap();
    let (log, _) = open_with(behind.path(), small_segments());
    assert_eq!(log.last_global_position(), 100);
    assert_eq!(log.stream_version(org(9), "late"), 0);
    let appended = log
        .append(
            org(9),
            "late",
            ExpectedVersion::NoStream,
            vec![event(1_001, "t", b"{}")],
        )
        .unwrap();
    assert_eq!(
        (appended[0].stream_version, appended[0].org_position),
        (1, 1)
    );
    drop(log);
    let (log, report) = open_with(behind.path(), small_segments());
    assert!(report.is_clean(), "{report:?}");
    assert_gapless(&log);
    assert!(
        trueline_eventlog::verify(behind.path(), &mut |_, _| {})
            .unwrap()
            .is_clean()
    );
}
