//! The hosts' circuit breakers through the API and the metrics: a host
//! that failed opens its breaker on the node that called it, and only
//! operators see it.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{Call, error_code, install, open};
use serde_json::json;
use txmirror_service::Role::{Client, Operator};
use txmirror_tests::{Behaviour, TestServer, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_shows_in_the_api_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = TestServer::start(Behaviour { status: 503, body: "down".into(), ..Default::default() }).await;
    let policy = format!(
        "{}[[breaker.hosts]]\nhost = \"{}\"\nfailures = 2\nopen_ms = 600000\n",
        txmirror_tests::payment_grants(&gateway.url(), &gateway.url()),
        gateway.authority()
    );
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let operator = Call::as_(state, "acme", Operator);
    let (status, none) = operator.send("GET", "/v1/breakers", Body::empty()).await;
    assert_eq!((status, none), (StatusCode::OK, json!([])), "no host called yet");

    let body = json!({ "path": "charge", "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } });
    let (_, report) = Call::as_(state, "acme", Client)
        .send("POST", &format!("/v1/modules/{hash}/transactions"), body.to_string())
        .await;
    assert_eq!(report["outcome"]["status"], "failed", "{report}");
    let (status, breakers) = operator.send("GET", "/v1/breakers", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{breakers}");
    let breaker = &breakers[0];
    assert_eq!(
        (breaker["host"].as_str(), breaker["state"].as_str()),
        (Some(gateway.authority().as_str()), Some("open"))
    );
    assert!(breaker["opens_in_ms"].as_u64().unwrap() > 500_000, "{breaker}");
    assert_eq!(breaker["node"], state.node().id.as_str());
    let (_, metrics) = operator.send("GET", "/metrics", Body::empty()).await;
    let line = format!("txmirror_breaker_state{{host=\"{}\"}} 1", gateway.authority());
    assert!(metrics.as_str().unwrap().contains(&line), "{line} missing from {metrics}");

    let (status, body) = Call::as_(state, "acme", Client).send("GET", "/v1/breakers", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{body}");
    let (_, theirs) = Call::as_(state, "globex", Operator).send("GET", "/v1/breakers", Body::empty()).await;
    assert_eq!(theirs, json!([]), "another tenant's runtime has its own breakers");
}
