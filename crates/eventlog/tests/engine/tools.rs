use trueline_eventlog::{
    EventLog, ExpectedVersion, NewEvent, OpenError, Options, ProblemKind, dump, repair, verify,
};

use crate::support::{event, id, org, segment_files, tempdir};

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

#[test]
fn repair_cuts_after_the_last_good_record_only_when_asked() {
    let dir = filled(200);
    let segs = segment_files(dir.path());
    assert!(segs.len() > 3);
    // Damage a record in the middle of the second segment.
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    std::fs::remove_file(victim.with_extension("idx")).unwrap();
    let err = EventLog::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    let report = verify(dir.path(), &mut |_, _| {}).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems[0].file, *victim);
    // Repair refuses while the log is open elsewhere? (It is not open here.)
    let r = repair(dir.path()).unwrap();
    let t = r.truncated.unwrap();
    assert_eq!(&t.segment, victim);
    assert!(r.quarantined.len() > segs.len() - 2);
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
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[8] ^= 0xFF;
    std::fs::write(&first, &bytes).unwrap();
    let r = repair(dir.path()).unwrap();
    assert!(segment_files(dir.path()).is_empty(), "{r:?}");
    assert!(!dir.path().join("streams.idx").exists());
    assert!(verify(dir.path(), &mut |_, _| {}).unwrap().is_clean());
    let (log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert_eq!(log.last_global_position(), 0);
}

#[test]
fn repair_refuses_while_the_log_is_open() {
    let dir = filled(3);
    let (_log, _) = EventLog::open(dir.path(), small()).unwrap();
    assert!(matches!(repair(dir.path()), Err(OpenError::Locked { .. })));
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
        let r = repair(dir.path()).unwrap();
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
