//! Contention: what the predictor sees of it, and how retries handle it.
//!
//! [`InFlightWrites`] knows which keys running attempts have in their
//! (still buffered) write sets, so that the predictor can count a key the
//! mirror read as contended before the other transaction commits.
//!
//! Contention-aware retries: optimistic first, then queue on the hot key.
//!
//! Optimistic concurrency is cheap when keys are cold and starves when they
//! are hot: every retry races every other retry on the same key. So a
//! transaction that lost a commit on a key retries while holding an
//! in-process lock on that key. Transactions that collided on it then take
//! turns instead of colliding again. A transaction holds at most one such
//! lock at a time, so they cannot deadlock; first attempts never wait, so
//! cold keys pay nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A namespace and a key.
type KeyId = (String, String);

/// Per-key turn-taking locks, created on the first conflict on a key.
#[derive(Debug, Default)]
pub(crate) struct HotKeys {
    locks: Mutex<HashMap<KeyId, Arc<AsyncMutex<()>>>>,
}

/// A turn on a hot key; the lock is released when it is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _guard: OwnedMutexGuard<()>,
}

/// The most keys remembered; beyond it, unused locks are forgotten.
const MAX_HOT_KEYS: usize = 10_000;

impl HotKeys {
    /// Waits for this transaction's turn on a key it lost a commit on.
    pub(crate) async fn take_turn(&self, namespace: &str, key: &str) -> Turn {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if locks.len() >= MAX_HOT_KEYS {
                // Only locks nobody holds or waits for can go.
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry((namespace.to_string(), key.to_string())).or_default().clone()
        };
        Turn { _guard: lock.lock_owned().await }
    }
}

/// The keys in the write sets of attempts that are running, by attempt.
#[derive(Debug, Default)]
pub(crate) struct InFlightWrites {
    keys: Mutex<HashMap<KeyId, Vec<u64>>>,
    next_owner: std::sync::atomic::AtomicU64,
}

/// One attempt's claims on the keys it writes; released when dropped, after
/// the attempt committed or failed.
#[derive(Debug)]
pub(crate) struct WriteClaims {
    registry: Arc<InFlightWrites>,
    owner: u64,
    held: Mutex<Vec<KeyId>>,
}

impl InFlightWrites {
    /// Claims for a new attempt.
    pub(crate) fn claims(self: &Arc<Self>) -> Arc<WriteClaims> {
        let owner = self.next_owner.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(WriteClaims { registry: self.clone(), owner, held: Mutex::new(Vec::new()) })
    }

    /// Whether an attempt other than `owner` is about to write the key.
    pub(crate) fn held_by_other(&self, owner: u64, namespace: &str, key: &str) -> bool {
        let keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Allocation-free lookup is not possible with a tuple of Strings; keys are short.
        keys.get(&(namespace.to_string(), key.to_string())).is_some_and(|owners| owners.iter().any(|o| *o != owner))
    }
}

impl WriteClaims {
    /// The attempt this is.
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    /// Records that the attempt writes the key (once per key).
    pub(crate) fn claim(&self, namespace: &str, key: &str) {
        let id = (namespace.to_string(), key.to_string());
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.contains(&id) {
            return;
        }
        let mut keys = self.registry.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.entry(id.clone()).or_default().push(self.owner);
        held.push(id);
    }
}

impl Drop for WriteClaims {
    fn drop(&mut self) {
        let held = std::mem::take(self.held.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut keys = self.registry.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in held {
            if let Some(owners) = keys.get_mut(&id) {
                owners.retain(|o| *o != self.owner);
                if owners.is_empty() {
                    keys.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_writes_are_seen_by_others_until_released() {
        let registry = Arc::new(InFlightWrites::default());
        let (writer, reader) = (registry.claims(), registry.claims());
        writer.claim("accounts", "alice");
        writer.claim("accounts", "alice");
        assert!(registry.held_by_other(reader.owner(), "accounts", "alice"));
        assert!(!registry.held_by_other(writer.owner(), "accounts", "alice"), "its own write is no contention");
        assert!(!registry.held_by_other(reader.owner(), "accounts", "bob"));
        drop(writer);
        assert!(!registry.held_by_other(reader.owner(), "accounts", "alice"), "released when the attempt ends");
        assert!(registry.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty());
    }

    #[tokio::test]
    async fn turns_on_one_key_are_exclusive_and_keys_are_independent() {
        let hot = Arc::new(HotKeys::default());
        let first = hot.take_turn("ns", "a").await;
        let other_key = tokio::time::timeout(std::time::Duration::from_millis(50), hot.take_turn("ns", "b")).await;
        assert!(other_key.is_ok(), "another key is not blocked");
        let same_key = tokio::time::timeout(std::time::Duration::from_millis(50), hot.take_turn("ns", "a")).await;
        assert!(same_key.is_err(), "the same key waits");
        drop(first);
        let after = tokio::time::timeout(std::time::Duration::from_millis(50), hot.take_turn("ns", "a")).await;
        assert!(after.is_ok(), "released on drop");
    }
}
