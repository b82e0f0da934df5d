//! This process as one node of several on one database: its id, the
//! renewal of its leases, the takeover of lapsed ones, and its drain.
//!
//! Every transaction a node accepts is leased to it in the tenant's store
//! (see `txmirror_runtime::store::Accepted`). The node renews its leases
//! and its heartbeat every third of the lease time. A node that dies stops
//! renewing; once a lease has lapsed on the store's clock, any other node
//! takes it over at the next epoch and ends the transaction as its policy's
//! `[recovery]` says. The old holder's writes carry the old epoch and are
//! refused inside their commit, so a node that stalled past its lease and
//! wakes up cannot commit what another node now runs.
//!
//! On the embedded store there is one node, which holds the file alone:
//! at its start it takes every lease a previous process left.

use crate::AppState;
use crate::catalog::NodeInfo;
use crate::config::NodeConfig;
use crate::lifecycle::{self, Launch, Run};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use txmirror_runtime::CancelToken;
use txmirror_runtime::store::{Accepted, Fence, StoreError};

/// How many lapsed leases one pass takes per tenant.
const TAKE_OVER_BATCH: usize = 100;
/// How many transactions in flight one pass looks through per tenant for
/// those of this node's leases that no run holds.
const IN_FLIGHT_SCAN: usize = 1_000;

/// This node.
#[derive(Debug)]
pub struct Node {
    /// Its id for this run of the process: `NAME:INCARNATION`, with 8 random
    /// hex digits, so that a restarted node never mistakes the leases of
    /// its previous run for its own.
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// The transactions this node runs now, `(tenant, id)`, with the flag
    /// that cancels each: a lease of its own whose transaction is not among
    /// them was left by a run that the store failed, and is run again.
    running: Registry,
}

type Registry = Arc<Mutex<HashMap<(String, String), CancelToken>>>;

/// A transaction this node runs, from before its acceptance to its run's
/// end: dropping it says the run is over.
#[derive(Debug)]
pub(crate) struct Running {
    registry: Registry,
    key: (String, String),
    cancel: CancelToken,
}

impl Running {
    /// The flag that [`Node::cancel`] sets for this transaction.
    pub(crate) fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

impl Node {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        let incarnation: u32 = rand::random();
        let name = config.name.clone();
        Self { id: format!("{name}:{incarnation:08x}"), name, lease: config.lease(), running: Arc::default() }
    }

    /// Notes that this node runs (or is about to accept) a transaction;
    /// `None` if it runs it already.
    pub(crate) fn run(&self, tenant: &str, transaction_id: &str) -> Option<Running> {
        let key = (tenant.to_string(), transaction_id.to_string());
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.contains_key(&key) {
            return None;
        }
        let cancel = CancelToken::new();
        running.insert(key.clone(), cancel.clone());
        Some(Running { registry: self.running.clone(), key, cancel })
    }

    /// Whether the caller of a transaction this node runs has cancelled it.
    pub(crate) fn cancel_requested(&self, tenant: &str, transaction_id: &str) -> bool {
        let key = (tenant.to_string(), transaction_id.to_string());
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.get(&key).is_some_and(CancelToken::is_cancelled)
    }

    /// Asks a transaction this node runs to stop; `false` if it runs no
    /// such transaction (another node may, or none does).
    pub(crate) fn cancel(&self, tenant: &str, transaction_id: &str) -> bool {
        let key = (tenant.to_string(), transaction_id.to_string());
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.get(&key).inspect(|token| token.cancel()).is_some()
    }

    pub(crate) fn info(&self, address: String) -> NodeInfo {
        NodeInfo { id: self.id.clone(), name: self.name.clone(), address }
    }

    pub(crate) fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// How often leases and the heartbeat are renewed: a third of the
    /// lease, so that two renewals can fail before a lease lapses.
    fn renew_interval(&self) -> Duration {
        self.lease / 3
    }

    /// How often lapsed leases are looked for: a quarter of the lease, so
    /// that a dead node's work is taken over within the lease and a quarter.
    fn take_over_interval(&self) -> Duration {
        self.lease / 4
    }
}

/// Takes over every lapsed lease of every tenant once, and runs again the
/// transactions of this node's own leases that no run of its holds (their
/// run failed in the store, the database being down); how many
/// transactions it started ending.
pub(crate) async fn take_over_lapsed(state: &AppState) -> usize {
    let mut count = 0;
    for tenant in state.tenants.values() {
        let taken = match tenant.store().take_over(&state.node.id, state.node.lease_ms(), TAKE_OVER_BATCH) {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(tenant = %tenant.name(), %error, "cannot look for lapsed leases");
                continue;
            }
        };
        for accepted in taken {
            tracing::info!(
                tenant = %tenant.name(), transaction = %accepted.transaction_id, epoch = accepted.lease.epoch,
                "took over a transaction whose lease lapsed"
            );
            tenant.metrics().took_over();
            if resume(state, tenant, accepted).await {
                count += 1;
            }
        }
        let own = match tenant.store().in_flight(IN_FLIGHT_SCAN) {
            Ok(in_flight) => in_flight,
            Err(error) => {
                tracing::warn!(tenant = %tenant.name(), %error, "cannot look for transactions left by failed runs");
                continue;
            }
        };
        for accepted in own.into_iter().filter(|accepted| accepted.lease.holder == state.node.id) {
            if resume(state, tenant, accepted).await {
                count += 1;
            }
        }
    }
    count
}

/// Ends a transaction whose lease this node holds, unless a run of this
/// node's ends it already; whether it started.
async fn resume(state: &AppState, tenant: &Arc<crate::Tenant>, accepted: Accepted) -> bool {
    let id = accepted.transaction_id.clone();
    let Some(running) = state.node.run(tenant.name(), &id) else { return false };
    // The scan that found it may predate a run of this node's that has
    // ended it since (the run's guard is gone, so `run` above let this
    // through): read it again, now that no other run of it can start here,
    // and resume it only if it is still in flight under the lease found.
    match tenant.store().accepted(&id) {
        Ok(Some(current))
            if current.lease.holder == accepted.lease.holder && current.lease.epoch == accepted.lease.epoch => {}
        Ok(_) => return false,
        Err(error) => {
            tracing::warn!(tenant = %tenant.name(), transaction = %id, %error, "cannot read a transaction to resume: left for the next scan");
            return false;
        }
    }
    let pending = match lifecycle::PendingTx::decode(&accepted.request) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::error!(%error, transaction = %id, "taken over, but its request cannot be read: left in flight");
            return false;
        }
    };
    let registered = match lifecycle::module(state, tenant, &pending.module).await {
        Ok(registered) if registered.policy.is_some() => registered,
        _ => {
            tracing::error!(
                tenant = %tenant.name(), transaction = %id, module = %pending.module,
                "taken over, but its module or policy is gone: left in flight"
            );
            return false;
        }
    };
    let fence = Fence { transaction_id: id.clone(), epoch: accepted.lease.epoch };
    let request = match lifecycle::request_of(&id, &pending, Some(fence)) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, transaction = %id, "taken over, but its input cannot be read: left in flight");
            return false;
        }
    };
    // Held until the recovery ends, so that a client's repeat on this node
    // waits for it; a key bound elsewhere already is for `recover_interrupted`.
    let claim = match registered
        .policy
        .as_deref()
        .map(|policy| tenant.runtime().claim_key(&registered.module, policy, &request, &id))
    {
        Some(Ok(txmirror_runtime::KeyState::Claimed(claim))) => Some(claim),
        _ => None,
    };
    let launch =
        Launch { tenant: tenant.clone(), id, request, registered, run: Run::Recovery, claim, running, in_flight: None };
    drop(lifecycle::spawn_run(state, launch));
    true
}

/// Renews this node's heartbeat and leases, and takes over lapsed leases,
/// until the service stops admitting or is dropped.
pub(crate) fn keep_alive(state: &AppState) {
    state.every(state.node.renew_interval(), |state| async move { renew(&state) });
    // The start has just taken over.
    state.every(state.node.take_over_interval(), |state| async move {
        take_over_lapsed(&state).await;
    });
}

fn renew(state: &AppState) {
    let node = &state.node;
    if let Err(error) = state.catalog.heartbeat(&node.id, "serving") {
        tracing::warn!(%error, "cannot record this node's heartbeat");
    }
    for tenant in state.tenants.values() {
        match tenant.store().renew_leases(&node.id, node.lease_ms()) {
            Ok(held) => tenant.metrics().leases_held(held),
            Err(error) => {
                tracing::warn!(tenant = %tenant.name(), %error, "cannot renew this node's leases: they lapse unless a later renewal succeeds");
            }
        }
    }
}

/// Hands this node's remaining leases back (they lapse now, for another
/// node to take over at once) and leaves the catalog: the end of a drain.
pub(crate) fn hand_back(state: &AppState) -> usize {
    let mut released = 0;
    for tenant in state.tenants.values() {
        match tenant.store().release_leases(&state.node.id) {
            Ok(count) => released += count,
            Err(error) => {
                tracing::warn!(tenant = %tenant.name(), %error, "cannot hand leases back: they lapse by themselves")
            }
        }
    }
    if let Err(error) = state.catalog.leave(&state.node.id) {
        tracing::warn!(%error, "cannot remove this node from the catalog");
    }
    released
}

/// Marks this node as draining in the catalog.
pub(crate) fn draining(state: &AppState) {
    if let Err(error) = state.catalog.heartbeat(&state.node.id, "draining") {
        tracing::warn!(%error, "cannot record that this node drains");
    }
}

/// Whether a store error says that another node took the transaction over.
pub(crate) fn taken_over(error: &StoreError) -> bool {
    matches!(error, StoreError::Fenced { .. })
}
