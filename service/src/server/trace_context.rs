//! Each request handled in a span of its own, `METHOD /route`, which
//! continues the caller's trace when the request carries a W3C
//! `traceparent` (and `tracestate`). A transaction the request runs is a
//! child of this span (see `lifecycle::spawn_run`), so the caller's trace
//! shows the transaction, its attempts and its commit.
//!
//! With no OpenTelemetry exporter the span is disabled and nothing is
//! read from the headers.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry_http::HeaderExtractor;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Handles `request` in its span.
pub(crate) async fn continue_trace(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // A request without a valid `traceparent` starts a trace of its own.
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
