//! A tenant: its own runtime (over its own store), modules and metrics.

use crate::ServiceError;
use crate::metrics::TenantMetrics;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use txmirror_runtime::{Module, Policy, Runtime};

/// A module of a tenant's, with its policy.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub(crate) module: Module,
    pub(crate) policy: Option<Arc<Policy>>,
    pub(crate) policy_text: Option<String>,
}

/// One tenant of the service. Its store (`DATA_DIR/tenants/NAME/state.redb`)
/// holds its key-value namespaces, transactions, idempotency keys, events
/// and dead letters, and no other tenant's.
#[derive(Debug)]
pub struct Tenant {
    name: String,
    runtime: Runtime,
    modules: RwLock<BTreeMap<String, Registered>>,
    metrics: TenantMetrics,
}

impl Tenant {
    pub(crate) fn new(name: String, runtime: Runtime) -> Self {
        Self { name, runtime, modules: RwLock::default(), metrics: TenantMetrics::default() }
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
