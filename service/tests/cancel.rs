//! A caller cancels its transaction (`POST /v1/transactions/{id}/cancel`):
//! before the first unsafe call nothing is sent and nothing committed;
//! after it, the charge that was sent is refunded by the compensation path,
//! told what was sent; either way the transaction ends
//! `cancelled_by_caller`, without a dead letter.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Call, install, open};
use serde_json::{Value, json};
use std::time::Duration;
use txmirror_service::AppState;
use txmirror_service::Role::{Client, Developer, Operator};
use txmirror_tests::{Behaviour, Received, TestServer, guests};

/// A payment gateway that answers every request (its health check, a
/// charge, a refund) after `delay`.
async fn slow_gateway(delay: Duration) -> TestServer {
    TestServer::start(Behaviour { status: 201, body: r#"{"charge_id": "ch_1"}"#.into(), delay, ..Default::default() })
        .await
}

/// The payment policy with its compensation path.
fn policy(gateway: &TestServer) -> String {
    format!("compensation_path = \"refund\"\n{}", txmirror_tests::payment_grants(&gateway.url(), &gateway.url()))
}

/// Submits a charge for `order` and answers its id, without waiting.
async fn submit(state: &AppState, hash: &str, order: &str) -> String {
    let submit = Request::post(format!("/v1/modules/{hash}/transactions")).header("prefer", "respond-async");
    let input = json!({ "input": { "order_id": order, "amount_cents": 100, "currency": "EUR" } });
    let (status, accepted) = Call::as_(state, "acme", Client).send_with(submit, input.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    accepted["transaction_id"].as_str().unwrap().to_string()
}

/// Waits (at most 20 s) until the gateway has received a request `wanted` picks.
async fn until_received(gateway: &TestServer, wanted: impl Fn(&Received) -> bool) {
    for _ in 0..400 {
        if gateway.received().iter().any(&wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never received the request: {:?}", gateway.received());
}

/// The transaction once it has ended (at most 30 s).
async fn ended(state: &AppState, id: &str) -> Value {
    for _ in 0..600 {
        let (status, view) =
            Call::as_(state, "acme", Client).send("GET", &format!("/v1/transactions/{id}"), Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if view["status"] != "pending" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transaction {id} did not end");
}

fn posts_to(gateway: &TestServer, path: &str) -> usize {
    gateway.received().iter().filter(|r| r.method == "POST" && r.uri == path).count()
}

async fn cancel(state: &AppState, tenant: &str, role: txmirror_service::Role, id: &str) -> (StatusCode, Value) {
    Call::as_(state, tenant, role).send("POST", &format!("/v1/transactions/{id}/cancel"), Body::empty()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_charge_sends_nothing_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    // The health check, a safe call made before the charge, waits 2 s.
    let gateway = slow_gateway(Duration::from_secs(2)).await;
    let hash = install(state, "acme", guests::PAYMENT, &policy(&gateway)).await;
    let id = submit(state, &hash, "o-early").await;
    until_received(&gateway, |r| r.method == "GET").await;

    let (status, answer) = cancel(state, "acme", Client, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!((answer["transaction_id"].as_str(), answer["status"].as_str()), (Some(id.as_str()), Some("cancelling")));
    assert_eq!(answer["attempt"], 1, "{answer}");
    // Asked again while it stops: the same answer.
    let (status, _) = cancel(state, "acme", Client, &id).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT, "{status}");

    let view = ended(state, &id).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["dead_lettered"], false, "a cancelled transaction is not dead-lettered: {view}");
    assert_eq!(view["record"]["outcome"]["kind"], "cancelled_by_caller", "{view}");
    assert_eq!(view["record"]["attempts"].as_array().unwrap().len(), 1, "no attempt after the cancel: {view}");
    assert_eq!(posts_to(&gateway, "/charges"), 0, "nothing charged: {:?}", gateway.received());
    assert_eq!(posts_to(&gateway, "/refunds"), 0, "nothing to refund: {:?}", gateway.received());
    // Nothing sent, so nothing to compensate.
    let (status, _) = Call::as_(state, "acme", Client)
        .send("GET", &format!("/v1/transactions/{id}.compensation"), Body::empty())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An ended transaction has nothing to cancel.
    let (status, body) = cancel(state, "acme", Client, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has ended (failed)"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_the_charge_refunds_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = slow_gateway(Duration::from_millis(1500)).await;
    let hash = install(state, "acme", guests::PAYMENT, &policy(&gateway)).await;
    let id = submit(state, &hash, "o-late").await;
    // The charge is in flight (its answer comes 1.5 s after it was sent):
    // it is not abandoned, and the attempt does not commit.
    until_received(&gateway, |r| r.method == "POST" && r.uri == "/charges").await;
    let (status, answer) = cancel(state, "acme", Operator, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "an operator may cancel too: {answer}");

    let view = ended(state, &id).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["dead_lettered"], false, "{view}");
    let failed = &view["record"]["outcome"];
    assert_eq!(failed["kind"], "cancelled_by_caller", "{view}");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains(&format!("compensated by {id}.compensation (committed)")), "{message}");
    assert_eq!(posts_to(&gateway, "/charges"), 1, "charged once: {:?}", gateway.received());
    // The refund names the charge the gateway's answer gave.
    let refunds: Vec<Received> =
        gateway.received().into_iter().filter(|r| r.method == "POST" && r.uri == "/refunds").collect();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let refund: Value = serde_json::from_slice(&refunds[0].body).unwrap();
    assert_eq!(refund["charge_id"], "ch_1", "{refund}");
    let (status, compensation) = Call::as_(state, "acme", Client)
        .send("GET", &format!("/v1/transactions/{id}.compensation"), Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK, "{compensation}");
    assert_eq!(compensation["status"], "committed", "{compensation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_refused_where_there_is_nothing_to_cancel_or_no_right_to() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = slow_gateway(Duration::from_millis(800)).await;
    let hash = install(state, "acme", guests::PAYMENT, &policy(&gateway)).await;
    let id = submit(state, &hash, "o-kept").await;

    let (status, _) = cancel(state, "acme", Developer, &id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a developer does not cancel transactions");
    let (status, _) = cancel(state, "globex", Client, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's transaction is not there");
    let (status, _) = cancel(state, "acme", Client, "no-such-transaction").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = cancel(state, "acme", Client, "bad%20id").await;
    assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND, "{status} {body}");

    // None of those touched it: it commits.
    let view = ended(state, &id).await;
    assert_eq!(view["status"], "committed", "{view}");
    assert_eq!(posts_to(&gateway, "/charges"), 1);
    let (status, body) = cancel(state, "acme", Client, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has ended (committed)"), "{body}");
}

/// The status stream says `cancelling` once the cancel is asked for, until
/// the transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_stream_tells_the_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = slow_gateway(Duration::from_secs(1)).await;
    let hash = install(state, "acme", guests::PAYMENT, &policy(&gateway)).await;
    let id = submit(state, &hash, "o-followed").await;
    // Cancelled with the charge in flight, which is waited for (a second):
    // the transaction is `cancelling` all that time.
    until_received(&gateway, |r| r.method == "POST" && r.uri == "/charges").await;
    let stream = common::open_status_stream(state, &id).await;
    let (status, _) = cancel(state, "acme", Client, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events = common::status_events(stream).await;
    let statuses: Vec<&str> = events.iter().map(|event| event["status"].as_str().unwrap()).collect();
    let text = format!("{statuses:?}");
    assert_eq!(statuses.first(), Some(&"pending"), "{text}");
    assert_eq!(statuses.last(), Some(&"failed"), "{text}");
    let cancelling = statuses.iter().position(|s| *s == "cancelling").expect(&text);
    assert!(statuses[..cancelling].iter().all(|s| *s == "pending"), "{text}");
    assert!(statuses[cancelling..statuses.len() - 1].iter().all(|s| *s == "cancelling"), "{text}");
}
