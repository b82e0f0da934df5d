//! The dead-letter queue.

use super::request_body::{self, Body};
use crate::auth::{Caller, Role};
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use txmirror_runtime::{DeadLetterFilter, DeadLetterReport, FailureKind, TxReport};

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

/// The largest number of dead letters one list, bulk replay or bulk drop takes.
const MAX_LIMIT: usize = 500;
/// How many one bulk replay or drop takes unless told.
const DEFAULT_BULK_LIMIT: usize = 100;

/// Which dead letters a list takes: the filters of a bulk replay or drop,
/// as query parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LetterQuery {
    /// Only this module's (its content hash).
    pub module: Option<String>,
    /// Only those asked to run this path.
    pub path: Option<String>,
    /// Only those whose last failure is of this kind (`unavailable`, `effect_in_doubt`…).
    pub kind: Option<String>,
    /// Only those dead-lettered at or after this time (ms since the Unix epoch).
    pub since_unix_ms: Option<u64>,
    /// Only those dead-lettered before this time (ms since the Unix epoch).
    pub until_unix_ms: Option<u64>,
    /// At most this many (default 500; from 1 to 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// What a bulk replay or drop takes: filters (every one given must hold),
/// a limit, and, for a drop with no filter, `all` to say so outright.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// Only this module's (its content hash).
    #[serde(default)]
    pub module: Option<String>,
    /// Only those asked to run this path.
    #[serde(default)]
    pub path: Option<String>,
    /// Only those whose last failure is of this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only those dead-lettered at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
    /// Only those dead-lettered before this time (ms since the Unix epoch).
    #[serde(default)]
    pub until_unix_ms: Option<u64>,
    /// At most this many, oldest first (default 100; from 1 to 500).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Takes every letter when no filter is given (a drop refuses an empty
    /// filter without it).
    #[serde(default)]
    pub all: bool,
}

/// How one letter of a bulk replay went.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayedLetter {
    /// The dead letter's transaction id.
    pub transaction_id: String,
    /// The replay's own transaction id, if it ran.
    pub replay_transaction_id: Option<String>,
    /// Whether the replay committed (and the letter is gone).
    pub committed: bool,
    /// How the replay failed, or why it could not run.
    pub error: Option<String>,
}

/// What a bulk replay did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkReplayReport {
    /// How many letters the filters selected (at most the limit).
    pub selected: usize,
    /// How many replays committed; their letters are gone.
    pub committed: usize,
    /// How many ran and failed again, or could not run; their letters stay.
    pub failed: usize,
    /// Each letter, oldest first.
    pub letters: Vec<ReplayedLetter>,
}

/// What a bulk drop did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkDropReport {
    /// The letters dropped, oldest first.
    pub dropped: Vec<String>,
}

/// The runtime's filter from the request's fields, or why they are not one.
fn filter(
    (module, path, kind): (Option<String>, Option<String>, Option<String>),
    (since, until): (Option<u64>, Option<u64>),
) -> Result<DeadLetterFilter, ServiceError> {
    let mut filter = DeadLetterFilter::default();
    if let Some(module) = module {
        filter = filter.module(module);
    }
    if let Some(path) = path {
        filter = filter.path(path);
    }
    if let Some(kind) = kind {
        let known = FailureKind::from_name(&kind)
            .ok_or_else(|| ServiceError::BadRequest(format!("`{kind}` is not a failure kind")))?;
        filter = filter.kind(known);
    }
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(ServiceError::BadRequest(format!(
            "the time range is empty: since_unix_ms {since} is not before until_unix_ms {until}"
        )));
    }
    if let Some(since) = since {
        filter = filter.since(since);
    }
    if let Some(until) = until {
        filter = filter.until(until);
    }
    Ok(filter)
}

/// A limit from the request: from 1 to [`MAX_LIMIT`], as the API document says.
pub(crate) fn limit(given: Option<usize>, default: usize) -> Result<usize, ServiceError> {
    match given.unwrap_or(default) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ServiceError::BadRequest(format!("the limit must be from 1 to {MAX_LIMIT}, not {n}"))),
    }
}

impl BulkBody {
    /// The body, read, and its filter and limit.
    fn read(bytes: &[u8]) -> Result<(Self, DeadLetterFilter, usize), ServiceError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ServiceError::BadRequest(
                "the request body is a JSON object of filters ({} selects every letter)".into(),
            ));
        }
        let body: Self =
            serde_json::from_slice(bytes).map_err(|e| ServiceError::BadRequest(format!("the request body: {e}")))?;
        let filter = filter(
            (body.module.clone(), body.path.clone(), body.kind.clone()),
            (body.since_unix_ms, body.until_unix_ms),
        )?;
        let limit = limit(body.limit, DEFAULT_BULK_LIMIT)?;
        Ok((body, filter, limit))
    }
}

/// The tenant's dead letters, oldest first (at most 500), filtered by
/// module, path, failure kind and time.
#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters", params(LetterQuery),
    responses((status = 200, body = Vec<DeadLetterSummary>), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn dead_letters(
    caller: Caller,
    query: Result<Query<LetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DeadLetterSummary>>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let Query(query) = query.map_err(|e| ServiceError::BadRequest(e.body_text()))?;
    let filter = filter((query.module, query.path, query.kind), (query.since_unix_ms, query.until_unix_ms))?;
    let letters = caller.tenant.runtime().dead_letters_matching(&filter, limit(query.limit, MAX_LIMIT)?)?;
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
    Ok(Json(replay_one(&state, tenant, &letter.module, &id).await?))
}

/// Replays the dead letters the filters select, oldest first, one after
/// another (each as `POST /v1/dlq/{id}/replay`). A letter that fails again
/// stays, and can be replayed again at once.
#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dead letters", request_body = BulkBody,
    responses((status = 200, body = BulkReplayReport), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replay_matching(
    State(state): State<AppState>,
    caller: Caller,
    Body(bytes, ..): Body<request_body::Json>,
) -> Result<Json<BulkReplayReport>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let (_, filter, limit) = BulkBody::read(&bytes)?;
    let tenant = &caller.tenant;
    let selected = tenant.runtime().dead_letters_matching(&filter, limit)?;
    let mut letters = Vec::with_capacity(selected.len());
    for letter in selected {
        let replayed = match replay_one(&state, tenant, &letter.module, &letter.transaction_id).await {
            Ok(report) => ReplayedLetter {
                transaction_id: letter.transaction_id,
                replay_transaction_id: Some(report.transaction_id.clone()),
                committed: report.commit_version().is_some(),
                error: report.failure.as_ref().map(|failure| format!("{}: {}", failure.kind, failure.message)),
            },
            Err(error) => ReplayedLetter {
                transaction_id: letter.transaction_id,
                replay_transaction_id: None,
                committed: false,
                error: Some(error.to_string()),
            },
        };
        letters.push(replayed);
    }
    let committed = letters.iter().filter(|letter| letter.committed).count();
    Ok(Json(BulkReplayReport { selected: letters.len(), committed, failed: letters.len() - committed, letters }))
}

/// Replays one letter of a bulk replay, counted in the tenant's metrics.
async fn replay_one(
    state: &AppState,
    tenant: &std::sync::Arc<crate::tenant::Tenant>,
    module: &str,
    id: &str,
) -> Result<TxReport, ServiceError> {
    let registered = crate::lifecycle::module(state, tenant, module).await?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(module.to_string()))?;
    let started = std::time::Instant::now();
    tenant.metrics().started();
    match tenant.runtime().replay_dead_letter(&registered.module, &policy, id).await {
        Ok(report) => {
            tenant.metrics().ended(&report, started.elapsed());
            Ok(report)
        }
        Err(error) => {
            tenant.metrics().abandoned();
            Err(error.into())
        }
    }
}

/// Drops the dead letters the filters select, oldest first, without
/// running them. With no filter, the body must say `"all": true`.
#[utoipa::path(post, path = "/v1/dlq/drop", tag = "dead letters", request_body = BulkBody,
    responses((status = 200, body = BulkDropReport), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn drop_matching(
    caller: Caller,
    Body(bytes, ..): Body<request_body::Json>,
) -> Result<Json<BulkDropReport>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let (body, filter, limit) = BulkBody::read(&bytes)?;
    if filter.selects_everything() && !body.all {
        return Err(ServiceError::BadRequest(
            "no filter given: say \"all\": true to drop every dead letter (up to the limit)".into(),
        ));
    }
    let dropped = caller.tenant.runtime().drop_dead_letters(&filter, limit)?;
    Ok(Json(BulkDropReport { dropped }))
}
