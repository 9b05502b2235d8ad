//! Offline tools for the CLI: [`verify`], [`dump`] and [`repair`].
//!
//! `verify` and `dump` only read (they take no lock; run them on a stopped server, or expect
//! the tail being written to show as torn). `repair` takes the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::OpenError;
use crate::format::{SEGMENT_HEADER_LEN, decode_segment_header, index_file_name};
use crate::index::{
    Entry, Index, REGISTRY_FILE_NAME, SegmentFile, decode_checkpoint, decode_registry,
};
use crate::log::{LOCK_FILE_NAME, list_segments};
use crate::scan::{TailVerdict, classify_tail, is_zero_range, scan_segment};
use crate::types::TruncatedTail;

/// What kind of problem `verify` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Damage that open refuses (mid-log).
    Corruption,
    /// Damage at the end of the last segment that open would truncate.
    TornTail,
    /// A checkpoint file that open would ignore and rebuild (harmless).
    Checkpoint,
    /// The stream registry is missing or damaged in a log that retention trimmed: open
    /// refuses ([`OpenError::RegistryLost`]); `repair` rebuilds it, accepting that streams
    /// and organizations whose events were all dropped count from 1 again.
    RegistryLost,
}

/// One problem found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: PathBuf,
    pub offset: u64,
    pub detail: String,
}

/// Result of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub checkpoints_ok: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when open would succeed without truncating anything.
    pub fn is_clean(&self) -> bool {
        self.problems
            .iter()
            .all(|p| p.kind == ProblemKind::Checkpoint)
    }
}

/// Result of [`repair`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The segment cut after its last good record, if any.
    pub truncated: Option<TruncatedTail>,
    /// Files moved aside (renamed with a `.quarantined` suffix): removed bytes of the
    /// truncated segment and every later segment. Nothing is deleted.
    pub quarantined: Vec<PathBuf>,
    pub checkpoints_removed: Vec<PathBuf>,
    /// Last global position of the repaired log.
    pub last_global_position: u64,
    /// The stream registry was missing or damaged in a trimmed log and was rebuilt from the
    /// log (the damaged file, if any, moved aside): streams and organizations whose events
    /// were all dropped count from 1 again.
    pub registry_rebuilt: bool,
}

fn push_view(index: &mut Index, off: u64, r: &crate::format::RecordView<'_>) -> Result<(), String> {
    index.push(&Entry {
        position: r.global_position,
        org_position: r.org_position,
        stream_version: r.stream_version,
        timestamp_micros: r.timestamp_micros,
        id: r.event_id,
        org: r.org,
        stream: r.stream,
        event_type: r.event_type,
        offset: off as u32,
        len: r.len as u32,
        crc: r.crc,
    })
}

/// Outcome of checking one segment.
struct SegmentCheck {
    file_len: u64,
    records: u64,
    good_end: u64,
    last_position: u64,
    /// (offset, detail, torn?)
    problem: Option<(u64, String, bool)>,
}

/// Verifies one segment into `index` (which must end right before it).
fn check_segment(
    index: &mut Index,
    path: &Path,
    name_first: u64,
    is_last: bool,
    mut progress: impl FnMut(u64),
) -> io::Result<SegmentCheck> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut header, 0)?;
    let first = match decode_segment_header(&header) {
        Ok(f) if f == name_first => f,
        Ok(f) => {
            let d = format!("header says first position {f}, file name says {name_first}");
            return Ok(SegmentCheck {
                file_len,
                records: 0,
                good_end: 0,
                last_position: 0,
                problem: Some((0, d, false)),
            });
        }
        Err(d) => {
            let torn = is_last && file_len <= SEGMENT_HEADER_LEN;
            return Ok(SegmentCheck {
                file_len,
                records: 0,
                good_end: 0,
                last_position: 0,
                problem: Some((0, d, torn)),
            });
        }
    };
    if !index.segments.is_empty() && first != index.last_position + 1 {
        let d = format!(
            "segment starts at position {first} but the previous one ends at {}",
            index.last_position
        );
        return Ok(SegmentCheck {
            file_len,
            records: 0,
            good_end: 0,
            last_position: 0,
            problem: Some((0, d, false)),
        });
    }
    if index.segments.is_empty() {
        index.last_position = first - 1;
    }
    let read = file.try_clone()?;
    index.push_segment(
        std::sync::Arc::new(SegmentFile {
            path: path.to_path_buf(),
            first_position: first,
            file: read,
        }),
        SEGMENT_HEADER_LEN,
    );
    let mut n = 0u64;
    let res = scan_segment(&file, SEGMENT_HEADER_LEN, file_len, first, |off, r| {
        n += 1;
        if n.is_multiple_of(65_536) {
            progress(off);
        }
        push_view(index, off, r)
    })?;
    progress(file_len);
    let mut check = SegmentCheck {
        file_len,
        records: res.records,
        good_end: res.good_end,
        last_position: res.last_position,
        problem: None,
    };
    if let Some((off, why)) = res.rejected {
        check.problem = Some((off, why, false));
    } else if let Some((off, why)) = res.bad {
        if is_last && is_zero_range(&file, res.good_end, file_len)? {
            // Preallocated space after the last record: normal, open trims it.
            return Ok(check);
        }
        let torn =
            is_last && classify_tail(&file, off, file_len, res.last_position)? == TailVerdict::Torn;
        check.problem = Some((off, why, torn));
    }
    Ok(check)
}

/// Checks every record of every segment and every checkpoint file. `progress(done, total)`
/// is called with byte counts as the scan advances.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, OpenError> {
    let segs = list_segments(dir)?;
    let mut report = VerifyReport::default();
    if segs.is_empty() {
        // No segment, yet the registry or checkpoints of a log: its segments were lost (a
        // clean empty directory has neither). "0 segments, ok" hid that.
        let leftover = fs::read_dir(dir)
            .map_err(|e| OpenError::io(dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| n == REGISTRY_FILE_NAME)
                    || p.extension().is_some_and(|x| x == "idx")
            });
        if let Some(file) = leftover {
            report.problems.push(Problem {
                kind: ProblemKind::Corruption,
                file,
                offset: 0,
                detail: "no segment files, yet this file of a log is here: the log's segments \
                         are missing"
                    .into(),
            });
        }
    }
    let mut total = 0u64;
    for (_, p) in &segs {
        total += fs::metadata(p).map_err(|e| OpenError::io(p, e))?.len();
    }
    let mut done = 0u64;
    let mut index = Index::default();
    // The stream registry: checkpoints are only usable with the registry they were written for.
    let registry_path = dir.join(REGISTRY_FILE_NAME);
    let mut registry_epoch = None;
    let trimmed = segs.first().is_some_and(|(first, _)| *first > 1);
    match fs::read(&registry_path) {
        Ok(bytes) => match decode_registry(&bytes) {
            Ok(r) => {
                registry_epoch = Some(r.epoch);
                report.checkpoints_ok += 1;
            }
            Err(detail) => report.problems.push(Problem {
                kind: if trimmed {
                    ProblemKind::RegistryLost
                } else {
                    ProblemKind::Checkpoint
                },
                file: registry_path.clone(),
                offset: 0,
                detail,
            }),
        },
        Err(e) if trimmed => report.problems.push(Problem {
            kind: ProblemKind::RegistryLost,
            file: registry_path.clone(),
            offset: 0,
            detail: format!("missing or unreadable ({e}) in a log that retention trimmed"),
        }),
        Err(_) => {}
    }
    for (i, (first, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let check = check_segment(&mut index, path, *first, is_last, |off| {
            progress(done + off, total)
        })
        .map_err(|e| OpenError::io(path, e))?;
        report.segments += 1;
        report.records += check.records;
        report.bytes += check.file_len;
        done += check.file_len;
        if let Some((offset, detail, torn)) = check.problem {
            let kind = if torn {
                ProblemKind::TornTail
            } else {
                ProblemKind::Corruption
            };
            report.problems.push(Problem {
                kind,
                file: path.clone(),
                offset,
                detail,
            });
            // Later segments are still checked, each on its own.
            index = Index::default();
            continue;
        }
        let cp_path = dir.join(index_file_name(*first));
        if let Ok(bytes) = fs::read(&cp_path) {
            let seg = index.segments.last();
            let verdict = match (decode_checkpoint(&bytes), seg) {
                (Err(e), _) => Err(e),
                (Ok(cp), _) if Some(cp.registry_epoch) != registry_epoch => {
                    Err("written against another (or a missing) stream registry".to_string())
                }
                (Ok(cp), Some(seg)) => {
                    let matches = cp.first_position == seg.first_position
                        && cp.end_offset <= seg.end_offset
                        && cp.records <= seg.len()
                        && (cp.records == 0
                            || cp.last_offset()
                                == seg.offsets.get(cp.records - 1).map(|o| u64::from(*o)));
                    if matches {
                        Ok(())
                    } else {
                        Err("does not match the segment".to_string())
                    }
                }
                (Ok(_), None) => Err("no segment".to_string()),
            };
            match verdict {
                Ok(()) => report.checkpoints_ok += 1,
                Err(detail) => report.problems.push(Problem {
                    kind: ProblemKind::Checkpoint,
                    file: cp_path,
                    offset: 0,
                    detail,
                }),
            }
        }
    }
    Ok(report)
}

/// Base64 (standard alphabet, padded) for dumping binary metadata/payloads.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Writes `"name":<value>` for opaque bytes: the JSON itself when the bytes are valid JSON
/// (newlines, which valid JSON can only hold as whitespace, become spaces), else
/// `"name_text":"…"` for other UTF-8, else `"name_base64":"…"`.
fn json_bytes_field(line: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        line.extend_from_slice(format!("\"{name}\":").as_bytes());
        line.extend(
            bytes
                .iter()
                .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }),
        );
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        line.extend_from_slice(format!("\"{name}_text\":").as_bytes());
        line.extend_from_slice(json_string(text).as_bytes());
    } else {
        line.extend_from_slice(format!("\"{name}_base64\":\"{}\"", base64(bytes)).as_bytes());
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// Prints every record with global position `>= from_position` as one JSON object per line:
/// `global_position`, `org_position`, `org` and `id` (UUID strings), `stream`,
/// `stream_version`, `event_type`, `timestamp_micros`, then metadata and payload, each as
/// `metadata` (the JSON value itself, when the bytes are valid JSON; newlines, which valid
/// JSON can only hold as whitespace, become spaces, everything else is byte-exact), else
/// `metadata_text` (a JSON string, when the bytes are UTF-8), else `metadata_base64`
/// (standard alphabet, padded); the same for `payload`. Stops with an error at corruption;
/// stops quietly at a torn tail. Returns the number of records printed.
pub fn dump(dir: &Path, out: &mut dyn Write, from_position: u64) -> Result<u64, OpenError> {
    let segs = list_segments(dir)?;
    let mut printed = 0u64;
    let mut out_err: Option<io::Error> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        if segs
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= from_position)
        {
            continue;
        }
        let io_err = |e| OpenError::io(path, e);
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
        file.read_exact_at(&mut header, 0).map_err(io_err)?;
        decode_segment_header(&header).map_err(|detail| OpenError::Corrupt {
            segment: path.clone(),
            offset: 0,
            detail,
        })?;
        let mut line = Vec::with_capacity(1024);
        let res = scan_segment(&file, SEGMENT_HEADER_LEN, file_len, *first, |_, r| {
            if r.global_position < from_position {
                return Ok(());
            }
            line.clear();
            line.extend_from_slice(
                format!(
                    "{{\"global_position\":{},\"org_position\":{},\"org\":\"{}\",\"stream\":{},\
                     \"stream_version\":{},\"event_type\":{},\"id\":\"{}\",\"timestamp_micros\":{},",
                    r.global_position,
                    r.org_position,
                    r.org,
                    json_string(r.stream),
                    r.stream_version,
                    json_string(r.event_type),
                    r.event_id,
                    r.timestamp_micros
                )
                .as_bytes(),
            );
            json_bytes_field(&mut line, "metadata", r.metadata);
            line.push(b',');
            json_bytes_field(&mut line, "payload", r.payload);
            line.extend_from_slice(b"}\n");
            out.write_all(&line).map_err(|e| {
                let msg = e.to_string();
                out_err = Some(e);
                msg
            })?;
            printed += 1;
            Ok(())
        })
        .map_err(io_err)?;
        if let Some(e) = out_err {
            return Err(OpenError::io("<dump output>", e));
        }
        if let Some((offset, detail)) = res.rejected {
            return Err(OpenError::Corrupt {
                segment: path.clone(),
                offset,
                detail,
            });
        }
        if let Some((offset, detail)) = res.bad {
            let is_last = i + 1 == segs.len();
            let torn = is_last
                && classify_tail(&file, offset, file_len, res.last_position).map_err(io_err)?
                    == TailVerdict::Torn;
            if !torn {
                return Err(OpenError::Corrupt {
                    segment: path.clone(),
                    offset,
                    detail,
                });
            }
        }
    }
    out.flush().map_err(|e| OpenError::io("<dump output>", e))?;
    Ok(printed)
}

/// Cuts the log after its last good record: the first damaged segment is truncated there and
/// every later segment is moved aside. Removed bytes are kept in `*.quarantined` files. This
/// is the CLI's explicit `--yes` action; open never does it for mid-log damage.
pub fn repair(dir: &Path) -> Result<RepairReport, OpenError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| OpenError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(OpenError::io(&lock_path, e)),
    }
    let segs = list_segments(dir)?;
    let mut report = RepairReport::default();
    let mut index = Index::default();
    let mut cut: Option<usize> = None;
    let trimmed = segs.first().is_some_and(|(first, _)| *first > 1);
    // The oldest segment of a trimmed log, moved aside whole: (where it was, where it went).
    let mut dropped_first: Option<(PathBuf, PathBuf)> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let check = check_segment(&mut index, path, *first, is_last, |_| {})
            .map_err(|e| OpenError::io(path, e))?;
        let Some((bad_off, why, _)) = check.problem else {
            report.last_global_position = index.last_position;
            continue;
        };
        let io_err = |e| OpenError::io(path, e);
        if check.good_end >= SEGMENT_HEADER_LEN {
            // Keep the good prefix; quarantine the rest.
            let file = File::open(path).map_err(io_err)?;
            let mut rest = vec![0u8; (check.file_len - check.good_end) as usize];
            file.read_exact_at(&mut rest, check.good_end)
                .map_err(io_err)?;
            // Durable before the cut: a crash in between must not lose the cut bytes.
            let q = unused_name(path.with_extension(format!("seg.{}.quarantined", check.good_end)));
            write_durably(&q, &rest).map_err(|e| OpenError::io(&q, e))?;
            let _ = File::open(dir).and_then(|d| d.sync_all());
            report.quarantined.push(q);
            let w = OpenOptions::new().write(true).open(path).map_err(io_err)?;
            w.set_len(check.good_end).map_err(io_err)?;
            w.sync_all().map_err(io_err)?;
            report.truncated = Some(TruncatedTail {
                segment: path.clone(),
                offset: check.good_end,
                truncated_bytes: check.file_len - check.good_end,
                reason: format!("at byte {bad_off}: {why}"),
            });
            report.last_global_position = check.last_position.max(index.last_position);
            cut = Some(i + 1);
        } else if i == 0 && *first > 1 && segs.len() > 1 {
            // The oldest segment a trimmed log kept is unreadable from its header on: it goes
            // as retention would have dropped it; the registry keeps the numbers, and the
            // later segments are checked as the log's new start.
            let q = unused_name(path.with_extension("seg.quarantined"));
            fs::rename(path, &q).map_err(|e| OpenError::io(path, e))?;
            let _ = File::open(dir).and_then(|d| d.sync_all());
            report.quarantined.push(q.clone());
            dropped_first = Some((path.clone(), q));
            index = Index::default();
            continue;
        } else if trimmed && (i == 0 || (i == 1 && dropped_first.is_some())) {
            // Nothing would be left of a log retention trimmed: the next open would start
            // it again at position 1 and hand out positions and stream versions a second
            // time. That is not a repair: the oldest segment goes back where it was.
            if let Some((original, q)) = dropped_first.take() {
                fs::rename(&q, &original).map_err(|e| OpenError::io(&q, e))?;
            }
            return Err(OpenError::Corrupt {
                segment: path.clone(),
                offset: bad_off,
                detail: format!(
                    "{why}; cutting here would leave no segment of a log retention trimmed \
                     (it would start over at position 1, reusing positions): repair \
                     refuses; restore the segment from a backup"
                ),
            });
        } else {
            // The header itself is bad or out of sequence: the whole file goes.
            cut = Some(i);
        }
        break;
    }
    if let Some(from) = cut {
        if let Some((first, _)) = segs.get(from.saturating_sub(1)).filter(|_| from > 0) {
            remove_checkpoint(dir, *first, &mut report);
        }
        for (first, path) in &segs[from..] {
            let q = unused_name(path.with_extension("seg.quarantined"));
            fs::rename(path, &q).map_err(|e| OpenError::io(path, e))?;
            report.quarantined.push(q);
            remove_checkpoint(dir, *first, &mut report);
        }
        if from == 0 {
            // No segment is left (of a log that started at 1): its registry goes too, or
            // `verify` would take it for a log whose segments were lost.
            let registry = dir.join(REGISTRY_FILE_NAME);
            if registry.exists() {
                let q = unused_name(registry.with_extension("idx.quarantined"));
                fs::rename(&registry, &q).map_err(|e| OpenError::io(&registry, e))?;
                report.quarantined.push(q);
            }
        }
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    if let (Some(_), Some((first, _))) = (&dropped_first, segs.first()) {
        remove_checkpoint(dir, *first, &mut report);
    }
    if segs.first().is_some_and(|(first, _)| *first > 1) {
        rebuild_lost_registry(dir, &mut index, &mut report)?;
    }
    Ok(report)
}

/// Whether a process (a running server) holds the log's directory lock. Reading a log that
/// is being appended to reports its moving tail as damage.
pub fn in_use(dir: &Path) -> Result<bool, OpenError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = match OpenOptions::new().read(true).open(&lock_path) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(OpenError::io(&lock_path, e)),
    };
    match lock.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(fs::TryLockError::WouldBlock) => Ok(true),
        Err(fs::TryLockError::Error(e)) => Err(OpenError::io(&lock_path, e)),
    }
}

/// A name for bytes moved aside that no earlier repair used: `candidate`, else `candidate.2`,
/// `candidate.3`, … (a second repair at the same offset used to replace the first one's copy).
fn unused_name(candidate: PathBuf) -> PathBuf {
    if !candidate.exists() {
        return candidate;
    }
    let mut n = 2u64;
    loop {
        let next = PathBuf::from(format!("{}.{n}", candidate.display()));
        if !next.exists() {
            return next;
        }
        n += 1;
    }
}

/// A new file holding `bytes`, synced.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// In a trimmed log whose registry is missing or damaged: moves a damaged one aside and writes
/// one from what the segments hold (a new epoch, so every checkpoint of the old one is
/// rebuilt at the next open).
fn rebuild_lost_registry(
    dir: &Path,
    index: &mut Index,
    report: &mut RepairReport,
) -> Result<(), OpenError> {
    let path = dir.join(REGISTRY_FILE_NAME);
    let intact = fs::read(&path)
        .ok()
        .is_some_and(|bytes| decode_registry(&bytes).is_ok());
    if intact {
        return Ok(());
    }
    if path.exists() {
        let q = path.with_extension("idx.quarantined");
        fs::rename(&path, &q).map_err(|e| OpenError::io(&path, e))?;
        report.quarantined.push(q);
    }
    index.registry_epoch = crate::log::new_epoch();
    crate::writer::write_atomic(
        dir,
        REGISTRY_FILE_NAME,
        &crate::index::encode_registry(index),
    )
    .map_err(|e| OpenError::io(&path, e))?;
    report.registry_rebuilt = true;
    Ok(())
}

fn remove_checkpoint(dir: &Path, first: u64, report: &mut RepairReport) {
    let p = dir.join(index_file_name(first));
    if fs::remove_file(&p).is_ok() {
        report.checkpoints_removed.push(p);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn json_payloads_are_embedded_and_others_are_escaped_or_encoded() {
        let mut l = Vec::new();
        json_bytes_field(&mut l, "p", b"{\"a\":\n1}");
        assert_eq!(l, b"\"p\":{\"a\": 1}");
        l.clear();
        json_bytes_field(&mut l, "p", "not json \u{2028}".as_bytes());
        assert_eq!(
            String::from_utf8(l.clone()).unwrap(),
            "\"p_text\":\"not json \u{2028}\""
        );
        l.clear();
        json_bytes_field(&mut l, "p", &[0xff]);
        assert_eq!(l, b"\"p_base64\":\"/w==\"");
    }
}
