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
//! - at most `max_connections` are open; one more is closed at once;
//! - with `[server.tls]`, every connection is HTTPS ([`tls`]), its
//!   handshake held to the head's deadline.
//!
//! A request hyper cannot parse is answered in the JSON error format too
//! ([`parse_errors`]). Each request is handled in a span that continues the
//! caller's W3C trace context (`trace_context.rs`, for OpenTelemetry).
//!
//! Long polls and synchronous transactions are not cut short: a request
//! being handled is not idle, and event streams send a keep-alive comment.

mod activity;
pub mod body_deadline;
mod config;
mod connections;
mod parse_errors;
mod tls;
mod trace_context;

pub use config::ServerConfig;
pub use connections::{ConnectionCounts, Connections};
pub use tls::{TlsError, TlsFiles};

use crate::AppState;
use activity::{Activity, Watched};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
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
/// open connections finish their requests for up to two seconds. Fails
/// at once if the TLS files cannot be used.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: ServerConfig,
    stop: CancellationToken,
) -> Result<(), TlsError> {
    let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    let connections = state.connections.clone();
    let app = crate::app(state)
        .layer(axum::middleware::from_fn_with_state(config.body_read_timeout(), body_deadline::limit))
        .layer(axum::middleware::from_fn(trace_context::continue_trace));
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout());
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
            // Logged at the 1st, 2nd, 4th, 8th… refusal: a flood of
            // connections must not become a flood of log lines (the
            // metric counts every one).
            let refused = connections.refused();
            if refused.is_power_of_two() {
                tracing::warn!(%peer, max = config.max_connections, refused, "connections over the limit were closed");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            app: app.clone(),
            activity: Activity::new(),
            idle_timeout: config.idle_timeout(),
            watcher: graceful.watcher(),
            connections: connections.clone(),
            peer,
        };
        let tls = tls.clone();
        let handshake_timeout = config.header_read_timeout();
        connections.opened();
        tokio::spawn(async move {
            let _permit = permit;
            let connections = connection.connections.clone();
            let stream = Watched::new(stream, connection.activity.clone());
            match tls {
                None => connection.run(stream).await,
                // A handshake is held to the head's deadline: a client
                // that starts one and stops holds nothing for long.
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => connection.run(stream).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "a TLS handshake failed"),
                    Err(_) => {
                        tracing::debug!(%peer, "a TLS handshake that was late was abandoned");
                        connections.timed_out();
                    }
                },
            }
            connections.closed();
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open after the drain were closed");
    }
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    app: axum::Router,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    watcher: Watcher,
    connections: Arc<Connections>,
    peer: std::net::SocketAddr,
}

impl Connection {
    /// Serves the connection's requests over `stream` (plain or TLS) until
    /// it closes, times out or goes idle.
    async fn run<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self { http, app, activity, idle_timeout, watcher, connections, peer } = self;
        let service = {
            let activity = activity.clone();
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
        let stream = parse_errors::JsonParseErrors::new(stream);
        let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
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
    }
}
