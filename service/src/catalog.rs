//! The service's own durable state, beside the tenants' stores: uploaded
//! modules, policies, and the transactions it has accepted.
//!
//! One redb file, `DATA_DIR/catalog.redb` (see `docs/design.md`):
//! - `modules`: `(tenant, hash)` → the component's bytes;
//! - `policies`: `(tenant, hash)` → the policy's TOML text;
//! - `pending`: `(tenant, transaction id)` → JSON [`PendingTx`], written
//!   durably before a transaction is acknowledged and removed once its
//!   record is in the tenant's store: what is left at a start was in flight
//!   when the service stopped;
//! - `submissions`: `(tenant, sequence)` → transaction id, in the order the
//!   service accepted them (the transaction list reads it backwards);
//! - `meta`: `"submission_sequence"` → the last sequence given out.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MODULES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("modules");
const POLICIES: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("policies");
const PENDING: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("pending");
const SUBMISSIONS: TableDefinition<'_, (&str, u64), &str> = TableDefinition::new("submissions");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const SEQUENCE_KEY: &str = "submission_sequence";

/// A transaction the service accepted and has not seen recorded yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTx {
    /// The module's hash.
    pub module: String,
    /// The requested path, if any.
    pub path: Option<String>,
    /// The input document.
    pub input: serde_json::Value,
    /// The request's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The name of the token that submitted it (the caller of the prior of
    /// adaptive mirroring); absent in entries written before it existed.
    #[serde(default)]
    pub caller: Option<String>,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub accepted_unix_ms: u64,
    /// Its place in the tenant's submissions.
    pub sequence: u64,
}

/// A module as the catalog keeps it.
#[derive(Debug, Clone)]
pub struct StoredModule {
    /// The tenant.
    pub tenant: String,
    /// The content hash.
    pub hash: String,
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// The policy's text, if one was put.
    pub policy: Option<String>,
}

/// A failure of the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be opened or created.
    #[error("cannot open the catalog at {path}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// The storage engine failed.
    #[error("the catalog's storage engine failed")]
    Storage(#[source] redb::Error),
    /// An entry could not be encoded.
    #[error("cannot encode a catalog entry")]
    Encode(#[source] serde_json::Error),
    /// A transaction with this id is accepted already.
    #[error("transaction {0} is accepted already")]
    AlreadyAccepted(String),
    /// A stored entry could not be decoded.
    #[error("corrupt catalog entry {what}: {reason}")]
    Corrupt {
        /// Which entry.
        what: String,
        /// Why.
        reason: String,
    },
}

fn storage(error: impl Into<redb::Error>) -> CatalogError {
    CatalogError::Storage(error.into())
}

/// The service's catalog.
#[derive(Debug)]
pub struct Catalog {
    db: Database,
}

impl Catalog {
    /// Opens (or creates) the catalog file.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let open_error = |source: redb::Error| CatalogError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_error(redb::Error::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| open_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| open_error(e.into()))?;
        {
            txn.open_table(MODULES).map_err(storage)?;
            txn.open_table(POLICIES).map_err(storage)?;
            txn.open_table(PENDING).map_err(storage)?;
            txn.open_table(SUBMISSIONS).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// Stores a module (again).
    pub fn put_module(&self, tenant: &str, hash: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(MODULES).map_err(storage)?.insert((tenant, hash), bytes).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Removes a module and its policy; whether it was there.
    pub fn delete_module(&self, tenant: &str, hash: &str) -> Result<bool, CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let existed = txn.open_table(MODULES).map_err(storage)?.remove((tenant, hash)).map_err(storage)?.is_some();
        txn.open_table(POLICIES).map_err(storage)?.remove((tenant, hash)).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(existed)
    }

    /// Stores a module's policy text.
    pub fn put_policy(&self, tenant: &str, hash: &str, text: &str) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(POLICIES).map_err(storage)?.insert((tenant, hash), text).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Every module of every tenant, with its policy.
    pub fn modules(&self) -> Result<Vec<StoredModule>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let policies = txn.open_table(POLICIES).map_err(storage)?;
        let mut out = Vec::new();
        for entry in txn.open_table(MODULES).map_err(storage)?.iter().map_err(storage)? {
            let (key, bytes) = entry.map_err(storage)?;
            let (tenant, hash) = key.value();
            let policy = policies.get((tenant, hash)).map_err(storage)?.map(|text| text.value().to_string());
            out.push(StoredModule {
                tenant: tenant.to_string(),
                hash: hash.to_string(),
                bytes: bytes.value().to_vec(),
                policy,
            });
        }
        Ok(out)
    }

    /// Records, durably, that a transaction was accepted; returns its
    /// sequence. Called before the transaction is acknowledged.
    pub fn accept(&self, tenant: &str, transaction_id: &str, mut pending: PendingTx) -> Result<u64, CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let sequence = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let sequence = meta.get(SEQUENCE_KEY).map_err(storage)?.map_or(0, |v| v.value()) + 1;
            meta.insert(SEQUENCE_KEY, sequence).map_err(storage)?;
            sequence
        };
        pending.sequence = sequence;
        let bytes = serde_json::to_vec(&pending).map_err(CatalogError::Encode)?;
        {
            let mut table = txn.open_table(PENDING).map_err(storage)?;
            if table.get((tenant, transaction_id)).map_err(storage)?.is_some() {
                return Err(CatalogError::AlreadyAccepted(transaction_id.to_string()));
            }
            table.insert((tenant, transaction_id), bytes.as_slice()).map_err(storage)?;
        }
        txn.open_table(SUBMISSIONS).map_err(storage)?.insert((tenant, sequence), transaction_id).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(sequence)
    }

    /// Forgets a pending transaction whose record is in the tenant's store.
    ///
    /// Not flushed on its own: if the process dies before a later durable
    /// write, the entry comes back at the next start, finds the record and
    /// is removed then.
    pub fn finish(&self, tenant: &str, transaction_id: &str) -> Result<(), CatalogError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        txn.open_table(PENDING).map_err(storage)?.remove((tenant, transaction_id)).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// One pending transaction.
    pub fn pending(&self, tenant: &str, transaction_id: &str) -> Result<Option<PendingTx>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(PENDING).map_err(storage)?;
        let Some(bytes) = table.get((tenant, transaction_id)).map_err(storage)? else { return Ok(None) };
        decode_pending(transaction_id, bytes.value()).map(Some)
    }

    /// Every pending transaction: `(tenant, id, what was accepted)`.
    pub fn all_pending(&self) -> Result<Vec<(String, String, PendingTx)>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let mut out = Vec::new();
        for entry in txn.open_table(PENDING).map_err(storage)?.iter().map_err(storage)? {
            let (key, bytes) = entry.map_err(storage)?;
            let (tenant, id) = key.value();
            out.push((tenant.to_string(), id.to_string(), decode_pending(id, bytes.value())?));
        }
        Ok(out)
    }

    /// A tenant's submissions, newest first: those before `before` (a
    /// sequence, exclusive) if given, at most `limit`.
    pub fn submissions(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(SUBMISSIONS).map_err(storage)?;
        let end = before.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for entry in table.range((tenant, 0)..(tenant, end)).map_err(storage)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (key, id) = entry.map_err(storage)?;
            out.push((key.value().1, id.value().to_string()));
        }
        Ok(out)
    }
}

fn decode_pending(id: &str, bytes: &[u8]) -> Result<PendingTx, CatalogError> {
    serde_json::from_slice(bytes)
        .map_err(|e| CatalogError::Corrupt { what: format!("pending transaction {id}"), reason: e.to_string() })
}
