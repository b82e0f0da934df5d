//! Health, readiness, metrics, the API description and the operator page.

use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: every tenant's store answers and the service admits transactions.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = String), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ServiceError> {
    state.admission.check()?;
    for tenant in state.tenants.values() {
        tenant.runtime().check_store()?;
    }
    Ok("ready")
}

/// The caller's tenant's metrics, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ServiceError> {
    caller.require(&[Role::Operator])?;
    match state.catalog.nodes() {
        Ok(nodes) => caller.tenant.metrics().nodes(
            nodes
                .into_iter()
                .map(|node| (node.id, node.state, std::time::Duration::from_millis(node.heartbeat_age_ms))),
        ),
        // The other series are still worth a scrape.
        Err(error) => tracing::warn!(%error, "cannot list the nodes for the metrics"),
    }
    caller.tenant.metrics().predictions(caller.tenant.runtime().prediction_streams());
    let breakers = caller.tenant.runtime().breakers();
    caller.tenant.metrics().breakers(breakers.iter().map(|view| (view.host.clone(), view.state.gauge())));
    caller.tenant.metrics().connections(state.connections());
    caller.tenant.metrics().quota(&caller.tenant.quota().usage());
    let text = caller.tenant.metrics().encode().map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

/// The OpenAPI document of this API.
pub(crate) async fn openapi_document() -> Json<serde_json::Value> {
    Json(crate::openapi::document_json())
}

/// The operator page: plain HTML and a little JavaScript, nothing fetched
/// from elsewhere. It asks for an operator token (or takes one from the
/// URL's fragment, `/#token=…`, which browsers never send to the server).
pub(crate) async fn operator_page() -> impl IntoResponse {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )],
        Html(include_str!("../../ui/operator.html")),
    )
}
