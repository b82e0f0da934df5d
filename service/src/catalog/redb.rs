//! The catalog in one redb file, `DATA_DIR/catalog.redb`, for a service on
//! the embedded store (see `docs/design.md`):
//! - `modules`: `(tenant, hash)` → the component's bytes;
//! - `policies`: `(tenant, hash)` → the policy's TOML text;
//! - `meta`: `"generation"`, raised by every change of the two above;
//! - `delivery_letters`: `(tenant, webhook, stream, offset)` → the parked
//!   event, JSON.
//!
//! Older builds kept accepted transactions here too (`pending`,
//! `submissions`); the service moves any it finds into the tenants' stores
//! at start. The only node is this process, which holds the file alone:
//! its status and the roles it plays live in memory.

use super::{Catalog, CatalogError, DeliveryLetter, LegacyPending, NodeInfo, NodeStatus, StoredModule};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const MODULES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("modules");
const POLICIES: TableDefinition<'_, (&str, &str), &str> = TableDefinition::new("policies");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Accepted transactions of older builds: `(tenant, id)` → JSON.
const LEGACY_PENDING: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("pending");
const DELIVERY_LETTERS: TableDefinition<'_, (&str, &str, &str, u64), &[u8]> = TableDefinition::new("delivery_letters");
const GENERATION_KEY: &str = "generation";

fn storage(error: impl Into<redb::Error>) -> CatalogError {
    CatalogError::Storage(error.into())
}

/// The catalog of a service on the embedded store.
#[derive(Debug)]
pub struct RedbCatalog {
    db: Database,
    node: Mutex<Option<(NodeStatus, Instant)>>,
    /// Each role's holder and when its lease lapses.
    roles: Mutex<HashMap<String, (String, Instant)>>,
}

impl RedbCatalog {
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
            txn.open_table(META).map_err(storage)?;
            txn.open_table(DELIVERY_LETTERS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Self { db, node: Mutex::default(), roles: Mutex::default() })
    }

    /// Applies `change` and raises the generation, in one write.
    fn change<T>(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let result = change(&txn)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let generation = meta.get(GENERATION_KEY).map_err(storage)?.map_or(0, |v| v.value()) + 1;
            meta.insert(GENERATION_KEY, generation).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(result)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Catalog for RedbCatalog {
    fn put_module(&self, tenant: &str, hash: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        self.change(|txn| {
            txn.open_table(MODULES).map_err(storage)?.insert((tenant, hash), bytes).map_err(storage)?;
            Ok(())
        })
    }

    fn delete_module(&self, tenant: &str, hash: &str) -> Result<bool, CatalogError> {
        self.change(|txn| {
            let existed = txn.open_table(MODULES).map_err(storage)?.remove((tenant, hash)).map_err(storage)?.is_some();
            txn.open_table(POLICIES).map_err(storage)?.remove((tenant, hash)).map_err(storage)?;
            Ok(existed)
        })
    }

    fn put_policy(&self, tenant: &str, hash: &str, text: &str) -> Result<(), CatalogError> {
        self.change(|txn| {
            txn.open_table(POLICIES).map_err(storage)?.insert((tenant, hash), text).map_err(storage)?;
            Ok(())
        })
    }

    fn modules(&self) -> Result<Vec<StoredModule>, CatalogError> {
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

    fn module(&self, tenant: &str, hash: &str) -> Result<Option<StoredModule>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let Some(bytes) = txn.open_table(MODULES).map_err(storage)?.get((tenant, hash)).map_err(storage)? else {
            return Ok(None);
        };
        let policy = txn
            .open_table(POLICIES)
            .map_err(storage)?
            .get((tenant, hash))
            .map_err(storage)?
            .map(|text| text.value().to_string());
        Ok(Some(StoredModule {
            tenant: tenant.to_string(),
            hash: hash.to_string(),
            bytes: bytes.value().to_vec(),
            policy,
        }))
    }

    fn generation(&self) -> Result<u64, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        Ok(meta.get(GENERATION_KEY).map_err(storage)?.map_or(0, |v| v.value()))
    }

    fn join(&self, node: &NodeInfo) -> Result<(), CatalogError> {
        let status = NodeStatus {
            id: node.id.clone(),
            name: node.name.clone(),
            address: node.address.clone(),
            started_unix_ms: now_ms(),
            heartbeat_age_ms: 0,
            state: "serving".into(),
        };
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = Some((status, Instant::now()));
        Ok(())
    }

    fn heartbeat(&self, node_id: &str, state: &str) -> Result<(), CatalogError> {
        let mut node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((status, beat)) = node.as_mut().filter(|(status, _)| status.id == node_id) {
            status.state = state.to_string();
            *beat = Instant::now();
        }
        Ok(())
    }

    fn leave(&self, node_id: &str) -> Result<(), CatalogError> {
        let mut node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        if node.as_ref().is_some_and(|(status, _)| status.id == node_id) {
            *node = None;
        }
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>, CatalogError> {
        let node = self.node.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(node
            .iter()
            .map(|(status, beat)| NodeStatus {
                heartbeat_age_ms: u64::try_from(beat.elapsed().as_millis()).unwrap_or(u64::MAX),
                ..status.clone()
            })
            .collect())
    }

    fn lead(&self, role: &str, holder: &str, lease_ms: u64) -> Result<bool, CatalogError> {
        let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if roles.get(role).is_some_and(|(current, lapses)| current != holder && *lapses > now) {
            return Ok(false);
        }
        roles.insert(role.to_string(), (holder.to_string(), now + std::time::Duration::from_millis(lease_ms)));
        Ok(true)
    }

    fn resign(&self, role: &str, holder: &str) -> Result<(), CatalogError> {
        let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        if roles.get(role).is_some_and(|(current, _)| current == holder) {
            roles.remove(role);
        }
        Ok(())
    }

    fn role_holder(&self, role: &str) -> Result<Option<String>, CatalogError> {
        let roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(roles.get(role).filter(|(_, lapses)| *lapses > Instant::now()).map(|(holder, _)| holder.clone()))
    }

    fn park_delivery(&self, letter: &DeliveryLetter) -> Result<(), CatalogError> {
        let bytes = serde_json::to_vec(letter).map_err(CatalogError::Encode)?;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut letters = txn.open_table(DELIVERY_LETTERS).map_err(storage)?;
            let key = (letter.tenant.as_str(), letter.webhook.as_str(), letter.stream.as_str(), letter.offset);
            letters.insert(key, bytes.as_slice()).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    fn delivery_letters(&self, tenant: &str, webhook: &str, limit: usize) -> Result<Vec<DeliveryLetter>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let letters = txn.open_table(DELIVERY_LETTERS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in letters.range((tenant, webhook, "", 0)..).map_err(storage)?.take(limit) {
            let (key, bytes) = entry.map_err(storage)?;
            let (at_tenant, at_webhook, stream, offset) = key.value();
            if (at_tenant, at_webhook) != (tenant, webhook) {
                break;
            }
            out.push(serde_json::from_slice(bytes.value()).map_err(|e| CatalogError::Corrupt {
                what: format!("parked delivery {stream}/{offset} of webhook {webhook}"),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    fn delivery_letter_count(&self, tenant: &str, webhook: &str) -> Result<u64, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let letters = txn.open_table(DELIVERY_LETTERS).map_err(storage)?;
        let mut count = 0;
        for entry in letters.range((tenant, webhook, "", 0)..).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (at_tenant, at_webhook, _, _) = key.value();
            if (at_tenant, at_webhook) != (tenant, webhook) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    fn remove_delivery_letter(
        &self,
        tenant: &str,
        webhook: &str,
        stream: &str,
        offset: u64,
    ) -> Result<bool, CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = txn
            .open_table(DELIVERY_LETTERS)
            .map_err(storage)?
            .remove((tenant, webhook, stream, offset))
            .map_err(storage)?
            .is_some();
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn legacy_pending(&self) -> Result<Vec<LegacyPending>, CatalogError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = match txn.open_table(LEGACY_PENDING) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(storage(error)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(storage)? {
            let (key, bytes) = entry.map_err(storage)?;
            let (tenant, id) = key.value();
            let request = serde_json::from_slice(bytes.value()).map_err(|e| CatalogError::Corrupt {
                what: format!("pending transaction {id}"),
                reason: e.to_string(),
            })?;
            out.push((tenant.to_string(), id.to_string(), request));
        }
        Ok(out)
    }

    fn forget_legacy_pending(&self, tenant: &str, transaction_id: &str) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(LEGACY_PENDING).map_err(storage)?.remove((tenant, transaction_id)).map_err(storage)?;
        txn.commit().map_err(storage)
    }
}
