//! The guest's standard output and error, kept for its trace instead of
//! vanishing: what a module prints is part of what it did, and a module
//! that prints is not stopped for it. Each stream keeps its first
//! [`KEPT_OUTPUT_BYTES`]; the rest is counted and dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// How much of each stream an instance keeps.
pub(crate) const KEPT_OUTPUT_BYTES: usize = 16 * 1024;

/// One stream's kept bytes and how many were dropped, shared by every
/// handle the guest opens on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl CapturedOutput {
    /// What was kept (as text, invalid UTF-8 replaced) and how many bytes
    /// were dropped past the bound.
    pub(crate) fn kept(&self) -> (String, u64) {
        let captured = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (String::from_utf8_lossy(&captured.bytes).into_owned(), captured.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut captured = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = KEPT_OUTPUT_BYTES.saturating_sub(captured.bytes.len());
        let kept = room.min(buf.len());
        captured.bytes.extend_from_slice(&buf[..kept]);
        captured.dropped = captured.dropped.saturating_add((buf.len() - kept) as u64);
        // Everything is taken: a guest is never told its output failed.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_stream_keeps_its_bound_and_counts_the_rest() {
        let captured = CapturedOutput::default();
        let mut first = Box::into_pin(captured.async_stream());
        let mut second = Box::into_pin(captured.async_stream());
        first.write_all(b"hello ").await.expect("taken");
        second.write_all(b"world").await.expect("taken");
        assert_eq!(captured.kept(), ("hello world".to_string(), 0), "one stream, however many handles");
        first.write_all(&vec![b'x'; KEPT_OUTPUT_BYTES]).await.expect("taken past the bound");
        let (text, dropped) = captured.kept();
        assert_eq!(text.len(), KEPT_OUTPUT_BYTES);
        assert_eq!(dropped, 11);
    }
}
