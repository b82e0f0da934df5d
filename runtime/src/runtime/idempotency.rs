//! Idempotency keys: the one place that decides what a key is bound to.
//!
//! A key binds one transaction of one module. A request with a bound key
//! runs nothing: it is answered with the bound transaction's outcome, but
//! only if it *is* the same request (the same module, the path asked for
//! and the input); a key reused for another request is refused, because
//! answering it with the first request's outcome would tell the client that
//! something happened which did not.
//!
//! A key is bound in three places, each checked in this order:
//! 1. durably, in the store, by the commit (or the final failure) of the
//!    transaction that claimed it ([`IdempotencyClaim`]);
//! 2. while a service holds an accepted transaction that has not ended
//!    ([`Runtime::claim_key`], released by dropping the [`KeyClaim`]);
//! 3. while a transaction with the key runs in [`Runtime::execute`]
//!    (concurrent callers share its one execution).

use super::{ExecuteError, Runtime, RuntimeInner, choose_path, unix_millis};
use crate::instance::module::Module;
use crate::policy::Policy;
use crate::store::IdempotencyClaim;
use crate::transaction::RecordedTransaction;
use crate::transaction::{TxReport, TxRequest};
use crate::vocab::validate_name;
use std::sync::{Arc, PoisonError, Weak};

/// What a request must repeat to be answered from a key's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fingerprint {
    module: String,
    /// The path asked for (the policy's default when none was).
    path: String,
    /// BLAKE3 of the input, hex, as the record keeps it.
    input_hash: String,
}

impl Fingerprint {
    pub(super) fn of_request(module: &Module, path: &str, input: &[u8]) -> Self {
        Self { module: module.hash().to_string(), path: path.to_string(), input_hash: input_hash(input) }
    }

    /// The request a record answered: its first attempt ran the path asked
    /// for (a record without attempts, of a transaction interrupted before
    /// it ran, keeps that path as its own).
    fn of_record(record: &RecordedTransaction) -> Self {
        let path = record.attempts.first().map_or(&record.path, |attempt| &attempt.path);
        Self { module: record.module.clone(), path: path.clone(), input_hash: record.input_hash.clone() }
    }
}

/// The input's hash as records keep it.
pub(super) fn input_hash(input: &[u8]) -> String {
    blake3::hash(input).to_hex().to_string()
}

/// The key as the store and the maps hold it: scoped by module, so that
/// two modules never share a key.
fn scoped(module: &Module, key: &str) -> String {
    scoped_key(module.hash(), key)
}

/// A client's idempotency key as the store holds it, for the module with
/// the content hash `module`: what an accepted transaction's key must be
/// for the store to see it held (see `store::AcceptRequest`).
pub fn scoped_key(module: &str, key: &str) -> String {
    format!("{module}/{key}")
}

/// An accepted transaction's hold on a key, until it ends: dropping it
/// releases the key (the transaction's durable record binds it from then on).
#[derive(Debug)]
pub struct KeyClaim {
    runtime: Weak<RuntimeInner>,
    scoped: String,
    transaction_id: String,
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        let Some(inner) = self.runtime.upgrade() else { return };
        let mut accepted = inner.accepted_keys.lock().unwrap_or_else(PoisonError::into_inner);
        if accepted.get(&self.scoped).is_some_and(|(_, holder)| *holder == self.transaction_id) {
            accepted.remove(&self.scoped);
        }
    }
}

/// What [`Runtime::claim_key`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyState {
    /// The key was free and is now held for the transaction; accept it.
    Claimed(KeyClaim),
    /// The key is bound to a transaction that has ended: its outcome
    /// (`deduplicated` is set).
    Recorded(TxReport),
    /// The key is held by an accepted transaction that has not ended yet.
    InFlight {
        /// The transaction that holds it.
        transaction_id: String,
    },
}

/// The state of an in-flight key in [`Runtime::execute`]: the request that
/// runs it and the cell its concurrent repeats wait on.
pub(super) type Running = (Fingerprint, Arc<tokio::sync::OnceCell<TxReport>>);

impl Runtime {
    /// Checks `request`'s idempotency key before a transaction is accepted,
    /// and holds it for `transaction_id` if it is free. A repeat of a
    /// recorded request gets its outcome; a repeat of one still in flight
    /// gets its id; a key bound to another request is refused with
    /// [`ExecuteError::IdempotencyKeyReused`].
    ///
    /// A request without a key claims nothing: `Claimed` with no key held.
    pub fn claim_key(
        &self,
        module: &Module,
        policy: &Policy,
        request: &TxRequest,
        transaction_id: &str,
    ) -> Result<KeyState, ExecuteError> {
        let unheld = || KeyClaim { runtime: Weak::new(), scoped: String::new(), transaction_id: String::new() };
        let Some(key) = &request.idempotency_key else { return Ok(KeyState::Claimed(unheld())) };
        check_key(key)?;
        let fingerprint =
            Fingerprint::of_request(module, &choose_path(module, policy, request.path.clone())?, &request.input);
        let scoped = scoped(module, key);
        if let Some(report) = self.bound(key, &scoped, &fingerprint)? {
            return Ok(KeyState::Recorded(report));
        }
        let mut accepted = self.inner.accepted_keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held_for, holder)) = accepted.get(&scoped) {
            if *held_for != fingerprint {
                return Err(ExecuteError::IdempotencyKeyReused { key: key.clone(), transaction_id: holder.clone() });
            }
            return Ok(KeyState::InFlight { transaction_id: holder.clone() });
        }
        accepted.insert(scoped.clone(), (fingerprint.clone(), transaction_id.to_string()));
        drop(accepted);
        let claim =
            KeyClaim { runtime: Arc::downgrade(&self.inner), scoped, transaction_id: transaction_id.to_string() };
        // A holder may have ended between the store's answer and the claim:
        // its record binds the key now, and this request is its repeat.
        // (Dropping `claim` releases the key again.)
        if let Some(report) = self.bound(key, &claim.scoped, &fingerprint)? {
            return Ok(KeyState::Recorded(report));
        }
        Ok(KeyState::Claimed(claim))
    }

    /// What `key` (already scoped) is durably bound to, if its claim lasts:
    /// the bound transaction's outcome for a repeat of its request.
    pub(super) fn bound(
        &self,
        key: &str,
        scoped: &str,
        fingerprint: &Fingerprint,
    ) -> Result<Option<TxReport>, ExecuteError> {
        let Some(entry) = self.inner.store.idempotency(scoped)? else { return Ok(None) };
        if entry.expires_unix_ms <= unix_millis(self.inner.clock.now()) {
            return Ok(None);
        }
        let Some(record) = self.transaction(&entry.transaction_id)? else { return Ok(None) };
        if Fingerprint::of_record(&record) != *fingerprint {
            return Err(ExecuteError::IdempotencyKeyReused { key: key.to_string(), transaction_id: record.id });
        }
        Ok(Some(TxReport::from_record(record)))
    }

    /// The key of a request, checked and scoped, with the claim its
    /// transaction records; `None` without a key.
    pub(super) fn key_of(
        &self,
        module: &Module,
        policy: &Policy,
        request: &TxRequest,
    ) -> Result<Option<(String, IdempotencyClaim)>, ExecuteError> {
        let Some(key) = &request.idempotency_key else { return Ok(None) };
        check_key(key)?;
        let scoped = scoped(module, key);
        let claim = IdempotencyClaim {
            key: scoped.clone(),
            now_unix_ms: unix_millis(self.inner.clock.now()),
            retention_ms: policy.idempotency.retention_secs.saturating_mul(1000),
        };
        Ok(Some((scoped, claim)))
    }
}

fn check_key(key: &str) -> Result<(), ExecuteError> {
    validate_name(key).map_err(|reason| ExecuteError::InvalidIdempotencyKey(format!("the key {reason}")))
}
