//! Modules and their policies.

use super::request_body::{Body, Toml, Wasm};
use crate::auth::{Caller, Role};
use crate::lifecycle;
use crate::tenant::Registered;
use crate::{AppState, ErrorBody, ServiceError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use txmirror_runtime::Policy;

/// A module as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ModuleInfo {
    /// The content hash (BLAKE3, hex), which names the module in URLs.
    pub hash: String,
    /// The paths it exports; the first is the default.
    pub paths: Vec<String>,
    /// The interfaces it imports.
    pub imports: Vec<String>,
    /// Whether it was pre-initialised.
    pub preinitialized: bool,
    /// Its policy's TOML text, if one was put (transactions need one).
    pub policy: Option<String>,
}

fn info(registered: &Registered) -> ModuleInfo {
    ModuleInfo {
        hash: registered.module.hash().to_string(),
        paths: registered.module.paths().to_vec(),
        imports: registered.module.imports().to_vec(),
        preinitialized: registered.module.is_preinitialized(),
        policy: registered.policy_text.clone(),
    }
}

/// Uploads a component: validated, pre-initialised and compiled now.
#[utoipa::path(post, path = "/v1/modules", tag = "modules",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component's bytes"),
    responses((status = 201, body = ModuleInfo), (status = 413, body = ErrorBody),
        (status = 422, description = "Not a valid component of the txmirror world", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn upload_module(
    State(state): State<AppState>,
    caller: Caller,
    Body(bytes, ..): Body<Wasm>,
) -> Result<(StatusCode, Json<ModuleInfo>), ServiceError> {
    caller.require(&[Role::Developer])?;
    let module = caller.tenant.runtime().load_module(&bytes).await?;
    state.catalog.put_module(caller.tenant.name(), module.hash(), &bytes)?;
    let registered = caller.tenant.add_module(module);
    Ok((StatusCode::CREATED, Json(info(&registered))))
}

/// The tenant's modules.
#[utoipa::path(get, path = "/v1/modules", tag = "modules",
    responses((status = 200, body = Vec<ModuleInfo>)), security(("bearer" = [])))]
pub(crate) async fn list_modules(caller: Caller) -> Result<Json<Vec<ModuleInfo>>, ServiceError> {
    caller.require(&[Role::Developer, Role::Operator])?;
    Ok(Json(caller.tenant.modules().iter().map(info).collect()))
}

/// One module: paths, imports and policy.
#[utoipa::path(get, path = "/v1/modules/{hash}", tag = "modules", params(("hash" = String, Path)),
    responses((status = 200, body = ModuleInfo), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn show_module(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Result<Json<ModuleInfo>, ServiceError> {
    caller.require(&[Role::Developer, Role::Operator])?;
    Ok(Json(info(&lifecycle::module(&state, &caller.tenant, &hash).await?)))
}

/// Removes a module and its policy. Its transactions' records stay.
#[utoipa::path(delete, path = "/v1/modules/{hash}", tag = "modules", params(("hash" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn delete_module(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Result<StatusCode, ServiceError> {
    caller.require(&[Role::Developer])?;
    lifecycle::module(&state, &caller.tenant, &hash).await?;
    state.catalog.delete_module(caller.tenant.name(), &hash)?;
    caller.tenant.remove_module(&hash);
    Ok(StatusCode::NO_CONTENT)
}

/// Puts a module's policy (TOML), checked against the module's paths as
/// `txmirror run` checks it.
#[utoipa::path(put, path = "/v1/modules/{hash}/policy", tag = "policies", params(("hash" = String, Path)),
    request_body(content = String, content_type = "application/toml"),
    responses((status = 200, body = ModuleInfo), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
    Body(bytes, ..): Body<Toml>,
) -> Result<Json<ModuleInfo>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let registered = lifecycle::module(&state, &caller.tenant, &hash).await?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ServiceError::PolicyRefused("the policy is not UTF-8 text".into()))?;
    let policy = Policy::parse(&text, std::path::Path::new("policy.toml"))?;
    policy.resolve_paths(registered.module.paths())?;
    state.catalog.put_policy(caller.tenant.name(), &hash, &text)?;
    Ok(Json(info(&caller.tenant.set_policy(&hash, policy, text)?)))
}

/// A module's policy, as put.
#[utoipa::path(get, path = "/v1/modules/{hash}/policy", tag = "policies", params(("hash" = String, Path)),
    responses((status = 200, content_type = "application/toml", body = String), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Result<impl axum::response::IntoResponse, ServiceError> {
    caller.require(&[Role::Operator, Role::Developer])?;
    let registered = lifecycle::module(&state, &caller.tenant, &hash).await?;
    let text = registered.policy_text.ok_or_else(|| ServiceError::NotFound(format!("module {hash} has no policy")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/toml")], text))
}
