//! Resolved bearer tokens kept in memory, so an authenticated request does not cost a read.
//!
//! Exact, not eventually consistent: SQLite is embedded, so every write goes through this
//! process, and each write that can change a resolution (revocation, role change, member
//! removal) is bracketed by [`TokenCache::write_started`] and [`TokenCache::write_done`]:
//! while one runs the cache is neither read nor filled, and both ends drop every entry. A
//! generation number closes the race with a lookup that read the database before such a
//! write began: its result is only cached if nothing changed since the lookup began. A
//! write whose request is dropped half-way (a timeout, a client gone) may still commit on
//! the connection's thread, so its end is only marked once the writer connection has
//! worked through it (see `SqliteStore::token_write`). Expiry and revocation are
//! decided by the caller from the record on every request, cached or not. Unknown tokens are
//! never cached (guessing cannot fill memory), and the cache is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use trueline_store::TokenRecord;

/// Beyond this many live tokens the cache starts over (a handful of reads refill it).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    entries: HashMap<[u8; 32], TokenRecord>,
    /// Token-affecting writes that started and are not known to be done.
    writing: u32,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached record, or the generation to hand to [`TokenCache::put`] after reading.
    pub(crate) fn get(&self, hash: &[u8; 32]) -> Result<TokenRecord, u64> {
        let inner = self.lock();
        if inner.writing > 0 {
            return Err(inner.generation);
        }
        inner.entries.get(hash).cloned().ok_or(inner.generation)
    }

    /// Caches a record read at `generation`, unless an invalidation happened since or a
    /// token-affecting write is running.
    pub(crate) fn put(&self, generation: u64, hash: [u8; 32], record: TokenRecord) {
        let mut inner = self.lock();
        if inner.generation != generation || inner.writing > 0 {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(hash, record);
    }

    fn invalidate_locked(inner: &mut Inner) {
        inner.generation += 1;
        inner.entries.clear();
    }

    #[cfg(test)]
    pub(crate) fn invalidate(&self) {
        Self::invalidate_locked(&mut self.lock());
    }

    /// A write that can change what a token resolves to is about to run.
    pub(crate) fn write_started(&self) {
        let mut inner = self.lock();
        inner.writing += 1;
        Self::invalidate_locked(&mut inner);
    }

    /// That write is over: committed, rolled back, or worked through by the connection.
    pub(crate) fn write_done(&self) {
        let mut inner = self.lock();
        inner.writing = inner.writing.saturating_sub(1);
        Self::invalidate_locked(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use trueline_core::accounts::Role;
    use trueline_core::ids::{OrgId, TokenId, UserId};

    fn record() -> TokenRecord {
        TokenRecord {
            token_id: TokenId(uuid::Uuid::now_v7()),
            user_id: UserId(uuid::Uuid::now_v7()),
            org_id: OrgId(uuid::Uuid::now_v7()),
            role: Role::Member,
            expires_at: OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
        }
    }

    #[test]
    fn a_read_that_overlapped_an_invalidation_is_not_cached() {
        let cache = TokenCache::default();
        let generation = cache.get(&[1; 32]).expect_err("empty");
        cache.invalidate(); // a write committed while the read was in flight
        cache.put(generation, [1; 32], record());
        assert!(cache.get(&[1; 32]).is_err());
    }

    #[test]
    fn nothing_is_served_or_cached_while_a_write_runs() {
        let cache = TokenCache::default();
        let generation = cache.get(&[1; 32]).expect_err("empty");
        cache.put(generation, [1; 32], record());
        cache.write_started();
        assert!(cache.get(&[1; 32]).is_err(), "an entry survived the start");
        // A lookup while the write runs reads the database and must not cache what it saw.
        let during = cache.get(&[2; 32]).expect_err("bypassed");
        cache.put(during, [2; 32], record());
        assert!(cache.get(&[2; 32]).is_err());
        cache.write_done();
        assert!(cache.get(&[2; 32]).is_err());
        let after = cache.get(&[2; 32]).expect_err("empty");
        let stored = record();
        cache.put(after, [2; 32], stored.clone());
        assert_eq!(cache.get(&[2; 32]), Ok(stored));
    }

    #[test]
    fn invalidation_drops_every_entry() {
        let cache = TokenCache::default();
        let generation = cache.get(&[1; 32]).expect_err("empty");
        let stored = record();
        cache.put(generation, [1; 32], stored.clone());
        assert_eq!(cache.get(&[1; 32]), Ok(stored));
        cache.invalidate();
        assert!(cache.get(&[1; 32]).is_err());
    }
}
