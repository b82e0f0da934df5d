//! A client follows its transaction over Server-Sent Events: its status at
//! once, then each change, and the stream ends when the transaction does.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Call, install, open};
use serde_json::{Value, json};
use std::time::Duration;
use txmirror_service::AppState;
use txmirror_service::Role::{Client, Developer};
use txmirror_tests::{Behaviour, TestServer, guests};

/// Every `status` event of the transaction's stream until it ends.
async fn follow(state: &AppState, id: &str) -> Vec<Value> {
    common::status_events(common::open_status_stream(state, id).await).await
}

/// A payment gateway that charges after `delay`.
async fn slow_gateway(delay: Duration) -> TestServer {
    TestServer::start(Behaviour { status: 201, body: r#"{"charge_id": "ch_1"}"#.into(), delay, ..Default::default() })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_its_transaction_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = slow_gateway(Duration::from_millis(400)).await;
    let policy = txmirror_tests::payment_grants(&gateway.url(), &gateway.url());
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let submit = Request::post(format!("/v1/modules/{hash}/transactions")).header("prefer", "respond-async");
    let input = json!({ "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } });
    let (status, accepted) = Call::as_(state, "acme", Client).send_with(submit, input.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["transaction_id"].as_str().unwrap();

    let events = follow(state, id).await;
    // Pending (once at first, again when its one attempt starts, if the
    // first event came before it), then committed.
    let statuses: Vec<&str> = events.iter().map(|e| e["status"].as_str().unwrap()).collect();
    let (last, pending) = statuses.split_last().unwrap();
    assert_eq!(*last, "committed", "{events:?}");
    assert!(!pending.is_empty() && pending.len() <= 2 && pending.iter().all(|s| *s == "pending"), "{events:?}");
    for event in &events[..pending.len()] {
        assert!(event.get("attempt").is_none_or(|attempt| *attempt == 1), "{event}");
    }
    let ended = events.last().unwrap();
    assert_eq!(ended["path"], "charge");
    assert_eq!(ended["attempts"], 1);
    assert_eq!(events[0]["transaction_id"], id);

    // An ended transaction: one event, and the stream ends.
    let again = follow(state, id).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["status"], "committed");

    let (status, _) = Call::as_(state, "acme", Client).send("GET", "/v1/transactions/nope/events", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        Call::as_(state, "acme", Developer).send("GET", &format!("/v1/transactions/{id}/events"), Body::empty()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        Call::as_(state, "globex", Client).send("GET", &format!("/v1/transactions/{id}/events"), Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's transaction is not there");
}

/// The policy's phases: past `delayed_after_ms` the status stream says the
/// transaction is `delayed`; past `background_after_ms` a synchronous
/// submission stops waiting and is answered `202`, and the transaction
/// goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_transaction_is_delayed_then_goes_on_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway = slow_gateway(Duration::from_millis(1500)).await;
    let policy = format!(
        "{}[phases]\ndelayed_after_ms = 200\nbackground_after_ms = 500\n",
        txmirror_tests::payment_grants(&gateway.url(), &gateway.url())
    );
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let input = json!({ "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } });
    let started = std::time::Instant::now();
    let (status, accepted) = Call::as_(state, "acme", Client)
        .send("POST", &format!("/v1/modules/{hash}/transactions"), input.to_string())
        .await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["background"], true, "{accepted}");
    assert!(waited >= Duration::from_millis(500), "answered before the background phase: {waited:?}");
    let id = accepted["transaction_id"].as_str().unwrap();
    let events = follow(state, id).await;
    let statuses: Vec<&str> = events.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["delayed", "committed"], "{events:?}");
    assert!(events[0]["delayed_ms"].as_u64().unwrap() >= 200, "{events:?}");
    assert_eq!(gateway.received().iter().filter(|r| r.method == "POST").count(), 1, "charged once");

    // Phases that cannot hold are refused with the policy.
    let (status, body) = Call::as_(state, "acme", txmirror_service::Role::Operator)
        .send(
            "PUT",
            &format!("/v1/modules/{hash}/policy"),
            format!("{policy}\n").replace("background_after_ms = 500", "background_after_ms = 100"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("phases.delayed_after_ms"), "{body}");
}

/// While the transaction runs on the node that answers, each new attempt is
/// an event of its own, with its number and path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_is_told_as_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let failing =
        Behaviour { status: 503, body: "down".into(), delay: Duration::from_millis(400), ..Default::default() };
    let primary = TestServer::start(failing).await;
    let backup = slow_gateway(Duration::from_millis(400)).await;
    let policy = format!(
        "alternative_paths = [\"charge-backup\"]\n[retry]\nmax_attempts = 1\n{}",
        txmirror_tests::payment_grants(&primary.url(), &backup.url())
    );
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let submit = Request::post(format!("/v1/modules/{hash}/transactions")).header("prefer", "respond-async");
    let input = json!({ "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } });
    let (status, accepted) = Call::as_(state, "acme", Client).send_with(submit, input.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let events = follow(state, accepted["transaction_id"].as_str().unwrap()).await;
    let attempts: Vec<(u64, &str)> = events
        .iter()
        .filter(|event| event["status"] == "pending")
        .map(|event| (event["attempt"].as_u64().unwrap_or(0), event["attempt_path"].as_str().unwrap_or("")))
        .collect();
    assert!(attempts.contains(&(1, "charge")), "{events:?}");
    assert!(attempts.iter().any(|(n, path)| *n >= 2 && *path == "charge-backup"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!((last["status"].as_str(), last["path"].as_str()), (Some("committed"), Some("charge-backup")));
    assert!(last.get("attempt").is_none(), "an ended transaction has no attempt in progress: {last}");
}
