//! What the runtime has recorded, for its callers: transactions, dead
//! letters and events, read from the store with their histories decoded.
//! Callers read here, never from the store, so that the store's format
//! stays the store's business.

use super::Runtime;
use crate::store::{StateSnapshot, StoreError, StoredEvent};
use crate::transaction::{DeadLetterReport, RecordedTransaction};
use std::sync::Arc;

impl Runtime {
    /// The durable record of a transaction.
    pub fn transaction(&self, id: &str) -> Result<Option<RecordedTransaction>, StoreError> {
        self.inner.store.transaction(id)?.map(RecordedTransaction::decode).transpose()
    }

    /// Transaction records in id order, after `after` (exclusive) if given,
    /// at most `limit`: page through them by passing the last id back.
    pub fn transactions(&self, after: Option<&str>, limit: usize) -> Result<Vec<RecordedTransaction>, StoreError> {
        self.inner.store.transactions(after, limit)?.into_iter().map(RecordedTransaction::decode).collect()
    }

    /// Dead letters, oldest first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterReport>, StoreError> {
        let letters = self.inner.store.dead_letters(limit)?;
        letters.into_iter().map(|letter| self.with_effects(letter)).collect()
    }

    /// One dead letter.
    pub fn dead_letter(&self, transaction_id: &str) -> Result<Option<DeadLetterReport>, StoreError> {
        self.inner.store.dead_letter(transaction_id)?.map(|letter| self.with_effects(letter)).transpose()
    }

    /// A letter, decoded, with the calls its transaction sent.
    fn with_effects(&self, letter: crate::store::DeadLetter) -> Result<DeadLetterReport, StoreError> {
        let effects = self.inner.store.effects(&letter.transaction_id)?;
        DeadLetterReport::decode(letter, effects)
    }

    /// Whether a transaction is in the dead-letter queue.
    pub fn is_dead_lettered(&self, transaction_id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.store.dead_letter(transaction_id)?.is_some())
    }

    /// Removes a dead letter without replaying it; whether it was there.
    pub fn drop_dead_letter(&self, transaction_id: &str) -> Result<bool, StoreError> {
        self.inner.store.remove_dead_letter(transaction_id)
    }

    /// Removes up to `limit` idempotency keys whose retention has passed;
    /// how many it removed. The runtime does it when it opens; a service
    /// calls it now and then.
    pub fn purge_lapsed_keys(&self, limit: usize) -> Result<usize, StoreError> {
        self.inner.store.purge_lapsed_keys(super::unix_millis(self.inner.clock.now()), limit)
    }

    /// A read-only view of the committed state at the latest version: what
    /// a transaction starting now would read. Nothing can be written
    /// through it; state changes only through transactions.
    pub fn snapshot(&self) -> Result<Arc<dyn StateSnapshot>, StoreError> {
        self.inner.store.snapshot()
    }

    /// Whether the store answers: a read view can be taken.
    pub fn check_store(&self) -> Result<(), StoreError> {
        self.inner.store.snapshot().map(drop)
    }

    /// Events of `stream` from sequence `after` (exclusive), at most `limit`.
    pub fn events(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.store.events(stream, after, limit)
    }
}
