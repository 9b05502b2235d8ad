//! Places counted per key against a cap: a client's connections or requests in flight, an
//! organization's open event subscriptions. Each place is given back when its holder is
//! dropped (answered, closed, or the client went away), and a key with none left is
//! forgotten, so the map holds only keys in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// The places held per key.
pub struct KeyedSlots<K> {
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K> Clone for KeyedSlots<K> {
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
        }
    }
}

impl<K> Default for KeyedSlots<K> {
    fn default() -> Self {
        Self {
            held: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedSlots<K> {
    /// A place for `key`, or `None` when it holds `cap` already.
    pub fn take(&self, key: K, cap: usize) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key.clone()).or_default();
        if *count >= cap {
            if *count == 0 {
                held.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            key,
            held: self.held.clone(),
        })
    }

    /// How many places `key` holds.
    pub fn held(&self, key: &K) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(key).copied().unwrap_or(0)
    }
}

/// One place of a key, given back when dropped.
pub struct Slot<K: Hash + Eq> {
    key: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_key_and_given_back_when_dropped() {
        let slots = KeyedSlots::default();
        let a1 = slots.take("a", 2);
        let a2 = slots.take("a", 2);
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.take("a", 2).is_none(), "the cap");
        assert!(slots.take("b", 2).is_some(), "another key");
        drop(a1);
        assert_eq!(slots.held(&"a"), 1);
        assert!(slots.take("a", 2).is_some(), "given back");
        assert!(slots.take("c", 0).is_none());
        drop(a2);
        assert_eq!(slots.held.lock().unwrap().len(), 0, "keys in use only");
    }
}
