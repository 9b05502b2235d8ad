//! Keyset pagination in domain terms: the adapter returns one extra row to know whether a
//! next page exists; the transport turns the last key into an opaque cursor.

/// Default and maximum page sizes (CONVENTIONS.md: default 50, max 200).
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
pub const PAGE_LIMIT_MAX: u32 = 200;

/// A page request: at most `limit` rows strictly after `after` in the listing's order.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    pub limit: u32,
    pub after: Option<K>,
}

/// One page of rows and, if more rows follow, the key to continue after.
#[derive(Debug, Clone)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only proves a next page.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if has_more { rows.last().map(key) } else { None };
        Page { items: rows, next }
    }
}
