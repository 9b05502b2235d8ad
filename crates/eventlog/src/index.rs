//! The in-memory index (id → position, (org, stream) → versions, org → positions, position →
//! file offset) and its checkpoint files.
//!
//! Memory per event, by design: 4 bytes file offset + 4 bytes type id (per segment, indexed
//! by position), a 16-byte id entry (u64 hash + u64 position) in the merged id runs (12 bytes,
//! hash + u32 slot, while a sealed segment's ids are not merged yet), 4 bytes in the stream's
//! position list and 4 in the organization's (see [`ChunkList`]): about 32 bytes, plus
//! interned names once per stream/type/org and a hash map for the active segment's ids only.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytemuck::Pod;

use crate::column::{Column, Mapped};
use crate::format::{arr16, le_u16, le_u32, le_u64};
use crate::types::{EventId, OrgId};

/// A segment file opened for reading (positional reads; shared by all readers).
#[derive(Debug)]
pub struct SegmentFile {
    pub path: PathBuf,
    pub first_position: u64,
    pub file: File,
}

/// A 64-bit hash of an event id. UUIDv7 ids share their leading (timestamp) bytes, so both
/// halves are mixed. Collisions are possible and resolved by reading the record.
pub fn id_key(id: &EventId) -> u64 {
    let a = le_u64(&id.0[0..8]);
    let b = le_u64(&id.0[8..16]);
    let mut h = a ^ b.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15;
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31) ^ b
}

/// The active segment's ids: id hash → slot. Keyed hashing (std's `RandomState`), not the
/// id hash itself: event ids are chosen by clients, and `id_key` is not secret, so a member
/// could craft ids whose hashes share their low bits and turn every insert into a long probe
/// on the one writer thread (a few hundred thousand such ids would stall appends for
/// minutes, for every tenant). The sorted runs are safe as they are: clustered keys only
/// turn their searches into binary searches.
type IdMap = HashMap<u64, u32>;

/// Hasher for our own small integer ids (stream/org indexes; never client-chosen values).
#[derive(Default)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        // hashbrown uses the top bits too: spread them with a multiply.
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type IntMap<V> = HashMap<u32, V, BuildHasherDefault<IntHasher>>;

const CHUNK: usize = 4096;

/// An append-only list of increasing u64 (global positions) that can drop elements from the
/// front cheaply and never over-allocates by more than one chunk (a plain `Vec` can hold 2x
/// its length). Values are stored as u32 offsets from their chunk's first value: 4 bytes per
/// event in every stream's and organization's list instead of 8, which is also ~80 MB less
/// to fault in when a 10 M-event log opens.
#[derive(Debug, Default)]
pub struct ChunkList {
    chunks: VecDeque<Chunk>,
    head: usize,
    len: usize,
}

/// Up to `CHUNK` values. Narrow while every value is within 2^32 of the first (4,096
/// consecutive events of one stream spread over more than 4 billion positions would take a
/// log whose index cannot fit in memory anyway); widened to u64 if one is not.
#[derive(Debug)]
enum Chunk {
    Narrow { base: u64, offsets: Vec<u32> },
    Wide(Vec<u64>),
}

impl Chunk {
    fn with_first(v: u64, capacity: usize) -> Self {
        let mut offsets = Vec::with_capacity(capacity.max(1));
        offsets.push(0);
        Chunk::Narrow { base: v, offsets }
    }

    fn len(&self) -> usize {
        match self {
            Chunk::Narrow { offsets, .. } => offsets.len(),
            Chunk::Wide(values) => values.len(),
        }
    }

    fn get(&self, i: usize) -> Option<u64> {
        match self {
            Chunk::Narrow { base, offsets } => offsets.get(i).map(|o| base + u64::from(*o)),
            Chunk::Wide(values) => values.get(i).copied(),
        }
    }

    /// Makes room for `extra` more values, doubling but never beyond `CHUNK` (plain `Vec`
    /// growth could reach almost twice the chunk size).
    fn reserve(&mut self, extra: usize) {
        match self {
            Chunk::Narrow { offsets, .. } => grow_chunk(offsets, extra),
            Chunk::Wide(values) => grow_chunk(values, extra),
        }
    }

    /// Appends increasing values that fit the chunk.
    fn extend(&mut self, part: &[u64]) {
        debug_assert!(part.is_sorted());
        self.reserve(part.len());
        if let Chunk::Narrow { base, offsets } = self
            && let (Some(&lo), Some(&hi)) = (part.first(), part.last())
            && lo >= *base
            && hi - *base <= u64::from(u32::MAX)
        {
            // The values increase, so all fit when the first and the last do: one tight loop
            // (a restart appends every event to two lists this way).
            let base = *base;
            offsets.extend(part.iter().map(|v| (v - base) as u32));
            return;
        }
        for v in part {
            self.push(*v);
        }
    }

    fn push(&mut self, v: u64) {
        if let Chunk::Narrow { base, offsets } = self {
            match v.checked_sub(*base).map(u32::try_from) {
                Some(Ok(offset)) => {
                    offsets.push(offset);
                    return;
                }
                _ => {
                    let base = *base;
                    let mut wide = Vec::with_capacity(offsets.capacity());
                    wide.extend(offsets.iter().map(|o| base + u64::from(*o)));
                    *self = Chunk::Wide(wide);
                }
            }
        }
        if let Chunk::Wide(values) = self {
            values.push(v);
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Chunk::Narrow { offsets, .. } => offsets.capacity() * 4,
            Chunk::Wide(values) => values.capacity() * 8,
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            Chunk::Narrow { offsets, .. } => offsets.shrink_to_fit(),
            Chunk::Wide(values) => values.shrink_to_fit(),
        }
    }
}

impl ChunkList {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `values` (increasing, and larger than those in the list).
    pub fn extend(&mut self, mut values: &[u64]) {
        while let Some(&first) = values.first() {
            let room = self.chunks.back().map_or(0, |c| CHUNK - c.len());
            if room == 0 {
                let want = values.len().min(CHUNK);
                if self.chunks.is_empty() {
                    // Most lists (one per stream) never need a second chunk: room for one
                    // instead of the deque's default four (96 bytes per stream).
                    self.chunks.reserve_exact(1);
                }
                self.chunks.push_back(Chunk::with_first(first, want));
                self.len += 1;
                values = &values[1..];
                continue;
            }
            let Some(c) = self.chunks.back_mut() else {
                break;
            };
            let (part, rest) = values.split_at(values.len().min(room));
            c.extend(part);
            self.len += part.len();
            values = rest;
        }
    }

    pub fn push(&mut self, v: u64) {
        match self.chunks.back_mut() {
            Some(c) if c.len() < CHUNK => {
                c.reserve(1);
                c.push(v);
            }
            _ => {
                if self.chunks.is_empty() {
                    self.chunks.reserve_exact(1); // (see `extend`)
                }
                self.chunks.push_back(Chunk::with_first(v, 1));
            }
        }
        self.len += 1;
    }

    pub fn get(&self, i: usize) -> Option<u64> {
        if i >= self.len {
            return None;
        }
        let j = i + self.head;
        self.chunks.get(j / CHUNK).and_then(|c| c.get(j % CHUNK))
    }

    pub fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head += n;
        if self.len == 0 {
            self.chunks.clear();
            self.head = 0;
            return;
        }
        // Every chunk but the last is full, so whole chunks before `head` can go.
        while self.head >= CHUNK && self.chunks.pop_front().is_some() {
            self.head -= CHUNK;
        }
    }

    /// First index whose value is `>= v` (values are increasing).
    pub fn lower_bound(&self, v: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).is_some_and(|x| x < v) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    pub fn shrink(&mut self) {
        if let Some(c) = self.chunks.back_mut() {
            c.shrink_to_fit();
        }
    }
}

/// Makes room for `extra` more values, doubling but never beyond `CHUNK`.
fn grow_chunk<T>(c: &mut Vec<T>, extra: usize) {
    let need = c.len() + extra;
    if need > c.capacity() {
        let target = (c.capacity() * 2).max(need).clamp(4, CHUNK.max(need));
        c.reserve_exact(target - c.len());
    }
}

#[derive(Debug)]
pub struct StreamEntry {
    pub org: u32,
    /// Shared with the org's name → id map (one allocation per stream).
    pub name: Arc<str>,
    /// Version of `positions[0]`; `first_version + positions.len() - 1` is the last version.
    /// 0 until the stream's first event is indexed (streams can be known from the registry
    /// before any of their events).
    pub first_version: u64,
    pub positions: ChunkList,
}

impl StreamEntry {
    /// 0 when the stream has no known events.
    pub fn last_version(&self) -> u64 {
        if self.first_version == 0 {
            return 0;
        }
        self.first_version + self.positions.len() as u64 - 1
    }
}

#[derive(Debug)]
pub struct OrgEntry {
    pub id: OrgId,
    /// Org position of `positions[0]`; 0 until the org's first event is indexed.
    pub first_org_position: u64,
    pub positions: ChunkList,
    pub bytes: u64,
    pub streams: HashMap<Arc<str>, u32>,
}

impl OrgEntry {
    /// 0 when the org has no known events.
    pub fn last_org_position(&self) -> u64 {
        if self.first_org_position == 0 {
            return 0;
        }
        self.first_org_position + self.positions.len() as u64 - 1
    }
}

/// Per-organization usage inside one segment (for retention and stats).
#[derive(Debug, Clone, Copy, Default)]
pub struct OrgUsage {
    pub events: u64,
    pub bytes: u64,
    pub first_org_position: u64,
}

#[derive(Debug)]
pub struct SegIndex {
    pub file: Arc<SegmentFile>,
    pub first_position: u64,
    pub offsets: Column<u32>,
    /// Every record's type: an index type id, or for a segment loaded from a checkpoint the
    /// checkpoint's local type id, translated by `type_map` (the column may be mapped from
    /// the file, so it is not rewritten in place).
    type_ids: Column<u32>,
    /// Checkpoint-local type id → index type id; empty when `type_ids` holds index ids.
    type_map: Vec<u32>,
    /// Sorted id hashes of this segment until they are merged into [`Index::ids`].
    ids_sorted: Arc<SortedIds>,
    /// True once `ids_sorted` was merged into the global run (and freed).
    ids_merged: bool,
    ids_recent: IdMap,
    ids_overflow: Vec<(u64, u32)>,
    /// While open scans a sealed segment: ids go straight to `ids_overflow`, sorted into
    /// `ids_sorted` when the scan ends (nothing looks them up before that), instead of
    /// through the hash map (its inserts and growth were a visible part of a rebuild).
    pub bulk_ids: bool,
    /// Byte length of the segment covered by indexed records (header included).
    pub end_offset: u64,
    pub max_timestamp: i64,
    pub last_crc: u32,
    pub org_usage: IntMap<OrgUsage>,
}

impl SegIndex {
    pub fn new(file: Arc<SegmentFile>, header_len: u64) -> Self {
        SegIndex {
            first_position: file.first_position,
            file,
            offsets: Column::default(),
            type_ids: Column::default(),
            type_map: Vec::new(),
            ids_sorted: Arc::default(),
            ids_merged: false,
            ids_recent: IdMap::default(),
            ids_overflow: Vec::new(),
            bulk_ids: false,
            end_offset: header_len,
            max_timestamp: i64::MIN,
            last_crc: 0,
            org_usage: IntMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// The index type id of local record `slot`.
    fn type_id(&self, slot: usize) -> Option<u32> {
        let t = *self.type_ids.get(slot)?;
        if self.type_map.is_empty() {
            Some(t)
        } else {
            self.type_map.get(t as usize).copied()
        }
    }

    /// Every record's index type id.
    fn index_type_ids(&self) -> Vec<u32> {
        if self.type_map.is_empty() {
            self.type_ids.to_vec()
        } else {
            self.type_ids
                .iter()
                .map(|t| self.type_map[*t as usize])
                .collect()
        }
    }

    /// Appends one record's location and type (the column becomes owned, and holds index
    /// type ids, at the first append).
    fn push_record(&mut self, offset: u32, type_id: u32) {
        if !self.type_map.is_empty() {
            self.type_ids = Column::Owned(self.index_type_ids());
            self.type_map = Vec::new();
        }
        self.offsets.to_mut().push(offset);
        self.type_ids.to_mut().push(type_id);
    }

    fn insert_id(&mut self, key: u64, slot: u32) {
        if self.bulk_ids {
            self.ids_overflow.push((key, slot));
            return;
        }
        match self.ids_recent.entry(key) {
            // Two ids with the same 64-bit hash: keep the second one aside.
            std::collections::hash_map::Entry::Occupied(_) => self.ids_overflow.push((key, slot)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }

    /// Local slots whose id hash equals `key`.
    fn find_key(&self, key: u64, out: &mut Vec<u32>) {
        let sorted = &self.ids_sorted;
        let start = lower_bound_uniform(&sorted.keys, key);
        for i in start..sorted.keys.len() {
            if sorted.keys[i] != key {
                break;
            }
            out.push(sorted.slots[i]);
        }
        if let Some(s) = self.ids_recent.get(&key) {
            out.push(*s);
        }
        out.extend(
            self.ids_overflow
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, s)| *s),
        );
    }

    /// Whether this segment may hold an id with hash `key` (see [`Index::mark_known_keys`]).
    fn has_key(&self, key: u64) -> bool {
        let keys = &self.ids_sorted.keys;
        let start = lower_bound_uniform(keys, key);
        keys.get(start) == Some(&key)
            || self.ids_recent.contains_key(&key)
            || self.ids_overflow.iter().any(|(k, _)| *k == key)
    }

    pub fn has_recent_ids(&self) -> bool {
        !self.ids_recent.is_empty() || !self.ids_overflow.is_empty()
    }

    /// All (key, slot) pairs, sorted by key.
    pub fn sorted_ids(&self) -> (Vec<u64>, Vec<u32>) {
        sort_id_pairs(self.id_pairs())
    }

    /// All (key, slot) pairs, unsorted (sort them outside the index lock).
    pub fn id_pairs(&self) -> Vec<(u64, u32)> {
        let mut all: Vec<(u64, u32)> = Vec::with_capacity(self.len());
        let sorted = &self.ids_sorted;
        all.extend(
            sorted
                .keys
                .iter()
                .copied()
                .zip(sorted.slots.iter().copied()),
        );
        all.extend(self.ids_recent.iter().map(|(k, s)| (*k, *s)));
        all.extend(self.ids_overflow.iter().copied());
        all
    }

    /// Replaces the id hash map by compact sorted vectors (done when the segment is sealed).
    /// `ids` must be `self.sorted_ids()` (computed beforehand, outside the write lock).
    pub fn set_sorted_ids(&mut self, ids: (Vec<u64>, Vec<u32>)) {
        let (keys, slots) = ids;
        self.ids_sorted = Arc::new(SortedIds {
            keys: keys.into(),
            slots: slots.into(),
        });
        self.ids_merged = false;
        self.ids_recent = IdMap::default();
        self.ids_overflow = Vec::new();
        self.bulk_ids = false;
        self.offsets.shrink_to_fit();
        self.type_ids.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.offsets.memory_bytes()
            + self.type_ids.memory_bytes()
            + self.type_map.capacity() * 4
            + self.ids_sorted.keys.memory_bytes()
            + self.ids_sorted.slots.memory_bytes()
            // hashbrown: 16-byte (u64, u32) buckets + 1 control byte each.
            + self.ids_recent.capacity() * 17
            + self.ids_overflow.capacity() * 16
            + self.org_usage.capacity() * 40
    }
}

/// One record as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub position: u64,
    pub org_position: u64,
    pub stream_version: u64,
    pub timestamp_micros: i64,
    pub id: EventId,
    pub org: OrgId,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub offset: u32,
    pub len: u32,
    pub crc: u32,
}

/// Where an event lives.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<SegmentFile>,
    pub offset: u64,
    pub position: u64,
}

/// The first index whose key is `>= key` in `keys`, sorted and uniformly distributed (id
/// hashes): interpolation probes (about log log n cache misses) instead of a binary search's
/// ~20 over a sealed segment's ids. Any sorted input gives the right answer: the probes only
/// narrow the range, and a binary search finishes it.
pub fn lower_bound_uniform(keys: &[u64], key: u64) -> usize {
    // keys[..lo] < key <= keys[hi..]; every key in keys[lo..hi] lies in [k_lo, k_hi].
    let (mut lo, mut hi) = (0usize, keys.len());
    let (mut k_lo, mut k_hi) = (0u64, u64::MAX);
    for _ in 0..6 {
        if hi - lo <= 32 {
            break;
        }
        let span = u128::from(k_hi - k_lo) + 1;
        let offset = u128::from(key.saturating_sub(k_lo)) * (hi - lo) as u128 / span;
        let guess = lo + (offset as usize).min(hi - lo - 1);
        if keys[guess] < key {
            lo = guess + 1;
            k_lo = keys[guess];
        } else {
            hi = guess;
            k_hi = keys[guess];
        }
    }
    lo + keys[lo..hi].partition_point(|k| *k < key)
}

/// (key, slot) pairs sorted by key, as the two vectors [`SortedIds`] keeps.
pub fn sort_id_pairs(mut pairs: Vec<(u64, u32)>) -> (Vec<u64>, Vec<u32>) {
    pairs.sort_unstable();
    pairs.into_iter().unzip()
}

/// The sorted id hashes of one segment, with the record slot of each.
#[derive(Debug, Default)]
pub struct SortedIds {
    pub keys: Column<u64>,
    pub slots: Column<u32>,
}

/// Sorted (id hash, global position) pairs of all merged sealed segments: one structure, so
/// an id lookup costs an interpolation search (about two cache misses) however many segments
/// there are. Searching every segment's own run made appends O(segments) (measured: 78% of
/// the writer's CPU at 24 segments).
#[derive(Debug, Default)]
pub struct IdRun {
    /// (id hash, global position), sorted by hash then position.
    entries: Vec<(u64, u64)>,
    /// `dir[b]` = index of the first entry whose hash's top `bits` bits are `>= b`
    /// (`2^bits + 1` slots, about 8 entries per bucket): a lookup reads one slot pair and
    /// searches a handful of entries, instead of ~20 cache misses of a binary search.
    dir: Vec<u32>,
    bits: u32,
}

impl IdRun {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn from_sorted(entries: Vec<(u64, u64)>) -> IdRun {
        let bits = dir_bits(entries.len());
        let mut dir = vec![0u32; (1usize << bits) + 1];
        for (k, _) in &entries {
            dir[bucket_of(*k, bits) + 1] += 1;
        }
        for i in 1..dir.len() {
            dir[i] += dir[i - 1];
        }
        IdRun { entries, dir, bits }
    }

    /// Positions whose id hash is `key`.
    pub fn find(&self, key: u64, out: &mut Vec<u64>) {
        if self.entries.is_empty() {
            return;
        }
        let b = bucket_of(key, self.bits);
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        let bucket = &self.entries[lo..hi];
        let mut i = bucket.partition_point(|x| x.0 < key);
        while i < bucket.len() && bucket[i].0 == key {
            out.push(bucket[i].1);
            i += 1;
        }
    }

    /// Sets `known[i]` for every `keys[i]` the run holds. One lookup at a time waits for its
    /// two cache misses (directory slot, then bucket) before the next starts; here every
    /// key's directory slot is loaded first, then every bucket's first line, in passes of
    /// independent loads the CPU overlaps, and the searches run on cached lines.
    fn mark_known(&self, keys: &[u64], known: &mut [bool]) {
        if self.entries.is_empty() {
            return;
        }
        let slot = |k: u64| bucket_of(k, self.bits);
        let mut touched = 0u64;
        for k in keys {
            touched ^= u64::from(self.dir[slot(*k)]);
        }
        for k in keys {
            if let Some(e) = self.entries.get(self.dir[slot(*k)] as usize) {
                touched ^= e.0;
            }
        }
        // The loads above only warm the cache: keep the compiler from dropping them.
        std::hint::black_box(touched);
        for (k, known) in keys.iter().zip(known.iter_mut()) {
            if !*known {
                let b = slot(*k);
                let bucket = &self.entries[self.dir[b] as usize..self.dir[b + 1] as usize];
                *known = bucket.iter().any(|e| e.0 == *k);
            }
        }
    }

    /// Merges `base` with segment runs (`(first position, ids)`), dropping positions below
    /// `min_position`. Returns `None` if `stop` becomes true (shutdown).
    ///
    /// Keys are uniform hashes, so instead of a k-way merge the entries are scattered into
    /// buckets by their top bits (one counting pass, one scatter pass) and each small bucket
    /// is sorted: three cache-friendly passes.
    pub fn merge(
        bases: &[&IdRun],
        runs: &[(u64, Arc<SortedIds>)],
        min_position: u64,
        stop: &dyn Fn() -> bool,
    ) -> Option<IdRun> {
        let total = bases.iter().map(|b| b.len()).sum::<usize>()
            + runs.iter().map(|(_, r)| r.keys.len()).sum::<usize>();
        // About 64 entries per bucket for the scatter.
        let bits = (usize::BITS - (total / 64).max(1).leading_zeros()).clamp(1, 24);
        let bucket = |k: u64| bucket_of(k, bits);
        let mut starts = vec![0usize; (1 << bits) + 1];
        let each = |f: &mut dyn FnMut(u64, u64)| {
            for base in bases {
                for (k, p) in &base.entries {
                    f(*k, *p);
                }
            }
            for (first, r) in runs {
                for (k, slot) in r.keys.iter().zip(&r.slots) {
                    f(*k, first + u64::from(*slot));
                }
            }
        };
        each(&mut |k, p| {
            if p >= min_position {
                starts[bucket(k) + 1] += 1;
            }
        });
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let kept = starts[starts.len() - 1];
        let mut entries = vec![(0u64, 0u64); kept];
        let mut fill = starts.clone();
        each(&mut |k, p| {
            if p >= min_position {
                let b = bucket(k);
                entries[fill[b]] = (k, p);
                fill[b] += 1;
            }
        });
        if stop() {
            return None;
        }
        for w in starts.windows(2) {
            entries[w[0]..w[1]].sort_unstable();
        }
        Some(IdRun::from_sorted(entries))
    }

    fn retain_from(&self, min_position: u64) -> IdRun {
        let kept = self
            .entries
            .iter()
            .filter(|(_, p)| *p >= min_position)
            .copied()
            .collect();
        IdRun::from_sorted(kept)
    }

    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * 16 + self.dir.capacity() * 4
    }
}

/// Directory size for `n` entries: about 8 per bucket. (u32 offsets: an in-memory index of
/// more than 4 billion events would not fit this machine class anyway.)
fn dir_bits(n: usize) -> u32 {
    (usize::BITS - (n / 8).max(1).leading_zeros()).clamp(1, 28)
}

fn bucket_of(key: u64, bits: u32) -> usize {
    (key >> (64 - bits)) as usize
}

/// The last few event types indexed, with their ids: a log usually interleaves a handful of
/// types, and hashing the name of every record (SipHash: type names are client-chosen) was
/// ~5 % of a full rebuild.
#[derive(Debug, Default)]
struct RecentTypes {
    entries: Vec<(Box<str>, u32)>,
    /// The entry to replace next once full.
    next: usize,
}

impl RecentTypes {
    const MAX: usize = 8;

    fn get(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, t)| *t)
    }

    fn put(&mut self, name: &str, t: u32) {
        if self.entries.len() < Self::MAX {
            self.entries.push((name.into(), t));
        } else {
            self.entries[self.next] = (name.into(), t);
            self.next = (self.next + 1) % Self::MAX;
        }
    }
}

#[derive(Debug, Default)]
pub struct Index {
    pub segments: Vec<SegIndex>,
    /// Ids of merged sealed segments (see [`IdRun`]): the main run, and a recent run that
    /// new segments are folded into until it reaches a quarter of the main one (see
    /// `log::merge_ids`). A lookup searches both.
    pub ids: Arc<IdRun>,
    pub recent_ids: Arc<IdRun>,
    /// Bumped whenever retention drops a segment (a merge started before must re-filter).
    pub retention_generation: u64,
    /// Identifies the stream registry the ids of this index belong to. A new random epoch
    /// starts whenever the registry is rebuilt from scratch; checkpoints record it, so one
    /// written against another registry (whose ids may differ) is never used.
    pub registry_epoch: u64,
    pub streams: Vec<StreamEntry>,
    pub orgs: Vec<OrgEntry>,
    pub org_lookup: HashMap<OrgId, u32>,
    pub types: Vec<Box<str>>,
    pub type_lookup: HashMap<Box<str>, u32>,
    /// Last global position ever indexed (never decreases, even when retention drops all).
    pub last_position: u64,
    /// True when the log still starts at position 1, so first-seen orgs and streams must
    /// start at 1 (otherwise retention may have dropped their beginning).
    pub starts_at_one: bool,
    /// (org, stream name) → (org index, stream index) of the last push: appends are batches
    /// to one stream, so this saves two string-hashing lookups per record on rebuild.
    last_stream: Option<(OrgId, Box<str>, u32, u32)>,
    /// The last few event types pushed, with their ids.
    recent_types: RecentTypes,
    /// Stream positions of loaded checkpoints not yet in the stream lists (during open).
    deferred: Option<Deferred>,
}

impl Index {
    pub fn org(&self, org: &OrgId) -> Option<&OrgEntry> {
        self.org_lookup.get(org).map(|i| &self.orgs[*i as usize])
    }

    pub fn stream(&self, org: &OrgId, name: &str) -> Option<&StreamEntry> {
        let o = self.org(org)?;
        o.streams.get(name).map(|s| &self.streams[*s as usize])
    }

    pub fn stream_version(&self, org: &OrgId, name: &str) -> u64 {
        self.stream(org, name).map_or(0, StreamEntry::last_version)
    }

    pub fn org_last_position(&self, org: &OrgId) -> u64 {
        self.org(org).map_or(0, OrgEntry::last_org_position)
    }

    pub fn first_position(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.len() > 0)
            .map_or(self.last_position + 1, |s| s.first_position)
    }

    pub fn events(&self) -> u64 {
        self.segments.iter().map(|s| s.len() as u64).sum()
    }

    fn segment_of(&self, position: u64) -> Option<&SegIndex> {
        let i = self
            .segments
            .partition_point(|s| s.first_position <= position);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        ((position - seg.first_position) < seg.len() as u64).then_some(seg)
    }

    pub fn location(&self, position: u64) -> Option<Location> {
        let seg = self.segment_of(position)?;
        let local = (position - seg.first_position) as usize;
        Some(Location {
            file: seg.file.clone(),
            offset: u64::from(seg.offsets[local]),
            position,
        })
    }

    /// Type id of a retained position.
    pub fn type_of(&self, position: u64) -> Option<u32> {
        let seg = self.segment_of(position)?;
        let local = (position - seg.first_position) as usize;
        seg.type_id(local)
    }

    /// The stream id of every record of segment `seg_pos`, derived from the streams' position
    /// lists (not stored per record: that saves 4 bytes per event; this is only needed to
    /// write a checkpoint). `None` if some record has no stream (an index bug).
    pub fn segment_stream_ids(&self, seg_pos: usize) -> Option<Vec<u32>> {
        let seg = &self.segments[seg_pos];
        let (first, end) = (seg.first_position, seg.first_position + seg.len() as u64);
        let mut out = vec![u32::MAX; seg.len()];
        for (sid, st) in self.streams.iter().enumerate() {
            let mut i = st.positions.lower_bound(first);
            while let Some(p) = st.positions.get(i).filter(|p| *p < end) {
                out[(p - first) as usize] = sid as u32;
                i += 1;
            }
        }
        (!out.contains(&u32::MAX)).then_some(out)
    }

    /// Candidate locations of an id (same 64-bit hash); the caller confirms by reading.
    pub fn id_candidates(&self, id: &EventId) -> Vec<Location> {
        let key = id_key(id);
        let mut out = Vec::new();
        let mut positions = Vec::new();
        self.ids.find(key, &mut positions);
        self.recent_ids.find(key, &mut positions);
        out.extend(positions.into_iter().filter_map(|p| self.location(p)));
        let mut slots = Vec::new();
        // Segments not merged yet: the active one, and sealed ones until the indexer ran.
        for seg in self.segments.iter().filter(|s| !s.ids_merged) {
            slots.clear();
            seg.find_key(key, &mut slots);
            for slot in &slots {
                out.push(Location {
                    file: seg.file.clone(),
                    offset: u64::from(seg.offsets[*slot as usize]),
                    position: seg.first_position + u64::from(*slot),
                });
            }
        }
        out
    }

    /// Sets `known[i]` if the index may hold an event whose id hashes to `keys[i]`; a `false`
    /// left in place means no event has such an id. The writer checks every new event's id
    /// this way, a whole group at once (see [`IdRun::mark_known`]), and looks up candidates
    /// only for the rare ids found here.
    pub fn mark_known_keys(&self, keys: &[u64], known: &mut [bool]) {
        self.ids.mark_known(keys, known);
        self.recent_ids.mark_known(keys, known);
        for seg in self.segments.iter().filter(|s| !s.ids_merged) {
            for (k, known) in keys.iter().zip(known.iter_mut()) {
                if !*known {
                    *known = seg.has_key(*k);
                }
            }
        }
    }

    pub fn unmerged_segments(&self) -> usize {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments[..sealed]
            .iter()
            .filter(|s| !s.ids_merged && s.len() > 0)
            .count()
    }

    /// Sealed segments whose ids are not merged yet, for the background indexer.
    pub fn merge_plan(&self) -> Vec<(u64, Arc<SortedIds>)> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments[..sealed]
            .iter()
            .filter(|s| !s.ids_merged && s.ids_recent.is_empty())
            .map(|s| (s.first_position, s.ids_sorted.clone()))
            .collect()
    }

    /// Installs a merged run built from the planned segments plus the recent run (and, with
    /// `into_main`, the main run too: then it replaces the main run and the recent one is
    /// empty; otherwise it is the new recent run).
    pub fn install_merged(
        &mut self,
        mut run: IdRun,
        merged: &[u64],
        generation: u64,
        into_main: bool,
    ) {
        if generation != self.retention_generation {
            run = run.retain_from(self.first_position());
        }
        for seg in &mut self.segments {
            if merged.contains(&seg.first_position) {
                seg.ids_sorted = Arc::default();
                seg.ids_merged = true;
            }
        }
        if into_main {
            self.ids = Arc::new(run);
            self.recent_ids = Arc::default();
        } else {
            self.recent_ids = Arc::new(run);
        }
    }

    /// Sorted (hash, slot) pairs of segment `seg_pos`, wherever they live now.
    pub fn segment_ids(&self, seg_pos: usize) -> (Vec<u64>, Vec<u32>) {
        let seg = &self.segments[seg_pos];
        if !seg.ids_merged {
            return seg.sorted_ids();
        }
        let end = seg.first_position + seg.len() as u64;
        let mut keys = Vec::with_capacity(seg.len());
        let mut slots = Vec::with_capacity(seg.len());
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(seg.len());
        for run in [&self.ids, &self.recent_ids] {
            for (k, p) in &run.entries {
                if (seg.first_position..end).contains(p) {
                    pairs.push((*k, (p - seg.first_position) as u32));
                }
            }
        }
        // A segment's ids are all in one run, in (hash, position) order; sorting keeps that
        // true if that ever changes.
        pairs.sort_unstable();
        for (k, slot) in pairs {
            keys.push(k);
            slots.push(slot);
        }
        (keys, slots)
    }

    pub fn type_id(&self, name: &str) -> Option<u32> {
        self.type_lookup.get(name).copied()
    }

    pub fn push_segment(&mut self, file: Arc<SegmentFile>, header_len: u64) {
        if self.segments.is_empty() {
            self.starts_at_one = file.first_position == 1;
        }
        self.segments.push(SegIndex::new(file, header_len));
    }

    /// Sizes the active segment's id map for `records` ids (a writer that rolled knows about
    /// how many the next segment will get; growing the map rehashed it ~20 times).
    pub fn reserve_active_ids(&mut self, records: usize) {
        if let Some(seg) = self.segments.last_mut() {
            seg.ids_recent.reserve(records);
        }
    }

    fn intern_type(&mut self, name: &str) -> u32 {
        if let Some(t) = self.type_lookup.get(name) {
            return *t;
        }
        let t = self.types.len() as u32;
        self.types.push(name.into());
        self.type_lookup.insert(name.into(), t);
        t
    }

    fn intern_org(&mut self, org: OrgId) -> u32 {
        if let Some(o) = self.org_lookup.get(&org) {
            return *o;
        }
        let o = self.orgs.len() as u32;
        self.orgs.push(OrgEntry {
            id: org,
            first_org_position: 0,
            positions: ChunkList::default(),
            bytes: 0,
            streams: HashMap::new(),
        });
        self.org_lookup.insert(org, o);
        o
    }

    fn intern_stream(&mut self, org: u32, name: &str) -> u32 {
        if let Some(s) = self.orgs[org as usize].streams.get(name) {
            return *s;
        }
        let s = self.streams.len() as u32;
        let name: Arc<str> = name.into();
        self.streams.push(StreamEntry {
            org,
            name: name.clone(),
            first_version: 0,
            positions: ChunkList::default(),
        });
        self.orgs[org as usize].streams.insert(name, s);
        s
    }

    /// Appends the stream positions of checkpoints loaded since the last call to the stream
    /// lists: one pass over the streams in id order, reading every deferred segment's slots
    /// for that stream. Sequential memory access instead of ~100k random list extensions per
    /// segment (the main cost of a restart before).
    pub fn flush_deferred(&mut self) {
        let Some(d) = self.deferred.take() else {
            return;
        };
        // A stream's positions from every segment are gathered first (in a reused buffer)
        // and appended in one call, so its list is allocated at its final size at once
        // instead of growing by doubling, segment after segment.
        let n = d.next_version.len();
        // Where each stream occurs: (segment, local index) pairs grouped by registry stream
        // id, in segment order (a counting sort of the segments' stream tables): one entry
        // per stream per segment it occurs in, not a table of every stream id per segment
        // (0.8 instead of 9.6 MB at 10 M events; the same speed).
        let mut starts = vec![0u32; n + 1];
        for g in &d.segs {
            for id in &g.stream_map {
                starts[*id as usize + 1] += 1;
            }
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut occurs = vec![(0u32, 0u32); starts[n] as usize];
        for (gi, g) in d.segs.iter().enumerate() {
            for (l, id) in g.stream_map.iter().enumerate() {
                let at = &mut next[*id as usize];
                occurs[*at as usize] = (gi as u32, l as u32);
                *at += 1;
            }
        }
        let fill = |streams: &mut [StreamEntry], first_id: usize| {
            let mut positions: Vec<u64> = Vec::new();
            for (i, st) in streams.iter_mut().enumerate() {
                let s = first_id + i;
                if d.first_version[s] != 0 && st.first_version == 0 {
                    st.first_version = d.first_version[s];
                }
                positions.clear();
                for &(gi, l) in &occurs[starts[s] as usize..starts[s + 1] as usize] {
                    let g = &d.segs[gi as usize];
                    if let Some(slots) = g.by_stream.group(l) {
                        positions.extend(slots.iter().map(|i| g.first + u64::from(*i)));
                    }
                }
                st.positions.extend(&positions);
            }
        };
        // The lists are independent: with many streams, two threads fill half each (this
        // runs at open, where it was the longest serial step).
        let streams = &mut self.streams[..n];
        if n >= 16 * 1024 {
            let half = n / 2;
            let (low, high) = streams.split_at_mut(half);
            std::thread::scope(|scope| {
                scope.spawn(|| fill(high, half));
                fill(low, 0);
            });
        } else {
            fill(streams, 0);
        }
    }

    /// Adds a record to the last segment, checking that positions and versions continue the
    /// log without gaps. An error means the log (or a checkpoint) is inconsistent.
    pub fn push(&mut self, e: &Entry<'_>) -> Result<(), String> {
        self.flush_deferred();
        if e.position != self.last_position + 1 {
            return Err(format!(
                "global position {} does not follow {}",
                e.position, self.last_position
            ));
        }
        let strict = self.starts_at_one;
        let cached = match &self.last_stream {
            Some((o, name, oi, si)) if *o == e.org && **name == *e.stream => Some((*oi, *si)),
            _ => None,
        };
        let (org_idx, stream_idx) = match cached {
            Some((oi, si)) => (Some(oi), Some(si)),
            None => {
                let oi = self.org_lookup.get(&e.org).copied();
                let si = oi.and_then(|o| self.orgs[o as usize].streams.get(e.stream).copied());
                (oi, si)
            }
        };
        let org_expected = match org_idx.map(|o| &self.orgs[o as usize]) {
            Some(o) if o.first_org_position > 0 => o.last_org_position() + 1,
            _ if strict => 1,
            _ => e.org_position,
        };
        if e.org_position != org_expected {
            return Err(format!(
                "org position {} of org {} does not follow {}",
                e.org_position,
                e.org,
                org_expected - 1
            ));
        }
        let stream_expected = match stream_idx.map(|s| &self.streams[s as usize]) {
            Some(st) if st.first_version > 0 => st.last_version() + 1,
            _ if strict => 1,
            _ => e.stream_version,
        };
        if e.stream_version != stream_expected {
            return Err(format!(
                "stream version {} of stream {:?} does not follow {}",
                e.stream_version,
                e.stream,
                stream_expected - 1
            ));
        }
        let Some(seg_pos) = self.segments.len().checked_sub(1) else {
            return Err("no segment to index into".into());
        };
        if e.position != self.segments[seg_pos].first_position + self.segments[seg_pos].len() as u64
        {
            return Err("position does not match its segment".into());
        }
        let org = match org_idx {
            Some(o) => o,
            None => self.intern_org(e.org),
        };
        let stream = match stream_idx {
            Some(s) => s,
            None => self.intern_stream(org, e.stream),
        };
        if cached.is_none() {
            self.last_stream = Some((e.org, e.stream.into(), org, stream));
        }
        let ty = match self.recent_types.get(e.event_type) {
            Some(t) => t,
            None => {
                let t = self.intern_type(e.event_type);
                self.recent_types.put(e.event_type, t);
                t
            }
        };
        let st = &mut self.streams[stream as usize];
        if st.first_version == 0 {
            st.first_version = e.stream_version;
        }
        st.positions.push(e.position);
        let o = &mut self.orgs[org as usize];
        if o.first_org_position == 0 {
            o.first_org_position = e.org_position;
        }
        o.positions.push(e.position);
        o.bytes += u64::from(e.len);
        let seg = &mut self.segments[seg_pos];
        let slot = seg.offsets.len() as u32;
        seg.push_record(e.offset, ty);
        seg.insert_id(id_key(&e.id), slot);
        seg.end_offset = u64::from(e.offset) + u64::from(e.len);
        seg.max_timestamp = seg.max_timestamp.max(e.timestamp_micros);
        seg.last_crc = e.crc;
        let u = seg.org_usage.entry(org).or_insert(OrgUsage {
            first_org_position: e.org_position,
            ..OrgUsage::default()
        });
        u.events += 1;
        u.bytes += u64::from(e.len);
        self.last_position = e.position;
        Ok(())
    }

    /// Removes the oldest segment from the index (retention). Returns it.
    pub fn drop_first_segment(&mut self) -> Option<SegIndex> {
        if self.segments.is_empty() {
            return None;
        }
        let seg = self.segments.remove(0);
        self.retention_generation += 1;
        if seg.ids_merged {
            let next = seg.first_position + seg.len() as u64;
            self.ids = Arc::new(self.ids.retain_from(next));
            self.recent_ids = Arc::new(self.recent_ids.retain_from(next));
        }
        // The dropped segment holds the oldest retained events: in every stream's list they
        // are the prefix of positions below the segment's end.
        let end = seg.first_position + seg.len() as u64;
        for st in &mut self.streams {
            let n = st.positions.lower_bound(end);
            if n > 0 {
                st.positions.drop_front(n);
                st.first_version += n as u64;
            }
        }
        for (o, u) in &seg.org_usage {
            let org = &mut self.orgs[*o as usize];
            org.positions.drop_front(u.events as usize);
            org.first_org_position += u.events;
            org.bytes = org.bytes.saturating_sub(u.bytes);
        }
        if self.segments.is_empty() {
            self.starts_at_one = false;
        } else {
            self.starts_at_one = self.segments[0].first_position == 1;
        }
        Some(seg)
    }

    pub fn heap_bytes(&self) -> u64 {
        let segs: usize = self
            .segments
            .iter()
            .map(SegIndex::heap_bytes)
            .sum::<usize>()
            + self.ids.heap_bytes()
            + self.recent_ids.heap_bytes();
        let streams: usize = self
            .streams
            .iter()
            // The name: one shared allocation (two reference counts, then the bytes).
            .map(|s| {
                s.positions.heap_bytes() + 16 + s.name.len() + std::mem::size_of::<StreamEntry>()
            })
            .sum();
        let orgs: usize = self
            .orgs
            .iter()
            .map(|o| {
                o.positions.heap_bytes()
                    + std::mem::size_of::<OrgEntry>()
                    // (name, id) entries of 24 bytes and a control byte; the names
                    // themselves are counted with the streams that share them.
                    + o.streams.capacity() * 25
            })
            .sum();
        let types: usize = self.types.iter().map(|t| t.len() * 2 + 16 + 4 + 16).sum();
        (segs + streams + orgs + types + self.org_lookup.capacity() * 21) as u64
    }

    pub fn shrink(&mut self) {
        for s in &mut self.streams {
            s.positions.shrink();
        }
        for o in &mut self.orgs {
            o.positions.shrink();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream registry and checkpoint files
// ---------------------------------------------------------------------------------------------

/// File name of the stream registry.
pub const REGISTRY_FILE_NAME: &str = "streams.idx";
/// Magic bytes of the stream registry.
pub const REGISTRY_MAGIC: [u8; 8] = *b"TLEVREG\0";
const REGISTRY_VERSION: u32 = 1;

/// A decoded stream registry: every org and stream the log has indexed, in index order.
#[derive(Debug, Default)]
pub struct Registry {
    pub epoch: u64,
    /// (org id, last org position when written)
    orgs: Vec<(OrgId, u64)>,
    /// (org index, last version when written, name)
    streams: Vec<(u32, u64, Arc<str>)>,
}

/// Serializes the orgs and streams of the index (their ids are their order). Segment
/// checkpoints name streams by these ids, so loading them needs no string lookups; the last
/// versions/positions keep streams and orgs whose events retention dropped counting on.
pub fn encode_registry(index: &Index) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + index.orgs.len() * 24 + index.streams.len() * 40);
    out.extend_from_slice(&REGISTRY_MAGIC);
    out.extend_from_slice(&REGISTRY_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&index.registry_epoch.to_le_bytes());
    out.extend_from_slice(&(index.orgs.len() as u32).to_le_bytes());
    out.extend_from_slice(&(index.streams.len() as u32).to_le_bytes());
    for o in &index.orgs {
        out.extend_from_slice(&o.id.0);
        out.extend_from_slice(&o.last_org_position().to_le_bytes());
    }
    for s in &index.streams {
        out.extend_from_slice(&s.org.to_le_bytes());
        out.extend_from_slice(&s.last_version().to_le_bytes());
        out.extend_from_slice(&(s.name.len() as u16).to_le_bytes());
        out.extend_from_slice(s.name.as_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_registry(b: &[u8]) -> Result<Registry, String> {
    if b.len() < 36 {
        return Err("registry too short".into());
    }
    // The whole file is in memory: one checksum over it, then a plain cursor (checksumming
    // field by field cost more than the parsing at 100,000 streams).
    let (body, stored) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != le_u32(stored) {
        return Err("registry checksum mismatch".into());
    }
    let mut c = Cursor(body);
    if c.take(8)? != REGISTRY_MAGIC {
        return Err("bad registry magic".into());
    }
    if c.u32()? != REGISTRY_VERSION {
        return Err("unsupported registry version".into());
    }
    c.u32()?;
    let epoch = c.u64()?;
    let n_orgs = c.u32()? as usize;
    let n_streams = c.u32()? as usize;
    let mut reg = Registry {
        epoch,
        ..Registry::default()
    };
    for _ in 0..n_orgs.min(b.len() / 24) {
        let id = OrgId(arr16(c.take(16)?));
        reg.orgs.push((id, c.u64()?));
    }
    for _ in 0..n_streams.min(b.len() / 15) {
        let org = c.u32()?;
        let last = c.u64()?;
        let name: Arc<str> = c.str()?.into();
        if org as usize >= n_orgs {
            return Err("registry stream refers to an unknown org".into());
        }
        reg.streams.push((org, last, name));
    }
    if reg.orgs.len() != n_orgs || reg.streams.len() != n_streams || !c.0.is_empty() {
        return Err("registry counts do not match its size".into());
    }
    Ok(reg)
}

/// Little-endian fields read off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("registry truncated or lengths inconsistent".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(le_u32)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(le_u64)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = usize::from(self.take(2).map(le_u16)?);
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| "name is not UTF-8".to_string())
    }
}

impl Index {
    /// Interns every org and stream of the registry, in order (so ids match the checkpoints).
    /// Must be called on an empty index.
    pub fn preload_registry(&mut self, reg: &Registry) -> Result<(), String> {
        if !self.orgs.is_empty() || !self.streams.is_empty() {
            return Err("registry loaded into a non-empty index".into());
        }
        self.registry_epoch = reg.epoch;
        for (i, (id, _)) in reg.orgs.iter().enumerate() {
            if self.intern_org(*id) as usize != i {
                return Err("duplicate org in registry".into());
            }
        }
        self.streams.reserve(reg.streams.len());
        // Every org's name map sized once, instead of grown by doubling.
        let mut per_org = vec![0usize; self.orgs.len()];
        for (org, _, _) in &reg.streams {
            per_org[*org as usize] += 1;
        }
        for (o, n) in self.orgs.iter_mut().zip(per_org) {
            o.streams.reserve(n);
        }
        for (i, (org, _, name)) in reg.streams.iter().enumerate() {
            // A new index: every name is new unless the registry repeats one (one hash
            // lookup per stream, not the two of `intern_stream`), and the name is the
            // registry's own allocation, shared by the entry and the map.
            let streams = &mut self.orgs[*org as usize].streams;
            if streams.insert(name.clone(), i as u32).is_some() {
                return Err("duplicate stream in registry".into());
            }
            self.streams.push(StreamEntry {
                org: *org,
                name: name.clone(),
                first_version: 0,
                positions: ChunkList::default(),
            });
        }
        Ok(())
    }

    /// After all segments are indexed: orgs and streams with no retained event continue from
    /// the positions/versions the registry recorded.
    pub fn finish_registry(&mut self, reg: &Registry) {
        for (o, (_, last)) in self.orgs.iter_mut().zip(&reg.orgs) {
            if o.first_org_position == 0 && *last > 0 {
                o.first_org_position = last + 1;
            }
        }
        for (s, (_, last, _)) in self.streams.iter_mut().zip(&reg.streams) {
            if s.first_version == 0 && *last > 0 {
                s.first_version = last + 1;
            }
        }
    }
}

/// Magic bytes at the start of every index checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"TLEVIDX\0";
/// Version of the checkpoint format.
pub const CHECKPOINT_VERSION: u32 = 3;
/// Checkpoints with at least this many records align their arrays (each u32 array is then
/// at least 64 KiB); smaller ones are packed.
const ALIGNED_MIN_RECORDS: usize = 16 * 1024;
/// Array alignment of big checkpoints: 4 KiB. Mapping an array does not need a page-aligned
/// offset (the mapping starts at the page below), only an address aligned for its values; a
/// page boundary keeps the padding small and each array's pages its own.
const ARRAY_ALIGN_LOG2: u32 = 12;
const CHECKPOINT_HEADER_LEN: usize = 72;

/// Serializes the index of segment `seg_pos` (see the crate docs for the layout); `None` if
/// the index is inconsistent (then no checkpoint is written: it is only an acceleration).
pub fn encode_checkpoint(index: &Index, seg_pos: usize) -> Option<Vec<u8>> {
    let (keys, slots) = index.segment_ids(seg_pos);
    checkpoint_source(index, seg_pos).map(|src| src.encode(&keys, &slots))
}

/// What a segment's checkpoint is made of, copied out of the index so that the slow part
/// (local tables, serialization, checksum) runs without holding its lock.
pub struct CheckpointSource {
    first_position: u64,
    end_offset: u64,
    last_crc: u32,
    max_timestamp: i64,
    registry_epoch: u64,
    offsets: Vec<u32>,
    type_ids: Vec<u32>,
    /// Registry stream id of every record.
    stream_ids: Vec<u32>,
    /// Per registry stream id present: (org index, version of its first event here).
    streams: HashMap<u32, (u32, u64)>,
    /// Per org index present: (org id, usage in this segment).
    orgs: HashMap<u32, (OrgId, OrgUsage)>,
    /// Per type id present: its name.
    types: HashMap<u32, Box<str>>,
}

/// Copies what the checkpoint of segment `seg_pos` needs (O(records + streams)); `None` if
/// some record has no stream (an index bug: no checkpoint is written).
pub fn checkpoint_source(index: &Index, seg_pos: usize) -> Option<CheckpointSource> {
    let seg = &index.segments[seg_pos];
    let stream_ids = index.segment_stream_ids(seg_pos)?;
    let mut streams = HashMap::new();
    let mut orgs = HashMap::new();
    for &s in &stream_ids {
        streams.entry(s).or_insert_with(|| {
            let st = &index.streams[s as usize];
            // Version of the stream's first event in this segment, from its position list.
            let first_version =
                st.first_version + st.positions.lower_bound(seg.first_position) as u64;
            orgs.entry(st.org).or_insert_with(|| {
                let usage = seg.org_usage.get(&st.org).copied().unwrap_or_default();
                (index.orgs[st.org as usize].id, usage)
            });
            (st.org, first_version)
        });
    }
    let type_ids = seg.index_type_ids();
    let mut types = HashMap::new();
    for &t in &type_ids {
        types
            .entry(t)
            .or_insert_with(|| index.types[t as usize].clone());
    }
    Some(CheckpointSource {
        first_position: seg.first_position,
        end_offset: seg.end_offset,
        last_crc: seg.last_crc,
        max_timestamp: seg.max_timestamp,
        registry_epoch: index.registry_epoch,
        offsets: seg.offsets.to_vec(),
        type_ids,
        stream_ids,
        streams,
        orgs,
        types,
    })
}

impl CheckpointSource {
    /// The checkpoint's bytes, with the segment's (id hash, slot) pairs sorted by hash.
    pub fn encode(self, keys: &[u64], slots: &[u32]) -> Vec<u8> {
        let n = self.offsets.len();
        // Local tables: orgs, streams and types in order of first appearance in this segment.
        let mut org_local: HashMap<u32, u32> = HashMap::new();
        let mut orgs: Vec<u32> = Vec::new();
        let mut stream_local: HashMap<u32, u32> = HashMap::new();
        let mut streams: Vec<u32> = Vec::new();
        let mut type_local: HashMap<u32, u32> = HashMap::new();
        let mut types: Vec<u32> = Vec::new();
        let mut rec_stream = Vec::with_capacity(n);
        let mut rec_type = Vec::with_capacity(n);
        // Records come in runs of one stream and type (appends are batches): look up only
        // when the value changes.
        let mut last_stream = None;
        let mut last_type = None;
        for (&s, &t) in self.stream_ids.iter().zip(&self.type_ids) {
            let ls = match last_stream {
                Some((gs, ls)) if gs == s => ls,
                _ => {
                    let ls = *stream_local.entry(s).or_insert_with(|| {
                        streams.push(s);
                        let o = self.streams.get(&s).map_or(0, |(o, _)| *o);
                        org_local.entry(o).or_insert_with(|| {
                            orgs.push(o);
                            (orgs.len() - 1) as u32
                        });
                        (streams.len() - 1) as u32
                    });
                    last_stream = Some((s, ls));
                    ls
                }
            };
            let lt = match last_type {
                Some((gt, lt)) if gt == t => lt,
                _ => {
                    let lt = *type_local.entry(t).or_insert_with(|| {
                        types.push(t);
                        (types.len() - 1) as u32
                    });
                    last_type = Some((t, lt));
                    lt
                }
            };
            rec_stream.push(ls);
            rec_type.push(lt);
        }
        // Big checkpoints align their arrays so that a restart can map them (see `Column`).
        let align_log2 = if n >= ALIGNED_MIN_RECORDS {
            ARRAY_ALIGN_LOG2
        } else {
            0
        };
        let mut out = Vec::with_capacity(CHECKPOINT_HEADER_LEN + n * 24 + 4096);
        out.extend_from_slice(&CHECKPOINT_MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&align_log2.to_le_bytes());
        out.extend_from_slice(&self.first_position.to_le_bytes());
        out.extend_from_slice(&self.end_offset.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
        out.extend_from_slice(&self.last_crc.to_le_bytes());
        out.extend_from_slice(&(orgs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
        out.extend_from_slice(&(types.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.max_timestamp.to_le_bytes());
        out.extend_from_slice(&self.registry_epoch.to_le_bytes());
        debug_assert_eq!(out.len(), CHECKPOINT_HEADER_LEN);
        for o in &orgs {
            let (id, u) = self
                .orgs
                .get(o)
                .copied()
                .unwrap_or((OrgId([0; 16]), OrgUsage::default()));
            out.extend_from_slice(&id.0);
            out.extend_from_slice(&u.first_org_position.to_le_bytes());
            out.extend_from_slice(&u.events.to_le_bytes());
            out.extend_from_slice(&u.bytes.to_le_bytes());
        }
        for s in &streams {
            // Streams are referred to by their registry id (no names: see `encode_registry`).
            let (org, first_version) = self.streams.get(s).copied().unwrap_or_default();
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&org_local.get(&org).copied().unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&first_version.to_le_bytes());
        }
        for t in &types {
            let name = self.types.get(t).map_or("", |n| &**n);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        let pad = |out: &mut Vec<u8>| {
            if align_log2 > 0 {
                out.resize(out.len().next_multiple_of(1 << align_log2), 0);
            }
        };
        // The record slots grouped by stream and by org, so that a restart validates them (one
        // pass each) instead of computing them (two passes each, into fresh memory).
        let by_stream = group_slots(&rec_stream, streams.len());
        let stream_org: Vec<u32> = streams
            .iter()
            .map(|s| {
                let org = self.streams.get(s).map_or(0, |(o, _)| *o);
                org_local.get(&org).copied().unwrap_or(0)
            })
            .collect();
        let by_org = group_slots_by(n, orgs.len(), |i| stream_org[rec_stream[i] as usize]);
        for array in [
            &self.offsets[..],
            &rec_stream,
            &rec_type,
            &by_stream.slots,
            &by_org.slots,
        ] {
            pad(&mut out);
            for v in array.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        pad(&mut out);
        for k in keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
        pad(&mut out);
        for s in slots {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A parsed, checksum-verified checkpoint (not yet merged into an index).
#[derive(Debug)]
pub struct Checkpoint {
    /// Epoch of the stream registry whose ids this checkpoint uses.
    pub registry_epoch: u64,
    pub first_position: u64,
    pub end_offset: u64,
    pub records: usize,
    pub last_crc: u32,
    pub max_timestamp: i64,
    /// (org, first org position in segment, events, bytes)
    orgs: Vec<(OrgId, OrgUsage)>,
    /// (registry stream id, local org, first version in segment)
    streams: Vec<(u32, u32, u64)>,
    types: Vec<String>,
    offsets: Column<u32>,
    rec_type: Column<u32>,
    id_keys: Column<u64>,
    id_slots: Column<u32>,
    /// Record slots grouped by local stream and by local org (stored, and validated against
    /// each record's stream when read).
    by_stream: Grouped,
    by_org: Grouped,
}

/// Reads a checkpoint sequentially, checksumming as it goes, so the big arrays are decoded
/// straight into their final vectors (no whole-file buffer: that doubled the page faults),
/// or mapped from the file when it is laid out for that.
struct CrcReader<'f, R> {
    inner: R,
    crc: u32,
    /// Bytes left before the trailing checksum.
    remaining: u64,
    /// Length of the checksummed part (the file without its trailing checksum).
    body_len: u64,
    chunk: Vec<u8>,
    /// The file being read, if arrays may be mapped from it.
    file: Option<&'f File>,
    /// Arrays start at multiples of `1 << align_log2` (0: packed).
    align_log2: u32,
}

/// Arrays smaller than this are read even when they could be mapped (a mapping costs a
/// system call and at least a page).
const MAP_MIN_BYTES: usize = 64 * 1024;

impl<R: Read + Seek> CrcReader<'_, R> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n as u64 > self.remaining {
            return Err("checkpoint truncated or lengths inconsistent".into());
        }
        self.remaining -= n as u64;
        self.chunk.resize(n, 0);
        self.inner
            .read_exact(&mut self.chunk)
            .map_err(|e| e.to_string())?;
        self.crc = crc32c::crc32c_append(self.crc, &self.chunk);
        Ok(&self.chunk)
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.take(2).map(le_u16)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(le_u32)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(le_u64)
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "name is not UTF-8".to_string())
    }
    /// Reads the zero padding before the next array.
    fn pad(&mut self) -> Result<(), String> {
        if self.align_log2 == 0 {
            return Ok(());
        }
        let pos = self.body_len - self.remaining;
        let n = pos.next_multiple_of(1 << self.align_log2) - pos;
        if self.take(n as usize)?.iter().any(|b| *b != 0) {
            return Err("checkpoint padding is not zero".into());
        }
        Ok(())
    }

    /// The next array: mapped from the file if the layout allows it (it is still checksummed
    /// here, every byte), otherwise read.
    fn column<T: Pod, const W: usize>(
        &mut self,
        n: usize,
        conv: fn([u8; W]) -> T,
    ) -> Result<Column<T>, String> {
        self.pad()?;
        let total = n.checked_mul(W).ok_or("overflow")?;
        if let Some(file) = self.file
            && self.align_log2 > 0
            && total >= MAP_MIN_BYTES
            && total as u64 <= self.remaining
            && size_of::<T>() == W
        {
            let pos = self.body_len - self.remaining;
            if let Some(mapped) = Mapped::<T>::map(file, pos, n) {
                self.crc = crc32c::crc32c_append(self.crc, mapped.bytes());
                self.remaining -= total as u64;
                self.inner
                    .seek(SeekFrom::Current(total as i64))
                    .map_err(|e| e.to_string())?;
                return Ok(Column::Mapped(mapped));
            }
        }
        self.array(n, conv).map(Column::Owned)
    }

    /// `n` little-endian integers of `W` bytes, read in 256 KiB chunks.
    fn array<T, const W: usize>(
        &mut self,
        n: usize,
        conv: fn([u8; W]) -> T,
    ) -> Result<Vec<T>, String> {
        let total = n.checked_mul(W).ok_or("overflow")?;
        if total as u64 > self.remaining {
            return Err("checkpoint truncated or lengths inconsistent".into());
        }
        let mut out = Vec::with_capacity(n);
        let per_chunk = (256 * 1024 / W).max(1);
        let mut left = n;
        while left > 0 {
            let k = left.min(per_chunk);
            let b = self.take(k * W)?;
            out.extend(b.chunks_exact(W).map(|c| {
                let mut a = [0u8; W];
                a.copy_from_slice(c);
                conv(a)
            }));
            left -= k;
        }
        Ok(out)
    }
}

/// Reads and verifies a checkpoint file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let reader = std::io::BufReader::with_capacity(256 * 1024, &file);
    decode_checkpoint_from(reader, len, Some(&file))
}

/// Parses and verifies a checkpoint held in memory.
pub fn decode_checkpoint(b: &[u8]) -> Result<Checkpoint, String> {
    decode_checkpoint_from(std::io::Cursor::new(b), b.len() as u64, None)
}

fn decode_checkpoint_from(
    r: impl Read + Seek,
    len: u64,
    file: Option<&File>,
) -> Result<Checkpoint, String> {
    if len < (CHECKPOINT_HEADER_LEN + 4) as u64 {
        return Err("checkpoint too short".into());
    }
    let mut c = CrcReader {
        inner: r,
        crc: 0,
        remaining: len - 4,
        body_len: len - 4,
        chunk: Vec::new(),
        file,
        align_log2: 0,
    };
    if c.take(8)? != CHECKPOINT_MAGIC {
        return Err("bad checkpoint magic".into());
    }
    let version = c.u32()?;
    if version != CHECKPOINT_VERSION {
        return Err(format!("unsupported checkpoint version {version}"));
    }
    let align_log2 = c.u32()?;
    if align_log2 != 0 && !(3..=20).contains(&align_log2) {
        return Err(format!(
            "unsupported checkpoint array alignment {align_log2}"
        ));
    }
    let first_position = c.u64()?;
    let end_offset = c.u64()?;
    let records = usize::try_from(c.u64()?).map_err(|_| "record count overflow")?;
    let last_crc = c.u32()?;
    let n_orgs = c.u32()? as usize;
    let n_streams = c.u32()? as usize;
    let n_types = c.u32()? as usize;
    let max_timestamp = c.u64()? as i64;
    let registry_epoch = c.u64()?;
    if records as u64 > len / 24 {
        return Err("record count larger than the file".into());
    }
    let mut orgs = Vec::with_capacity(n_orgs.min(records));
    for _ in 0..n_orgs {
        let id = OrgId(arr16(c.take(16)?));
        let first_org_position = c.u64()?;
        let events = c.u64()?;
        let bytes = c.u64()?;
        orgs.push((
            id,
            OrgUsage {
                events,
                bytes,
                first_org_position,
            },
        ));
    }
    let mut streams = Vec::with_capacity(n_streams.min(records));
    for _ in 0..n_streams {
        let id = c.u32()?;
        let org = c.u32()?;
        let first_version = c.u64()?;
        if org as usize >= n_orgs {
            return Err("stream refers to an unknown org".into());
        }
        streams.push((id, org, first_version));
    }
    let mut types = Vec::with_capacity(n_types.min(records));
    for _ in 0..n_types {
        types.push(c.str()?);
    }
    c.align_log2 = align_log2;
    let offsets = c.column(records, u32::from_le_bytes)?;
    let rec_stream = c.column(records, u32::from_le_bytes)?;
    let rec_type = c.column(records, u32::from_le_bytes)?;
    let stream_slots = c.column(records, u32::from_le_bytes)?;
    let org_slots = c.column(records, u32::from_le_bytes)?;
    let id_keys = c.column(records, u64::from_le_bytes)?;
    let id_slots = c.column(records, u32::from_le_bytes)?;
    if c.remaining != 0 {
        return Err("trailing bytes in checkpoint".into());
    }
    let computed = c.crc;
    let mut stored = [0u8; 4];
    c.inner.read_exact(&mut stored).map_err(|e| e.to_string())?;
    if computed != u32::from_le_bytes(stored) {
        return Err("checkpoint checksum mismatch".into());
    }
    // Folds without early exits, so that each pass compiles to vector instructions (the
    // valid case is the one to make fast).
    let below = |col: &[u32], limit: usize| {
        col.is_empty() || (col.iter().fold(0, |m, v| m.max(*v)) as usize) < limit
    };
    let increasing = |col: &[u32]| {
        col.iter()
            .zip(&col[1..])
            .fold(true, |ok, (a, b)| ok & (a < b))
    };
    let keys_sorted = id_keys.is_empty()
        || id_keys
            .iter()
            .zip(&id_keys[1..])
            .fold(true, |ok, (a, b)| ok & (a <= b));
    if !below(&rec_stream, n_streams)
        || !below(&rec_type, n_types)
        || !below(&id_slots, records)
        || !(offsets.is_empty() || increasing(&offsets))
        || !keys_sorted
    {
        return Err("checkpoint tables are inconsistent".into());
    }
    let mut stream_ids: Vec<u32> = streams.iter().map(|(id, _, _)| *id).collect();
    stream_ids.sort_unstable();
    if stream_ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("checkpoint names a stream twice".into());
    }
    let inconsistent = |_| "checkpoint tables are inconsistent".to_string();
    let rec_stream: &[u32] = &rec_stream;
    let by_stream = Grouped::validate(stream_slots, n_streams, |slot| rec_stream[slot])
        .map_err(inconsistent)?;
    let stream_org: Vec<u32> = streams.iter().map(|(_, o, _)| *o).collect();
    let by_org = Grouped::validate(org_slots, n_orgs, |slot| {
        stream_org[rec_stream[slot] as usize]
    })
    .map_err(inconsistent)?;
    Ok(Checkpoint {
        registry_epoch,
        first_position,
        end_offset,
        records,
        last_crc,
        max_timestamp,
        orgs,
        streams,
        types,
        offsets,
        rec_type,
        id_keys,
        id_slots,
        by_stream,
        by_org,
    })
}

impl Checkpoint {
    /// Offset of the last covered record (to confirm the checkpoint matches the segment).
    pub fn last_offset(&self) -> Option<u64> {
        self.offsets.last().map(|o| u64::from(*o))
    }
}

impl Index {
    /// Merges a verified checkpoint as the index of the (new, empty) last segment. Checks that
    /// it continues the index; on error the index is left unchanged.
    pub fn apply_checkpoint(&mut self, cp: Checkpoint) -> Result<(), String> {
        let Some(seg_pos) = self.segments.len().checked_sub(1) else {
            return Err("no segment".into());
        };
        if self.segments[seg_pos].len() != 0 || cp.first_position != self.last_position + 1 {
            return Err("checkpoint does not continue the index".into());
        }
        if self.segments[seg_pos].first_position != cp.first_position {
            return Err("checkpoint belongs to another segment".into());
        }
        if cp.registry_epoch != self.registry_epoch {
            return Err("checkpoint was written against another stream registry".into());
        }
        let strict = self.starts_at_one;
        // Validate continuity before mutating anything.
        for (org, u) in &cp.orgs {
            let expected = match self.org(org) {
                Some(o) if o.first_org_position > 0 => o.last_org_position() + 1,
                _ if strict => 1,
                _ => u.first_org_position,
            };
            if u.first_org_position != expected || u.first_org_position == 0 {
                return Err(format!("org {org} positions do not continue"));
            }
        }
        // Streams: with the usual shape (streams not vastly outnumbering records) their lists
        // are filled later in one sequential pass (see `Deferred`); validation then uses the
        // dense next-version table instead of touching every stream entry.
        let n_streams = self.streams.len();
        let dense = n_streams <= 4 * cp.records + 4096;
        if !dense {
            self.flush_deferred();
        } else if self.deferred.is_none() {
            self.deferred = Some(Deferred::start(&self.streams));
        }
        for (id, o, v) in &cp.streams {
            // Streams must be known from the registry, in the org the checkpoint says.
            let id = *id as usize;
            if id >= n_streams {
                return Err(format!("stream id {id} is not in the stream registry"));
            }
            let (org, next) = match &self.deferred {
                Some(d) => (d.stream_org[id], d.next_version[id]),
                None => {
                    let st = &self.streams[id];
                    let next = if st.first_version == 0 {
                        0
                    } else {
                        st.last_version() + 1
                    };
                    (st.org, next)
                }
            };
            if self.orgs[org as usize].id != cp.orgs[*o as usize].0 {
                return Err(format!("stream id {id} belongs to another org"));
            }
            let expected = match next {
                0 if strict => 1,
                0 => *v,
                n => n,
            };
            if *v != expected || *v == 0 {
                return Err(format!("stream id {id}: versions do not continue"));
            }
        }
        if cp
            .by_org
            .groups()
            .zip(&cp.orgs)
            .any(|((_, slots), (_, u))| slots.len() as u64 != u.events)
        {
            return Err("org event counts do not match the records".into());
        }
        let org_map: Vec<u32> = cp.orgs.iter().map(|(id, _)| self.intern_org(*id)).collect();
        let stream_map: Vec<u32> = cp.streams.iter().map(|(id, _, _)| *id).collect();
        let type_map: Vec<u32> = cp.types.iter().map(|t| self.intern_type(t)).collect();
        let mut seg_usage = IntMap::default();
        for (i, (_, u)) in cp.orgs.iter().enumerate() {
            seg_usage.insert(org_map[i], *u);
            let o = &mut self.orgs[org_map[i] as usize];
            o.bytes += u.bytes;
            if o.first_org_position == 0 {
                o.first_org_position = u.first_org_position;
            }
        }
        let seg_first = cp.first_position;
        if let Some(d) = self.deferred.as_mut() {
            // `flush_deferred` appends the segment's slots to the lists.
            for ((id, _, v), (_, slots)) in cp.streams.iter().zip(cp.by_stream.groups()) {
                let id = *id as usize;
                if d.next_version[id] == 0 {
                    d.first_version[id] = *v;
                }
                d.next_version[id] = v + slots.len() as u64;
            }
            d.segs.push(DeferredSegment {
                first: seg_first,
                stream_map,
                by_stream: cp.by_stream,
            });
        } else {
            for (id, _, v) in &cp.streams {
                let st = &mut self.streams[*id as usize];
                if st.first_version == 0 {
                    st.first_version = *v;
                }
            }
            let mut positions = Vec::new();
            for (ls, slots) in cp.by_stream.groups() {
                positions.clear();
                positions.extend(slots.iter().map(|i| seg_first + u64::from(*i)));
                self.streams[stream_map[ls] as usize]
                    .positions
                    .extend(&positions);
            }
        }
        let mut positions = Vec::new();
        for (lo, slots) in cp.by_org.groups() {
            positions.clear();
            positions.extend(slots.iter().map(|i| seg_first + u64::from(*i)));
            self.orgs[org_map[lo] as usize].positions.extend(&positions);
        }
        let seg = &mut self.segments[seg_pos];
        seg.offsets = cp.offsets;
        // Local type ids stay as they are (the column may be mapped), translated on lookup.
        seg.type_ids = cp.rec_type;
        seg.type_map = type_map;
        seg.ids_sorted = Arc::new(SortedIds {
            keys: cp.id_keys,
            slots: cp.id_slots,
        });
        seg.ids_merged = false;
        seg.end_offset = cp.end_offset;
        seg.max_timestamp = cp.max_timestamp;
        seg.last_crc = cp.last_crc;
        seg.org_usage = seg_usage;
        self.last_position += cp.records as u64;
        Ok(())
    }
}

/// Checkpoint stream data waiting to be appended to the stream lists (see
/// [`Index::flush_deferred`]), with the dense tables that validate continuity meanwhile.
#[derive(Debug)]
struct Deferred {
    /// Per stream id: the next expected version (0: no event known yet).
    next_version: Vec<u64>,
    /// Per stream id: its org index (a dense copy, so validation touches no stream entry).
    stream_org: Vec<u32>,
    /// Per stream id: the first version, for streams whose first event is in these segments.
    first_version: Vec<u64>,
    segs: Vec<DeferredSegment>,
}

#[derive(Debug)]
struct DeferredSegment {
    first: u64,
    /// Local stream index → registry stream id.
    stream_map: Vec<u32>,
    /// Record slots by local stream index.
    by_stream: Grouped,
}

impl Deferred {
    fn start(streams: &[StreamEntry]) -> Self {
        Deferred {
            next_version: streams
                .iter()
                .map(|s| {
                    if s.first_version == 0 {
                        0
                    } else {
                        s.last_version() + 1
                    }
                })
                .collect(),
            stream_org: streams.iter().map(|s| s.org).collect(),
            first_version: vec![0; streams.len()],
            segs: Vec::new(),
        }
    }
}

/// Record slots grouped by a small key (stream or org local index), in slot order per key.
#[derive(Debug)]
struct Grouped {
    starts: Vec<u32>,
    slots: Column<u32>,
}

impl Grouped {
    /// Checks that `slots` is the grouping of records `0..slots.len()` by `key_of(record)`
    /// (keys below `n_keys`): keys never decrease along it, and slots strictly increase
    /// within a key. A slot can then only sit in its own key's group, once, so all `n` are
    /// there exactly once.
    fn validate(
        slots: Column<u32>,
        n_keys: usize,
        key_of: impl Fn(usize) -> u32,
    ) -> Result<Grouped, ()> {
        let n = slots.len();
        // starts[k] = index of the first slot whose key is >= k.
        let mut starts = vec![0u32; n_keys + 1];
        let (mut key, mut last) = (0u32, None::<u32>);
        for (j, &slot) in slots.iter().enumerate() {
            if slot as usize >= n {
                return Err(());
            }
            let k = key_of(slot as usize);
            if k != key {
                if k < key || k as usize >= n_keys {
                    return Err(());
                }
                starts[key as usize + 1..=k as usize].fill(j as u32);
                (key, last) = (k, None);
            }
            if last.is_some_and(|l| slot <= l) {
                return Err(());
            }
            last = Some(slot);
        }
        if n > 0 && key as usize >= n_keys {
            return Err(());
        }
        starts[(key as usize + 1).min(n_keys + 1)..].fill(n as u32);
        Ok(Grouped { starts, slots })
    }

    fn groups(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.starts
            .windows(2)
            .enumerate()
            .map(|(k, w)| (k, &self.slots[w[0] as usize..w[1] as usize]))
    }

    /// The slots of key `k` (`None` past the last key).
    fn group(&self, k: u32) -> Option<&[u32]> {
        let k = k as usize;
        let (start, end) = (*self.starts.get(k)?, *self.starts.get(k + 1)?);
        Some(&self.slots[start as usize..end as usize])
    }
}

fn group_slots(keys: &[u32], n_keys: usize) -> Grouped {
    group_slots_by(keys.len(), n_keys, |i| keys[i])
}

/// [`group_slots`] of records `0..n` whose key is `key_of(record)`. Records come in runs of
/// one key (an append is a batch of one stream), so both passes go run by run: one counter
/// update and one contiguous fill per run instead of per record.
fn group_slots_by(n: usize, n_keys: usize, key_of: impl Fn(usize) -> u32) -> Grouped {
    let runs = |f: &mut dyn FnMut(usize, usize, usize)| {
        let mut i = 0;
        while i < n {
            let k = key_of(i);
            let mut j = i + 1;
            while j < n && key_of(j) == k {
                j += 1;
            }
            f(k as usize, i, j);
            i = j;
        }
    };
    let mut starts = vec![0u32; n_keys + 1];
    runs(&mut |k, i, j| starts[k + 1] += (j - i) as u32);
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut slots = vec![0u32; n];
    runs(&mut |k, i, j| {
        let at = fill[k] as usize;
        for (slot, record) in slots[at..at + j - i].iter_mut().zip(i..j) {
            *slot = record as u32;
        }
        fill[k] += (j - i) as u32;
    });
    Grouped {
        starts,
        slots: slots.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn chunk_list_widens_a_chunk_whose_values_span_more_than_u32() {
        let mut l = ChunkList::default();
        l.push(5);
        l.push(6);
        l.push(6 + u64::from(u32::MAX) + 10); // does not fit a u32 offset from 5
        l.extend(&[u64::MAX - 1, u64::MAX]);
        assert_eq!(l.len(), 5);
        let all: Vec<u64> = (0..5).map(|i| l.get(i).unwrap()).collect();
        assert_eq!(
            all,
            [5, 6, 6 + u64::from(u32::MAX) + 10, u64::MAX - 1, u64::MAX]
        );
        assert_eq!(l.lower_bound(7), 2);
        // A list of more than one chunk, narrow and wide mixed, still indexes by position.
        let mut l = ChunkList::default();
        let values: Vec<u64> = (0..10_000u64)
            .map(|i| if i < 5_000 { i * 3 } else { (1 << 40) + i })
            .collect();
        l.extend(&values);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(l.get(i), Some(*v));
        }
        l.drop_front(4_500);
        assert_eq!(l.get(0), Some(values[4_500]));
        assert_eq!(l.lower_bound(1 << 40), 500);
    }

    /// A big checkpoint's arrays are mapped from the file, every byte still checksummed, and
    /// decode exactly as the same bytes read into memory; damage anywhere, the mapped arrays
    /// and the padding before them included, rejects it.
    #[test]
    fn big_checkpoints_are_mapped_checksummed_and_decoded_alike() {
        let n = ALIGNED_MIN_RECORDS as u32 + 5;
        let org = OrgId([7; 16]);
        let usage = OrgUsage {
            events: u64::from(n),
            bytes: 100 * u64::from(n),
            first_org_position: 1,
        };
        let source = CheckpointSource {
            first_position: 1,
            end_offset: 64 + 100 * u64::from(n),
            last_crc: 9,
            max_timestamp: 5,
            registry_epoch: 3,
            offsets: (0..n).map(|i| 64 + 100 * i).collect(),
            type_ids: (0..n).map(|i| (i / 1000) % 3).collect(),
            stream_ids: (0..n).map(|i| (i / 500) % 4).collect(),
            streams: (0..4).map(|s| (s, (0, 1))).collect(),
            orgs: [(0, (org, usage))].into_iter().collect(),
            types: (0..3).map(|t| (t, format!("type{t}").into())).collect(),
        };
        let mut pairs: Vec<(u64, u32)> = (0..n)
            .map(|i| (u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15), i))
            .collect();
        pairs.sort_unstable();
        let (keys, slots) = sort_id_pairs(pairs);
        let bytes = source.encode(&keys, &slots);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.idx");
        std::fs::write(&path, &bytes).unwrap();

        let mapped = read_checkpoint(&path).unwrap();
        let read = decode_checkpoint(&bytes).unwrap();
        assert!(mapped.offsets.is_mapped() && mapped.id_keys.is_mapped());
        assert!(mapped.rec_type.is_mapped() && mapped.id_slots.is_mapped());
        assert!(!read.offsets.is_mapped());
        assert_eq!(*mapped.offsets, *read.offsets);
        assert!(mapped.by_stream.slots.is_mapped() && mapped.by_org.slots.is_mapped());
        assert_eq!(*mapped.by_stream.slots, *read.by_stream.slots);
        assert_eq!(*mapped.by_org.slots, (0..n).collect::<Vec<_>>());
        assert_eq!(mapped.by_org.starts, [0, n]);
        let mut starts = vec![0u32; 5];
        for i in 0..n {
            starts[((i / 500) % 4) as usize + 1] += 1;
        }
        for k in 1..5 {
            starts[k] += starts[k - 1];
        }
        assert_eq!(mapped.by_stream.starts, starts);
        let first: Vec<u32> = (0..4)
            .map(|k| mapped.by_stream.group(k).unwrap()[0])
            .collect();
        assert_eq!(first, [0, 500, 1000, 1500]);
        assert_eq!(*mapped.rec_type, *read.rec_type);
        assert_eq!(*mapped.id_keys, *keys);
        assert_eq!(*mapped.id_slots, *slots);
        assert_eq!(mapped.records, n as usize);

        // The layout: the tables fit before the first boundary, then every array starts at one
        // (offsets, streams, types, slots by stream, slots by org, id hashes, id slots).
        let align = 1usize << ARRAY_ALIGN_LOG2;
        let mut starts = vec![align];
        for size in [4, 4, 4, 4, 4, 8] {
            let end = starts[starts.len() - 1] + size * n as usize;
            starts.push(end.next_multiple_of(align));
        }
        assert_eq!(bytes.len(), starts[6] + 4 * n as usize + 4);
        let rewrite = |bad: &mut Vec<u8>| {
            let body = bad.len() - 4;
            let crc = crc32c::crc32c(&bad[..body]);
            bad[body..].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, &bad).unwrap();
        };
        // A flipped bit in a mapped array (id hashes, id slots), in the padding before the
        // first array and between two.
        let padding = starts[0] - 1;
        for at in [starts[5] + 800, starts[6] + 4, padding, starts[1] - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let err = read_checkpoint(&path).unwrap_err();
            assert!(err.contains("checksum") || err.contains("padding"), "{err}");
        }
        // Non-zero padding is refused even with a matching checksum.
        let mut bad = bytes.clone();
        bad[padding] = 1;
        rewrite(&mut bad);
        assert_eq!(
            read_checkpoint(&path).unwrap_err(),
            "checkpoint padding is not zero"
        );
        // So are groupings that do not match the records' streams, checksum or not: a slot
        // moved to another stream's group, two slots of one group out of order, one slot
        // twice in the org grouping.
        let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let put =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let by_stream = starts[3];
        let by_org = starts[4];
        let first_of_second_group = by_stream + 4 * mapped.by_stream.starts[1] as usize;
        let swaps = [
            (by_stream, first_of_second_group),
            (by_stream, by_stream + 4),
        ];
        for (x, y) in swaps {
            let mut bad = bytes.clone();
            let (a, b) = (word(&bad, x), word(&bad, y));
            put(&mut bad, x, b);
            put(&mut bad, y, a);
            rewrite(&mut bad);
            assert_eq!(
                read_checkpoint(&path).unwrap_err(),
                "checkpoint tables are inconsistent"
            );
        }
        let mut bad = bytes.clone();
        let second = word(&bad, by_org + 4);
        put(&mut bad, by_org, second);
        rewrite(&mut bad);
        assert_eq!(
            read_checkpoint(&path).unwrap_err(),
            "checkpoint tables are inconsistent"
        );
    }

    #[test]
    fn recent_types_remember_the_last_eight_and_never_answer_wrong() {
        let mut r = RecentTypes::default();
        for t in 0..10u32 {
            assert_eq!(r.get(&format!("type{t}")), None);
            r.put(&format!("type{t}"), t);
        }
        // The two oldest were replaced; every other name maps to its own id.
        assert_eq!(r.get("type0"), None);
        assert_eq!(r.get("type1"), None);
        for t in 2..10u32 {
            assert_eq!(r.get(&format!("type{t}")), Some(t));
        }
        assert_eq!(r.get("type"), None);
        assert_eq!(r.get("type22"), None);
    }

    #[test]
    fn chunk_list_indexes_and_drops_from_the_front() {
        let mut l = ChunkList::default();
        for i in 0..10_000u64 {
            l.push(i * 2);
        }
        assert_eq!(l.get(9_999), Some(19_998));
        assert_eq!(l.lower_bound(101), 51);
        l.drop_front(5_000);
        assert_eq!(l.len(), 5_000);
        assert_eq!(l.get(0), Some(10_000));
        assert_eq!(l.lower_bound(0), 0);
        l.drop_front(5_000);
        assert_eq!(l.len(), 0);
        assert_eq!(l.get(0), None);
        l.push(7);
        assert_eq!(l.get(0), Some(7));
        l.extend(&(0..10_000u64).collect::<Vec<_>>());
        assert_eq!(
            (l.len(), l.get(4096), l.get(10_000)),
            (10_001, Some(4095), Some(9_999))
        );
    }

    #[test]
    fn id_run_merges_segment_runs_and_finds_every_key_including_duplicates() {
        let mut x = 1u64;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x
        };
        let mut runs = Vec::new();
        let mut all: Vec<(u64, u64)> = Vec::new();
        for seg in 0..5u64 {
            let first = 1 + seg * 1000;
            let mut pairs: Vec<(u64, u32)> = (0..1000u32).map(|slot| (next(), slot)).collect();
            if seg == 3 {
                pairs[7].0 = all[0].0; // a hash collision across segments
            }
            all.extend(pairs.iter().map(|(k, s)| (*k, first + u64::from(*s))));
            pairs.sort_unstable();
            let (keys, slots): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
            let ids = SortedIds {
                keys: keys.into(),
                slots: slots.into(),
            };
            runs.push((first, Arc::new(ids)));
        }
        let half = IdRun::merge(&[], &runs[..2], 1, &|| false).unwrap();
        let recent = IdRun::merge(&[], &runs[2..3], 1, &|| false).unwrap();
        // Two runs and more segments into one, as the main-run merge does.
        let run = IdRun::merge(&[&half, &recent], &runs[3..], 1, &|| false).unwrap();
        assert_eq!(run.len(), 5000);
        for (k, p) in &all {
            let mut out = Vec::new();
            run.find(*k, &mut out);
            assert!(out.contains(p), "key {k} position {p}");
        }
        let mut out = Vec::new();
        run.find(all[0].0, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        run.find(0, &mut out);
        run.find(u64::MAX, &mut out);
        assert!(out.is_empty());
        // Dropping positions below 2001 (retention) keeps the rest findable.
        let kept = run.retain_from(2001);
        assert_eq!(kept.len(), 3000);
    }

    /// A deterministic stream of well-spread u64 (xorshift64).
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn mark_known_finds_every_key_of_a_run_and_no_other() {
        let mut next = xorshift(7u64);
        let mut pairs: Vec<(u64, u32)> = (0..5000u32).map(|slot| (next(), slot)).collect();
        pairs.push((pairs[10].0, 5000)); // a hash shared by two ids
        pairs.extend([(0, 5001), (u64::MAX, 5002)]);
        let present: Vec<u64> = pairs.iter().map(|(k, _)| *k).collect();
        pairs.sort_unstable();
        let (keys, slots): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
        let ids = SortedIds {
            keys: keys.into(),
            slots: slots.into(),
        };
        let segment = (1, Arc::new(ids));
        let run = IdRun::merge(&[], &[segment], 1, &|| false).unwrap();
        let absent: Vec<u64> = (0..5000).map(|_| next()).collect();
        // Present and absent keys interleaved, some already marked by an earlier run.
        let mut keys: Vec<u64> = present
            .iter()
            .zip(&absent)
            .flat_map(|(p, a)| [*p, *a])
            .collect();
        // The shared hash and the extremes (0, u64::MAX) come last, after the pairs.
        keys.extend(&present[absent.len()..]);
        assert_eq!(keys.len(), present.len() + absent.len());
        let mut known = vec![false; keys.len()];
        known[1] = true;
        run.mark_known(&keys, &mut known);
        for (i, (k, m)) in keys.iter().zip(&known).enumerate() {
            let mut out = Vec::new();
            run.find(*k, &mut out);
            assert_eq!(*m, !out.is_empty() || i == 1, "key {k} at {i}");
        }
        for p in &present {
            let at = keys.iter().position(|k| k == p).unwrap();
            assert!(known[at], "present key {p} marked");
        }
        // An empty run marks nothing.
        let mut none = vec![false; 4];
        IdRun::default().mark_known(&[0, 1, 2, u64::MAX], &mut none);
        assert_eq!(none, vec![false; 4]);
    }

    #[test]
    fn lower_bound_uniform_agrees_with_a_binary_search() {
        let mut next = xorshift(0x1234_5678_9ABC_DEF0u64);
        for n in [0usize, 1, 2, 31, 33, 1000, 100_000] {
            let mut keys: Vec<u64> = (0..n).map(|_| next()).collect();
            // Duplicates, the extremes and a skewed run, as well as uniform keys.
            keys.extend([0, 0, u64::MAX, u64::MAX, 5, 5, 5]);
            keys.extend((0..n as u64 / 10).map(|i| 1_000 + i));
            keys.sort_unstable();
            let mut probes: Vec<u64> = keys.iter().step_by(7).copied().collect();
            probes.extend((0..200).map(|_| next()));
            probes.extend([0, 1, 4, 5, 6, u64::MAX - 1, u64::MAX]);
            for key in probes {
                assert_eq!(
                    lower_bound_uniform(&keys, key),
                    keys.partition_point(|k| *k < key),
                    "n={n} key={key}"
                );
            }
        }
    }

    #[test]
    fn id_key_differs_for_ids_sharing_a_uuid_v7_prefix() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a[15] = 1;
        b[15] = 2;
        assert_ne!(id_key(&EventId(a)), id_key(&EventId(b)));
    }
}
