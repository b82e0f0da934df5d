//! The webhook relay, for operators: each webhook's progress, breaker and
//! relaying node; its undeliverable events; their replay (see `relay`).

use crate::auth::{Caller, Role};
use crate::catalog::DeliveryLetter;
use crate::relay::{ReplayReport, WebhookView};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

/// The most dead letters one page lists.
const MAX_LIMIT: usize = 1_000;

/// The webhooks of the caller's tenant.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WebhookView>>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let views = state
        .relays
        .of_tenant(caller.tenant.name())
        .map(|webhook| webhook.view(&state, &caller.tenant))
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
}

/// How many dead letters to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LetterQuery {
    /// At most this many (default 100, at most 1,000), by stream and offset.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A webhook's undeliverable events, parked after their last attempt.
#[utoipa::path(get, path = "/v1/webhooks/{name}/dead-letters", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook."), LetterQuery),
    responses((status = 200, body = Vec<DeliveryLetter>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn webhook_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<LetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeliveryLetter>>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let Query(query) = query.map_err(|e| ServiceError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ServiceError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let webhook = state.relays.webhook(caller.tenant.name(), &name)?;
    Ok(Json(webhook.dead_letters(&state, limit)?))
}

/// Sends each of a webhook's dead letters once more (up to 1,000, whatever
/// its breaker says: an operator asked); those delivered are removed, the
/// others stay with one more attempt counted.
#[utoipa::path(post, path = "/v1/webhooks/{name}/dead-letters/replay", tag = "webhooks",
    params(("name" = String, Path, description = "The webhook.")),
    responses((status = 200, body = ReplayReport), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replay_webhook_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ReplayReport>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let webhook = state.relays.webhook(caller.tenant.name(), &name)?.clone();
    Ok(Json(webhook.replay(&state).await?))
}
