//! Flipped bytes, truncations and arbitrary bytes at random offsets and in place of whole
//! files: open either truncates a torn tail, rebuilds a damaged index or refuses with a precise
//! error, and reads return the exact bytes or a checksum error. Never a panic, never wrong data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use trueline_eventlog::{EventLog, ExpectedVersion, OpenError, Options, ReadError, StoredEvent};

use crate::support::{Rng, event, org, tempdir};

fn options() -> Options {
    Options {
        segment_size_bytes: 8 * 1024,
        ..Options::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[derive(Default, Debug)]
struct Outcomes {
    clean: u32,
    truncated: u32,
    refused: u32,
    read_errors: u32,
}

fn check_case(dir: &Path, originals: &HashMap<u64, StoredEvent>, out: &mut Outcomes) {
    match EventLog::open(dir, options()) {
        Err(OpenError::Corrupt {
            segment,
            offset,
            detail,
        }) => {
            assert!(segment.starts_with(dir), "{segment:?}");
            assert!(!detail.is_empty());
            let len = std::fs::metadata(&segment).map(|m| m.len()).unwrap_or(0);
            assert!(offset <= len, "offset {offset} beyond {len}");
            out.refused += 1;
        }
        Err(e) => panic!("unexpected open error: {e}"),
        Ok((log, report)) => {
            if report.truncated.is_some() {
                out.truncated += 1;
            } else {
                out.clean += 1;
            }
            let last = log.last_global_position();
            assert!(last <= originals.len() as u64);
            for p in 1..=last {
                match log.get_by_position(p) {
                    Ok(Some(ev)) => assert_eq!(&ev, &originals[&p], "wrong data at {p}"),
                    Ok(None) => panic!("position {p} missing below the last position {last}"),
                    Err(ReadError::Corrupt { .. }) => out.read_errors += 1,
                    Err(e) => panic!("unexpected read error {e}"),
                }
            }
            // Appending after recovery works and continues the positions.
            let r = log.append(
                org(9),
                "after",
                ExpectedVersion::Any,
                vec![event(1 << 40, "t", b"{}")],
            );
            if let Ok(r) = r {
                assert_eq!(r[0].global_position, last + 1);
            }
        }
    }
}

/// A log of 120 batches over several small segments, the original of every event, and its
/// segment and index files.
fn base_log() -> (tempfile::TempDir, HashMap<u64, StoredEvent>, Vec<PathBuf>) {
    let base = tempdir();
    let mut originals = HashMap::new();
    {
        let (log, _) = EventLog::open(base.path(), options()).unwrap();
        for n in 1..=120u64 {
            let batch: Vec<_> = (0..1 + n % 3)
                .map(|k| event(n * 10 + k, "t", format!("{{\"n\":{n}}}").as_bytes()))
                .collect();
            log.append(org((n % 2) as u8), "s", ExpectedVersion::Any, batch)
                .unwrap();
        }
        for p in 1..=log.last_global_position() {
            originals.insert(p, log.get_by_position(p).unwrap().unwrap());
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg" || e == "idx"))
        .collect();
    files.sort();
    (base, originals, files)
}

#[test]
fn flipped_bytes_and_truncations_never_yield_wrong_data() {
    let (base, originals, files) = base_log();
    let cases: u64 = std::env::var("TRUELINE_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::new(7);
    let mut out = Outcomes::default();
    for case in 0..cases {
        let dir = tempdir();
        copy_dir(base.path(), dir.path());
        // Bias towards segment files (and the last one, where torn tails live).
        let file = if case % 3 == 0 {
            files
                .iter()
                .rfind(|p| p.extension().is_some_and(|e| e == "seg"))
                .unwrap()
        } else {
            &files[rng.below(files.len() as u64) as usize]
        };
        let target = dir.path().join(file.file_name().unwrap());
        let mut bytes = std::fs::read(&target).unwrap();
        if bytes.is_empty() {
            continue;
        }
        match rng.below(3) {
            0 => {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let cut = rng.below(bytes.len() as u64) as usize;
                bytes.truncate(cut);
            }
            _ => {
                // Several flipped bytes near the end (a torn tail with garbage).
                let n = bytes.len();
                for _ in 0..4 {
                    let i = n - 1 - rng.below(n.min(600) as u64) as usize;
                    bytes[i] = rng.next() as u8;
                }
            }
        }
        std::fs::write(&target, &bytes).unwrap();
        check_case(dir.path(), &originals, &mut out);
    }
    eprintln!("corruption outcomes: {out:?}");
    assert!(
        out.refused > 0 && out.truncated > 0 && out.read_errors > 0,
        "{out:?}"
    );
}

#[test]
fn bad_record_followed_by_a_later_write_refuses_to_open_naming_file_and_offset() {
    let dir = tempdir();
    {
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        for n in 1..=10 {
            log.append(
                org(1),
                "s",
                ExpectedVersion::Any,
                vec![event(n, "t", b"{}")],
            )
            .unwrap();
        }
    }
    // Remove checkpoints so the segment is scanned, then damage the 3rd record.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let seg = dir.path().join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec_len = (bytes.len() - 32) / 10;
    let third = 32 + 2 * rec_len;
    bytes[third + 50] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = EventLog::open(dir.path(), Options::default()).unwrap_err();
    match &err {
        OpenError::Corrupt {
            segment, offset, ..
        } => {
            assert_eq!(segment, &seg);
            assert_eq!(*offset, third as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("00000000000000000001.seg") && msg.contains(&third.to_string()),
        "{msg}"
    );
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let dir = tempdir();
    {
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        for n in 1..=10 {
            log.append(
                org(1),
                "s",
                ExpectedVersion::Any,
                vec![event(n, "t", b"{}")],
            )
            .unwrap();
        }
        // A 3-event append whose last record is cut short by the "crash".
        log.append(
            org(1),
            "s",
            ExpectedVersion::Any,
            (11..=13).map(|n| event(n, "t", b"{}")).collect(),
        )
        .unwrap();
    }
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let seg = dir.path().join("00000000000000000001.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let rec_len = (len - 32) / 13;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (log, report) = EventLog::open(dir.path(), Options::default()).unwrap();
    let t = report.truncated.expect("torn tail reported");
    // The whole 3-event append goes: appends are all or nothing.
    assert_eq!(t.offset, 32 + 10 * rec_len);
    assert_eq!(t.truncated_bytes, 3 * rec_len - 5);
    assert_eq!(t.segment, seg);
    assert_eq!(log.last_global_position(), 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 32 + 10 * rec_len);
}

#[test]
fn zero_filled_space_after_the_last_record_is_trimmed_without_a_torn_tail_report() {
    let dir = tempdir();
    {
        let (log, _) = EventLog::open(dir.path(), Options::default()).unwrap();
        log.append(
            org(1),
            "s",
            ExpectedVersion::Any,
            vec![event(1, "t", b"{}")],
        )
        .unwrap();
    }
    // As a crash leaves the active segment: preallocated zeros, no fresh checkpoint.
    let seg = dir.path().join("00000000000000000001.seg");
    std::fs::remove_file(seg.with_extension("idx")).unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let (log, report) = EventLog::open(dir.path(), Options::default()).unwrap();
    assert!(report.truncated.is_none());
    assert_eq!(report.trimmed_zero_bytes, 4096);
    assert!(report.is_clean());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    assert_eq!(log.last_global_position(), 1);
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A valid segment header (see `docs/eventlog.md`), so that what follows it is parsed as
/// records instead of being refused at the header.
fn segment_header(first_position: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(32);
    h.extend_from_slice(b"TLEVSEG\0");
    h.extend_from_slice(&trueline_eventlog::FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&32u32.to_le_bytes());
    h.extend_from_slice(&first_position.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Arbitrary bytes where the log's files are: whole directories of random files under segment
/// and index names (with and without a valid segment header), random ranges of a real log
/// overwritten, random bytes appended to its last segment, index files replaced by garbage.
/// `TRUELINE_RECOVERY_FUZZ_CASES` (default 1000) sets the number of cases.
#[test]
fn arbitrary_bytes_never_panic_or_yield_wrong_data() {
    let (base, originals, files) = base_log();
    let cases: u64 = std::env::var("TRUELINE_RECOVERY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut rng = Rng::new(11);
    let mut out = Outcomes::default();
    let mut garbage_dirs = (0u32, 0u32);
    for _ in 0..cases {
        let dir = tempdir();
        match rng.below(4) {
            0 => {
                // No real log at all: random files under the names the log uses.
                for _ in 0..=rng.below(3) {
                    let name = match rng.below(4) {
                        0 => "00000000000000000001.seg".to_owned(),
                        1 => format!("{:020}.seg", 1 + rng.below(1_000_000)),
                        2 => "00000000000000000001.idx".to_owned(),
                        _ => "streams.idx".to_owned(),
                    };
                    let mut bytes = Vec::new();
                    if name.ends_with(".seg") && rng.below(2) == 0 {
                        let first = name[..20].parse().unwrap();
                        bytes.extend(segment_header(first));
                    }
                    let len = rng.below(16 * 1024) as usize;
                    bytes.extend(random_bytes(&mut rng, len));
                    std::fs::write(dir.path().join(name), bytes).unwrap();
                }
                match EventLog::open(dir.path(), options()) {
                    Err(_) => garbage_dirs.0 += 1,
                    Ok((log, _)) => {
                        garbage_dirs.1 += 1;
                        // Random bytes never pass as events; reads never panic.
                        for p in 1..=log.last_global_position().min(1_000) {
                            let _ = log.get_by_position(p);
                        }
                        let appended = log.append(
                            org(9),
                            "after",
                            ExpectedVersion::Any,
                            vec![event(1 << 40, "t", b"{}")],
                        );
                        if let Ok(stored) = appended {
                            let got = log.get_by_position(stored[0].global_position);
                            let got = got.unwrap().expect("the appended event reads back");
                            assert_eq!((got.id, got.payload), (stored[0].id, b"{}".to_vec()));
                        }
                    }
                }
                continue;
            }
            1 => {
                copy_dir(base.path(), dir.path());
                let file = &files[rng.below(files.len() as u64) as usize];
                let target = dir.path().join(file.file_name().unwrap());
                let mut bytes = std::fs::read(&target).unwrap();
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                let len = (1 + rng.below(4096) as usize).min(bytes.len() - at);
                let noise = random_bytes(&mut rng, len);
                bytes[at..at + len].copy_from_slice(&noise);
                std::fs::write(&target, &bytes).unwrap();
            }
            2 => {
                copy_dir(base.path(), dir.path());
                let last = files
                    .iter()
                    .rfind(|p| p.extension().is_some_and(|e| e == "seg"))
                    .unwrap();
                let target = dir.path().join(last.file_name().unwrap());
                let mut bytes = std::fs::read(&target).unwrap();
                let len = 1 + rng.below(2_000) as usize;
                bytes.extend(random_bytes(&mut rng, len));
                std::fs::write(&target, &bytes).unwrap();
            }
            _ => {
                copy_dir(base.path(), dir.path());
                let indexes: Vec<_> = files
                    .iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "idx"))
                    .collect();
                let file = indexes[rng.below(indexes.len() as u64) as usize];
                let len = rng.below(8 * 1024) as usize;
                let noise = random_bytes(&mut rng, len);
                std::fs::write(dir.path().join(file.file_name().unwrap()), noise).unwrap();
            }
        }
        check_case(dir.path(), &originals, &mut out);
    }
    eprintln!(
        "arbitrary bytes: real log damaged {out:?}; random directories refused {}, opened {}",
        garbage_dirs.0, garbage_dirs.1
    );
}
