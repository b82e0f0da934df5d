//! The HTTP server in front of the routes (`txmirror serve`): it accepts
//! connections up to a limit and holds each to its deadlines, so that a
//! client that sends slowly, stops half-way or stops reading cannot keep
//! the service's connections (a slowloris).
//!
//! - a request's head must arrive within `header_read_timeout_ms` (hyper
//!   closes the connection otherwise), which also bounds how long a
//!   kept-alive connection waits for its next request;
//! - its body within `body_read_timeout_ms` of the head ([`body_deadline`]);
//! - a connection that moves nothing for `idle_timeout_ms` while none of
//!   its requests is being handled is closed ([`activity`]);
//! - at most `max_connections` are open; one more is closed at once.
//!
//! Long polls and synchronous transactions are not cut short: a request
//! being handled is not idle, and event streams send a keep-alive comment.

mod activity;
pub mod body_deadline;
mod config;
mod connections;

pub use config::ServerConfig;
pub use connections::{ConnectionCounts, Connections};

use crate::AppState;
use activity::{Activity, Watched};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long connections are given to finish their requests once the server
/// stops accepting.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves the API on `listener` until `stop` is cancelled, then lets the
/// open connections finish their requests for up to two seconds.
pub async fn serve(listener: TcpListener, state: AppState, config: ServerConfig, stop: CancellationToken) {
    let connections = state.connections.clone();
    let app =
        crate::app(state).layer(axum::middleware::from_fn_with_state(config.body_read_timeout(), body_deadline::limit));
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout());
    let idle_timeout = config.idle_timeout();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little instead
                    // of spinning, and go on.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_connections, "a connection over the limit was closed");
            connections.refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            let app = app.clone();
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let handling = activity.handling();
                let app = app.clone();
                async move {
                    let response = app.oneshot(request.map(axum::body::Body::new)).await;
                    drop(handling);
                    response
                }
            })
        };
        let connection = http.serve_connection(TokioIo::new(Watched::new(stream, activity.clone())), service);
        let connection = graceful.watch(connection);
        let connections = connections.clone();
        connections.opened();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection => match result {
                    Err(error) if error.is_timeout() => {
                        tracing::debug!(%peer, "a connection whose request head was late was closed");
                        connections.timed_out();
                    }
                    Err(error) => tracing::debug!(%peer, %error, "a connection ended in error"),
                    Ok(()) => {}
                },
                () = activity.idle(idle_timeout) => {
                    tracing::debug!(%peer, "an idle connection was closed");
                    connections.idle();
                }
            }
            connections.closed();
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after the drain were closed");
    }
}
