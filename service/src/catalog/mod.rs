//! The service's own durable state, beside the tenants' stores: uploaded
//! modules, their policies, the nodes serving, the roles one node at a
//! time plays (leases by name, such as a webhook's relay), and the events
//! webhooks could not deliver.
//!
//! Two backends behind one trait, chosen with the tenants' store:
//! - [`RedbCatalog`], `DATA_DIR/catalog.redb`, for the embedded store: one
//!   node, which holds the file alone;
//! - [`PostgresCatalog`], the schema `txm_catalog` of the database in
//!   `[store] url`: every node sees every module and policy, and the
//!   nodes' ids and heartbeats.
//!
//! Accepted transactions are not here: they live in their tenant's store,
//! beside the records that end them (see `txmirror_runtime::store::Accepted`).

mod postgres;
mod redb;

pub use postgres::PostgresCatalog;
pub use redb::RedbCatalog;

use serde::{Deserialize, Serialize};
use txmirror_runtime::store::StoreError;

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

/// A node as it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id for this run of the process (`NAME:INCARNATION`): the holder
    /// of the leases it takes.
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// Where it serves the API.
    pub address: String,
}

/// A node as the catalog sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// Its id for this run of the process: the holder of its leases.
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// Where it serves the API.
    pub address: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Milliseconds since its last heartbeat, on the catalog's clock.
    pub heartbeat_age_ms: u64,
    /// `serving`, or `draining` once it has begun to shut down.
    pub state: String,
}

/// An event a webhook could not deliver, parked until an operator replays
/// or drops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryLetter {
    /// The tenant whose stream it is.
    pub tenant: String,
    /// The webhook (`[[webhooks]] name`).
    pub webhook: String,
    /// The stream.
    pub stream: String,
    /// The event's offset in the tenant's log.
    pub offset: u64,
    /// The delivery's id (`webhook-id`), which the receiver deduplicates by.
    pub id: String,
    /// The body as it was POSTed (JSON).
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt met.
    pub last_error: String,
    /// When it was parked, in milliseconds since the Unix epoch.
    pub parked_unix_ms: u64,
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
        source: ::redb::Error,
    },
    /// The embedded storage engine failed.
    #[error("the catalog's storage engine failed")]
    Storage(#[source] ::redb::Error),
    /// The catalog's database failed, or could not be reached.
    #[error("the catalog's database failed")]
    Database(#[source] StoreError),
    /// An entry could not be encoded.
    #[error("cannot encode a catalog entry")]
    Encode(#[source] serde_json::Error),
    /// A stored entry could not be decoded.
    #[error("corrupt catalog entry {what}: {reason}")]
    Corrupt {
        /// Which entry.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A transaction an older build accepted into the catalog, before accepted
/// transactions moved into the tenants' stores: `(tenant, id, request)`.
pub type LegacyPending = (String, String, serde_json::Value);

/// Where the service keeps modules, policies and nodes.
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Stores a module (again).
    fn put_module(&self, tenant: &str, hash: &str, bytes: &[u8]) -> Result<(), CatalogError>;
    /// Removes a module and its policy; whether it was there.
    fn delete_module(&self, tenant: &str, hash: &str) -> Result<bool, CatalogError>;
    /// Stores a module's policy text.
    fn put_policy(&self, tenant: &str, hash: &str, text: &str) -> Result<(), CatalogError>;
    /// Every module of every tenant, with its policy.
    fn modules(&self) -> Result<Vec<StoredModule>, CatalogError>;
    /// One module, with its policy.
    fn module(&self, tenant: &str, hash: &str) -> Result<Option<StoredModule>, CatalogError>;
    /// A number that changes whenever a module or a policy does, so that a
    /// node sees another's changes by asking for one number.
    fn generation(&self) -> Result<u64, CatalogError>;
    /// Records a node as serving.
    fn join(&self, node: &NodeInfo) -> Result<(), CatalogError>;
    /// Records that a node is alive, and in which state.
    fn heartbeat(&self, node_id: &str, state: &str) -> Result<(), CatalogError>;
    /// Forgets a node that shut down.
    fn leave(&self, node_id: &str) -> Result<(), CatalogError>;
    /// The nodes that have joined and not left, and when each was last heard of.
    fn nodes(&self) -> Result<Vec<NodeStatus>, CatalogError>;
    /// Takes or renews the lease on `role` for `holder`, for `lease_ms`:
    /// whether `holder` plays the role now (it does if it held it, or
    /// nobody did, or the last holder's lease lapsed).
    fn lead(&self, role: &str, holder: &str, lease_ms: u64) -> Result<bool, CatalogError>;
    /// Hands `role` back, if `holder` has it, so another node takes it at once.
    fn resign(&self, role: &str, holder: &str) -> Result<(), CatalogError>;
    /// Who plays `role`, if its lease has not lapsed.
    fn role_holder(&self, role: &str) -> Result<Option<String>, CatalogError>;
    /// Parks an undeliverable event (again: a parked event's letter is
    /// replaced).
    fn park_delivery(&self, letter: &DeliveryLetter) -> Result<(), CatalogError>;
    /// The parked events of a webhook, by stream and offset, at most `limit`.
    fn delivery_letters(&self, tenant: &str, webhook: &str, limit: usize) -> Result<Vec<DeliveryLetter>, CatalogError>;
    /// How many events of a webhook are parked.
    fn delivery_letter_count(&self, tenant: &str, webhook: &str) -> Result<u64, CatalogError>;
    /// Removes one parked event; whether it was there.
    fn remove_delivery_letter(
        &self,
        tenant: &str,
        webhook: &str,
        stream: &str,
        offset: u64,
    ) -> Result<bool, CatalogError>;
    /// Transactions an older build left accepted in the catalog; none
    /// where there cannot be any.
    fn legacy_pending(&self) -> Result<Vec<LegacyPending>, CatalogError> {
        Ok(Vec::new())
    }
    /// Forgets a legacy transaction once its tenant's store holds it.
    fn forget_legacy_pending(&self, _tenant: &str, _transaction_id: &str) -> Result<(), CatalogError> {
        Ok(())
    }
}
