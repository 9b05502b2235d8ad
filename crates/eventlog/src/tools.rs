//! Offline tools for the CLI: [`verify`], [`dump`] and [`repair`].
//!
//! `verify` and `dump` only read (they take no lock; run them on a stopped server, or expect
//! the tail being written to show as torn). `repair` takes the directory lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::OpenError;
use crate::format::{
    RECORD_MIN_LEN, RECORD_PREFIX_LEN, SEGMENT_HEADER_LEN, body_len_of, decode_record,
    decode_segment_header, encode_segment_header, index_file_name, newer_format_version,
};
use crate::index::{
    Entry, Index, REGISTRY_FILE_NAME, SegmentFile, decode_checkpoint, decode_registry,
};
use crate::log::{LOCK_FILE_NAME, list_segments};
use crate::scan::{TailVerdict, classify_tail, find_valid_records, is_zero_range, scan_segment};
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
    /// A segment written by a newer version of the engine (its header is intact, its format
    /// version above [`crate::FORMAT_VERSION`]): not damage, upgrade. `repair` refuses to
    /// touch the log.
    NewerFormat,
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
    /// Segments whose damaged header was rewritten from the file name (their records
    /// verified from the name's position on); each old header is kept in a
    /// `.seg.header.quarantined` file listed in `quarantined`.
    pub headers_rebuilt: Vec<PathBuf>,
    /// Whole segment files moved aside.
    pub segments_moved_aside: usize,
    /// Records whose checksums verify in what was moved aside (whole segments and cut
    /// bytes; a torn tail's records of the write the crash interrupted count here too).
    pub records_moved_aside: u64,
    /// The lowest and highest global position of those records.
    pub positions_moved_aside: Option<(u64, u64)>,
}

/// Options of [`repair`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Accept moving aside records whose checksums verify (the CLI's
    /// `--discard-valid-records`): the records after a damaged one in the middle of a segment,
    /// whole later segments, a trimmed log's oldest segment that cannot be read from its
    /// header on. Without it [`repair`] refuses such a cut with
    /// [`OpenError::RepairWouldDiscard`] and changes nothing. A torn tail, and bytes in which
    /// no record verifies, are cut without it.
    pub discard_valid_records: bool,
}

/// Records whose checksums verify in bytes a cut would move aside.
#[derive(Default)]
struct Moved {
    records: u64,
    positions: Option<(u64, u64)>,
}

impl Moved {
    /// Counts the records in `from..to` of `path` with global positions in `positions`.
    fn count(
        &mut self,
        path: &Path,
        from: u64,
        to: u64,
        positions: std::ops::RangeInclusive<u64>,
    ) -> Result<(), OpenError> {
        let file = File::open(path).map_err(|e| OpenError::io(path, e))?;
        find_valid_records(&file, from, to, positions, |_, r| {
            self.records += 1;
            let p = r.global_position;
            self.positions = Some(self.positions.map_or((p, p), |(a, b)| (a.min(p), b.max(p))));
        })
        .map_err(|e| OpenError::io(path, e))
    }

    fn add(&mut self, other: &Moved) {
        self.records += other.records;
        self.positions = match (self.positions, other.positions) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
    }
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
    /// End of the last complete append (where the segment can be cut).
    good_end: u64,
    /// Global position of the last record before `good_end` (or `first - 1`).
    last_position: u64,
    /// (offset, detail, torn?)
    problem: Option<(u64, String, bool)>,
    /// The header is intact, but of a newer format version (nothing was scanned).
    newer_format: Option<u32>,
    /// The header is damaged, yet the file name's first position continues the log and the
    /// segment's first record verifies right after the header with that position (or, in
    /// the last segment, only zeros follow the header): the records were scanned from there,
    /// and `repair` rewrites the header from the file name. What verify reports.
    header_damage: Option<String>,
}

impl SegmentCheck {
    fn header_problem(file_len: u64, detail: String, torn: bool) -> Self {
        SegmentCheck {
            file_len,
            records: 0,
            good_end: 0,
            last_position: 0,
            problem: Some((0, detail, torn)),
            newer_format: None,
            header_damage: None,
        }
    }
}

/// The first `SEGMENT_HEADER_LEN` bytes of a segment (fewer if the file is shorter).
fn read_header(file: &File, file_len: u64) -> io::Result<Vec<u8>> {
    let mut header = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut header, 0)?;
    Ok(header)
}

/// Whether a segment whose header is damaged can have it rewritten from its file name: the
/// first record the writer would have put after the header verifies there (global position
/// `first`, the first of its append, its write starting at the header's end), or, in the
/// last segment, only zeros follow the header (the writer preallocates). Says what was found.
fn header_rebuildable(
    file: &File,
    file_len: u64,
    first: u64,
    is_last: bool,
) -> io::Result<Result<&'static str, String>> {
    let start = SEGMENT_HEADER_LEN;
    if file_len <= start {
        return Ok(Err("nothing follows it".into()));
    }
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    if file_len >= start + RECORD_PREFIX_LEN as u64 {
        file.read_exact_at(&mut prefix, start)?;
        if let Ok(n) = body_len_of(&prefix) {
            let len = (RECORD_PREFIX_LEN + n) as u64;
            if start + len <= file_len {
                let mut rec = vec![0u8; len as usize];
                file.read_exact_at(&mut rec, start)?;
                if let Ok(r) = decode_record(&rec) {
                    return Ok(
                        if r.global_position == first
                            && r.batch_index == 0
                            && u64::from(r.frame_start) == start
                        {
                            Ok("its first record verifies")
                        } else {
                            Err(format!(
                                "the record after it has global position {}, not the file \
                                 name's {first}",
                                r.global_position
                            ))
                        },
                    );
                }
            }
        }
    }
    if is_last && is_zero_range(file, start, file_len)? {
        return Ok(Ok("only zeros follow it"));
    }
    Ok(Err("the record after it does not verify".into()))
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
    let header = read_header(&file, file_len)?;
    let mut header_damage = None;
    let first = match decode_segment_header(&header) {
        Ok(f) if f == name_first => f,
        Ok(f) => {
            let d = format!("header says first position {f}, file name says {name_first}");
            return Ok(SegmentCheck::header_problem(file_len, d, false));
        }
        Err(d) => {
            if let Some(version) = newer_format_version(&header) {
                return Ok(SegmentCheck {
                    newer_format: Some(version),
                    ..SegmentCheck::header_problem(file_len, d, false)
                });
            }
            if is_last && file_len <= SEGMENT_HEADER_LEN {
                // A crash while creating the segment: open deletes it.
                return Ok(SegmentCheck::header_problem(file_len, d, true));
            }
            let rebuildable = if !index.segments.is_empty() && name_first != index.last_position + 1
            {
                Err(format!(
                    "the file name's first position {name_first} does not continue the \
                     previous segment, which ends at {}",
                    index.last_position
                ))
            } else {
                header_rebuildable(&file, file_len, name_first, is_last)?
            };
            match rebuildable {
                Ok(found) => {
                    header_damage = Some(format!(
                        "{d}; {found} as this segment's at position {name_first} (the file \
                         name's): `repair --yes` rewrites the header from the file name"
                    ));
                    name_first
                }
                Err(why) => {
                    let d = format!("{d}; not rebuilt from the file name: {why}");
                    return Ok(SegmentCheck::header_problem(file_len, d, false));
                }
            }
        }
    };
    if !index.segments.is_empty() && first != index.last_position + 1 {
        let d = format!(
            "segment starts at position {first} but the previous one ends at {}",
            index.last_position
        );
        return Ok(SegmentCheck::header_problem(file_len, d, false));
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
    // Global position of the first record of the append being delivered: if the index
    // rejects one of its records, the segment can only be cut before that append.
    let mut append_first = first;
    let res = scan_segment(&file, SEGMENT_HEADER_LEN, file_len, first, |off, r| {
        n += 1;
        if n.is_multiple_of(65_536) {
            progress(off);
        }
        if r.batch_index == 0 {
            append_first = r.global_position;
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
        newer_format: None,
        header_damage,
    };
    if let Some((off, why)) = res.rejected {
        check.last_position = append_first - 1;
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
        if let Some(detail) = check.header_damage {
            report.problems.push(Problem {
                kind: ProblemKind::Corruption,
                file: path.clone(),
                offset: 0,
                detail,
            });
        }
        if let Some((offset, detail, torn)) = check.problem {
            let kind = if check.newer_format.is_some() {
                ProblemKind::NewerFormat
            } else if torn {
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
                    if !matches {
                        Err("does not match the segment".to_string())
                    } else {
                        // The last record's checksum too, as open checks it.
                        File::open(path)
                            .map_err(|e| e.to_string())
                            .and_then(|file| crate::log::check_checkpoint_tail(&file, &cp))
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
        let header = read_header(&file, file_len).map_err(io_err)?;
        if let Some(version) = newer_format_version(&header) {
            return Err(OpenError::NewerFormat {
                segment: path.clone(),
                version,
            });
        }
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

/// Repairs the log for [`EventLog::open`](crate::EventLog::open) (the CLI's `repair --yes`;
/// open never does this for mid-log damage). Plans first, reading everything, and changes
/// nothing if it refuses:
///
/// - A segment of a newer format version: refused with [`OpenError::NewerFormat`] (upgrade),
///   whatever the options.
/// - A damaged segment header whose segment's records verify from the file name's first
///   position on (the name continues the log, and the first record sits right after the
///   header with that position): the header is rewritten from the file name (it holds
///   nothing else: magic, version, length, first position, zero, checksum), the old bytes
///   kept in a `.seg.header.quarantined` file. No record is lost.
/// - Otherwise the log is cut after its last good record: the first damaged segment is
///   truncated there (or moved aside whole when its header cannot be read or rebuilt) and
///   every later segment is moved aside. If what is cut holds records whose checksums verify
///   (other than the records of a torn tail's interrupted write, which open itself would
///   cut), the cut is refused with [`OpenError::RepairWouldDiscard`] unless
///   [`RepairOptions::discard_valid_records`] accepts it.
/// - A trimmed log's oldest segment unreadable from its header on is moved aside alone (as
///   retention would have dropped it); a cut that would leave a trimmed log no segment is
///   refused.
///
/// Removed bytes are kept in `*.quarantined` files; nothing is deleted but checkpoints.
pub fn repair(dir: &Path, options: RepairOptions) -> Result<RepairReport, OpenError> {
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
    // A segment of a newer format is not damage: nothing is cut or rewritten, whatever the
    // options (it used to be moved aside as if its header were damaged).
    for (_, path) in &segs {
        let header = File::open(path)
            .and_then(|f| {
                let len = f.metadata()?.len();
                read_header(&f, len)
            })
            .map_err(|e| OpenError::io(path, e))?;
        if let Some(version) = newer_format_version(&header) {
            return Err(OpenError::NewerFormat {
                segment: path.clone(),
                version,
            });
        }
    }

    // 1. The plan. Nothing below changes a file until it is complete.
    let mut report = RepairReport::default();
    let mut index = Index::default();
    let trimmed = segs.first().is_some_and(|(first, _)| *first > 1);
    let mut rebuild: Vec<usize> = Vec::new();
    // The oldest segment of a trimmed log, unreadable from its header on: moved aside whole.
    let mut drop_oldest = false;
    // The segment cut after its last good record: (its index, where, why).
    let mut truncate: Option<(usize, u64, u64, String)> = None;
    // Segments from this one on are moved aside whole.
    let mut cut_from: Option<usize> = None;
    // Intact records moved aside: all of them, and those that need the caller's consent.
    let mut moved = Moved::default();
    let mut refusable = Moved::default();
    // Where the first cut that needs consent is: (segment, offset, what is damaged there).
    let mut refuse_at: Option<(PathBuf, u64, String)> = None;
    let total_len = |from: usize| -> Result<u64, OpenError> {
        segs[from..].iter().try_fold(0u64, |sum, (_, p)| {
            Ok(sum + fs::metadata(p).map_err(|e| OpenError::io(p, e))?.len())
        })
    };
    for (i, (first, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let check = check_segment(&mut index, path, *first, is_last, |_| {})
            .map_err(|e| OpenError::io(path, e))?;
        if let Some(version) = check.newer_format {
            return Err(OpenError::NewerFormat {
                segment: path.clone(),
                version,
            });
        }
        if check.header_damage.is_some() {
            rebuild.push(i);
        }
        let Some((bad_off, why, torn)) = check.problem else {
            report.last_global_position = index.last_position;
            continue;
        };
        // Positions a record moved aside can have: after what is kept, and no more than one
        // per smallest record of what is moved aside past the last segment's first position
        // (a segment file may be missing in between). A cheap filter for the search, which
        // otherwise checksums whatever random bytes look like a record length.
        let after = |kept: u64, bytes: u64| {
            let last_named = segs.last().map_or(0, |(first, _)| *first);
            kept + 1..=kept.max(last_named) + bytes / RECORD_MIN_LEN as u64 + 1
        };
        if check.good_end >= SEGMENT_HEADER_LEN {
            // Keep the good prefix; the rest of the segment and every later one go.
            let kept = check.last_position;
            report.last_global_position = kept;
            truncate = Some((
                i,
                check.good_end,
                check.file_len,
                format!("at byte {bad_off}: {why}"),
            ));
            cut_from = Some(i + 1);
            let range = after(kept, total_len(i)?);
            let mut here = Moved::default();
            here.count(path, check.good_end, check.file_len, range.clone())?;
            let mut later = Moved::default();
            for (_, p) in &segs[i + 1..] {
                let len = fs::metadata(p).map_err(|e| OpenError::io(p, e))?.len();
                later.count(p, 0, len, range.clone())?;
            }
            // A torn tail is the write a crash interrupted (never acknowledged): open
            // itself cuts it, valid-looking records of that write included.
            if !(is_last && torn) {
                refusable.add(&here);
            }
            refusable.add(&later);
            if refusable.records > 0 && refuse_at.is_none() {
                refuse_at = Some((path.clone(), bad_off, why.clone()));
            }
            moved.add(&here);
            moved.add(&later);
        } else if i == 0 && trimmed && segs.len() > 1 {
            // The oldest segment a trimmed log kept is unreadable from its header on: it goes
            // as retention would have dropped it; the registry keeps the numbers, and the
            // later segments are checked as the log's new start.
            let mut here = Moved::default();
            here.count(path, 0, check.file_len, 1..=segs[1].0.saturating_sub(1))?;
            if here.records > 0 {
                refuse_at = Some((path.clone(), bad_off, why.clone()));
            }
            refusable.add(&here);
            moved.add(&here);
            drop_oldest = true;
            index = Index::default();
            continue;
        } else if trimmed && (i == 0 || (i == 1 && drop_oldest)) {
            // Nothing would be left of a log retention trimmed: the next open would start
            // it again at position 1 and hand out positions and stream versions a second
            // time. That is not a repair, whatever the options.
            return Err(OpenError::Corrupt {
                segment: path.clone(),
                offset: bad_off,
                detail: format!(
                    "{why}; cutting here would leave no segment of a log retention trimmed \
                     (it would start over at position 1, reusing positions): repair \
                     refuses, and nothing was changed; restore the segment from a backup"
                ),
            });
        } else {
            // The header is bad (and cannot be rebuilt) or out of sequence: the whole file
            // goes, and every later one.
            let kept = index.last_position;
            report.last_global_position = kept;
            cut_from = Some(i);
            let range = after(kept, total_len(i)?);
            let mut here = Moved::default();
            for (_, p) in &segs[i..] {
                let len = fs::metadata(p).map_err(|e| OpenError::io(p, e))?.len();
                here.count(p, 0, len, range.clone())?;
            }
            if here.records > 0 && refuse_at.is_none() {
                refuse_at = Some((path.clone(), bad_off, why.clone()));
            }
            refusable.add(&here);
            moved.add(&here);
        }
        break;
    }
    if refusable.records > 0
        && !options.discard_valid_records
        && let Some((segment, offset, reason)) = refuse_at
    {
        let (first_position, last_position) = refusable.positions.unwrap_or_default();
        return Err(OpenError::RepairWouldDiscard {
            segment,
            offset,
            reason,
            records: refusable.records,
            first_position,
            last_position,
        });
    }
    report.records_moved_aside = moved.records;
    report.positions_moved_aside = moved.positions;

    // 2. The changes, each durable before the next.
    let sync_dir = || {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    };
    for &i in &rebuild {
        let (first, path) = &segs[i];
        let io_err = |e| OpenError::io(path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let old = read_header(&file, SEGMENT_HEADER_LEN).map_err(io_err)?;
        let q = unused_name(path.with_extension("seg.header.quarantined"));
        write_durably(&q, &old).map_err(|e| OpenError::io(&q, e))?;
        sync_dir();
        report.quarantined.push(q);
        file.write_all_at(&encode_segment_header(*first), 0)
            .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        report.headers_rebuilt.push(path.clone());
    }
    if drop_oldest && let Some((first, path)) = segs.first() {
        let q = unused_name(path.with_extension("seg.quarantined"));
        fs::rename(path, &q).map_err(|e| OpenError::io(path, e))?;
        sync_dir();
        report.quarantined.push(q);
        report.segments_moved_aside += 1;
        remove_checkpoint(dir, *first, &mut report);
    }
    if let Some((i, good_end, file_len, reason)) = truncate {
        let path = &segs[i].1;
        let io_err = |e| OpenError::io(path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let mut rest = vec![0u8; (file_len - good_end) as usize];
        file.read_exact_at(&mut rest, good_end).map_err(io_err)?;
        // Durable before the cut: a crash in between must not lose the cut bytes.
        let q = unused_name(path.with_extension(format!("seg.{good_end}.quarantined")));
        write_durably(&q, &rest).map_err(|e| OpenError::io(&q, e))?;
        sync_dir();
        report.quarantined.push(q);
        file.set_len(good_end).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        report.truncated = Some(TruncatedTail {
            segment: path.clone(),
            offset: good_end,
            truncated_bytes: file_len - good_end,
            reason,
        });
    }
    if let Some(from) = cut_from {
        if let Some((first, _)) = segs.get(from.saturating_sub(1)).filter(|_| from > 0) {
            remove_checkpoint(dir, *first, &mut report);
        }
        for (first, path) in &segs[from..] {
            let q = unused_name(path.with_extension("seg.quarantined"));
            fs::rename(path, &q).map_err(|e| OpenError::io(path, e))?;
            report.quarantined.push(q);
            report.segments_moved_aside += 1;
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
        sync_dir();
    }
    if trimmed {
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
