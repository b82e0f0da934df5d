//! Support for the integration tests: the guests built from source, a real
//! HTTP server on 127.0.0.1, and a runtime on a temporary directory.

#![allow(clippy::unwrap_used, reason = "test support code")]

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use txmirror_runtime::store::StateStore;
use txmirror_runtime::{Module, Policy, Runtime, RuntimeConfig};

/// Paths of the guest components, built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The test models, trained from source by `models/train.py` at build time.
pub mod models {
    include!(concat!(env!("OUT_DIR"), "/models.rs"));
}

pub mod otlp;
pub mod peers;
pub mod postgres;

/// A request the test server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// The `idempotency-key` header, if any.
    pub idempotency_key: Option<String>,
    /// The `content-length` header, if any.
    pub content_length: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// Every header, names in lower case (values that are not UTF-8 left out).
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the test server answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
    /// How long to wait before answering.
    pub delay: Duration,
    /// Requests whose body contains the text are answered with the status
    /// instead (a dependency that fails for some requests and not others).
    pub failing_bodies: Option<(String, u16)>,
    /// At most this many POST requests a second are served; the others
    /// are answered `429` with a `Retry-After` of one second.
    pub rate_limit: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self { status: 200, body: "{}".into(), delay: Duration::ZERO, failing_bodies: None, rate_limit: None }
    }
}

#[derive(Debug, Default)]
struct ServerState {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    /// When the requests of the last second were served, for `rate_limit`.
    served: Mutex<std::collections::VecDeque<std::time::Instant>>,
}

/// A real HTTP server on 127.0.0.1 that records every request.
///
/// It answers every path with its [`Behaviour`]; a `{n}` in the body is
/// replaced by the request's number, from 1. It stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(ServerState { behaviour: Mutex::new(behaviour), ..ServerState::default() });
        let shared = state.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move {
                let number = {
                    let mut received = state.received.lock().unwrap();
                    received.push(Received {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        idempotency_key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from),
                        content_length: headers.get("content-length").and_then(|v| v.to_str().ok()).map(String::from),
                        body: body.to_vec(),
                        headers: headers
                            .iter()
                            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
                            .collect(),
                    });
                    received.len()
                };
                let behaviour = state.behaviour.lock().unwrap().clone();
                if let (true, Some(limit)) = (method == Method::POST, behaviour.rate_limit) {
                    let now = std::time::Instant::now();
                    let mut served = state.served.lock().unwrap();
                    while served.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
                        served.pop_front();
                    }
                    if served.len() >= limit {
                        let headers = [("content-type", "application/json"), ("retry-after", "1")];
                        return (StatusCode::TOO_MANY_REQUESTS, headers, "{}".to_string()).into_response();
                    }
                    served.push_back(now);
                }
                tokio::time::sleep(behaviour.delay).await;
                let mut status = behaviour.status;
                if let Some((text, failing)) = &behaviour.failing_bodies
                    && body.windows(text.len()).any(|window| window == text.as_bytes())
                {
                    status = *failing;
                }
                let status = StatusCode::from_u16(status).unwrap();
                (status, [("content-type", "application/json")], behaviour.body.replace("{n}", &number.to_string()))
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// `127.0.0.1:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Changes how the server answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A runtime on a fresh temporary directory, with the compile cache shared
/// by all tests (under the target directory) so each guest compiles once.
pub fn runtime(dir: &Path) -> Runtime {
    Runtime::open(config(dir)).unwrap()
}

/// The configuration [`runtime`] uses, to adjust before opening.
pub fn config(dir: &Path) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(dir);
    config.cache_dir = Some(Path::new(env!("OUT_DIR")).join("compile-cache"));
    config.engine.max_instances = 64;
    config
}

/// Loads a guest by its path constant.
pub async fn load(runtime: &Runtime, guest: &str) -> Module {
    let bytes = std::fs::read(guest).unwrap();
    runtime.load_module(&bytes).await.unwrap()
}

/// Writes `balances` into the `accounts` namespace of `store` directly, in
/// one commit recorded as the transaction `seed`: set-up, not workload,
/// done before a runtime opens the store (a runtime's state changes only
/// through its transactions).
pub fn seed_accounts(store: &dyn StateStore, balances: impl IntoIterator<Item = (String, u64)>) {
    use txmirror_runtime::store::{CommitRequest, TransactionOutcome, TransactionRecord, WriteEntry};
    let writes = balances
        .into_iter()
        .map(|(key, balance)| WriteEntry {
            namespace: "accounts".into(),
            key,
            value: Some(balance.to_string().into_bytes()),
        })
        .collect();
    let record = TransactionRecord {
        id: "seed".into(),
        module: String::new(),
        path: String::new(),
        input_hash: String::new(),
        outcome: TransactionOutcome::Committed { version: 0, output: Vec::new() },
        attempts: Vec::new(),
        history: txmirror_runtime::store::History::default(),
    };
    store
        .commit(CommitRequest { reads: Vec::new(), writes, events: Vec::new(), record, idempotency: None, fence: None })
        .unwrap();
}

/// Parses a policy written in a test.
/// The payment example's grants and gateways: its `charge` path charges at
/// `primary` and `charge-backup` at `backup` (base URLs, `http://HOST:PORT`),
/// both hosts granted. Top-level keys go before it; tables may follow.
pub fn payment_grants(primary: &str, backup: &str) -> String {
    let authority = |url: &str| url.trim_start_matches("http://").to_string();
    format!(
        "[capabilities]\nkv = {{ payments = \"read-write\" }}\nstreams = [\"payments\"]\n\
         outbound_hosts = [\"{}\", \"{}\"]\n[config]\nprimary_gateway = \"{primary}\"\nbackup_gateway = \"{backup}\"\n",
        authority(primary),
        authority(backup),
    )
}

pub fn policy(text: &str) -> Arc<Policy> {
    Arc::new(Policy::parse(text, Path::new("test-policy.toml")).unwrap())
}
