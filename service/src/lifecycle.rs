//! A transaction's life in the service, and the service's own: admission,
//! the run of an accepted transaction, shutdown.
//!
//! Invariant: a transaction is acknowledged (`202`, or the report of a
//! synchronous request) only after its acceptance is durable in its
//! tenant's store, leased to the node that runs it; its acceptance ends in
//! the same storage transaction as the record that ends it. So at any
//! moment, an accepted transaction without a record is in flight on the
//! node holding its lease, or its lease lapses and another node (or this
//! one, restarted) takes it over: see [`node`](crate::node).

use crate::catalog::{Catalog, CatalogError};
use crate::tenant::Registered;
use crate::{AppState, ServiceError, Tenant};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use txmirror_runtime::store::{AcceptRequest, Acceptance, Fence};
use txmirror_runtime::{KeyClaim, Policy, TxReport, TxRequest, scoped_key};

/// A transaction the service accepted: what its tenant's store keeps as
/// the accepted request (JSON; the store never reads it).
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
    /// The caller's profile in the policy, which orders the paths; absent
    /// in entries written before it existed.
    #[serde(default)]
    pub profile: Option<String>,
    /// The webhook to tell of its end, if its submission named one; absent
    /// in entries written before it existed.
    #[serde(default)]
    pub notify: Option<String>,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub accepted_unix_ms: u64,
}

impl PendingTx {
    /// The request as its store keeps it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, ServiceError> {
        serde_json::to_vec(self).map_err(|e| ServiceError::Internal(format!("cannot encode a request: {e}")))
    }

    /// A request as its store kept it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

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

/// Brings every tenant's modules and policies to what the catalog holds:
/// loads the modules this node has not loaded, puts the policies that
/// changed, and drops the modules removed; returns those that failed to
/// load (they stay in the catalog, and the log says why).
pub(crate) async fn sync_modules(state: &AppState) -> Result<Vec<String>, CatalogError> {
    let mut failed = Vec::new();
    let stored = state.catalog.modules()?;
    for tenant in state.tenants.values() {
        for registered in tenant.modules() {
            let hash = registered.module.hash();
            if !stored.iter().any(|m| m.tenant == tenant.name() && m.hash == hash) {
                tenant.remove_module(hash);
            }
        }
    }
    for stored in stored {
        let Some(tenant) = state.tenants.get(&stored.tenant) else { continue };
        let loaded = tenant.module(&stored.hash).ok();
        if loaded.as_ref().is_some_and(|registered| registered.policy_text.as_deref() == stored.policy.as_deref()) {
            continue;
        }
        let policy = match stored.policy.map(|text| (Policy::parse(&text, std::path::Path::new("policy.toml")), text)) {
            Some((Ok(policy), text)) => Some((policy, text)),
            Some((Err(error), _)) => {
                tracing::error!(tenant = %stored.tenant, module = %stored.hash, %error, "a stored policy no longer parses");
                None
            }
            None => None,
        };
        let module = match loaded {
            Some(registered) => registered.module,
            None => match tenant.runtime().load_module(&stored.bytes).await {
                Ok(module) => module,
                Err(error) => {
                    tracing::error!(tenant = %stored.tenant, module = %stored.hash, %error, "a stored module no longer loads");
                    failed.push(format!("{}/{}", stored.tenant, stored.hash));
                    continue;
                }
            },
        };
        // With its policy, in one step (see `Tenant::add_stored_module`).
        tenant.add_stored_module(module, policy);
    }
    Ok(failed)
}

/// How often a node asks whether another changed a module or a policy.
const CATALOG_POLL: Duration = Duration::from_secs(1);

/// Follows the changes other nodes make to modules and policies: asks the
/// catalog's generation every [`CATALOG_POLL`], and syncs when it moved.
/// A node's own changes apply at once; another node's within a second.
pub(crate) fn follow_catalog(state: &AppState) {
    let seen = Arc::new(std::sync::Mutex::new(None));
    state.every(CATALOG_POLL, move |state| {
        let seen = seen.clone();
        async move {
            let generation = match state.catalog.generation() {
                Ok(generation) => generation,
                Err(error) => return tracing::warn!(%error, "cannot read the catalog's generation"),
            };
            if *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == Some(generation) {
                return;
            }
            match sync_modules(&state).await {
                Ok(_) => *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(generation),
                Err(error) => tracing::warn!(%error, "cannot follow the catalog's changes"),
            }
        }
    });
}

/// A tenant's module with its policy, loaded from the catalog if this
/// node has not loaded it yet (another node took the upload).
pub(crate) async fn module(state: &AppState, tenant: &Arc<Tenant>, hash: &str) -> Result<Registered, ServiceError> {
    if let Ok(registered) = tenant.module(hash) {
        return Ok(registered);
    }
    let Some(stored) = state.catalog.module(tenant.name(), hash)? else {
        return Err(ServiceError::NotFound(format!("no module {hash}")));
    };
    // Compiled code comes from this node's cache, by content hash, when
    // the node compiled the module before.
    let module = tenant.runtime().load_module(&stored.bytes).await?;
    let policy = match stored.policy {
        Some(text) => Some((Policy::parse(&text, std::path::Path::new("policy.toml"))?, text)),
        None => None,
    };
    Ok(tenant.add_stored_module(module, policy))
}

/// Accepts a transaction durably in its tenant's store, leased to this
/// node; the fence its writes are made under, or why it was not accepted.
pub(crate) fn accept(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
    pending: &PendingTx,
) -> Result<Result<Fence, Acceptance>, ServiceError> {
    let request = AcceptRequest {
        transaction_id: id.to_string(),
        idempotency_key: pending.idempotency_key.as_deref().map(|key| scoped_key(&pending.module, key)),
        request: pending.encode()?,
        holder: state.node.id.clone(),
        lease_ms: state.node.lease_ms(),
        now_unix_ms: pending.accepted_unix_ms,
    };
    Ok(match tenant.store().accept(request)? {
        Acceptance::Accepted { lease, .. } => Ok(Fence { transaction_id: id.to_string(), epoch: lease.epoch }),
        other => Err(other),
    })
}

/// The holder of the transactions an older build accepted, as they are
/// moved: their leases are let lapse at once, for the start to take over.
const LEGACY_HOLDER: &str = "legacy";

/// Moves the transactions an older build left accepted in the catalog into
/// their tenants' stores, with lapsed leases: the takeover at the start
/// then ends them as any other left in flight.
pub(crate) fn move_legacy_pending(state: &AppState, catalog: &dyn Catalog) -> Result<usize, CatalogError> {
    let mut moved = 0;
    for (tenant_name, id, request) in catalog.legacy_pending()? {
        let Some(tenant) = state.tenants.get(&tenant_name) else {
            tracing::warn!(tenant = %tenant_name, transaction = %id, "in flight for a tenant no longer configured");
            continue;
        };
        let pending: PendingTx = match serde_json::from_value(request) {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, transaction = %id, "an older build's accepted transaction cannot be read: kept");
                continue;
            }
        };
        let accepted = AcceptRequest {
            transaction_id: id.clone(),
            idempotency_key: pending.idempotency_key.as_deref().map(|key| scoped_key(&pending.module, key)),
            request: serde_json::to_vec(&pending).map_err(CatalogError::Encode)?,
            holder: LEGACY_HOLDER.into(),
            lease_ms: 0,
            now_unix_ms: pending.accepted_unix_ms,
        };
        // A record of it, or a copy moved before, ends it: forgotten.
        tenant.store().accept(accepted).map_err(CatalogError::Database)?;
        catalog.forget_legacy_pending(&tenant_name, &id)?;
        moved += 1;
    }
    if moved > 0 {
        for tenant in state.tenants.values() {
            tenant.store().release_leases(LEGACY_HOLDER).map_err(CatalogError::Database)?;
        }
    }
    Ok(moved)
}

/// How often lapsed idempotency keys are purged from the tenants' stores.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The most keys one purge removes per tenant (one write transaction).
const PURGE_LIMIT: usize = 10_000;

/// Purges lapsed idempotency keys and old effect journal entries from
/// every tenant's store now and then, so that a service that never
/// restarts keeps only keys that bind something and journals someone may
/// still need.
pub(crate) fn purge_lapsed_keys_now_and_then(state: &AppState) {
    // Each runtime purged when it opened.
    state.every(PURGE_INTERVAL, |state| async move {
        for tenant in state.tenants.values() {
            match tenant.runtime().purge_lapsed_keys(PURGE_LIMIT) {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(tenant = %tenant.name(), purged, "lapsed idempotency keys purged"),
                Err(error) => tracing::warn!(tenant = %tenant.name(), %error, "cannot purge lapsed idempotency keys"),
            }
            match tenant.runtime().purge_old_effects(PURGE_LIMIT) {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(tenant = %tenant.name(), purged, "old effect journal entries purged"),
                Err(error) => tracing::warn!(tenant = %tenant.name(), %error, "cannot purge the effect journal"),
            }
        }
        purge_streams(&state);
    });
}

/// Applies every `[[retention]]` rule once: each stream of each tenant it
/// names loses at most [`PURGE_LIMIT`] of its oldest events that the rule
/// lets go. Returns how many went in all.
pub fn purge_streams(state: &AppState) -> usize {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let now = u64::try_from(now).unwrap_or(u64::MAX);
    let mut purged = 0;
    for rule in state.retention.iter() {
        let retention = rule.at(now);
        for tenant in state.tenants.values().filter(|t| rule.tenant.as_deref().is_none_or(|name| name == t.name())) {
            match tenant.runtime().purge_stream(&rule.stream, &retention, PURGE_LIMIT) {
                Ok(0) => {}
                Ok(count) => {
                    purged += count;
                    tracing::debug!(tenant = %tenant.name(), stream = %rule.stream, count, "old events purged");
                }
                Err(error) => {
                    tracing::warn!(tenant = %tenant.name(), stream = %rule.stream, %error, "cannot purge a stream")
                }
            }
        }
    }
    purged
}

/// The runtime's request for an accepted transaction, its writes made
/// under `fence`.
pub(crate) fn request_of(id: &str, pending: &PendingTx, fence: Option<Fence>) -> Result<TxRequest, ServiceError> {
    Ok(TxRequest {
        transaction_id: Some(id.to_string()),
        path: pending.path.clone(),
        input: serde_json::to_vec(&pending.input).map_err(|e| ServiceError::Internal(e.to_string()))?,
        idempotency_key: pending.idempotency_key.clone(),
        caller: pending.caller.clone(),
        profile: pending.profile.clone(),
        fence,
        cancel: None,
        notify: pending.notify.clone(),
    })
}

/// Why an accepted transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// A client submitted it.
    Submitted,
    /// Its lease lapsed (its node died, stalled or drained) and this node
    /// took it over.
    Recovery,
}

/// An accepted transaction, ready to run on this node.
pub(crate) struct Launch {
    /// Its tenant.
    pub(crate) tenant: Arc<Tenant>,
    /// Its id.
    pub(crate) id: String,
    /// The runtime's request, with the fence its writes are made under.
    pub(crate) request: TxRequest,
    /// Its module and policy.
    pub(crate) registered: Registered,
    /// Why it runs.
    pub(crate) run: Run,
    /// Its hold on its idempotency key on this node, if it has one.
    pub(crate) claim: Option<KeyClaim>,
    /// This node's note that it runs it.
    pub(crate) running: crate::node::Running,
    /// Its place in its tenant's in-flight quota, if it took one (a
    /// submission; not a takeover, whose acceptance was counted elsewhere).
    pub(crate) in_flight: Option<crate::quota::InFlight>,
}

/// Runs an accepted transaction on its own task, tracked for shutdown: it
/// finishes even if the client goes away.
pub(crate) fn spawn_run(state: &AppState, launch: Launch) -> JoinHandle<Result<TxReport, ServiceError>> {
    let Launch { tenant, id, request, registered, run, claim, running, in_flight } = launch;
    // Cancelled through this node's note that it runs the transaction.
    let request = TxRequest { cancel: Some(running.cancel_token()), ..request };
    tenant.metrics().started();
    let fence = request.fence.clone();
    // The run's span is a child of the request's (which continues the
    // caller's trace), or a root of its own for a takeover.
    let span = tracing::info_span!(
        "txmirror.run",
        txmirror.tenant = tenant.name(),
        txmirror.transaction_id = id.as_str(),
        txmirror.run = ?run,
    );
    let running_task = async move {
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
        // A failed run below leaves the lease to this node's next pass.
        drop(running);
        drop(in_flight);
        match result {
            Ok(report) => {
                tenant.metrics().ended(&report, started.elapsed());
                // The record's commit ended the acceptance, unless the
                // outcome was found rather than written (a repeat's): end it.
                if let Some(fence) = &fence
                    && let Err(error) = tenant.store().finish(fence)
                {
                    tracing::warn!(%error, transaction = %id, "cannot end a finished transaction's acceptance: its lease lapses and the taker finds its record");
                }
                Ok(report)
            }
            Err(txmirror_runtime::ExecuteError::Store(error)) if crate::node::taken_over(&error) => {
                tenant.metrics().abandoned();
                tracing::warn!(%error, transaction = %id, "another node took the transaction over; this node's run ends");
                Err(ServiceError::TakenOver(id))
            }
            Err(error) => {
                // Only the store can fail here (the request was checked at
                // acceptance): the transaction stays accepted, and its
                // lease, unless renewed, lapses for a node to take it over.
                tenant.metrics().abandoned();
                tracing::error!(%error, transaction = %id, "a transaction could not run; it stays accepted");
                Err(error.into())
            }
        }
    };
    state.admission.running.spawn(tracing::Instrument::instrument(running_task, span))
}
