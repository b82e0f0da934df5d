//! Transactions: submission (synchronous or asynchronous), records, lists.

use super::request_body::{self, Body};
use crate::auth::{Caller, Role};
use crate::lifecycle::{self, Launch, PendingTx, Run, request_of, spawn_run};
use crate::{AppState, ErrorBody, ServiceError, Tenant};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime};
use txmirror_runtime::store::{Acceptance, TransactionOutcome};
use txmirror_runtime::trace::HostCall;
use txmirror_runtime::{KeyState, RecordedTransaction, TxRequest};

/// A transaction request's body.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The input document.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// The path; the policy's default if omitted.
    #[serde(default)]
    pub path: Option<String>,
    /// The transaction id (1 to 128 of `A-Z a-z 0-9 - _ .`, not `replay`
    /// or `drop`); generated if omitted.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub transaction_id: Option<String>,
    /// The caller's profile in the module's policy (`[profiles.NAME]`),
    /// which orders the paths; the policy's `default` if omitted.
    #[serde(default)]
    pub profile: Option<String>,
    /// A webhook of the tenant's, configured with `statuses`, to tell of
    /// the transaction's end (signed, retried, at least once).
    #[serde(default)]
    pub notify: Option<String>,
}

/// The answer to an asynchronous submission (`202 Accepted`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The transaction to poll at `GET /v1/transactions/{id}`.
    pub transaction_id: String,
    /// Whether the idempotency key was already bound: the id is the
    /// transaction that holds it, and nothing new was accepted.
    pub deduplicated: bool,
    /// Whether a synchronous submission stopped waiting: the transaction
    /// ran past its policy's `[phases] background_after_ms` and goes on
    /// in the background.
    #[serde(default)]
    pub background: bool,
}

/// A transaction as `GET /v1/transactions/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransactionView {
    /// The id.
    pub transaction_id: String,
    /// `pending`, `committed` or `failed`.
    pub status: String,
    /// Whether it is in the dead-letter queue.
    pub dead_lettered: bool,
    /// When it was accepted, if the service still holds it as pending.
    pub accepted_unix_ms: Option<u64>,
    /// The durable record: every attempt, both twins' traces, predictions
    /// and gate decisions (what `txmirror tx show` prints).
    #[schema(value_type = Object)]
    pub record: Option<RecordedTransaction>,
}

/// One line of the transaction list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransactionSummary {
    /// The order of acceptance in the tenant.
    pub sequence: u64,
    /// The id.
    pub transaction_id: String,
    /// `pending`, `committed` or `failed`.
    pub status: String,
    /// The module.
    pub module: String,
    /// The last path run (the requested one while pending).
    pub path: Option<String>,
    /// The failure kind, if it failed.
    pub failure: Option<String>,
    /// How many attempts it took.
    pub attempts: usize,
    /// The highest failure probability any prediction gave it.
    pub max_failure_probability: Option<f32>,
    /// The gate's decisions, in order (`pass`, `divert`, `fail_fast`…).
    pub decisions: Vec<String>,
}

/// A page of the transaction list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransactionList {
    /// Newest first.
    pub transactions: Vec<TransactionSummary>,
    /// Pass as `before` for the next page; absent at the end.
    pub next_before: Option<u64>,
}

/// Filters of the transaction list.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this module's.
    pub module: Option<String>,
    /// Only `pending`, `committed` or `failed` ones.
    #[param(pattern = "^(pending|committed|failed)$")]
    pub status: Option<String>,
    /// Only those whose (last) path is this.
    pub path: Option<String>,
    /// Only those accepted before this sequence (for paging).
    pub before: Option<u64>,
    /// At most this many (default 50; from 1 to 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

const MAX_ID_LEN: usize = 128;
/// How many submissions one list request looks through at most.
const SCAN_LIMIT: usize = 10_000;

/// Ids that name the dead-letter queue's bulk operations (`/v1/dlq/replay`,
/// `/v1/dlq/drop`): a letter of that id could not be reached by its id.
const RESERVED_IDS: [&str; 2] = ["replay", "drop"];

fn check_id(id: &str) -> Result<(), ServiceError> {
    if RESERVED_IDS.contains(&id) {
        return Err(ServiceError::BadRequest(format!("transaction_id `{id}` is reserved; choose another")));
    }
    let fits = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!("transaction_id must be 1 to {MAX_ID_LEN} of A-Z, a-z, 0-9, -, _ and .")))
    }
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| preference.trim().eq_ignore_ascii_case("respond-async"))
}

fn accepted(id: String, deduplicated: bool) -> Response {
    accepted_as(Accepted { transaction_id: id, deduplicated, background: false })
}

fn accepted_as(answer: Accepted) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/transactions/{}", answer.transaction_id));
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Runs a transaction. By default the answer waits for the outcome (the
/// report: every attempt, both twins' traces, predictions, decisions); with
/// `Prefer: respond-async` it is `202` and the transaction's id as soon as
/// its acceptance is durable. An `Idempotency-Key` binds the request to one
/// transaction: a repeat gets that transaction's outcome (or id).
#[utoipa::path(post, path = "/v1/modules/{hash}/transactions", tag = "transactions",
    params(("hash" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Prefer" = Option<String>, Header, description = "respond-async for 202 and polling")),
    request_body = SubmitBody,
    responses((status = 200, description = "The report (TxReport)", body = Object), (status = 202, body = Accepted),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
    headers: HeaderMap,
    Body(bytes, ..): Body<request_body::Json>,
) -> Result<Response, ServiceError> {
    caller.require(&[Role::Client])?;
    state.admission.check()?;
    // Held until the transaction ends, or given back if nothing is accepted.
    let in_flight = caller.tenant.quota().slot()?;
    let tenant = caller.tenant.clone();
    let registered = lifecycle::module(&state, &tenant, &hash).await?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(hash.clone()))?;
    let request: SubmitBody =
        serde_json::from_slice(&bytes).map_err(|e| ServiceError::BadRequest(format!("the request body: {e}")))?;
    // Everything that could refuse the transaction is checked before it is
    // accepted, so that an accepted transaction can always run.
    policy.resolve_paths(registered.module.paths())?;
    // The submission's profile, which the policy must have; else its
    // token's, where the policy has it (a token serves many modules).
    let token_profile = caller.profile.clone().filter(|profile| policy.profiles.contains_key(profile));
    let profile = request.profile.clone().or(token_profile);
    if let Some(profile) = &profile
        && !policy.profiles.contains_key(profile)
    {
        let available: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
        return Err(ServiceError::BadRequest(format!(
            "the policy has no profile `{profile}`; it has {}",
            if available.is_empty() { "none".to_string() } else { available.join(", ") }
        )));
    }
    if let Some(requested) = &request.path
        && !registered.module.paths().contains(requested)
    {
        return Err(ServiceError::BadRequest(format!(
            "the module has no path `{requested}`; it has {}",
            registered.module.paths().join(", ")
        )));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| ServiceError::BadRequest("the Idempotency-Key header is not text".into()))?;
            txmirror_runtime::store::validate_name(key)
                .map_err(|reason| ServiceError::BadRequest(format!("the Idempotency-Key {reason}")))?;
            Some(key.to_string())
        }
        None => None,
    };
    // Only a webhook the operator configured for statuses can be told: a
    // client names one, never a URL of its own.
    if let Some(notify) = &request.notify {
        let webhook = state
            .relays
            .webhook(tenant.name(), notify)
            .map_err(|_| ServiceError::BadRequest(format!("`notify`: the tenant has no webhook `{notify}`")))?;
        if !webhook.tells_statuses() {
            return Err(ServiceError::BadRequest(format!(
                "`notify`: webhook `{notify}` is not configured with `statuses`"
            )));
        }
    }
    let id = match request.transaction_id {
        Some(id) => {
            check_id(&id)?;
            id
        }
        None => new_id(),
    };
    let asynchronous = wants_async(&headers);
    let runtime = tenant.runtime();
    let pending = PendingTx {
        module: hash.clone(),
        path: request.path,
        input: request.input,
        idempotency_key,
        caller: Some(caller.token_name.clone()),
        profile,
        notify: request.notify,
        accepted_unix_ms: unix_ms(),
    };
    let tx_request = request_of(&id, &pending, None)?;
    // The key is checked and held before anything is accepted, on both
    // routes: a repeat (even one naming the same transaction id) gets the
    // first request's outcome or id, and another request with the key is
    // refused.
    let claim = match runtime.claim_key(&registered.module, &policy, &tx_request, &id)? {
        KeyState::Claimed(claim) => claim,
        KeyState::Recorded(report) if asynchronous => return Ok(accepted(report.transaction_id, true)),
        KeyState::Recorded(report) => return Ok(Json(report).into_response()),
        KeyState::InFlight { transaction_id } if asynchronous => return Ok(accepted(transaction_id, true)),
        KeyState::InFlight { transaction_id } => {
            // The same request under the holder's id and key joins the
            // holder's one execution, or finds its record: its outcome.
            let repeat = TxRequest { transaction_id: Some(transaction_id), ..tx_request };
            let report = runtime.execute(&registered.module, &policy, repeat).await?;
            return Ok(Json(report).into_response());
        }
        other => return Err(ServiceError::Internal(format!("an idempotency key in an unknown state: {other:?}"))),
    };
    if runtime.transaction(&id)?.is_some() {
        return Err(ServiceError::Conflict(format!("transaction {id} already exists")));
    }
    // Noted as running before it is accepted, so that no pass of this
    // node's takes its lease for one that a failed run left.
    let running = state
        .node
        .run(tenant.name(), &id)
        .ok_or_else(|| ServiceError::Conflict(format!("transaction {id} already exists")))?;
    // The key is released as `claim` drops, if nothing is accepted.
    let fence = match lifecycle::accept(&state, &tenant, &id, &pending)? {
        Ok(fence) => fence,
        // Another node holds the key: its transaction is this request's,
        // if it is the same request.
        Err(Acceptance::KeyHeld { transaction_id }) => {
            drop(claim);
            if held_for_another(&tenant, &registered, &tx_request, &transaction_id)? {
                return Err(ServiceError::IdempotencyKeyReused(format!(
                    "the idempotency key is held by transaction {transaction_id}, a different request"
                )));
            }
            if !asynchronous || runtime.transaction(&transaction_id)?.is_some() {
                return outcome_of_holder(&tenant, &registered, &tx_request, &transaction_id, asynchronous).await;
            }
            return Ok(accepted(transaction_id, true));
        }
        Err(_) => return Err(ServiceError::Conflict(format!("transaction {id} already exists"))),
    };
    let tx_request = TxRequest { fence: Some(fence), ..tx_request };
    let launch = Launch {
        tenant: tenant.clone(),
        id: id.clone(),
        request: tx_request,
        registered,
        run: Run::Submitted,
        claim: Some(claim),
        running,
        in_flight: Some(in_flight),
    };
    let background_after = policy.phases.background_after_ms.map(Duration::from_millis);
    let mut handle = spawn_run(&state, launch);
    if asynchronous {
        return Ok(accepted(id, false));
    }
    // Past the policy's background phase the caller stops waiting; the
    // run goes on (it is tracked for shutdown like any other).
    let ended = match background_after {
        Some(after) => match tokio::time::timeout(after, &mut handle).await {
            Ok(ended) => ended,
            Err(_) => return Ok(accepted_as(Accepted { transaction_id: id, deduplicated: false, background: true })),
        },
        None => handle.await,
    };
    match ended {
        Ok(Ok(report)) => Ok(Json(report).into_response()),
        Ok(Err(error)) => Err(error),
        Err(join) => Err(ServiceError::Internal(format!("the transaction's task failed: {join}"))),
    }
}

/// How long a synchronous request whose idempotency key another node holds
/// waits for that node's outcome before it is answered `202` with the
/// holder's id to poll.
const HOLDER_WAIT: Duration = Duration::from_secs(30);
/// How often the holder's record is looked for meanwhile.
const HOLDER_POLL: Duration = Duration::from_millis(50);

/// The outcome of the transaction another node runs under the request's
/// idempotency key, once it is recorded (`202` with its id for an
/// asynchronous request); `202` with its id if it takes longer than
/// [`HOLDER_WAIT`]. The key's usual rules answer: a request that differs
/// from the holder's recorded one is refused.
async fn outcome_of_holder(
    tenant: &Tenant,
    registered: &crate::tenant::Registered,
    request: &TxRequest,
    holder: &str,
    asynchronous: bool,
) -> Result<Response, ServiceError> {
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(registered.module.hash().into()))?;
    let started = Instant::now();
    while started.elapsed() < HOLDER_WAIT {
        if tenant.runtime().transaction(holder)?.is_some() {
            return match tenant.runtime().claim_key(&registered.module, &policy, request, holder)? {
                KeyState::Recorded(report) if asynchronous => Ok(accepted(report.transaction_id, true)),
                KeyState::Recorded(report) => Ok(Json(report).into_response()),
                // The holder was dead-lettered, which frees its key: the
                // client may submit again.
                _ => Err(ServiceError::Conflict(format!(
                    "the idempotency key was held by transaction {holder}, which ended without binding it: submit again"
                ))),
            };
        }
        tokio::time::sleep(HOLDER_POLL).await;
    }
    Ok(accepted(holder.to_string(), true))
}

/// Whether the transaction in flight that holds the request's idempotency
/// key (on another node) was accepted for another request: another module,
/// path or input. One that has ended is judged by its record instead.
fn held_for_another(
    tenant: &Tenant,
    registered: &crate::tenant::Registered,
    request: &TxRequest,
    holder: &str,
) -> Result<bool, ServiceError> {
    let Some(in_flight) = tenant.store().accepted(holder)? else { return Ok(false) };
    let Ok(pending) = PendingTx::decode(&in_flight.request) else { return Ok(false) };
    let input = serde_json::to_vec(&pending.input).ok();
    Ok(pending.module != registered.module.hash()
        || pending.path != request.path
        || input.as_deref() != Some(request.input.as_slice()))
}

pub(super) fn status(record: &RecordedTransaction) -> &'static str {
    match record.outcome {
        TransactionOutcome::Committed { .. } => "committed",
        _ => "failed",
    }
}

/// What the service knows of a transaction: its record, or its acceptance.
pub(super) enum Found {
    Recorded { record: RecordedTransaction, dead_lettered: bool },
    Pending(PendingTx),
}

/// A transaction's record is written in the same storage transaction that
/// ends its acceptance, so a transaction that is not accepted when the
/// store is asked either never was, or is recorded by then: the record is
/// looked for again after the acceptance, and a transaction that ends
/// between two reads is still found.
pub(super) fn find(tenant: &Tenant, id: &str) -> Result<Option<Found>, ServiceError> {
    let runtime = tenant.runtime();
    let recorded = |id: &str| -> Result<Option<Found>, ServiceError> {
        let Some(record) = runtime.transaction(id)? else { return Ok(None) };
        let dead_lettered = runtime.is_dead_lettered(id)?;
        Ok(Some(Found::Recorded { record, dead_lettered }))
    };
    if let Some(found) = recorded(id)? {
        return Ok(Some(found));
    }
    if let Some(accepted) = tenant.store().accepted(id)? {
        let pending = PendingTx::decode(&accepted.request).map_err(|e| {
            ServiceError::Internal(format!("the accepted request of transaction {id} cannot be read: {e}"))
        })?;
        return Ok(Some(Found::Pending(pending)));
    }
    recorded(id)
}

pub(super) fn view(id: &str, found: Found) -> TransactionView {
    match found {
        Found::Recorded { record, dead_lettered } => TransactionView {
            transaction_id: id.to_string(),
            status: status(&record).to_string(),
            dead_lettered,
            accepted_unix_ms: None,
            record: Some(record),
        },
        Found::Pending(pending) => TransactionView {
            transaction_id: id.to_string(),
            status: "pending".to_string(),
            dead_lettered: false,
            accepted_unix_ms: Some(pending.accepted_unix_ms),
            record: None,
        },
    }
}

/// One transaction: pending, or its durable record with the whole story.
#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "transactions", params(("id" = String, Path)),
    responses((status = 200, body = TransactionView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn show_transaction(
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TransactionView>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    find(&caller.tenant, &id)?
        .map(|found| Json(view(&id, found)))
        .ok_or_else(|| ServiceError::NotFound(format!("no transaction {id}")))
}

fn summary(sequence: u64, view: TransactionView, module: String, requested_path: Option<String>) -> TransactionSummary {
    let record = view.record.as_ref();
    let mut decisions = Vec::new();
    let mut max_probability: Option<f32> = None;
    for attempt in record.map(|r| r.history.as_slice()).unwrap_or_default() {
        for prediction in attempt.prediction.iter().chain(attempt.gate_prediction.iter()) {
            max_probability = Some(max_probability.unwrap_or(0.0).max(prediction.failure_probability));
        }
        for event in &attempt.primary.events {
            if let HostCall::Gate { decision, .. } = &event.call {
                decisions.push(decision.to_string());
            }
        }
    }
    TransactionSummary {
        sequence,
        transaction_id: view.transaction_id.clone(),
        status: view.status.clone(),
        module: record.map_or(module, |r| r.module.clone()),
        path: record.map(|r| r.path.clone()).or(requested_path),
        failure: record.and_then(|r| match &r.outcome {
            TransactionOutcome::Failed { kind, .. } => Some(kind.to_string()),
            _ => None,
        }),
        attempts: record.map_or(0, |r| r.attempts.len()),
        max_failure_probability: max_probability,
        decisions,
    }
}

/// The tenant's transactions, newest first, filtered.
#[utoipa::path(get, path = "/v1/transactions", tag = "transactions", params(ListQuery),
    responses((status = 200, body = TransactionList), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_transactions(
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TransactionList>, ServiceError> {
    caller.require(&[Role::Client, Role::Operator])?;
    let Query(query) = query.map_err(|e| ServiceError::BadRequest(e.body_text()))?;
    if let Some(status) = &query.status
        && !matches!(status.as_str(), "pending" | "committed" | "failed")
    {
        return Err(ServiceError::BadRequest(format!("status `{status}` is not pending, committed or failed")));
    }
    let limit = super::dead_letters::limit(query.limit, 50)?;
    let tenant = &caller.tenant;
    let mut out = Vec::new();
    let mut before = query.before;
    let mut scanned = 0;
    'pages: while scanned < SCAN_LIMIT {
        let page = tenant.store().submissions(before, 200)?;
        if page.is_empty() {
            before = None;
            break;
        }
        for (sequence, id) in page {
            scanned += 1;
            before = Some(sequence);
            let Some(found) = find(tenant, &id)? else { continue };
            let (module, path) = match &found {
                Found::Pending(pending) => (pending.module.clone(), pending.path.clone()),
                Found::Recorded { .. } => (String::new(), None),
            };
            let line = summary(sequence, view(&id, found), module, path);
            let keep = query.module.as_ref().is_none_or(|m| *m == line.module)
                && query.status.as_ref().is_none_or(|s| *s == line.status)
                && query.path.as_ref().is_none_or(|p| Some(p) == line.path.as_ref());
            if keep {
                out.push(line);
                if out.len() >= limit {
                    break 'pages;
                }
            }
        }
    }
    Ok(Json(TransactionList { transactions: out, next_before: before.filter(|&b| b > 1) }))
}
