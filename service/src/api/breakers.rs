//! The circuit breakers of the hosts the tenant's guests call, on the node
//! that answers: breakers are per node (see `docs/policy.md`), each learnt
//! from the node's own calls.

use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::State;
use serde::Serialize;

/// A host's breaker on this node.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BreakerInfo {
    /// The host and port.
    pub host: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failures in a row while closed.
    pub failures_in_a_row: u32,
    /// While open, milliseconds until a trial call goes.
    pub opens_in_ms: Option<u64>,
    /// The node that answered, whose breaker this is.
    pub node: String,
}

/// The breakers of the hosts the caller's tenant's guests call, on this node.
#[utoipa::path(get, path = "/v1/breakers", tag = "operations",
    responses((status = 200, body = Vec<BreakerInfo>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn breakers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<BreakerInfo>>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let views = caller.tenant.runtime().breakers();
    Ok(Json(
        views
            .into_iter()
            .map(|view| BreakerInfo {
                host: view.host,
                state: view.state.as_str().to_string(),
                failures_in_a_row: view.failures_in_a_row,
                opens_in_ms: view.opens_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                node: state.node.id.clone(),
            })
            .collect(),
    ))
}
