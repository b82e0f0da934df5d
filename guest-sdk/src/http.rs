//! Outbound HTTP, through the standard `wasi:http/outgoing-handler`.
//!
//! The host decides per request whether it may go out: the policy lists the
//! hosts a module may call, and in a mirrored run the unsafe methods (POST,
//! PUT, PATCH, DELETE…) are never sent but answered by a stub. Send an
//! `Idempotency-Key` header on unsafe requests so that a retried transaction
//! cannot charge twice.
//!
//! ```no_run
//! use txmirror_guest::http::Request;
//!
//! # fn demo() -> Result<(), txmirror_guest::Error> {
//! let response = Request::post("http://127.0.0.1:8080/charges")
//!     .header("idempotency-key", "order-42")
//!     .json(&serde_json::json!({ "amount": 1250 }))?
//!     .send()?;
//! if response.status != 201 {
//!     return Err(txmirror_guest::Error::unavailable(format!("gateway said {}", response.status)));
//! }
//! # Ok(()) }
//! ```

use crate::wit::wasi::http::outgoing_handler;
use crate::wit::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::wit::wasi::io::streams::StreamError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a request failed before a response arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is not of the form `http://host[:port]/path` or `https://…`.
    InvalidUrl(String),
    /// A header name or value was refused.
    InvalidHeader(String),
    /// The host refused the request: the policy does not grant its host, or
    /// the runtime stopped it (for example, to divert the transaction).
    Denied,
    /// No response arrived within the timeout.
    Timeout,
    /// The connection or the protocol failed.
    Transport(String),
    /// The body could not be encoded or decoded.
    Body(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Self::InvalidHeader(m) => write!(f, "invalid header: {m}"),
            Self::Denied => write!(f, "refused by the host (not granted by the policy, or stopped by the runtime)"),
            Self::Timeout => write!(f, "timed out"),
            Self::Transport(m) => write!(f, "transport error: {m}"),
            Self::Body(m) => write!(f, "body error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Self::Denied,
            ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => Self::Timeout,
            other => Self::Transport(format!("{other:?}")),
        }
    }
}

/// An outbound request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        Self { method, url: url.to_string(), headers: Vec::new(), body: Vec::new(), timeout: None }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Sets a raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and the `content-type` header.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| HttpError::Body(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Gives up when no response has started within `timeout`.
    ///
    /// The policy's outbound timeout applies as well; the shorter one wins.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and waits for the whole response.
    pub fn send(mut self) -> Result<Response, HttpError> {
        // The whole body is known: say how long it is, rather than let the
        // host stream it chunked, which not every server reads.
        let has_length = self.headers.iter().any(|(name, _)| name == "content-length");
        if !has_length && (!self.body.is_empty() || !matches!(self.method, Method::Get | Method::Head)) {
            self.headers.push(("content-length".into(), self.body.len().to_string().into_bytes()));
        }
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = Fields::from_list(&self.headers).map_err(|e| HttpError::InvalidHeader(format!("{e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} refused in {}", self.url));
        request.set_method(&self.method).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
        request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| HttpError::Body("request body already taken".into()))?;

        let options = self.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // A host that does not support the option keeps its own timeout.
            let _ = options.set_first_byte_timeout(Some(nanos));
            options
        });
        let pending = outgoing_handler::handle(request, options)?;

        // If the host refuses the request, writing the body fails too; the
        // response future then carries the real reason, so it wins.
        let mut body_error = None;
        if !self.body.is_empty() {
            match body.write() {
                Ok(stream) => {
                    for chunk in self.body.chunks(4096) {
                        if let Err(e) = stream.blocking_write_and_flush(chunk) {
                            body_error = Some(HttpError::Body(stream_error(e)));
                            break;
                        }
                    }
                }
                Err(()) => body_error = Some(HttpError::Body("request body stream unavailable".into())),
            }
        }
        let finished = OutgoingBody::finish(body, None);

        let response = loop {
            match pending.get() {
                Some(result) => break result.map_err(|()| HttpError::Transport("response taken twice".into()))?,
                None => pending.subscribe().block(),
            }
        };
        let response = response?;
        if let Some(error) = body_error {
            return Err(error);
        }
        finished?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| HttpError::Body("response body already taken".into()))?;
        let stream = incoming.stream().map_err(|()| HttpError::Body("response body stream unavailable".into()))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(HttpError::Body(stream_error(e))),
            }
        }
        drop(stream);
        drop(IncomingBody::finish(incoming));
        let headers =
            headers.into_iter().map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned())).collect();
        Ok(Response { status, headers, body })
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Decodes the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Body(e.to_string()))
    }
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!("{url}: must start with http:// or https://")));
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("{url}: no host")));
    }
    Ok((scheme, authority, path))
}
