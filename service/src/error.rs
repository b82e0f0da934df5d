//! What a client is told when a request fails: a stable code, an HTTP
//! status and a message, as JSON. Internal details (paths, store errors)
//! stay in the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use txmirror_runtime::{ExecuteError, ModuleError, PolicyError};

/// A failed request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The body is not what the endpoint takes.
    #[error("{0}")]
    BadRequest(String),
    /// The module was refused.
    #[error("{0}")]
    ModuleRefused(String),
    /// The policy was refused.
    #[error("{0}")]
    PolicyRefused(String),
    /// The model file was refused; the current model stays.
    #[error("{0}")]
    ModelRefused(String),
    /// No such module, transaction or path.
    #[error("{0}")]
    NotFound(String),
    /// The module has no policy yet.
    #[error("module {0} has no policy: PUT one at /v1/modules/{0}/policy first")]
    NoPolicy(String),
    /// The transaction id is taken.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the endpoint takes.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// Something failed inside; the details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ServiceError {
    /// The stable code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::ModuleRefused(_) => "module_refused",
            Self::PolicyRefused(_) => "policy_refused",
            Self::ModelRefused(_) => "model_refused",
            Self::NotFound(_) => "not_found",
            Self::NoPolicy(_) => "no_policy",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::ModuleRefused(_) | Self::PolicyRefused(_) | Self::ModelRefused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NoPolicy(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (self.status(), Json(body)).into_response()
    }
}

impl From<ModuleError> for ServiceError {
    fn from(error: ModuleError) -> Self {
        match error {
            ModuleError::Cache { .. } => Self::Internal(error.to_string()),
            other => Self::ModuleRefused(other.to_string()),
        }
    }
}

impl From<PolicyError> for ServiceError {
    fn from(error: PolicyError) -> Self {
        Self::PolicyRefused(error.to_string())
    }
}

impl From<ExecuteError> for ServiceError {
    fn from(error: ExecuteError) -> Self {
        match error {
            ExecuteError::Policy(error) => Self::PolicyRefused(error.to_string()),
            ExecuteError::UnknownPath { .. } | ExecuteError::InvalidIdempotencyKey(_) => {
                Self::BadRequest(error.to_string())
            }
            ExecuteError::DuplicateId(_) => Self::Conflict(error.to_string()),
            ExecuteError::NoSuchDeadLetter(_) => Self::NotFound(error.to_string()),
            ExecuteError::ModuleMismatch { .. } => Self::Conflict(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}
