//! Clients that send slowly, stop half-way, open too many connections or
//! send what an endpoint does not take: the service closes them or answers
//! a JSON error, and keeps answering everyone else.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Call, error_code};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use txmirror_service::server::{ServerConfig, serve};
use txmirror_service::{AppState, Role};

/// A real server on 127.0.0.1 with these limits, stopped when dropped.
struct Running {
    address: SocketAddr,
    state: AppState,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: ServerConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(&common::config(dir.path())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, service.state.clone(), limits, stop.clone()));
    Running { address, state: service.state, stop, _dir: dir }
}

/// `GET /healthz` on a connection of its own: its status.
async fn healthz(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await.unwrap();
    let answer = read_to_end(&mut stream, Duration::from_secs(5)).await.expect("healthz answered and closed");
    answer.lines().next().unwrap_or_default().to_string()
}

/// Everything the server sends until it closes the connection, or `None`
/// if it is still open after `bound`.
async fn read_to_end(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(bound, stream.read_to_end(&mut bytes)).await {
        Ok(_) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => None,
    }
}

/// Requests whose head or body stop half-way are closed once their
/// deadline passes, while `/healthz` answers throughout.
#[tokio::test]
async fn half_sent_requests_are_closed_while_healthz_keeps_answering() {
    let limits = ServerConfig { header_read_timeout_ms: 600, body_read_timeout_ms: 600, ..ServerConfig::default() };
    let server = start(limits).await;
    let token = common::token("acme", Role::Client);
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(b"POST /v1/modules/abc/transactions HTTP/1.1\r\nhost: test\r\ncontent-ty").await.unwrap();
        heads.push(stream);
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let head = format!(
            "POST /v1/modules/abc/transactions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: 400\r\n\r\n{{\"input\": {{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        bodies.push(stream);
    }
    // Without a token, the request is refused before its body is read; the
    // rest of the body never comes, and the connection is closed.
    let mut anonymous = TcpStream::connect(server.address).await.unwrap();
    anonymous
        .write_all(b"POST /v1/modules HTTP/1.1\r\nhost: test\r\ncontent-type: application/wasm\r\ncontent-length: 9000\r\n\r\n\0asm")
        .await
        .unwrap();
    let opened = Instant::now();
    // While the nine are held open, others are served.
    for _ in 0..5 {
        assert_eq!(healthz(server.address).await, "HTTP/1.1 200 OK");
    }
    assert!(opened.elapsed() < Duration::from_millis(600), "the healthz calls took longer than the deadlines");
    for mut stream in heads {
        let answer = read_to_end(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.is_some(), "a connection whose head stopped half-way was still open after 5 s");
    }
    for mut stream in bodies {
        let answer = read_to_end(&mut stream, Duration::from_secs(5))
            .await
            .expect("a connection whose body stopped half-way was still open after 5 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    }
    let answer = read_to_end(&mut anonymous, Duration::from_secs(5))
        .await
        .expect("a refused request whose body stopped half-way was still open after 5 s");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(opened.elapsed() >= Duration::from_millis(600), "closed before the deadline");
    assert_eq!(healthz(server.address).await, "HTTP/1.1 200 OK");
    let counts = server.state.connections();
    assert_eq!(counts.timed_out, 8, "{counts:?}");
}

/// A body trickled a byte at a time is cut off at its deadline, although
/// bytes keep arriving.
#[tokio::test]
async fn a_body_trickled_byte_by_byte_is_cut_off_at_its_deadline() {
    let limits = ServerConfig { body_read_timeout_ms: 800, ..ServerConfig::default() };
    let server = start(limits).await;
    let token = common::token("acme", Role::Client);
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let head = format!(
        "POST /v1/modules/abc/transactions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut sent = 0;
    // Bounded: 1,000 bytes at most, one every 50 ms, until the server
    // stops taking them.
    while sent < 1000 && started.elapsed() < Duration::from_secs(10) {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut byte = [0; 1];
        if let Ok(Ok(read)) = tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut byte)).await
            && read > 0
        {
            break;
        }
    }
    let answer = read_to_end(&mut stream, Duration::from_secs(5)).await.expect("the connection was closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "after {sent} bytes: {answer}");
    assert!(sent < 1000, "the whole body was taken");
}

/// Past `max_connections`, a new connection is closed at once; the held
/// ones time out, and the service answers again.
#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let limits = ServerConfig { max_connections: 3, header_read_timeout_ms: 1500, ..ServerConfig::default() };
    let server = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.address).await.unwrap());
    }
    // The server takes each into its count as it accepts it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.state.connections().open < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.state.connections().open, 3);
    let mut extra = TcpStream::connect(server.address).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").await;
    let answer = read_to_end(&mut extra, Duration::from_millis(1000)).await;
    assert_eq!(answer.as_deref(), Some(""), "a fourth connection was served or kept");
    assert_eq!(server.state.connections().refused, 1);
    for mut stream in held {
        assert!(read_to_end(&mut stream, Duration::from_secs(5)).await.is_some(), "a held connection stayed open");
    }
    assert_eq!(healthz(server.address).await, "HTTP/1.1 200 OK");
}

/// A body of another media type than the endpoint takes is refused with
/// `415` before it is read; a body without one too; an empty body needs
/// none.
#[tokio::test]
async fn bodies_of_the_wrong_media_type_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(&common::config(dir.path())).await;
    let state = &service.state;
    let cases = [
        (Role::Client, "POST", "/v1/modules/abc/transactions", Some("text/plain"), "{\"input\": {}}"),
        (Role::Client, "POST", "/v1/modules/abc/transactions", None, "{\"input\": {}}"),
        (Role::Client, "POST", "/v1/modules/abc/transactions", Some("application/x-www-form-urlencoded"), "a=b"),
        (Role::Developer, "POST", "/v1/modules", Some("application/json"), "{}"),
        (Role::Developer, "POST", "/v1/modules", Some("application/octet-stream"), "\0asm"),
        (Role::Operator, "PUT", "/v1/modules/abc/policy", Some("application/json"), "{}"),
        (Role::Operator, "POST", "/v1/dlq/replay", Some("text/plain"), "{\"all\": true}"),
        (Role::Client, "POST", "/v1/streams/s/groups/g/ack", Some("text/json"), "{\"offset\": 1}"),
    ];
    for (role, method, uri, media_type, body) in cases {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(media_type) = media_type {
            request = request.header("content-type", media_type);
        }
        let (status, answer) = Call::as_(state, "acme", role).send_exactly(request, body.to_string()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{method} {uri} as {media_type:?}: {answer}");
        assert_eq!(error_code(&answer), "unsupported_media_type", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("must be application/"), "{message}");
    }
    // Parameters and case do not matter; the type does.
    let request = Request::builder()
        .method("POST")
        .uri("/v1/modules/abc/transactions")
        .header("content-type", "Application/JSON; charset=utf-8");
    let (status, answer) = Call::as_(state, "acme", Role::Client).send_with(request, "{\"input\": {}}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    // A replay of every letter needs no body, and no media type.
    let request = Request::builder().method("POST").uri("/v1/dlq/nothing/replay");
    let (status, answer) = Call::as_(state, "acme", Role::Operator).send_with(request, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

/// What fails before a handler runs is answered in the same JSON format
/// as everything else.
#[tokio::test]
async fn errors_outside_the_handlers_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(&common::config(dir.path())).await;
    let client = Call::as_(&service.state, "acme", Role::Client);
    let operator = Call::as_(&service.state, "acme", Role::Operator);
    let cases = [
        (&client, "GET", "/v1/transactions/%FF%FE", StatusCode::BAD_REQUEST, "bad_request"),
        (&client, "DELETE", "/healthz", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (&client, "PATCH", "/v1/modules", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (&operator, "GET", "/v1/dlq?limit=many", StatusCode::UNPROCESSABLE_ENTITY, "bad_request"),
        (&client, "GET", "/nowhere", StatusCode::NOT_FOUND, "not_found"),
    ];
    for (caller, method, uri, status, code) in cases {
        let (answered, body) = caller.send(method, uri, Body::empty()).await;
        assert_eq!(answered, status, "{method} {uri}: {body}");
        assert_eq!(error_code(&body), code, "{method} {uri}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
}

/// What is not HTTP at all (raw bytes in the request line, a header name
/// that is not a token, a head too large) is answered in the same JSON
/// format, by hyper's status, and the connection is closed; the service
/// goes on answering.
#[tokio::test]
async fn requests_that_are_not_http_are_answered_in_json_too() {
    let server = start(ServerConfig::default()).await;
    let huge = format!("GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n", "a".repeat(1 << 20));
    let cases: [(&[u8], &str); 4] = [
        (b"GET /v1/transactions/\xff\xfe HTTP/1.1\r\nhost: test\r\n\r\n", "HTTP/1.1 400"),
        (b"\x00\x01\x02 not http\r\n\r\n", "HTTP/1.1 400"),
        (b"GET / HTTP/1.1\r\nho\xffst: test\r\n\r\n", "HTTP/1.1 400"),
        (huge.as_bytes(), "HTTP/1.1 431"),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        // A server that closes mid-request may reset the rest of a long one.
        let _ = stream.write_all(request).await;
        let answer = read_to_end(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
        assert!(answer.starts_with(status), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
        assert!(!error_code(&json).is_empty() && json["error"]["message"].is_string(), "{json}");
    }
    assert_eq!(healthz(server.address).await, "HTTP/1.1 200 OK");
}
