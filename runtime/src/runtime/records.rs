//! What the runtime has recorded, for its callers: transactions, dead
//! letters and events, read from the store with their histories decoded.
//! Callers read here, never from the store, so that the store's format
//! stays the store's business.

use super::Runtime;
use crate::store::{DeadLetter, StateSnapshot, StoreError, StoredEvent};
use crate::transaction::{DeadLetterFilter, DeadLetterReport, RecordedTransaction};
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

    /// How the arms of `module`'s split compare (see
    /// `transaction/split_report.rs`), over the first `scan` transaction
    /// records of the store (of every module; records are kept in id
    /// order), each attempt priced by `policy`'s paths.
    pub fn split_report(
        &self,
        module: &str,
        policy: &crate::Policy,
        scan: usize,
    ) -> Result<crate::transaction::split_report::SplitReport, StoreError> {
        const PAGE: usize = 500;
        let mut records = Vec::new();
        let mut after: Option<String> = None;
        while records.len() < scan {
            let page = self.transactions(after.as_deref(), PAGE.min(scan - records.len()))?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let full = page.len() == PAGE.min(scan - records.len());
            records.extend(page);
            if !full {
                break;
            }
        }
        let arms = crate::transaction::split_report::compare(module, &records, &policy.paths);
        Ok(crate::transaction::split_report::SplitReport { module: module.to_string(), scanned: records.len(), arms })
    }

    /// The attempt a transaction running on this runtime is at; `None` if
    /// it does not run here (ended, pending elsewhere, or not started).
    pub fn progress(&self, id: &str) -> Option<crate::Progress> {
        self.inner.progress.of(id)
    }

    /// Dead letters, oldest first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterReport>, StoreError> {
        self.dead_letters_matching(&DeadLetterFilter::default(), limit)
    }

    /// The dead letters the filter selects, oldest first, at most `limit`.
    pub fn dead_letters_matching(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterReport>, StoreError> {
        let letters = self.letters_matching(filter, limit)?;
        letters.into_iter().map(|letter| self.with_effects(letter)).collect()
    }

    /// Removes the dead letters the filter selects, oldest first, at most
    /// `limit`, without replaying them; the ids of those it removed.
    pub fn drop_dead_letters(&self, filter: &DeadLetterFilter, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut dropped = Vec::new();
        for letter in self.letters_matching(filter, limit)? {
            // Gone meanwhile (replayed, or dropped by another caller): not
            // this call's to report.
            if self.inner.store.remove_dead_letter(&letter.transaction_id)? {
                dropped.push(letter.transaction_id);
            }
        }
        Ok(dropped)
    }

    /// The stored letters the filter selects, read page by page in the
    /// queue's order until `limit` are found or the queue (or the filter's
    /// time range) ends.
    pub(super) fn letters_matching(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        const PAGE: usize = 256;
        let mut found = Vec::new();
        let mut after = None;
        while found.len() < limit {
            let page = self.inner.store.dead_letters(after.as_ref(), PAGE)?;
            let Some(last) = page.last() else { break };
            // Each page starts after the last: the loop ends with the queue.
            after = Some(last.position());
            let full = page.len() == PAGE;
            for letter in page {
                if filter.is_past(&letter) {
                    return Ok(found);
                }
                if filter.matches(&letter) {
                    found.push(letter);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }

    /// One dead letter.
    pub fn dead_letter(&self, transaction_id: &str) -> Result<Option<DeadLetterReport>, StoreError> {
        self.inner.store.dead_letter(transaction_id)?.map(|letter| self.with_effects(letter)).transpose()
    }

    /// A letter, decoded, with the calls its transaction sent.
    fn with_effects(&self, letter: DeadLetter) -> Result<DeadLetterReport, StoreError> {
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

    /// Removes up to `limit` entries of the effect journal of transactions
    /// that ended more than seven days ago and are not dead letters; how
    /// many it removed. The runtime does it when it opens; a service calls
    /// it now and then.
    pub fn purge_old_effects(&self, limit: usize) -> Result<usize, StoreError> {
        let now = super::unix_millis(self.inner.clock.now());
        let before = now.saturating_sub(u64::try_from(super::JOURNAL_RETENTION.as_millis()).unwrap_or(u64::MAX));
        self.inner.store.purge_effects(before, limit)
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

    /// The last sequence consumer group `group` acknowledged on `stream`
    /// (0 for a group that never did): where the group reads from.
    pub fn group_offset(&self, stream: &str, group: &str) -> Result<u64, StoreError> {
        Ok(self.inner.store.group_offset(stream, group)?.unwrap_or(0))
    }

    /// Acknowledges, for `group`, every event of `stream` up to `offset`:
    /// durably, forward only; the group's offset now.
    pub fn acknowledge(&self, stream: &str, group: &str, offset: u64) -> Result<u64, StoreError> {
        self.inner.store.acknowledge(stream, group, offset)
    }

    /// The notices of `stream`'s predicted view after `after`, at most
    /// `limit`: what mirrors emitted before their primaries committed, and
    /// how each prediction was settled (see `transaction/predicted.rs`).
    pub fn predicted_events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Vec<crate::transaction::PredictionNotice> {
        self.inner.predicted.notices(stream, after, limit)
    }

    /// How each stream's predictions have fared on this runtime.
    pub fn prediction_streams(&self) -> Vec<(String, crate::transaction::PredictionStats)> {
        self.inner.predicted.all_stats()
    }

    /// How `stream`'s predictions have fared on this runtime.
    pub fn prediction_stats(&self, stream: &str) -> crate::transaction::PredictionStats {
        self.inner.predicted.stats(stream)
    }

    /// Removes up to `limit` of the oldest events of `stream` that
    /// `retention` lets go; how many.
    pub fn purge_stream(
        &self,
        stream: &str,
        retention: &crate::store::StreamRetention,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.inner.store.purge_stream(stream, retention, limit)
    }

    /// The consumer groups of `stream` and their offsets, by name.
    pub fn consumer_groups(&self, stream: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.store.consumer_groups(stream)
    }
}
