//! The dead-letter queue.

use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use txmirror_runtime::DeadLetterReport;
use txmirror_runtime::TxReport;

/// A dead letter in the list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterSummary {
    /// The transaction that failed.
    pub transaction_id: String,
    /// Its module.
    pub module: String,
    /// The path it was asked for.
    pub path: String,
    /// The last failure.
    #[schema(value_type = Object)]
    pub failure: txmirror_runtime::Failure,
    /// How many attempts it made.
    pub attempts: usize,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub dead_lettered_unix_ms: u64,
}

/// The largest number of dead letters one list returns.
const LIST_LIMIT: usize = 500;

/// The tenant's dead letters, oldest first (at most 500).
#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters",
    responses((status = 200, body = Vec<DeadLetterSummary>)), security(("bearer" = [])))]
pub(crate) async fn dead_letters(caller: Caller) -> Result<Json<Vec<DeadLetterSummary>>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let letters = caller.tenant.runtime().dead_letters(LIST_LIMIT)?;
    Ok(Json(
        letters
            .into_iter()
            .map(|letter| DeadLetterSummary {
                transaction_id: letter.transaction_id,
                module: letter.module,
                path: letter.path,
                failure: letter.failure,
                attempts: letter.attempts.len(),
                dead_lettered_unix_ms: letter.dead_lettered_unix_ms,
            })
            .collect(),
    ))
}

/// One dead letter whole: its input and every attempt.
#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "dead letters", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn dead_letter(
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterReport>, ServiceError> {
    caller.require(&[Role::Operator])?;
    caller
        .tenant
        .runtime()
        .dead_letter(&id)?
        .map(Json)
        .ok_or_else(|| ServiceError::NotFound(format!("no dead letter {id}")))
}

/// Drops a dead letter.
#[utoipa::path(delete, path = "/v1/dlq/{id}", tag = "dead letters", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn drop_dead_letter(caller: Caller, Path(id): Path<String>) -> Result<StatusCode, ServiceError> {
    caller.require(&[Role::Operator])?;
    if caller.tenant.runtime().drop_dead_letter(&id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServiceError::NotFound(format!("no dead letter {id}")))
    }
}

/// Runs a dead letter again, once (a second replay answers with the first
/// one's outcome); a replay that commits removes the letter.
#[utoipa::path(post, path = "/v1/dlq/{id}/replay", tag = "dead letters", params(("id" = String, Path)),
    responses((status = 200, description = "The replay's report (TxReport)", body = Object),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TxReport>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let tenant = &caller.tenant;
    let letter =
        tenant.runtime().dead_letter(&id)?.ok_or_else(|| ServiceError::NotFound(format!("no dead letter {id}")))?;
    let registered = crate::lifecycle::module(&state, tenant, &letter.module).await?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(letter.module.clone()))?;
    let started = std::time::Instant::now();
    tenant.metrics().started();
    match tenant.runtime().replay_dead_letter(&registered.module, &policy, &id).await {
        Ok(report) => {
            tenant.metrics().ended(&report, started.elapsed());
            Ok(Json(report))
        }
        Err(error) => {
            tenant.metrics().abandoned();
            Err(error.into())
        }
    }
}
