//! Resolved bearer tokens kept in memory, so an authenticated request does not cost a read.
//!
//! Exact, not eventually consistent: SQLite is embedded, so every write goes through this
//! process, and each write that can change a resolution (revocation, role change, member
//! removal) calls [`TokenCache::invalidate`] when it is done. A generation number closes the
//! race with a lookup that read the database before such a write committed: its result is
//! only cached if no invalidation happened since the lookup began. Expiry and revocation are
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
        inner.entries.get(hash).cloned().ok_or(inner.generation)
    }

    /// Caches a record read at `generation`, unless an invalidation happened since.
    pub(crate) fn put(&self, generation: u64, hash: [u8; 32], record: TokenRecord) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(hash, record);
    }

    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
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
