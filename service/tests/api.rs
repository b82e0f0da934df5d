//! The API through `app().oneshot(...)`: no socket, the real runtime and
//! store, real guests built from source.

#![allow(clippy::unwrap_used, reason = "tests")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use txmirror_service::{AppState, app};
use txmirror_tests::guests;

async fn call(state: &AppState, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    call_with(state, Request::builder().method(method).uri(uri), body).await
}

async fn call_with(
    state: &AppState,
    request: axum::http::request::Builder,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let response = app(state.clone()).oneshot(request.body(body.into()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn error_code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_policies_and_transactions_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(txmirror_tests::runtime(dir.path()));
    assert_eq!(call(&state, "GET", "/healthz", Body::empty()).await, (StatusCode::OK, json!("ok")));
    assert_eq!(call(&state, "GET", "/readyz", Body::empty()).await.0, StatusCode::OK);

    // A module that is not one is refused, saying why.
    let (status, body) = call(&state, "POST", "/v1/modules", "garbage").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "module_refused"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not a WebAssembly file"), "{body}");

    let wasm = std::fs::read(guests::BANK_TRANSFER).unwrap();
    let (status, module) = call(&state, "POST", "/v1/modules", wasm).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let hash = module["hash"].as_str().unwrap().to_string();
    assert!(module["paths"].as_array().unwrap().contains(&json!("deposit")), "{module}");
    assert_eq!(module["has_policy"], false);
    let (_, listed) = call(&state, "GET", "/v1/modules", Body::empty()).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(call(&state, "GET", &format!("/v1/modules/{hash}"), Body::empty()).await.1, module);
    let (status, body) = call(&state, "GET", "/v1/modules/0000", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // No transaction without a policy; a bad policy is refused with its key.
    let submit = format!("/v1/modules/{hash}/transactions");
    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 5 } }).to_string();
    let (status, body) = call(&state, "POST", &submit, deposit.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "no_policy"), "{body}");
    let policy_uri = format!("/v1/modules/{hash}/policy");
    let (status, body) = call(&state, "PUT", &policy_uri, "[resource_requirements]\nfuel = 0\n").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "policy_refused"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("resource_requirements.fuel"), "{body}");
    let (status, body) = call(&state, "PUT", &policy_uri, "[capabilities]\nkv = { accounts = \"read-write\" }\n").await;
    assert_eq!((status, body["has_policy"].clone()), (StatusCode::OK, json!(true)), "{body}");

    // Malformed and unknown requests.
    for bad in ["{", r#"{"input": {}, "pathh": "deposit"}"#, "[]"] {
        let (status, body) = call(&state, "POST", &submit, bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }
    let (status, body) = call(&state, "POST", &submit, json!({ "path": "steal", "input": {} }).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    let huge = vec![b' '; txmirror_service::MAX_REQUEST_BYTES + 1];
    let (status, body) = call(&state, "POST", &submit, huge).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{body}");

    // A transaction, and its durable record.
    let (status, report) = call(&state, "POST", &submit, deposit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["outcome"]["status"], "committed", "{report}");
    let id = report["transaction_id"].as_str().unwrap();
    let (status, record) = call(&state, "GET", &format!("/v1/transactions/{id}"), Body::empty()).await;
    assert_eq!((status, record["path"].clone()), (StatusCode::OK, json!("deposit")), "{record}");
    let (status, body) = call(&state, "GET", "/v1/transactions/nope", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // The same Idempotency-Key twice: one execution, the same answer.
    let keyed = || Request::builder().method("POST").uri(&submit).header("idempotency-key", "dep-1");
    let (_, first) = call_with(&state, keyed(), deposit.clone()).await;
    let (_, second) = call_with(&state, keyed(), deposit).await;
    assert_eq!(first["transaction_id"], second["transaction_id"]);
    assert_eq!((first["deduplicated"].clone(), second["deduplicated"].clone()), (json!(false), json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_queue_and_the_model_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(txmirror_tests::runtime(dir.path()));
    let (_, module) = call(&state, "POST", "/v1/modules", std::fs::read(guests::RUNAWAY).unwrap()).await;
    let hash = module["hash"].as_str().unwrap().to_string();
    let policy = "[retry]\nmax_attempts = 1\n";
    assert_eq!(call(&state, "PUT", &format!("/v1/modules/{hash}/policy"), policy).await.0, StatusCode::OK);
    let submit = format!("/v1/modules/{hash}/transactions");
    let body = json!({ "path": "panic", "input": {}, "transaction_id": "doomed" }).to_string();
    let (status, report) = call(&state, "POST", &submit, body).await;
    assert_eq!((status, report["failure"]["kind"].clone()), (StatusCode::OK, json!("guest_trap")), "{report}");

    let (status, letters) = call(&state, "GET", "/v1/dlq", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(letters[0]["transaction_id"], "doomed", "{letters}");
    assert_eq!(letters[0]["attempts"], 1);
    let (status, letter) = call(&state, "GET", "/v1/dlq/doomed", Body::empty()).await;
    assert_eq!((status, letter["path"].clone()), (StatusCode::OK, json!("panic")), "{letter}");
    let (status, replayed) = call(&state, "POST", "/v1/dlq/doomed/replay", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["failure"]["kind"], "guest_trap", "the fault is still there: {replayed}");
    let (status, body) = call(&state, "POST", "/v1/dlq/nope/replay", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    assert_eq!(call(&state, "DELETE", "/v1/dlq/doomed", Body::empty()).await.0, StatusCode::NO_CONTENT);
    let (status, body) = call(&state, "DELETE", "/v1/dlq/doomed", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // No model configured: said plainly, and a reload has nothing to load.
    let (status, model) = call(&state, "GET", "/v1/model", Body::empty()).await;
    assert_eq!((status, model["configured"].clone()), (StatusCode::OK, json!(false)));
    let (status, body) = call(&state, "POST", "/v1/model/reload", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_model_is_shown_and_reloaded_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = txmirror_tests::config(dir.path());
    config.model = Some(txmirror_runtime::ModelConfig {
        reload_interval: None,
        ..txmirror_runtime::ModelConfig::new(txmirror_tests::models::PLACEHOLDER)
    });
    let state = AppState::new(txmirror_runtime::Runtime::open(config).unwrap());
    let (status, model) = call(&state, "GET", "/v1/model", Body::empty()).await;
    assert_eq!((status, model["configured"].clone()), (StatusCode::OK, json!(true)), "{model}");
    assert_eq!(model["model"]["name"], "placeholder");
    let (status, reloaded) = call(&state, "POST", "/v1/model/reload", Body::empty()).await;
    assert_eq!((status, reloaded["reloaded"].clone()), (StatusCode::OK, json!("unchanged")), "{reloaded}");
}
