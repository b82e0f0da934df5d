//! What a client is told when a request fails: a stable code, an HTTP
//! status and a message, as JSON. Internal details (paths, store errors)
//! stay in the log.

use crate::catalog::CatalogError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use txmirror_runtime::store::StoreError;
use txmirror_runtime::{ExecuteError, ModuleError, PolicyError, ReplayError};

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
    /// The idempotency key is bound to another request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The body is larger than the endpoint takes.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body is not of the media type the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body did not arrive in time; the connection is closed.
    #[error("{0}")]
    RequestTimeout(String),
    /// A tenant's quota is spent (`[[quotas]]`): retry after the wait.
    #[error("{message}")]
    QuotaExceeded {
        /// Which quota, and when to come back.
        message: String,
        /// How long to wait, sent as `Retry-After` (whole seconds, at least one).
        retry_after: std::time::Duration,
    },
    /// No valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The service is shutting down and admits no new transaction.
    #[error("the service is shutting down; submit again once it is back")]
    ShuttingDown,
    /// The store cannot be reached (the database is down, say): nothing
    /// was accepted or changed by this request.
    #[error("the store cannot be reached; nothing was changed: try again")]
    StoreUnavailable(String),
    /// Another node took the transaction over while this one ran it: it
    /// ends there, once.
    #[error("transaction {0} was taken over by another node; GET /v1/transactions/{0} for its outcome")]
    TakenOver(String),
    /// Something failed inside; the details are logged, not returned.
    #[error("internal error")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message for a person.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `module_refused`, `policy_refused`,
    /// `model_refused`, `not_found`, `no_policy`, `conflict`,
    /// `idempotency_key_reused`, `too_large`, `unsupported_media_type`,
    /// `request_timeout`, `method_not_allowed`, `quota_exceeded`, `unauthorized`,
    /// `forbidden`, `shutting_down`, `store_unavailable`, `taken_over`,
    /// `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
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
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RequestTimeout(_) => "request_timeout",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::ShuttingDown => "shutting_down",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::TakenOver(_) => "taken_over",
            Self::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::ModuleRefused(_)
            | Self::PolicyRefused(_)
            | Self::ModelRefused(_)
            | Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NoPolicy(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::ShuttingDown | Self::StoreUnavailable(_) | Self::TakenOver(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ServiceError {
    /// An internal error, its message followed by each of its causes, so
    /// that the log and the operator see why and not only what.
    pub(crate) fn internal(error: &dyn std::error::Error) -> Self {
        Self::Internal(with_causes(error))
    }
}

/// An error's message followed by each of its causes, `: `-separated.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        message.push_str(": ");
        message.push_str(&error.to_string());
        cause = error.source();
    }
    message
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) | Self::StoreUnavailable(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code().to_string(), message: self.to_string() } };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::StoreUnavailable(_)) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        if let Self::QuotaExceeded { retry_after, .. } = &self {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds.max(1)));
        }
        if matches!(self, Self::RequestTimeout(_)) {
            // The rest of the body may still come: the connection cannot
            // carry another request.
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<ModuleError> for ServiceError {
    fn from(error: ModuleError) -> Self {
        match error {
            ModuleError::Cache { .. } => Self::internal(&error),
            other => Self::ModuleRefused(with_causes(&other)),
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
            ExecuteError::UnknownPath { .. }
            | ExecuteError::InvalidIdempotencyKey(_)
            | ExecuteError::UnknownProfile { .. } => Self::BadRequest(error.to_string()),
            ExecuteError::DuplicateId(_) => Self::Conflict(error.to_string()),
            ExecuteError::IdempotencyKeyReused { .. } => Self::IdempotencyKeyReused(error.to_string()),
            ExecuteError::Store(error) => error.into(),
            other => Self::internal(&other),
        }
    }
}

impl From<ReplayError> for ServiceError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::NoSuchDeadLetter(_) => Self::NotFound(error.to_string()),
            ReplayError::ModuleMismatch { .. } => Self::Conflict(error.to_string()),
            ReplayError::Execute(error) => error.into(),
            other => Self::internal(&other),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match &error {
            // A database that is down, or a pool that cannot get a
            // connection: the client may try again (on this node or another).
            StoreError::Storage(_) | StoreError::Open { .. } | StoreError::Committer(_) => {
                Self::StoreUnavailable(with_causes(&error))
            }
            StoreError::Fenced { transaction_id, .. } => Self::TakenOver(transaction_id.clone()),
            _ => Self::internal(&error),
        }
    }
}

impl From<CatalogError> for ServiceError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Database(error) => error.into(),
            other => Self::internal(&other),
        }
    }
}
