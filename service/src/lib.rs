//! The txmirror service: the runtime behind an HTTP API (`txmirror serve`).
//!
//! [`app`] builds the router; tests drive it with `oneshot`, no socket.
//! Every failure is a [`ServiceError`]: a JSON body with a stable code.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (the store answers) |
//! | `POST /v1/modules` | uploads a component (the body), validated and compiled; `201` with its hash and paths |
//! | `GET /v1/modules`, `GET /v1/modules/{hash}` | the modules, one module |
//! | `PUT /v1/modules/{hash}/policy` | the module's policy (TOML body), validated as the CLI does |
//! | `POST /v1/modules/{hash}/transactions` | runs a transaction and waits for its report; `Idempotency-Key` header |
//! | `GET /v1/transactions/{id}` | the durable record of a transaction |
//! | `GET /v1/dlq`, `GET /v1/dlq/{id}` | dead letters (a summary each), one dead letter whole |
//! | `POST /v1/dlq/{id}/replay`, `DELETE /v1/dlq/{id}` | runs a dead letter again, once; drops it |
//! | `GET /v1/model`, `POST /v1/model/reload` | the prediction model; loads its file again |
//!
//! This is the service's first increment: modules and policies live in
//! memory (uploaded again after a restart); tokens, tenants, asynchronous
//! submission, metrics and the operator page come next.

mod error;

pub use error::ServiceError;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use txmirror_runtime::predict::Reloaded;
use txmirror_runtime::{Module, Policy, Runtime, TxReport, TxRequest};

/// The largest module upload, in bytes.
pub const MAX_MODULE_BYTES: usize = 16 << 20;
/// The largest transaction request, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    runtime: Runtime,
    modules: Arc<RwLock<BTreeMap<String, Registered>>>,
}

#[derive(Debug, Clone)]
struct Registered {
    module: Module,
    policy: Option<Arc<Policy>>,
}

impl AppState {
    /// A service over a runtime, with no module yet.
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime, modules: Arc::default() }
    }

    fn module(&self, hash: &str) -> Result<Registered, ServiceError> {
        let modules = self.modules.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        modules.get(hash).cloned().ok_or_else(|| ServiceError::NotFound(format!("no module {hash}")))
    }
}

/// A module as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The content hash, which names the module in URLs.
    pub hash: String,
    /// The paths it exports.
    pub paths: Vec<String>,
    /// Whether it was pre-initialised.
    pub preinitialized: bool,
    /// Whether it has a policy (transactions need one).
    pub has_policy: bool,
}

/// A transaction request's body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The input document.
    pub input: serde_json::Value,
    /// The path; the policy's default if omitted.
    #[serde(default)]
    pub path: Option<String>,
    /// The transaction id; generated if omitted.
    #[serde(default)]
    pub transaction_id: Option<String>,
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/v1/modules", post(upload).get(list).layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)))
        .route("/v1/modules/{hash}", get(show))
        .route("/v1/modules/{hash}/policy", put(put_policy))
        .route("/v1/modules/{hash}/transactions", post(submit).layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES)))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/dlq", get(dead_letters))
        .route("/v1/dlq/{id}", get(dead_letter).delete(drop_dead_letter))
        .route("/v1/dlq/{id}/replay", post(replay))
        .route("/v1/model", get(model))
        .route("/v1/model/reload", post(reload_model))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Result<&'static str, ServiceError> {
    state.runtime.store().snapshot().map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok("ready")
}

fn info(registered: &Registered) -> ModuleInfo {
    ModuleInfo {
        hash: registered.module.hash().to_string(),
        paths: registered.module.paths().to_vec(),
        preinitialized: registered.module.is_preinitialized(),
        has_policy: registered.policy.is_some(),
    }
}

/// The body, or a JSON error when it is too large or unreadable.
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ServiceError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServiceError::TooLarge(limit),
        _ => ServiceError::BadRequest(rejection.body_text()),
    })
}

async fn upload(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ServiceError> {
    let module = state.runtime.load_module(&body(bytes, MAX_MODULE_BYTES)?).await?;
    let mut modules = state.modules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let registered =
        modules.entry(module.hash().to_string()).or_insert_with(|| Registered { module, policy: None }).clone();
    Ok((StatusCode::CREATED, Json(info(&registered))))
}

async fn list(State(state): State<AppState>) -> Json<Vec<ModuleInfo>> {
    let modules = state.modules.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    Json(modules.values().map(info).collect())
}

async fn show(State(state): State<AppState>, Path(hash): Path<String>) -> Result<Json<ModuleInfo>, ServiceError> {
    Ok(Json(info(&state.module(&hash)?)))
}

async fn put_policy(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    body: String,
) -> Result<Json<ModuleInfo>, ServiceError> {
    let registered = state.module(&hash)?;
    let policy = Policy::parse(&body, std::path::Path::new("policy.toml"))?;
    // The same check the CLI makes: the policy must fit the module's paths.
    policy.resolve_paths(registered.module.paths())?;
    let mut modules = state.modules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = modules.get_mut(&hash).ok_or_else(|| ServiceError::NotFound(format!("no module {hash}")))?;
    entry.policy = Some(Arc::new(policy));
    Ok(Json(info(entry)))
}

async fn submit(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<TxReport>, ServiceError> {
    let bytes = body(bytes, MAX_REQUEST_BYTES)?;
    let registered = state.module(&hash)?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(hash.clone()))?;
    let body: SubmitBody =
        serde_json::from_slice(&bytes).map_err(|e| ServiceError::BadRequest(format!("the request body: {e}")))?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ServiceError::BadRequest("the Idempotency-Key header is not text".into()))?
                .to_string(),
        ),
        None => None,
    };
    let request = TxRequest {
        transaction_id: body.transaction_id,
        path: body.path,
        input: serde_json::to_vec(&body.input).map_err(|e| ServiceError::Internal(e.to_string()))?,
        idempotency_key,
    };
    Ok(Json(state.runtime.execute(&registered.module, &policy, request).await?))
}

async fn transaction(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ServiceError> {
    match state.runtime.store().transaction(&id).map_err(|e| ServiceError::Internal(e.to_string()))? {
        Some(record) => Ok(Json(record)),
        None => Err(ServiceError::NotFound(format!("no transaction {id}"))),
    }
}

fn store_error(error: txmirror_runtime::store::StoreError) -> ServiceError {
    ServiceError::Internal(error.to_string())
}

async fn dead_letters(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ServiceError> {
    let letters = state.runtime.store().dead_letters(100).map_err(store_error)?;
    let summaries: Vec<serde_json::Value> = letters
        .iter()
        .map(|letter| {
            serde_json::json!({
                "transaction_id": letter.transaction_id,
                "module": letter.module,
                "path": letter.path,
                "failure": letter.failure,
                "attempts": letter.attempts.len(),
                "dead_lettered_unix_ms": letter.dead_lettered_unix_ms,
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(summaries)))
}

async fn dead_letter(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ServiceError> {
    match state.runtime.store().dead_letter(&id).map_err(store_error)? {
        Some(letter) => Ok(Json(letter)),
        None => Err(ServiceError::NotFound(format!("no dead letter {id}"))),
    }
}

async fn drop_dead_letter(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ServiceError> {
    if state.runtime.store().remove_dead_letter(&id).map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServiceError::NotFound(format!("no dead letter {id}")))
    }
}

async fn replay(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<TxReport>, ServiceError> {
    let letter = state
        .runtime
        .store()
        .dead_letter(&id)
        .map_err(store_error)?
        .ok_or_else(|| ServiceError::NotFound(format!("no dead letter {id}")))?;
    let registered = state.module(&letter.module)?;
    let policy = registered.policy.clone().ok_or_else(|| ServiceError::NoPolicy(letter.module.clone()))?;
    Ok(Json(state.runtime.replay_dead_letter(&registered.module, &policy, &id).await?))
}

async fn model(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "configured": state.runtime.model().is_some(),
        "model": state.runtime.model(),
        "reload_error": state.runtime.model_reload_error(),
    }))
}

async fn reload_model(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ServiceError> {
    match state.runtime.reload_model() {
        Ok(None) => Err(ServiceError::NotFound("no model is configured (txmirror --model FILE serve)".into())),
        Ok(Some(Reloaded::Unchanged(model))) => {
            Ok(Json(serde_json::json!({ "reloaded": "unchanged", "model": model })))
        }
        Ok(Some(Reloaded::Replaced { old, new })) => {
            Ok(Json(serde_json::json!({ "reloaded": "replaced", "old": old, "model": new })))
        }
        Ok(Some(_)) => Err(ServiceError::Internal("an unknown reload outcome".into())),
        Err(error) => Err(ServiceError::ModelRefused(error.to_string())),
    }
}
