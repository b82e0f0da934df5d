//! A transaction's life in the service, and the service's own: admission,
//! the run of an accepted transaction, recovery at the start, shutdown.
//!
//! Invariant: a transaction is acknowledged (`202`, or the report of a
//! synchronous request) only after its acceptance is durable in the
//! [`catalog`](crate::catalog), and its pending entry goes only once its
//! record is in the tenant's store. So at any start, a pending entry
//! without a record is a transaction that was in flight: [`recover`] ends
//! it as its policy says (runs it again, or dead-letters it).

use crate::catalog::{CatalogError, PendingTx};
use crate::tenant::Registered;
use crate::{AppState, ServiceError, Tenant};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use txmirror_runtime::{KeyClaim, KeyState, Policy, TxReport, TxRequest};

/// Whether new transactions are admitted, and those running.
#[derive(Debug, Default)]
pub struct Admission {
    closed: AtomicBool,
    running: TaskTracker,
}

impl Admission {
    /// Whether the service still admits transactions.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    /// Refuses a new transaction once shutdown has begun.
    pub(crate) fn check(&self) -> Result<(), ServiceError> {
        if self.is_open() { Ok(()) } else { Err(ServiceError::ShuttingDown) }
    }

    /// Stops admitting; waits for the running transactions up to the
    /// deadline; returns how many were left running.
    pub(crate) async fn shut_down(&self, deadline: Duration) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        self.running.close();
        let _ = tokio::time::timeout(deadline, self.running.wait()).await;
        self.running.len()
    }
}

/// Loads every stored module into its tenant; returns those that failed
/// (they stay in the catalog, and the log says why).
pub(crate) async fn load_modules(state: &AppState) -> Result<Vec<String>, CatalogError> {
    let mut failed = Vec::new();
    for stored in state.catalog.modules()? {
        let Some(tenant) = state.tenants.get(&stored.tenant) else { continue };
        let module = match tenant.runtime().load_module(&stored.bytes).await {
            Ok(module) => module,
            Err(error) => {
                tracing::error!(tenant = %stored.tenant, module = %stored.hash, %error, "a stored module no longer loads");
                failed.push(format!("{}/{}", stored.tenant, stored.hash));
                continue;
            }
        };
        tenant.add_module(module);
        if let Some(text) = stored.policy {
            match Policy::parse(&text, std::path::Path::new("policy.toml")) {
                Ok(policy) => {
                    let _ = tenant.set_policy(&stored.hash, policy, text);
                }
                Err(error) => {
                    tracing::error!(tenant = %stored.tenant, module = %stored.hash, %error, "a stored policy no longer parses");
                }
            }
        }
    }
    Ok(failed)
}

/// Ends what a previous process left in flight; returns how many.
pub(crate) fn recover(state: &AppState) -> Result<usize, CatalogError> {
    let mut count = 0;
    for (tenant_name, id, pending) in state.catalog.all_pending()? {
        let Some(tenant) = state.tenants.get(&tenant_name) else {
            tracing::warn!(tenant = %tenant_name, transaction = %id, "in flight for a tenant no longer configured");
            continue;
        };
        let registered = match tenant.module(&pending.module) {
            Ok(registered) if registered.policy.is_some() => registered,
            _ => {
                tracing::error!(
                    tenant = %tenant_name, transaction = %id, module = %pending.module,
                    "in flight, but its module or policy is gone: left pending"
                );
                continue;
            }
        };
        // Held until the recovery ends, so that a client's repeat waits for
        // it; a key bound elsewhere already is for `recover_interrupted`.
        let request = match request_of(&id, &pending) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(%error, transaction = %id, "in flight, but its input cannot be read: left pending");
                continue;
            }
        };
        let claim = match registered
            .policy
            .as_deref()
            .map(|policy| tenant.runtime().claim_key(&registered.module, policy, &request, &id))
        {
            Some(Ok(KeyState::Claimed(claim))) => Some(claim),
            _ => None,
        };
        count += 1;
        drop(spawn_run(state, tenant.clone(), id, request, registered, Run::Recovery, claim));
    }
    if count > 0 {
        tracing::info!(count, "transactions left in flight by the previous process are being ended");
    }
    Ok(count)
}

/// How often lapsed idempotency keys are purged from the tenants' stores.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The most keys one purge removes per tenant (one write transaction).
const PURGE_LIMIT: usize = 10_000;

/// Purges lapsed idempotency keys from every tenant's store now and then,
/// so that a service that never restarts keeps only keys that bind
/// something. The task holds the tenants weakly: it ends with the service.
pub(crate) fn purge_lapsed_keys_now_and_then(state: &AppState) {
    let tenants = Arc::downgrade(&state.tenants);
    let admission = state.admission.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PURGE_INTERVAL);
        // The first tick is now; each runtime purged when it opened.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(tenants) = tenants.upgrade() else { break };
            if !admission.is_open() {
                break;
            }
            for tenant in tenants.values() {
                match tenant.runtime().purge_lapsed_keys(PURGE_LIMIT) {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(tenant = %tenant.name(), purged, "lapsed idempotency keys purged"),
                    Err(error) => {
                        tracing::warn!(tenant = %tenant.name(), %error, "cannot purge lapsed idempotency keys")
                    }
                }
            }
        }
    });
}

/// The runtime's request for an accepted transaction.
pub(crate) fn request_of(id: &str, pending: &PendingTx) -> Result<TxRequest, ServiceError> {
    Ok(TxRequest {
        transaction_id: Some(id.to_string()),
        path: pending.path.clone(),
        input: serde_json::to_vec(&pending.input).map_err(|e| ServiceError::Internal(e.to_string()))?,
        idempotency_key: pending.idempotency_key.clone(),
        caller: pending.caller.clone(),
    })
}

/// Why an accepted transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// A client submitted it.
    Submitted,
    /// A previous process accepted it and stopped before its end.
    Recovery,
}

/// Runs an accepted transaction on its own task, tracked for shutdown: it
/// finishes even if the client goes away.
pub(crate) fn spawn_run(
    state: &AppState,
    tenant: Arc<Tenant>,
    id: String,
    request: TxRequest,
    registered: Registered,
    run: Run,
    claim: Option<KeyClaim>,
) -> JoinHandle<Result<TxReport, ServiceError>> {
    let catalog = state.catalog.clone();
    tenant.metrics().started();
    state.admission.running.spawn(async move {
        let started = Instant::now();
        let policy =
            registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(registered.module.hash().to_string()))?;
        let runtime = tenant.runtime();
        let result = match run {
            Run::Submitted => runtime.execute(&registered.module, &policy, request).await,
            Run::Recovery => runtime.recover_interrupted(&registered.module, &policy, &id, request).await,
        };
        // The record binds the key from now on.
        drop(claim);
        match result {
            Ok(report) => {
                tenant.metrics().ended(&report, started.elapsed());
                if let Err(error) = catalog.finish(tenant.name(), &id) {
                    tracing::error!(%error, transaction = %id, "cannot clear a finished transaction: it is checked again at the next start");
                }
                Ok(report)
            }
            Err(error) => {
                // Only the store can fail here (the request was checked at
                // acceptance): the entry stays pending for the next start.
                tenant.metrics().abandoned();
                tracing::error!(%error, transaction = %id, "a transaction could not run; it stays pending");
                Err(error.into())
            }
        }
    })
}
