use std::collections::BTreeMap;
use std::path::Path;

use trueline_eventlog::{
    EventLog, ExpectedVersion, NewEvent, OpenError, Options, ProblemKind, RepairOptions,
    RepairReport, dump, repair, verify,
};

use crate::support::{assert_gapless, event, id, org, segment_files, tempdir};

const DISCARD: RepairOptions = RepairOptions {
    discard_valid_records: true,
};

fn repair_default(dir: &Path) -> Result<RepairReport, OpenError> {
    repair(dir, RepairOptions::default())
}

/// Every file of the directory and its bytes: what a refused repair must leave as it was.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= mask;
    std::fs::write(path, &bytes).unwrap();
}

/// First global position of a segment (its file name).
fn first_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn small() -> Options {
    Options {
        segment_size_bytes: 8 * 1024,
        ..Options::default()
    }
}

fn filled(n: u64) -> tempfile::TempDir {
    let dir = tempdir();
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    for i in 1..=n {
        log.append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(i, "t", &[b'x'; 100])],
        )
        .unwrap();
    }
    dir
}

#[test]
fn verify_checks_every_record_and_checkpoint_and_reports_progress() {
    let dir = filled(200);
    let mut calls = Vec::new();
    let report = verify(dir.path(), &mut |done, total| calls.push((done, total))).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.problems.is_empty());
    assert_eq!(report.records, 200);
    // One per segment, plus the stream registry.
    assert_eq!(report.checkpoints_ok, report.segments + 1);
    let (done, total) = *calls.last().unwrap();
    assert_eq!(done, total);
    assert_eq!(total, report.bytes);
}

#[test]
fn dump_prints_one_json_object_per_record() {
    let dir = tempdir();
    {
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        let evs = vec![
            NewEvent {
                metadata: b"{\"a\":\n[1, 2]}".to_vec(),
                ..event(1, "json", b"{\"x\":\"\\u2028\"}")
            },
            event(2, "text", "plain \u{2028} text 🎉\n".as_bytes()),
            event(3, "binary", &[0, 159, 146, 150]),
        ];
        log.append(org(1), "s\"q", ExpectedVersion::Any, evs)
            .unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(dump(dir.path(), &mut out, 1).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["stream"], "s\"q");
    assert_eq!(lines[0]["metadata"]["a"][1], 2);
    assert_eq!(lines[0]["payload"]["x"], "\u{2028}");
    assert_eq!(lines[0]["id"], id(1).to_string());
    assert_eq!(lines[1]["payload_text"], "plain \u{2028} text 🎉\n");
    assert_eq!(lines[2]["payload_base64"], "AJ+Slg==");
    let mut out = Vec::new();
    assert_eq!(dump(dir.path(), &mut out, 3).unwrap(), 1);
}

/// A damaged record in the middle of a sealed segment: the records after it (in that segment
/// and every later one) verify, so repair refuses, changing nothing, until the caller accepts
/// losing them; then it cuts after the last good record.
#[test]
fn repair_cuts_after_the_last_good_record_only_when_asked() {
    let dir = filled(200);
    let segs = segment_files(dir.path());
    assert!(segs.len() > 3);
    // Damage a record in the middle of the second segment.
    let victim = &segs[1];
    let mid = std::fs::metadata(victim).unwrap().len() as usize / 2;
    flip(victim, mid, 0x10);
    std::fs::remove_file(victim.with_extension("idx")).unwrap();
    let err = EventLog::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems[0].file, *victim);
    let before = snapshot(dir.path());
    let refused = repair_default(dir.path()).unwrap_err();
    let OpenError::RepairWouldDiscard {
        segment,
        records,
        last_position,
        ..
    } = &refused
    else {
        panic!("{refused:?}");
    };
    assert_eq!(segment, victim);
    assert_eq!(*last_position, 200);
    assert!(*records > 100, "{refused}");
    assert!(refused.to_string().contains("--discard-valid-records"));
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused repair changes nothing"
    );

    let r = repair(dir.path(), DISCARD).unwrap();
    let t = r.truncated.clone().unwrap();
    assert_eq!(&t.segment, victim);
    assert!(r.quarantined.len() > segs.len() - 2);
    assert_eq!(r.segments_moved_aside, segs.len() - 2);
    // Every record after the damaged one verifies and was moved aside (and counted).
    assert_eq!(r.records_moved_aside, *records);
    assert_eq!(
        r.positions_moved_aside,
        Some((r.last_global_position + 2, 200))
    );
    let (log, report) = EventLog::open(dir.path(), small()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(log.last_global_position(), r.last_global_position);
    assert!(r.last_global_position > 1 && r.last_global_position < 200);
    for p in 1..=r.last_global_position {
        assert!(log.get_by_position(p).unwrap().is_some());
    }
    // Appends continue after the cut.
    let rec = log
        .append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(10_000, "t", b"{}")],
        )
        .unwrap();
    assert_eq!(rec[0].global_position, r.last_global_position + 1);
    drop(log);
    assert!(verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
}

/// One flipped bit in a sealed segment's header (byte 25, reserved) of a 4-segment log: the
/// records after it all verify. Repair used to move all four segments and the registry aside
/// ("nothing to cut"), and the log started over at position 1. It rewrites the header from
/// the file name instead: the file is byte for byte what the writer wrote, and every record
/// reads after open.
#[test]
fn a_flipped_header_bit_is_rewritten_from_the_file_name_and_nothing_is_lost() {
    let dir = filled(150);
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 4, "{segs:?}");
    let victim = &segs[1];
    let intact = std::fs::read(victim).unwrap();
    flip(victim, 25, 0x04);
    let err = EventLog::open(dir.path(), small()).unwrap_err();
    assert!(
        matches!(err, OpenError::Corrupt { offset: 0, .. }),
        "{err:?}"
    );
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.records, 150, "{report:?}");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let problem = &report.problems[0];
    assert_eq!(
        (problem.kind, &problem.file, problem.offset),
        (ProblemKind::Corruption, victim, 0)
    );
    assert!(problem.detail.contains("checksum mismatch"), "{problem:?}");
    assert!(
        problem.detail.contains("rewrites the header"),
        "{problem:?}"
    );

    let r = repair_default(dir.path()).unwrap();
    assert_eq!(r.headers_rebuilt, vec![victim.clone()]);
    assert_eq!(r.truncated, None);
    assert_eq!(
        (r.segments_moved_aside, r.records_moved_aside),
        (0, 0),
        "{r:?}"
    );
    assert_eq!(r.last_global_position, 150);
    assert_eq!(segment_files(dir.path()), segs);
    assert_eq!(std::fs::read(victim).unwrap(), intact);
    // The damaged header is kept, not deleted.
    assert_eq!(r.quarantined.len(), 1);
    let mut damaged = intact[..32].to_vec();
    damaged[25] ^= 0x04;
    assert_eq!(std::fs::read(&r.quarantined[0]).unwrap(), damaged);

    let (log, report) = EventLog::open(dir.path(), small()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(log.last_global_position(), 150);
    assert_gapless(&log);
    assert_eq!(log.stream_version(org(1), "s"), 150);
    drop(log);
    assert!(verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
}

/// A header that cannot be rewritten (its first record is damaged too) takes its segment and
/// every later one: refused, changing nothing, while they hold intact records; with
/// `discard_valid_records` they go, and the report counts them.
#[test]
fn a_segment_unreadable_from_its_header_on_is_cut_only_when_asked() {
    let dir = filled(150);
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 4, "{segs:?}");
    let victim = &segs[1];
    flip(victim, 25, 0x04);
    flip(victim, 32 + 50, 0x01);
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(
        report.problems[0].detail.contains("not rebuilt"),
        "{report:?}"
    );
    let before = snapshot(dir.path());
    let refused = repair_default(dir.path()).unwrap_err();
    let first = first_of(victim);
    let OpenError::RepairWouldDiscard {
        segment,
        offset,
        records,
        first_position,
        last_position,
        ..
    } = &refused
    else {
        panic!("{refused:?}");
    };
    assert_eq!((segment, *offset), (victim, 0));
    // All but the damaged first record of the segment.
    assert_eq!(*records, 150 - first);
    assert_eq!((*first_position, *last_position), (first + 1, 150));
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused repair changes nothing"
    );

    let r = repair(dir.path(), DISCARD).unwrap();
    assert_eq!(r.segments_moved_aside, 3);
    assert_eq!(r.records_moved_aside, 150 - first);
    assert_eq!(r.positions_moved_aside, Some((first + 1, 150)));
    assert_eq!(r.last_global_position, first - 1);
    assert_eq!(segment_files(dir.path()), segs[..1].to_vec());
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.last_global_position(), first - 1);
    assert_gapless(&log);
}

/// Missing segment files: the later one verifies, so repair refuses to move it aside
/// (restore the missing files from a backup) unless told to.
#[test]
fn missing_segment_files_are_not_papered_over() {
    let dir = filled(150);
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 4, "{segs:?}");
    for gone in &segs[1..3] {
        std::fs::remove_file(gone).unwrap();
        let _ = std::fs::remove_file(gone.with_extension("idx"));
    }
    let before = snapshot(dir.path());
    let refused = repair_default(dir.path()).unwrap_err();
    assert!(
        matches!(
            refused,
            OpenError::RepairWouldDiscard { ref segment, records, first_position, last_position: 150, .. }
                if *segment == segs[3] && records == 151 - first_of(&segs[3])
                    && first_position == first_of(&segs[3])
        ),
        "{refused:?}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused repair changes nothing"
    );
    let r = repair(dir.path(), DISCARD).unwrap();
    assert_eq!(r.segments_moved_aside, 1);
    assert_eq!(r.last_global_position, first_of(&segs[1]) - 1);
}

/// A segment written by a newer version (an intact header with a higher format version) is
/// not damage: open, verify, dump and repair say an upgrade is needed, and repair changes
/// nothing, even when allowed to discard records.
#[test]
fn a_newer_format_version_is_not_repaired() {
    let dir = filled(150);
    let segs = segment_files(dir.path());
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let newer = trueline_eventlog::FORMAT_VERSION + 1;
    bytes[8..12].copy_from_slice(&newer.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(victim, &bytes).unwrap();

    let err = EventLog::open(dir.path(), small()).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerFormat { ref segment, version } if segment == victim && version == newer),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade needed"), "{err}");
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems[0].kind, ProblemKind::NewerFormat);
    assert!(report.problems[0].detail.contains("upgrade needed"));
    assert!(matches!(
        dump(dir.path(), &mut Vec::new(), 1),
        Err(OpenError::NewerFormat { .. })
    ));
    let before = snapshot(dir.path());
    for options in [RepairOptions::default(), DISCARD] {
        let refused = repair(dir.path(), options).unwrap_err();
        assert!(
            matches!(refused, OpenError::NewerFormat { ref segment, .. } if segment == victim),
            "{refused:?}"
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "a refused repair changes nothing"
        );
    }
}

/// The crash case: a last record written in part is cut with the default options, as is an
/// append of which only some records reached the disk (the intact ones belong to a write
/// that was never acknowledged: open itself would cut them).
#[test]
fn a_torn_tail_is_cut_with_the_default_options() {
    let dir = filled(50);
    let last = segment_files(dir.path()).pop().unwrap();
    let good = std::fs::metadata(&last).unwrap().len();
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    log.append(
        org(1),
        "s",
        ExpectedVersion::Any,
        vec![event(51, "t", &[b'x'; 100])],
    )
    .unwrap();
    drop(log);
    assert_eq!(segment_files(dir.path()).pop().unwrap(), last);
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::TornTail);
    let r = repair_default(dir.path()).unwrap();
    assert_eq!(r.truncated.as_ref().unwrap().offset, good, "{r:?}");
    assert_eq!((r.records_moved_aside, r.segments_moved_aside), (0, 0));
    assert_eq!(r.last_global_position, 50);

    // One append of three records whose middle one is damaged: the third verifies, but it is
    // part of the same (interrupted) write.
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.last_global_position(), 50);
    let evs = (51..54).map(|n| event(n, "t", &[b'x'; 100])).collect();
    log.append(org(1), "s", ExpectedVersion::Any, evs).unwrap();
    drop(log);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len() as usize;
    let record_len = 92 + 1 + 1 + 7 + 100;
    flip(&last, len - 2 * record_len + 50, 0x01);
    let r = repair_default(dir.path()).unwrap();
    assert_eq!(
        r.truncated.as_ref().unwrap().offset,
        (len - 3 * record_len) as u64
    );
    assert_eq!(r.records_moved_aside, 2, "{r:?}");
    assert_eq!(r.positions_moved_aside, Some((51, 53)));
    let (log, report) = EventLog::open(dir.path(), small()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(log.last_global_position(), 50);
    assert_gapless(&log);
}

/// `verify` and `dump` can tell a log a server appends to (its lock is held).
#[test]
fn a_log_in_use_is_told_apart() {
    let dir = filled(3);
    assert!(!trueline_eventlog::in_use(dir.path()).unwrap());
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert!(trueline_eventlog::in_use(dir.path()).unwrap());
    drop(log);
    assert!(!trueline_eventlog::in_use(dir.path()).unwrap());
}

/// A directory whose segments are gone but whose registry and checkpoints remain is not
/// "0 segments, ok".
#[test]
fn verify_reports_a_log_whose_segments_are_missing() {
    let dir = filled(50);
    for segment in segment_files(dir.path()) {
        std::fs::remove_file(segment).unwrap();
    }
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(report.problems[0].kind, ProblemKind::Corruption);
    // An empty directory is a clean, empty log.
    let empty = tempdir();
    assert!(verify(empty.path(), &mut |_, _| {}).unwrap().is_clean());
}

/// A repair that cuts a log (starting at 1) from its first segment's header on leaves no
/// segment: the registry goes aside too, so `verify` does not take the directory for a log
/// whose segments were lost, and the log opens empty.
#[test]
fn a_repair_that_leaves_no_segment_leaves_no_registry() {
    let dir = filled(50);
    let first = segment_files(dir.path())[0].clone();
    // The header and the first record: the header cannot be rewritten.
    flip(&first, 8, 0xFF);
    flip(&first, 32 + 50, 0x01);
    let before = snapshot(dir.path());
    assert!(matches!(
        repair_default(dir.path()),
        Err(OpenError::RepairWouldDiscard { records: 49, .. })
    ));
    assert_eq!(snapshot(dir.path()), before);
    let r = repair(dir.path(), DISCARD).unwrap();
    assert!(segment_files(dir.path()).is_empty(), "{r:?}");
    assert_eq!(r.records_moved_aside, 49);
    assert!(!dir.path().join("streams.idx").exists());
    assert!(verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.last_global_position(), 0);
}

#[test]
fn repair_refuses_while_the_log_is_open() {
    let dir = filled(3);
    let (_log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert!(matches!(
        repair_default(dir.path()),
        Err(OpenError::Locked { .. })
    ));
}

/// Bytes a repair moves aside are kept: a second repair cutting at the same place writes a
/// copy of its own instead of replacing the first one's.
#[test]
fn a_second_repair_at_the_same_place_keeps_the_first_ones_bytes() {
    let dir = filled(50);
    let last = segment_files(dir.path()).pop().unwrap();
    let good = std::fs::metadata(&last).unwrap().len();
    let mut copies = Vec::new();
    for junk in [[0xA5u8; 64], [0x5Au8; 64]] {
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.truncate(good as usize);
        bytes.extend_from_slice(&junk);
        std::fs::write(&last, &bytes).unwrap();
        let r = repair_default(dir.path()).unwrap();
        let copy = r
            .quarantined
            .iter()
            .find(|q| {
                q.to_string_lossy()
                    .contains(&format!("seg.{good}.quarantined"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no copy of the cut bytes: {r:?}"));
        assert_eq!(std::fs::read(&copy).unwrap(), junk);
        copies.push(copy);
    }
    assert_ne!(copies[0], copies[1]);
    assert_eq!(std::fs::read(&copies[0]).unwrap(), [0xA5u8; 64]);
}

/// Checkpoints whose offsets fit the segments but whose last records are other ones (here:
/// the checkpoints and registry of a log of the same shape with other contents) are ones
/// open would not use; verify reports them too (it compared the offsets only).
#[test]
fn verify_reports_a_checkpoint_whose_last_record_is_another_one() {
    let fill = |byte: u8| {
        let dir = tempdir();
        let (log, _) = EventLog::open(dir.path(), small()).unwrap();
        for i in 1..=150 {
            log.append(
                org(1),
                "s",
                ExpectedVersion::Any,
                vec![event(i, "t", &[byte; 100])],
            )
            .unwrap();
        }
        dir
    };
    let (ours, theirs) = (fill(b'x'), fill(b'y'));
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(theirs.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".idx") {
            std::fs::copy(theirs.path().join(&name), ours.path().join(&name)).unwrap();
            if name != "streams.idx" {
                copied.push(name);
            }
        }
    }
    copied.sort();
    assert!(copied.len() >= 3, "{copied:?}");
    let report = verify(ours.path(), &mut |_, _| {}).unwrap();
    let mut problems: Vec<_> = report
        .problems
        .iter()
        .map(|p| {
            assert_eq!(p.kind, ProblemKind::Checkpoint, "{p:?}");
            assert!(p.detail.contains("last record"), "{p:?}");
            p.file.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    problems.sort();
    assert_eq!(problems, copied, "{report:?}");
}
