//! A tenant: its own runtime (over its own store), modules and metrics.

use crate::ServiceError;
use crate::metrics::TenantMetrics;
use crate::quota::TenantQuota;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use txmirror_runtime::store::StateStore;
use txmirror_runtime::{Module, Policy, Runtime};

/// A module of a tenant's, with its policy.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) module: Module,
    pub(crate) policy: Option<Arc<Policy>>,
    pub(crate) policy_text: Option<String>,
}

/// One tenant of the service. Its store (`DATA_DIR/tenants/NAME/state.redb`,
/// or a schema of its own on PostgreSQL) holds its key-value namespaces,
/// accepted transactions, records, idempotency keys, events and dead
/// letters, and no other tenant's.
#[derive(Debug)]
pub struct Tenant {
    name: String,
    runtime: Runtime,
    store: Arc<dyn StateStore>,
    modules: RwLock<BTreeMap<String, Registered>>,
    metrics: TenantMetrics,
    quota: TenantQuota,
}

impl Tenant {
    pub(crate) fn new(name: String, runtime: Runtime, store: Arc<dyn StateStore>, quota: TenantQuota) -> Self {
        Self { name, runtime, store, modules: RwLock::default(), metrics: TenantMetrics::default(), quota }
    }

    /// The tenant's quotas on this node, and their use.
    pub(crate) fn quota(&self) -> &TenantQuota {
        &self.quota
    }

    /// The tenant's store, which its runtime commits to: the service keeps
    /// accepted transactions and their leases there.
    pub(crate) fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The tenant's metrics.
    pub fn metrics(&self) -> &TenantMetrics {
        &self.metrics
    }

    pub(crate) fn module(&self, hash: &str) -> Result<Registered, ServiceError> {
        let modules = self.modules.read().unwrap_or_else(PoisonError::into_inner);
        modules.get(hash).cloned().ok_or_else(|| ServiceError::NotFound(format!("no module {hash}")))
    }

    pub(crate) fn modules(&self) -> Vec<Registered> {
        self.modules.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Adds a module, keeping the policy of one already there.
    pub(crate) fn add_module(&self, module: Module) -> Registered {
        let mut modules = self.modules.write().unwrap_or_else(PoisonError::into_inner);
        modules
            .entry(module.hash().to_string())
            .or_insert_with(|| Registered { module, policy: None, policy_text: None })
            .clone()
    }

    /// Adds `module` loaded from the catalog together with its stored
    /// policy, in one step: a request that finds the module finds its policy
    /// too, never the module alone between the two.
    pub(crate) fn add_stored_module(&self, module: Module, policy: Option<(Policy, String)>) -> Registered {
        let mut modules = self.modules.write().unwrap_or_else(PoisonError::into_inner);
        let entry = modules.entry(module.hash().to_string()).or_insert_with(|| Registered {
            module,
            policy: None,
            policy_text: None,
        });
        if let Some((policy, text)) = policy
            && entry.policy_text.as_deref() != Some(text.as_str())
        {
            entry.policy = Some(Arc::new(policy));
            entry.policy_text = Some(text);
        }
        entry.clone()
    }

    pub(crate) fn remove_module(&self, hash: &str) -> bool {
        self.modules.write().unwrap_or_else(PoisonError::into_inner).remove(hash).is_some()
    }

    pub(crate) fn set_policy(&self, hash: &str, policy: Policy, text: String) -> Result<Registered, ServiceError> {
        let mut modules = self.modules.write().unwrap_or_else(PoisonError::into_inner);
        let entry = modules.get_mut(hash).ok_or_else(|| ServiceError::NotFound(format!("no module {hash}")))?;
        entry.policy = Some(Arc::new(policy));
        entry.policy_text = Some(text);
        Ok(entry.clone())
    }
}

/// The PostgreSQL schema a tenant's state lives in: `txm_`, the name's
/// ASCII letters and digits lower-cased (at most 32), and 16 hex digits of
/// its BLAKE3 hash, so that every tenant name, whatever it holds, maps to a
/// plain identifier of its own.
pub(crate) fn schema(tenant: &str) -> String {
    let readable: String =
        tenant.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(32).collect();
    let hash = blake3::hash(tenant.as_bytes()).to_hex();
    format!("txm_{readable}_{}", &hash[..16])
}

#[cfg(test)]
mod schema_tests {
    use super::schema;

    #[test]
    fn every_tenant_name_maps_to_a_plain_identifier_of_its_own() {
        let names = ["acme", "Acme", "a-c.me", "ACME", "tenant with spaces", "日本", &"x".repeat(200)];
        let schemas: Vec<String> = names.iter().map(|name| schema(name)).collect();
        for s in &schemas {
            assert!(
                s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
        }
        let distinct: std::collections::BTreeSet<&String> = schemas.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{schemas:?}");
        assert!(schemas[0].starts_with("txm_acme_"), "{}", schemas[0]);
    }
}
