//! The prediction model.

use crate::auth::{Caller, Role};
use crate::{ErrorBody, ServiceError};
use axum::Json;
use txmirror_runtime::predict::Reloaded;

/// The model scoring now (shared by every tenant), why its file last
/// failed to replace it, if it did, and what the caller's tenant has learnt
/// of its deployment (the online model, endpoints and paths).
#[utoipa::path(get, path = "/v1/model", tag = "model",
    responses((status = 200, body = Object)), security(("bearer" = [])))]
pub(crate) async fn model(caller: Caller) -> Result<Json<serde_json::Value>, ServiceError> {
    caller.require(&[Role::Operator])?;
    let runtime = caller.tenant.runtime();
    Ok(Json(serde_json::json!({
        "configured": runtime.model().is_some(),
        "model": runtime.model(),
        "reload_error": runtime.model_reload_error(),
        "learnt": runtime.learnt(),
    })))
}

/// Loads the model file again now; a file that fails to load leaves the
/// current model in place (422 `model_refused`).
#[utoipa::path(post, path = "/v1/model/reload", tag = "model",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn reload_model(caller: Caller) -> Result<Json<serde_json::Value>, ServiceError> {
    caller.require(&[Role::Operator])?;
    match caller.tenant.runtime().reload_model() {
        Ok(None) => Err(ServiceError::NotFound("no model is configured (`model = FILE` in the config)".into())),
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
