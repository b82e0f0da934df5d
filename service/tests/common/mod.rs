//! What the service's tests share: a service on a temporary directory with
//! two tenants and a token for every role of each.

#![allow(clippy::unwrap_used, dead_code, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use std::path::Path;
use tower::ServiceExt as _;
use txmirror_service::auth::hash_token;
use txmirror_service::{AppState, Role, Service, ServiceConfig, TokenConfig, app};

pub mod receiver;

pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// The token of a tenant's role in these tests.
pub fn token(tenant: &str, role: Role) -> String {
    format!("test-token-{tenant}-{role}")
}

/// A configuration with a token for every role of both tenants.
pub fn config(dir: &Path) -> ServiceConfig {
    let mut tokens = Vec::new();
    for tenant in TENANTS {
        for role in [Role::Developer, Role::Operator, Role::Client] {
            tokens.push(TokenConfig {
                name: format!("{tenant}-{role}"),
                tenant: tenant.to_string(),
                role,
                sha256: hash_token(&token(tenant, role)),
                profile: None,
            });
        }
    }
    let mut config = ServiceConfig::new(dir.join("data"), tokens);
    config.cache_dir = txmirror_tests::config(dir).cache_dir;
    config
}

pub async fn open(config: &ServiceConfig) -> Service {
    Service::open(config).await.unwrap()
}

/// A request as one tenant's role.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub token: Option<String>,
}

impl<'a> Call<'a> {
    pub fn as_(state: &'a AppState, tenant: &str, role: Role) -> Self {
        Self { state, token: Some(token(tenant, role)) }
    }

    pub fn anonymous(state: &'a AppState) -> Self {
        Self { state, token: None }
    }

    pub async fn send(&self, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        self.send_with(Request::builder().method(method).uri(uri), body).await
    }

    pub async fn send_with(
        &self,
        mut request: axum::http::request::Builder,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.into();
        // A body declares its media type, as a client's would.
        let declared = request.headers_ref().is_some_and(|headers| headers.contains_key("content-type"));
        if !declared && axum::body::HttpBody::size_hint(&body).exact() != Some(0) {
            let uri = request.uri_ref().map(ToString::to_string).unwrap_or_default();
            let media_type = if uri.ends_with("/policy") {
                "application/toml"
            } else if uri == "/v1/modules" {
                "application/wasm"
            } else {
                "application/json"
            };
            request = request.header("content-type", media_type);
        }
        self.send_exactly(request, body).await
    }

    /// Sends the request as built: no media type is added to its body.
    pub async fn send_exactly(
        &self,
        mut request: axum::http::request::Builder,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        if let Some(token) = &self.token
            && !request.headers_ref().is_some_and(|headers| headers.contains_key("authorization"))
        {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app(self.state.clone()).oneshot(request.body(body.into()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }
}

pub fn error_code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or_default()
}

/// Uploads a guest as the tenant's developer and puts a policy as its operator; returns the hash.
pub async fn install(state: &AppState, tenant: &str, guest: &str, policy: &str) -> String {
    let (status, module) =
        Call::as_(state, tenant, Role::Developer).send("POST", "/v1/modules", std::fs::read(guest).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let hash = module["hash"].as_str().unwrap().to_string();
    let (status, body) = Call::as_(state, tenant, Role::Operator)
        .send("PUT", &format!("/v1/modules/{hash}/policy"), policy.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    hash
}

pub const BANK_POLICY: &str = "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n";

/// Polls a transaction until it is no longer pending (at most 5 s).
pub async fn poll(client: &Call<'_>, id: &str) -> Value {
    for _ in 0..500 {
        let (status, view) = client.send("GET", &format!("/v1/transactions/{id}"), Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{id}: {view}");
        if view["status"] != "pending" {
            return view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("transaction {id} still pending after 5 s");
}

/// Leaves in the catalog file what an older build left there for a
/// transaction accepted and not ended when its process died: the
/// `pending` table, which the service moves into the tenants' stores.
#[allow(dead_code, reason = "not every test binary leaves legacy entries")]
pub fn leave_legacy_pending(data_dir: &Path, tenant: &str, id: &str, pending: &txmirror_service::lifecycle::PendingTx) {
    let catalog = redb::Database::create(data_dir.join("catalog.redb")).unwrap();
    let txn = catalog.begin_write().unwrap();
    let legacy: redb::TableDefinition<'_, (&str, &str), &[u8]> = redb::TableDefinition::new("pending");
    let bytes = serde_json::to_vec(pending).unwrap();
    txn.open_table(legacy).unwrap().insert((tenant, id), bytes.as_slice()).unwrap();
    txn.commit().unwrap();
}

/// Opens transaction `id`'s status stream (`/v1/transactions/{id}/events`)
/// as a client of `acme`.
pub async fn open_status_stream(state: &AppState, id: &str) -> axum::response::Response {
    let request = Request::get(format!("/v1/transactions/{id}/events"))
        .header("authorization", format!("Bearer {}", token("acme", Role::Client)))
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Every `status` event of an open status stream until it ends (within 30 s).
pub async fn status_events(response: axum::response::Response) -> Vec<Value> {
    let body = tokio::time::timeout(std::time::Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("the stream ends when the transaction does")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|block| !block.trim().is_empty() && !block.starts_with(':')) {
        assert!(block.starts_with("event: status\n"), "{block}");
        let data = block.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
        events.push(serde_json::from_str(data).unwrap());
    }
    events
}
