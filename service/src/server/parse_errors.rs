//! Requests that are not HTTP at all answered in the service's JSON error
//! format. When hyper cannot parse a request (raw bytes in its line, a
//! header name that is not a token, a head too large) it answers by
//! itself, before any route sees a request: `400` (or `431`, `414`) with
//! `content-length: 0`. This stream wrapper recognises that answer as it
//! is written and writes the same status with a JSON body instead, so that
//! a client's parser meets one format for every error.
//!
//! Nothing the routes answer looks like it: every error response of
//! theirs has a JSON body (see `api/error_format.rs`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream whose parse-error answers carry a JSON body.
#[derive(Debug)]
pub(crate) struct JsonParseErrors<S> {
    inner: S,
    /// The answer being written instead of hyper's, how much of it is
    /// written, and how many of hyper's bytes it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonParseErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, replacing: None }
    }
}

/// The JSON answer standing for hyper's bodiless `4xx` in `written`, if
/// `written` is exactly one.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(written).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let status = axum::http::StatusCode::from_u16(status).ok()?;
    if !status.is_client_error() || !lines.any(|line| line.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let body = serde_json::json!({ "error": {
        "code": crate::api::error_code(status),
        "message": format!("the request could not be read as HTTP/1.1 ({reason}); the connection is closed"),
    }})
    .to_string();
    Some(
        format!(
            "{status_line}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes the replacement to its end; then says hyper's bytes were.
    fn poll_replace(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some((bytes, at, stands_for)) = &mut self.replacing else { return Poll::Ready(Ok(0)) };
        while *at < bytes.len() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *at += written;
        }
        let stands_for = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(stands_for))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(bytes) = replacement(buf)
        {
            self.replacing = Some((bytes, 0, buf.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replace(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper's own answer is one head and no body.
        if self.replacing.is_none()
            && let [head, rest @ ..] = bufs
            && rest.iter().all(|slice| slice.is_empty())
            && let Some(bytes) = replacement(head)
        {
            self.replacing = Some((bytes, 0, head.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replace(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

    #[test]
    fn only_a_bodiless_client_error_is_replaced() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = String::from_utf8(replacement(hyper).expect("hyper's answer is replaced")).unwrap_or_default();
        assert!(replaced.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{replaced}");
        assert!(replaced.contains("content-type: application/json"), "{replaced}");
        assert!(replaced.ends_with(r#"the connection is closed"}}"#), "{replaced}");
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(too_large).is_some());
        for kept in [
            &b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            b"\x00\x01",
        ] {
            assert!(replacement(kept).is_none(), "{}", String::from_utf8_lossy(kept));
        }
    }
}
