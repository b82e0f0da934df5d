//! A request body's deadline: the whole body must arrive within
//! [`super::ServerConfig::body_read_timeout`] of the end of its head, or
//! reading it fails with [`BodyTimedOut`] (answered `408`, the connection
//! closed). A client that trickles a byte now and then is cut off too,
//! which a timeout between frames would not do.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// The body did not arrive in time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimedOut(pub Duration);

/// Gives each request's body the deadline.
pub(crate) async fn limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let request =
        request.map(|body| Body::new(Deadline { inner: body, sleep: Box::pin(tokio::time::sleep(timeout)), timeout }));
    next.run(request).await
}

/// A body that fails once its deadline has passed.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an error, or one of its causes, is a late body.
pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<BodyTimedOut> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(late) = error.downcast_ref::<BodyTimedOut>() {
            return Some(*late);
        }
        cause = error.source();
    }
    None
}
