//! Request bodies: of the media type the endpoint takes, within its size,
//! and in time. A body the endpoint cannot take is refused before its
//! handler reads it, with the JSON error every failure has.

use crate::server::body_deadline;
use crate::{AppState, MAX_MODULE_BYTES, MAX_REQUEST_BYTES, ServiceError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use std::marker::PhantomData;

/// A media type an endpoint takes, and the largest body of it.
pub(crate) trait MediaType {
    /// Its name, as `Content-Type` says it (without parameters).
    const NAME: &'static str;
    /// The largest body, in bytes (the route's `DefaultBodyLimit`).
    const LIMIT: usize;
}

/// `application/json`.
pub(crate) enum Json {}

impl MediaType for Json {
    const NAME: &'static str = "application/json";
    const LIMIT: usize = MAX_REQUEST_BYTES;
}

/// `application/wasm`: a component.
pub(crate) enum Wasm {}

impl MediaType for Wasm {
    const NAME: &'static str = "application/wasm";
    const LIMIT: usize = MAX_MODULE_BYTES;
}

/// `application/toml`: a policy.
pub(crate) enum Toml {}

impl MediaType for Toml {
    const NAME: &'static str = "application/toml";
    const LIMIT: usize = MAX_REQUEST_BYTES;
}

/// A whole request body of media type `M`. An empty body may come
/// without a `Content-Type`; any other must declare `M`.
pub(crate) struct Body<M>(pub(crate) Bytes, pub(crate) PhantomData<M>);

impl<M: MediaType> FromRequest<AppState> for Body<M> {
    type Rejection = ServiceError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ServiceError> {
        let declared = media_type(request.headers());
        // A declared type that is wrong is refused before the body is read.
        if let Some(declared) = &declared
            && declared != M::NAME
        {
            return Err(ServiceError::UnsupportedMediaType(format!("the body must be {}, not {declared}", M::NAME)));
        }
        let bytes =
            Bytes::from_request(request, state).await.map_err(|rejection| refused(state, &rejection, M::LIMIT))?;
        if declared.is_none() && !bytes.is_empty() {
            return Err(ServiceError::UnsupportedMediaType(format!(
                "the body has no Content-Type: it must be {}",
                M::NAME
            )));
        }
        Ok(Self(bytes, PhantomData))
    }
}

/// The request's media type, lower-cased, without its parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    Some(text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// Why a body could not be read: too large, too late, or broken off.
fn refused(state: &AppState, rejection: &BytesRejection, limit: usize) -> ServiceError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ServiceError::TooLarge(limit);
    }
    if let Some(late) = body_deadline::timed_out(rejection) {
        state.connections.timed_out();
        return ServiceError::RequestTimeout(late.to_string());
    }
    ServiceError::BadRequest(rejection.body_text())
}
