//! A caller's cancel (`POST /v1/transactions/{id}/cancel`): the node that
//! runs the transaction stops it where stopping is safe (see the runtime's
//! `vocab/cancel.rs`). Before its first unsafe call it ends having done
//! nothing; after one, its policy's compensation path runs, told what was
//! sent. Either way it ends `failed` with `cancelled_by_caller` and no
//! dead letter; a cancel that comes as its commit is made is too late, and
//! the transaction commits. The answer (`202`) says the cancel is asked
//! for, not how the transaction ends: its status (or its events) says that.

use super::transactions::{Found, find, status};
use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `POST /v1/transactions/{id}/cancel`: the cancel is asked for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelling {
    /// The transaction.
    pub transaction_id: String,
    /// `cancelling`, until the transaction ends.
    pub status: String,
    /// The attempt it was at when the cancel was asked for, if it had begun one.
    pub attempt: Option<u32>,
}

/// Cancels a pending transaction on the node that runs it.
#[utoipa::path(post, path = "/v1/transactions/{id}/cancel", tag = "transactions", params(("id" = String, Path)),
    responses((status = 202, body = Cancelling, description = "The cancel is asked for; follow the transaction for its end"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "It has ended already, or another node runs it (the message names that node and its address)")),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let tenant = &caller.tenant;
    match find(tenant, &id)?.ok_or_else(|| ServiceError::NotFound(format!("no transaction {id}")))? {
        Found::Recorded { record, .. } => {
            return Err(ServiceError::Conflict(format!(
                "transaction {id} has ended ({}): there is nothing to cancel",
                status(&record)
            )));
        }
        Found::Pending(_) => {}
    }
    if !state.node.cancel(tenant.name(), &id) {
        return Err(runs_elsewhere(&state, tenant, &id));
    }
    tracing::info!(transaction = %id, tenant = tenant.name(), "its caller cancelled the transaction");
    let answer = Cancelling {
        transaction_id: id.clone(),
        status: "cancelling".into(),
        attempt: tenant.runtime().progress(&id).map(|progress| progress.attempt),
    };
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/transactions/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The refusal of a cancel for a pending transaction this node does not
/// run: the cancel is kept in the memory of the node that runs it, so it
/// must be sent there (or again, once a node has taken over a lapsed lease).
fn runs_elsewhere(state: &AppState, tenant: &crate::Tenant, id: &str) -> ServiceError {
    let holder = match tenant.store().accepted(id) {
        Ok(Some(accepted)) => accepted.lease.holder,
        // Ended between the two reads: its status says how.
        Ok(None) => return ServiceError::Conflict(format!("transaction {id} has ended: there is nothing to cancel")),
        Err(error) => return error.into(),
    };
    // This node's own lease without a run of it: its last run failed in
    // the store, and this node's next pass runs it again.
    if holder == state.node.id {
        return ServiceError::Conflict(format!(
            "transaction {id} waits to be run again on this node (its last run could not reach the store): \
             send the cancel again in a moment"
        ));
    }
    let address = state.catalog.nodes().ok().and_then(|nodes| {
        nodes.into_iter().find(|node| node.id == holder && node.state == "serving").map(|node| node.address)
    });
    match address {
        Some(address) => ServiceError::Conflict(format!(
            "transaction {id} runs on node {holder}, not on this one: send the cancel to {address}"
        )),
        None => ServiceError::Conflict(format!(
            "transaction {id} is leased to node {holder}, which is not serving: once its lease lapses and another \
             node takes it over, send the cancel to that node (GET /v1/nodes lists the leases)"
        )),
    }
}
