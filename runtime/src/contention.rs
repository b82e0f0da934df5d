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

#[cfg(test)]
mod tests {
    use super::*;

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
