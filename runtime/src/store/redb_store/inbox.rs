//! Accepted transactions and their leases in the embedded store (see
//! `store/inbox.rs`).
//!
//! Tables, added within format 2 (a store opened before they existed gets
//! them, empty, when next opened):
//! - `inbox`: transaction id → [`DiskAccepted`];
//! - `inbox_keys`: idempotency key → the id of the accepted transaction
//!   holding it;
//! - `submissions`: sequence → transaction id, kept after the transaction
//!   ends (the service lists transactions from it);
//! - `meta`: `"submission_sequence"`, the last sequence given out.
//!
//! One process holds a redb file, so a lease whose holder has not written
//! through this process's handle is a dead process's:
//! [`RedbStore::take_over_leases`] takes it at once, lapsed or not. Leases
//! of holders alive in this process are taken once they lapse, as on any
//! store. Lease times are this process's clock, the only one writing.

use super::super::codec::{decode, encode};
use super::super::{AcceptRequest, Acceptance, Accepted, Fence, Lease, StoreError};
use super::{IDEMPOTENCY, META, RedbStore, TRANSACTIONS, decode_claim, storage};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) const INBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("inbox");
pub(super) const INBOX_KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("inbox_keys");
pub(super) const SUBMISSIONS: TableDefinition<'_, u64, &str> = TableDefinition::new("submissions");
const SUBMISSION_SEQUENCE_KEY: &str = "submission_sequence";

/// An accepted transaction as stored: postcard, field order is the format.
#[derive(Serialize, Deserialize)]
struct DiskAccepted {
    idempotency_key: Option<String>,
    request: Vec<u8>,
    sequence: u64,
    holder: String,
    epoch: u64,
    expires_unix_ms: u64,
}

impl DiskAccepted {
    fn into_accepted(self, transaction_id: &str) -> Accepted {
        Accepted {
            transaction_id: transaction_id.to_string(),
            idempotency_key: self.idempotency_key,
            request: self.request,
            sequence: self.sequence,
            lease: Lease { holder: self.holder, epoch: self.epoch, expires_unix_ms: self.expires_unix_ms },
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode_accepted(id: &str, bytes: &[u8]) -> Result<DiskAccepted, StoreError> {
    decode(|| format!("accepted transaction {id}"), bytes)
}

type Inbox<'txn> = redb::Table<'txn, &'static str, &'static [u8]>;

/// Checks, inside a write transaction, that `fence` is still the lease of
/// its transaction. Changes nothing: a request refused after this check (a
/// conflict in a group commit) must leave nothing behind.
pub(super) fn check_fence(txn: &redb::WriteTransaction, fence: &Fence) -> Result<(), StoreError> {
    let inbox = txn.open_table(INBOX).map_err(storage)?;
    let epoch = match inbox.get(fence.transaction_id.as_str()).map_err(storage)? {
        Some(bytes) => Some(decode_accepted(&fence.transaction_id, bytes.value())?.epoch),
        None => None,
    };
    fence.check(epoch)
}

/// Once every check of a write under `fence` passed: if the write is the
/// transaction's own record, ends its acceptance in the same step.
pub(super) fn end_if_own(txn: &redb::WriteTransaction, fence: &Fence, record_id: &str) -> Result<(), StoreError> {
    if !fence.ends_with(record_id) {
        return Ok(());
    }
    let mut inbox = txn.open_table(INBOX).map_err(storage)?;
    let key = match inbox.get(fence.transaction_id.as_str()).map_err(storage)? {
        Some(bytes) => decode_accepted(&fence.transaction_id, bytes.value())?.idempotency_key,
        None => None,
    };
    remove(txn, &mut inbox, &fence.transaction_id, key)
}

fn remove(
    txn: &redb::WriteTransaction,
    inbox: &mut Inbox<'_>,
    transaction_id: &str,
    key: Option<String>,
) -> Result<(), StoreError> {
    inbox.remove(transaction_id).map_err(storage)?;
    if let Some(key) = key {
        txn.open_table(INBOX_KEYS).map_err(storage)?.remove(key.as_str()).map_err(storage)?;
    }
    Ok(())
}

/// Rewrites the leases of the entries `pick` chooses with what it returns.
fn rewrite_leases(
    store: &RedbStore,
    limit: usize,
    mut pick: impl FnMut(&DiskAccepted) -> Option<Lease>,
) -> Result<Vec<Accepted>, StoreError> {
    let txn = store.db.begin_write().map_err(storage)?;
    let mut changed = Vec::new();
    {
        let mut inbox = txn.open_table(INBOX).map_err(storage)?;
        let mut chosen = Vec::new();
        for item in inbox.iter().map_err(storage)? {
            let (id, bytes) = item.map_err(storage)?;
            let entry = decode_accepted(id.value(), bytes.value())?;
            if let Some(lease) = pick(&entry) {
                chosen.push((id.value().to_string(), entry, lease));
            }
        }
        chosen.sort_by_key(|(_, entry, _)| entry.sequence);
        for (id, mut entry, lease) in chosen.into_iter().take(limit) {
            entry.holder.clone_from(&lease.holder);
            entry.epoch = lease.epoch;
            entry.expires_unix_ms = lease.expires_unix_ms;
            inbox.insert(id.as_str(), encode(&entry)?.as_slice()).map_err(storage)?;
            changed.push(entry.into_accepted(&id));
        }
    }
    txn.commit().map_err(storage)?;
    Ok(changed)
}

impl RedbStore {
    /// Notes that `holder` lives in this process.
    fn live(&self, holder: &str) {
        self.live_holders.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(holder.to_string());
    }

    pub(super) fn accept_transaction(&self, request: AcceptRequest) -> Result<Acceptance, StoreError> {
        self.live(&request.holder);
        let txn = self.db.begin_write().map_err(storage)?;
        let acceptance = {
            let mut inbox = txn.open_table(INBOX).map_err(storage)?;
            let mut keys = txn.open_table(INBOX_KEYS).map_err(storage)?;
            let id = request.transaction_id.as_str();
            let recorded = txn.open_table(TRANSACTIONS).map_err(storage)?.get(id).map_err(storage)?.is_some();
            let held = match &request.idempotency_key {
                Some(key) => match keys.get(key.as_str()).map_err(storage)? {
                    Some(holder) => Some(holder.value().to_string()),
                    None => match txn.open_table(IDEMPOTENCY).map_err(storage)?.get(key.as_str()).map_err(storage)? {
                        Some(bytes) => {
                            let entry = decode_claim(key, bytes.value())?;
                            (entry.expires_unix_ms > request.now_unix_ms).then_some(entry.transaction_id)
                        }
                        None => None,
                    },
                },
                None => None,
            };
            if recorded || inbox.get(id).map_err(storage)?.is_some() {
                Acceptance::IdTaken
            } else if let Some(transaction_id) = held {
                Acceptance::KeyHeld { transaction_id }
            } else {
                let mut meta = txn.open_table(META).map_err(storage)?;
                let sequence = meta.get(SUBMISSION_SEQUENCE_KEY).map_err(storage)?.map_or(0, |v| v.value()) + 1;
                meta.insert(SUBMISSION_SEQUENCE_KEY, sequence).map_err(storage)?;
                let lease = Lease {
                    holder: request.holder,
                    epoch: 1,
                    expires_unix_ms: now_ms().saturating_add(request.lease_ms),
                };
                let entry = DiskAccepted {
                    idempotency_key: request.idempotency_key.clone(),
                    request: request.request,
                    sequence,
                    holder: lease.holder.clone(),
                    epoch: lease.epoch,
                    expires_unix_ms: lease.expires_unix_ms,
                };
                inbox.insert(id, encode(&entry)?.as_slice()).map_err(storage)?;
                if let Some(key) = &request.idempotency_key {
                    keys.insert(key.as_str(), id).map_err(storage)?;
                }
                txn.open_table(SUBMISSIONS).map_err(storage)?.insert(sequence, id).map_err(storage)?;
                Acceptance::Accepted { sequence, lease }
            }
        };
        txn.commit().map_err(storage)?;
        Ok(acceptance)
    }

    pub(super) fn accepted_transaction(&self, transaction_id: &str) -> Result<Option<Accepted>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let inbox = txn.open_table(INBOX).map_err(storage)?;
        let Some(bytes) = inbox.get(transaction_id).map_err(storage)? else { return Ok(None) };
        Ok(Some(decode_accepted(transaction_id, bytes.value())?.into_accepted(transaction_id)))
    }

    pub(super) fn accepted_in_flight(&self, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let inbox = txn.open_table(INBOX).map_err(storage)?;
        let mut out = Vec::new();
        for item in inbox.iter().map_err(storage)? {
            let (id, bytes) = item.map_err(storage)?;
            out.push(decode_accepted(id.value(), bytes.value())?.into_accepted(id.value()));
        }
        out.sort_by_key(|accepted| accepted.sequence);
        out.truncate(limit);
        Ok(out)
    }

    pub(super) fn submitted(&self, before: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(SUBMISSIONS).map_err(storage)?;
        let mut out = Vec::new();
        for item in table.range(..before.unwrap_or(u64::MAX)).map_err(storage)?.rev().take(limit) {
            let (sequence, id) = item.map_err(storage)?;
            out.push((sequence.value(), id.value().to_string()));
        }
        Ok(out)
    }

    pub(super) fn finish_accepted(&self, fence: &Fence) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let finished = {
            let mut inbox = txn.open_table(INBOX).map_err(storage)?;
            let found = match inbox.get(fence.transaction_id.as_str()).map_err(storage)? {
                Some(bytes) => Some(decode_accepted(&fence.transaction_id, bytes.value())?),
                None => None,
            };
            match found {
                Some(entry) if entry.epoch == fence.epoch => {
                    remove(&txn, &mut inbox, &fence.transaction_id, entry.idempotency_key)?;
                    true
                }
                _ => false,
            }
        };
        txn.commit().map_err(storage)?;
        Ok(finished)
    }

    pub(super) fn renew(&self, holder: &str, lease_ms: u64) -> Result<usize, StoreError> {
        self.live(holder);
        let expires_unix_ms = now_ms().saturating_add(lease_ms);
        let renewed = rewrite_leases(self, usize::MAX, |entry| {
            (entry.holder == holder).then(|| Lease { holder: holder.to_string(), epoch: entry.epoch, expires_unix_ms })
        })?;
        Ok(renewed.len())
    }

    pub(super) fn take_over_leases(
        &self,
        holder: &str,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Accepted>, StoreError> {
        self.live(holder);
        let now = now_ms();
        let expires_unix_ms = now.saturating_add(lease_ms);
        rewrite_leases(self, limit, |entry| {
            // Read inside the write transaction: a holder that joined
            // before it began is seen, so its live leases are left alone.
            let live = self.live_holders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let lapsed = entry.expires_unix_ms < now || !live.contains(&entry.holder);
            (entry.holder != holder && lapsed).then(|| Lease {
                holder: holder.to_string(),
                epoch: entry.epoch + 1,
                expires_unix_ms,
            })
        })
    }

    pub(super) fn release(&self, holder: &str) -> Result<usize, StoreError> {
        let released = rewrite_leases(self, usize::MAX, |entry| {
            (entry.holder == holder).then(|| Lease {
                holder: holder.to_string(),
                epoch: entry.epoch,
                expires_unix_ms: 0,
            })
        })?;
        Ok(released.len())
    }
}
