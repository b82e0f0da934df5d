//! Every error in one format. The handlers answer [`ServiceError`]s; what
//! fails before a handler runs (a path segment that is not UTF-8, a method
//! the route lacks, a query the extractor refuses) is answered by axum in
//! plain text or with no body. This layer rewrites those into the same
//! `{"error": {"code", "message"}}` body, keeping their status and headers.

use crate::{ErrorBody, error::ErrorDetail};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// The most of a plain error body kept as the message.
const MAX_MESSAGE_BYTES: usize = 4 << 10;

/// Rewrites an error response that is not JSON.
pub(crate) async fn as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let body = ErrorBody { error: ErrorDetail { code: code(status), message } };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// The code of an error that no handler named.
pub(crate) fn code(status: StatusCode) -> String {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request".into(),
        StatusCode::NOT_FOUND => "not_found".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed".into(),
        StatusCode::REQUEST_TIMEOUT => "request_timeout".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "too_large".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type".into(),
        status if status.is_server_error() => "internal".into(),
        status => format!("http_{}", status.as_u16()),
    }
}
