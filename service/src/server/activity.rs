//! What a connection is doing, for the idle timeout: when a byte last
//! moved either way, and how many of its requests are being handled.
//!
//! hyper bounds a request's head ([`super::ServerConfig::header_read_timeout`])
//! and the body has its own deadline; what neither sees is a connection
//! that moves nothing while no handler works for it, such as a client that
//! stops reading its response. [`Activity::idle`] ends when that has lasted
//! the idle timeout, and the connection is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One connection's activity, shared by its stream and its requests.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted; times are kept as milliseconds
    /// from here, so that they fit an atomic.
    opened: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { opened: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A byte moved.
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request is being handled until the guard is dropped.
    pub(crate) fn handling(self: &Arc<Self>) -> Handling {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Handling(self.clone())
    }

    /// Ends once the connection has moved no byte for `timeout` while no
    /// request of it was being handled.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let quiet = Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)));
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && quiet >= timeout {
                return;
            }
            // A handler may run for long; its end touches the clock, so
            // waking a full timeout later is soon enough to notice.
            let wait = if busy { timeout } else { timeout - quiet };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being handled; its end counts as activity.
#[derive(Debug)]
pub(crate) struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream that records when bytes move.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_only_when_nothing_moves_and_nothing_is_handled() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(200);
        // A handler that runs past the timeout keeps the connection.
        let handling = activity.handling();
        let idle = tokio::time::timeout(Duration::from_millis(600), activity.idle(timeout)).await;
        assert!(idle.is_err(), "a connection was idle while a request of it was handled");
        drop(handling);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), activity.idle(timeout))
            .await
            .expect("a connection that moves nothing is idle once the timeout has passed");
        assert!(started.elapsed() >= timeout, "idle after {:?}, before the timeout", started.elapsed());
    }
}
