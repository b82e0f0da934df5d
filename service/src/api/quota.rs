//! The caller's tenant's quotas and their use on the node that answers,
//! with the node's connections (see `docs/service.md`, Limits and quotas).

use crate::auth::{Caller, Role};
use crate::quota::QuotaUsage;
use crate::server::ConnectionCounts;
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

/// A tenant's quotas on one node.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaView {
    /// The tenant.
    pub tenant: String,
    /// The node that answered: quotas are counted per node.
    pub node: String,
    /// The tenant's quotas and their use.
    pub quota: QuotaUsage,
    /// The node's connections, every tenant's together.
    pub connections: ConnectionCounts,
}

/// The tenant's quotas and their use on this node.
#[utoipa::path(get, path = "/v1/quota", tag = "operations",
    responses((status = 200, body = QuotaView), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn quota(State(state): State<AppState>, caller: Caller) -> Result<Json<QuotaView>, ServiceError> {
    caller.require(&[Role::Operator])?;
    Ok(Json(QuotaView {
        tenant: caller.tenant.name().to_string(),
        node: state.node.id.clone(),
        quota: caller.tenant.quota().usage(),
        connections: state.connections(),
    }))
}
