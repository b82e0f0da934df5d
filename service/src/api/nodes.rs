//! The nodes serving, and the leases of the caller's tenant's transactions
//! in flight: who runs what, and until when unless renewed.

use crate::auth::{Caller, Role};
use crate::catalog::NodeStatus;
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

/// The most leases one answer lists.
const LEASES_SHOWN: usize = 500;

/// A transaction in flight and its lease.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseView {
    /// The transaction.
    pub transaction_id: String,
    /// The node holding it (a node's id).
    pub holder: String,
    /// Raised at each takeover.
    pub epoch: u64,
    /// When the lease lapses unless renewed, in milliseconds since the Unix
    /// epoch on the store's clock.
    pub expires_unix_ms: u64,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodesView {
    /// The id of the node that answered.
    pub this_node: String,
    /// How long a lease lasts unless renewed, in milliseconds.
    pub lease_ms: u64,
    /// The nodes that have joined and not left, with their last heartbeat.
    pub nodes: Vec<NodeStatus>,
    /// The tenant's transactions in flight, oldest first, and their leases.
    pub leases: Vec<LeaseView>,
}

/// The nodes, their heartbeats, and the leases of the tenant's transactions in flight.
#[utoipa::path(get, path = "/v1/nodes", tag = "operations",
    responses((status = 200, body = NodesView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn nodes(State(state): State<AppState>, caller: Caller) -> Result<Json<NodesView>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let leases = caller
        .tenant
        .store()
        .in_flight(LEASES_SHOWN)?
        .into_iter()
        .map(|accepted| LeaseView {
            transaction_id: accepted.transaction_id,
            holder: accepted.lease.holder,
            epoch: accepted.lease.epoch,
            expires_unix_ms: accepted.lease.expires_unix_ms,
        })
        .collect();
    Ok(Json(NodesView {
        this_node: state.node.id.clone(),
        lease_ms: state.node.lease_ms(),
        nodes: state.catalog.nodes()?,
        leases,
    }))
}
