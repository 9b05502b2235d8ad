//! Helpers shared by the test modules.

use std::path::Path;

use trueline_eventlog::{EventId, EventLog, NewEvent, Options, OrgId, RecoveryReport};

/// A small deterministic PRNG (xorshift64*) so failures are reproducible from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        b
    }
}

/// Ids that are unique across a test run (counter + salt).
pub fn id(n: u64) -> EventId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8..].copy_from_slice(&0xA5A5_5A5A_0F0F_F0F0u64.to_le_bytes());
    EventId(b)
}

pub fn org(n: u8) -> OrgId {
    OrgId([n; 16])
}

pub fn event(n: u64, ty: &str, payload: &[u8]) -> NewEvent {
    NewEvent {
        id: id(n),
        event_type: ty.to_string(),
        timestamp_micros: 1_700_000_000_000_000 + n as i64,
        metadata: br#"{"m":1}"#.to_vec(),
        payload: payload.to_vec(),
    }
}

pub fn open(dir: &Path) -> (EventLog, RecoveryReport) {
    EventLog::open(dir, Options::default()).expect("open")
}

pub fn open_with(dir: &Path, options: Options) -> (EventLog, RecoveryReport) {
    EventLog::open(dir, options).expect("open")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("eventlog-test")
        .tempdir()
        .expect("tempdir")
}

/// Segment files of a directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Segment checkpoint files (not the stream registry), sorted.
pub fn checkpoint_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .filter(|p| p.file_name().is_some_and(|n| n != "streams.idx"))
        .collect();
    v.sort();
    v
}

/// Asserts global positions 1..=n are all readable and gapless, and org positions gapless.
pub fn assert_gapless(log: &EventLog) {
    let last = log.last_global_position();
    let mut org_last: std::collections::HashMap<OrgId, u64> = Default::default();
    for p in 1..=last {
        let ev = log
            .get_by_position(p)
            .unwrap()
            .unwrap_or_else(|| panic!("position {p} missing"));
        assert_eq!(ev.global_position, p);
        let prev = org_last.insert(ev.org, ev.org_position).unwrap_or(0);
        assert_eq!(ev.org_position, prev + 1, "org position gap at global {p}");
    }
}

/// Waits until the background thread has a zero-filled next segment ready.
pub fn wait_for_prepared_segment(dir: &std::path::Path, len: u64) {
    let path = dir.join("next-segment.seg.tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < len {
        assert!(
            std::time::Instant::now() < deadline,
            "no prepared segment appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
