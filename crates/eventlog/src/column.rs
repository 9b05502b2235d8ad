//! Index arrays that are either owned or mapped from a checkpoint file.
//!
//! A restart used to copy every checkpoint's arrays into fresh heap memory: at 10 million
//! events that is ~240 MB the kernel first copies out of the page cache and then faults in
//! one 4 KiB page at a time (about half of the restart's time on a small VM). A sealed
//! segment's arrays never change, so a checkpoint lays them out aligned (see the crate docs)
//! and the index maps them read-only instead: the pages are the page cache's, mapped in one
//! call. The checksum is still verified over every byte before anything is used.
//!
//! This is the only module with `unsafe` code: creating a file mapping is unsafe because the
//! file could change while mapped, and viewing the mapped bytes as values needs a raw cast
//! (checked once, when the mapping is made). Checkpoint files are never modified in place:
//! they are written to a temporary file and renamed over, and deleted only by unlinking (a
//! mapping keeps its inode alive), so a mapped checkpoint changes only if something outside
//! the engine writes into the locked data directory. (Truncating a mapped file from outside
//! would make the process fault on access, like any memory-mapped store.)
#![allow(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::ops::Deref;

use bytemuck::Pod;

/// A sealed array of `T`: owned, or mapped from a file.
pub enum Column<T> {
    Owned(Vec<T>),
    Mapped(Mapped<T>),
}

/// `len` values of `T` mapped read-only from a file.
pub struct Mapped<T> {
    map: memmap2::Mmap,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Pod> Mapped<T> {
    /// Maps `len` little-endian values at byte `offset` of `file` (the mapping starts at the
    /// page below `offset`). `None` if the mapping fails, if `offset` leaves the values
    /// misaligned for `T`, or on a big-endian machine: the caller then reads the values.
    pub fn map(file: &File, offset: u64, len: usize) -> Option<Mapped<T>> {
        if cfg!(target_endian = "big") || len == 0 {
            return None;
        }
        let bytes = len.checked_mul(size_of::<T>())?;
        // SAFETY: the mapping is read-only and private; the file is a checkpoint that the
        // engine never modifies in place (see the module docs), so its bytes do not change
        // while mapped. `populate` maps every page now instead of at first touch.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(bytes)
                .populate()
                .map(file)
        }
        .ok()?;
        // Checked once here (the offset must suit `T`), so that `values` is a plain cast.
        bytemuck::try_cast_slice::<u8, T>(&map).ok()?;
        Some(Mapped {
            map,
            len,
            _values: PhantomData,
        })
    }

    /// The values. (Called in the innermost loops of a restart, so not `cast_slice`, which
    /// checks alignment and length at every call.)
    pub fn values(&self) -> &[T] {
        // SAFETY: `map` holds `len * size_of::<T>()` bytes at an address aligned for `T`
        // (checked in `map`), any bit pattern is a valid `T` (`Pod`), and the bytes do not
        // change while mapped (see the module docs). The slice borrows `self`, which owns the
        // mapping.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<T>(), self.len) }
    }

    /// The mapped bytes (for the checksum).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl<T: Pod> Deref for Column<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Column::Owned(v) => v,
            Column::Mapped(m) => m.values(),
        }
    }
}

impl<'a, T: Pod> IntoIterator for &'a Column<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T> Default for Column<T> {
    fn default() -> Self {
        Column::Owned(Vec::new())
    }
}

impl<T: Pod> From<Vec<T>> for Column<T> {
    fn from(v: Vec<T>) -> Self {
        Column::Owned(v)
    }
}

impl<T: Pod> Column<T> {
    /// The values as a vector to append to (a mapped column is copied first: that happens
    /// only to the active segment, loaded from the checkpoint of a clean close).
    pub fn to_mut(&mut self) -> &mut Vec<T> {
        if let Column::Mapped(m) = self {
            *self = Column::Owned(m.values().to_vec());
        }
        match self {
            Column::Owned(v) => v,
            Column::Mapped(_) => unreachable!("replaced above"),
        }
    }

    /// Memory the column holds: heap capacity, or the mapped pages (resident page cache).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Column::Owned(v) => v.capacity() * size_of::<T>(),
            Column::Mapped(m) => m.map.len(),
        }
    }

    pub fn shrink_to_fit(&mut self) {
        if let Column::Owned(v) = self {
            v.shrink_to_fit();
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Column::Mapped(_))
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Column({kind}, {} values)", self.len())
    }
}
