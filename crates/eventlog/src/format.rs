//! Byte-level encoding of segment headers and records (the on-disk format, version 1).
//!
//! Everything here is pure: no I/O. The crate docs (`lib.rs`) describe the layout for humans;
//! the constants below are the single source of truth for the code.

use crate::types::{EventId, OrgId};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TLEVSEG\0";
/// Version of the segment/record format written by this crate.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes before the record body: `body_len: u32` + `crc32c: u32`.
pub const RECORD_PREFIX_LEN: usize = 8;
/// Fixed part of the body (everything before the variable-length fields).
pub const BODY_FIXED_LEN: usize = 84;
/// Smallest possible record (empty metadata and payload, 1-byte names).
pub const RECORD_MIN_LEN: usize = RECORD_PREFIX_LEN + BODY_FIXED_LEN + 2;
/// Largest body the decoder accepts at all (the configured limits are lower).
pub const BODY_LEN_LIMIT: usize = 64 * 1024 * 1024;

/// Extension of segment files.
pub const SEGMENT_EXT: &str = "seg";
/// Extension of per-segment index checkpoint files.
pub const INDEX_EXT: &str = "idx";

/// File name of the segment whose first record has global position `first_position`.
pub fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.{SEGMENT_EXT}")
}

/// File name of the index checkpoint of that segment.
pub fn index_file_name(first_position: u64) -> String {
    format!("{first_position:020}.{INDEX_EXT}")
}

/// Parses `00000000000000000001.seg` into its first position.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes the 32-byte header of a segment whose first record will be `first_position`.
pub fn encode_segment_header(first_position: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_position.to_le_bytes());
    // 24..28 reserved, zero.
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header, returning its first position or a reason it is invalid.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!("segment header is {} bytes, expected 32", h.len()));
    }
    if h[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic (not a Trueline segment file)".into());
    }
    let crc = le_u32(&h[28..32]);
    if crc != crc32c::crc32c(&h[0..28]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = le_u32(&h[8..12]);
    if version > FORMAT_VERSION {
        return Err(newer_format_detail(version));
    }
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    if le_u32(&h[12..16]) as u64 != SEGMENT_HEADER_LEN {
        return Err("unexpected segment header length".into());
    }
    let first = le_u64(&h[16..24]);
    if first == 0 {
        return Err("segment header has first position 0".into());
    }
    Ok(first)
}

/// The format version of a segment header that is intact (magic and checksum verify) but
/// newer than this crate's [`FORMAT_VERSION`]: the segment was written by a newer version of
/// the engine. That is not damage, and nothing may rewrite or cut such a segment.
pub fn newer_format_version(h: &[u8]) -> Option<u32> {
    if h.len() < SEGMENT_HEADER_LEN as usize || h[0..8] != SEGMENT_MAGIC {
        return None;
    }
    if le_u32(&h[28..32]) != crc32c::crc32c(&h[0..28]) {
        return None;
    }
    let version = le_u32(&h[8..12]);
    (version > FORMAT_VERSION).then_some(version)
}

/// What the tools and open say about a segment of a newer format version.
pub fn newer_format_detail(version: u32) -> String {
    format!(
        "segment format version {version} is newer than this binary's ({FORMAT_VERSION}): the \
         log was written by a newer Trueline; upgrade needed (this is not damage, and nothing \
         was changed)"
    )
}

/// The fields of one record, as written by the writer.
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    pub global_position: u64,
    pub org_position: u64,
    pub stream_version: u64,
    pub timestamp_micros: i64,
    pub event_id: EventId,
    pub org: OrgId,
    pub frame_start: u32,
    pub batch_index: u16,
    pub batch_count: u16,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub metadata: &'a [u8],
    pub payload: &'a [u8],
}

/// Encoded length of a record with these variable-length field sizes.
pub fn record_len(stream: usize, event_type: usize, metadata: usize, payload: usize) -> usize {
    RECORD_PREFIX_LEN + BODY_FIXED_LEN + stream + event_type + metadata + payload
}

/// Appends the encoded record to `out`. Field lengths must already be within limits.
pub fn encode_record(out: &mut Vec<u8>, r: &RecordFields<'_>) {
    let start = out.len();
    let body_len =
        BODY_FIXED_LEN + r.stream.len() + r.event_type.len() + r.metadata.len() + r.payload.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, patched below
    out.extend_from_slice(&r.global_position.to_le_bytes());
    out.extend_from_slice(&r.org_position.to_le_bytes());
    out.extend_from_slice(&r.stream_version.to_le_bytes());
    out.extend_from_slice(&r.timestamp_micros.to_le_bytes());
    out.extend_from_slice(&r.event_id.0);
    out.extend_from_slice(&r.org.0);
    out.extend_from_slice(&r.frame_start.to_le_bytes());
    out.extend_from_slice(&r.batch_index.to_le_bytes());
    out.extend_from_slice(&r.batch_count.to_le_bytes());
    out.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
    out.extend_from_slice(&(r.event_type.len() as u16).to_le_bytes());
    out.extend_from_slice(&(r.metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(r.stream.as_bytes());
    out.extend_from_slice(r.event_type.as_bytes());
    out.extend_from_slice(r.metadata);
    out.extend_from_slice(r.payload);
    let crc = record_crc(&out[start..start + 4], &out[start + RECORD_PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over the 4 length bytes followed by the body.
pub fn record_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

/// A decoded record borrowing its variable-length fields from the input buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub crc: u32,
    pub global_position: u64,
    pub org_position: u64,
    pub stream_version: u64,
    pub timestamp_micros: i64,
    pub event_id: EventId,
    pub org: OrgId,
    pub frame_start: u32,
    pub batch_index: u16,
    pub batch_count: u16,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub metadata: &'a [u8],
    pub payload: &'a [u8],
    /// Total encoded length including the 8-byte prefix.
    pub len: usize,
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the record does (a torn write, or more bytes are needed).
    Incomplete { needed: usize },
    /// Length field outside the accepted range.
    BadLength(u32),
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the fields are inconsistent (lengths, UTF-8, batch fields).
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Incomplete { needed } => {
                write!(f, "incomplete record ({needed} bytes needed)")
            }
            DecodeError::BadLength(n) => write!(f, "record length field {n} out of range"),
            DecodeError::Checksum => write!(f, "record checksum mismatch"),
            DecodeError::Malformed(why) => write!(f, "malformed record: {why}"),
        }
    }
}

/// Reads the body length from a record prefix, checking it is plausible.
pub fn body_len_of(prefix: &[u8]) -> Result<usize, DecodeError> {
    let n = le_u32(&prefix[0..4]);
    let body = n as usize;
    if !(BODY_FIXED_LEN + 2..=BODY_LEN_LIMIT).contains(&body) {
        return Err(DecodeError::BadLength(n));
    }
    Ok(body)
}

/// Decodes the record starting at `buf[0]`, verifying its checksum and internal consistency.
pub fn decode_record(buf: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    decode_record_checked(buf, true)
}

/// Like [`decode_record`]; `verify_crc = false` is only for bytes verified a moment ago (the
/// scanner decodes the records of a multi-event append twice).
pub fn decode_record_checked(buf: &[u8], verify_crc: bool) -> Result<RecordView<'_>, DecodeError> {
    if buf.len() < RECORD_PREFIX_LEN {
        return Err(DecodeError::Incomplete {
            needed: RECORD_PREFIX_LEN,
        });
    }
    let body_len = body_len_of(buf)?;
    let total = RECORD_PREFIX_LEN + body_len;
    if buf.len() < total {
        return Err(DecodeError::Incomplete { needed: total });
    }
    let crc = le_u32(&buf[4..8]);
    let body = &buf[RECORD_PREFIX_LEN..total];
    if verify_crc && record_crc(&buf[0..4], body) != crc {
        return Err(DecodeError::Checksum);
    }
    decode_body(body, crc, total)
}

fn decode_body(b: &[u8], crc: u32, total: usize) -> Result<RecordView<'_>, DecodeError> {
    let stream_len = le_u16(&b[72..74]) as usize;
    let type_len = le_u16(&b[74..76]) as usize;
    let meta_len = le_u32(&b[76..80]) as usize;
    let payload_len = le_u32(&b[80..84]) as usize;
    if BODY_FIXED_LEN + stream_len + type_len + meta_len + payload_len != b.len() {
        return Err(DecodeError::Malformed(
            "field lengths do not add up to the record length",
        ));
    }
    let batch_index = le_u16(&b[68..70]);
    let batch_count = le_u16(&b[70..72]);
    if batch_count == 0 || batch_index >= batch_count {
        return Err(DecodeError::Malformed("batch index/count out of range"));
    }
    let global_position = le_u64(&b[0..8]);
    let org_position = le_u64(&b[8..16]);
    let stream_version = le_u64(&b[16..24]);
    if global_position == 0 || org_position == 0 || stream_version == 0 {
        return Err(DecodeError::Malformed("position or version is zero"));
    }
    let mut p = BODY_FIXED_LEN;
    let stream = std::str::from_utf8(&b[p..p + stream_len])
        .map_err(|_| DecodeError::Malformed("stream name is not UTF-8"))?;
    p += stream_len;
    let event_type = std::str::from_utf8(&b[p..p + type_len])
        .map_err(|_| DecodeError::Malformed("event type is not UTF-8"))?;
    p += type_len;
    if stream.is_empty() || event_type.is_empty() {
        return Err(DecodeError::Malformed("empty stream name or event type"));
    }
    let metadata = &b[p..p + meta_len];
    p += meta_len;
    let payload = &b[p..p + payload_len];
    Ok(RecordView {
        crc,
        global_position,
        org_position,
        stream_version,
        timestamp_micros: le_u64(&b[24..32]) as i64,
        event_id: EventId(arr16(&b[32..48])),
        org: OrgId(arr16(&b[48..64])),
        frame_start: le_u32(&b[64..68]),
        batch_index,
        batch_count,
        stream,
        event_type,
        metadata,
        payload,
        len: total,
    })
}

/// Cheap pre-check used when searching for valid records after a damaged one: the global
/// position field of a candidate record at `buf[0]` (requires at least 16 bytes).
pub fn peek_global_position(buf: &[u8]) -> u64 {
    le_u64(&buf[8..16])
}

pub fn le_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

pub fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

pub fn arr16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn sample<'a>(stream: &'a str, payload: &'a [u8]) -> RecordFields<'a> {
        RecordFields {
            global_position: 7,
            org_position: 3,
            stream_version: 2,
            timestamp_micros: -5,
            event_id: EventId([1; 16]),
            org: OrgId([2; 16]),
            frame_start: 32,
            batch_index: 0,
            batch_count: 1,
            stream,
            event_type: "t",
            metadata: b"{}",
            payload,
        }
    }

    #[test]
    fn record_round_trips_through_encode_and_decode() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample("s\u{2028}🎉", "é\u{301}".as_bytes()));
        assert_eq!(
            buf.len(),
            record_len("s\u{2028}🎉".len(), 1, 2, "é\u{301}".len())
        );
        let r = decode_record(&buf).unwrap();
        assert_eq!(r.global_position, 7);
        assert_eq!(r.timestamp_micros, -5);
        assert_eq!(r.stream, "s\u{2028}🎉");
        assert_eq!(r.payload, "é\u{301}".as_bytes());
        assert_eq!(r.len, buf.len());
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample("stream", b"payload"));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode_record(&b).is_err(),
                    "flip at byte {i} bit {bit} undetected"
                );
            }
        }
    }

    #[test]
    fn truncated_record_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &sample("stream", b"payload"));
        for n in 0..buf.len() {
            assert!(matches!(
                decode_record(&buf[..n]),
                Err(DecodeError::Incomplete { .. })
            ));
        }
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("x.seg"), None);
        assert_eq!(newer_format_version(&h), None);
    }

    #[test]
    fn a_newer_version_is_told_apart_from_damage() {
        let mut h = encode_segment_header(42);
        h[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(newer_format_version(&h), Some(FORMAT_VERSION + 1));
        assert!(
            decode_segment_header(&h)
                .unwrap_err()
                .contains("upgrade needed")
        );
        // The same version bytes with a checksum that does not verify are damage.
        h[25] ^= 1;
        assert_eq!(newer_format_version(&h), None);
    }
}
