//! Idempotency keys through the API, as clients use them: both routes at
//! once, repeats naming the same transaction id, keys reused for another
//! request, and a repeat that a crash leaves pending.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{BANK_POLICY, Call, error_code, install, open, poll};
use serde_json::json;
use txmirror_service::Role::{Client, Operator};
use txmirror_service::lifecycle::PendingTx;
use txmirror_tests::guests;

fn deposit(account: &str, amount: u64) -> String {
    json!({ "path": "deposit", "input": { "account": account, "amount": amount } }).to_string()
}

/// A submission to a module with an idempotency key.
fn submission(hash: &str, key: &str) -> axum::http::request::Builder {
    Request::builder().method("POST").uri(format!("/v1/modules/{hash}/transactions")).header("idempotency-key", key)
}

/// Ids of the tenant's transactions, newest first.
async fn listed(client: &Call<'_>) -> Vec<String> {
    let (status, list) = client.send("GET", "/v1/transactions?limit=500", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["transactions"].as_array().unwrap().iter().map(|t| t["transaction_id"].as_str().unwrap().into()).collect()
}

/// Bug: only the asynchronous route checked the key before accepting, so a
/// synchronous and an asynchronous request with one key at once gave the
/// asynchronous one an id of its own that answered 404 forever, while the
/// deposit ran under the synchronous request's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_and_an_asynchronous_request_with_one_key_get_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    for round in 0..10 {
        let key = format!("both-routes-{round}");
        let sync = submission(&hash, &key);
        let later = submission(&hash, &key).header("prefer", "respond-async");
        let client = Call::as_(state, "acme", Client);
        let ((sync_status, report), (async_status, accepted)) =
            tokio::join!(client.send_with(sync, deposit("a", 1)), client.send_with(later, deposit("a", 1)));
        assert_eq!((sync_status, async_status), (StatusCode::OK, StatusCode::ACCEPTED), "{report} {accepted}");
        assert_eq!(report["transaction_id"], accepted["transaction_id"], "one transaction: {report} {accepted}");
        let id = accepted["transaction_id"].as_str().unwrap();
        assert_eq!(poll(&client, id).await["status"], "committed");
    }
    assert_eq!(listed(&Call::as_(state, "acme", Client)).await.len(), 10, "one transaction per key");
}

/// Bug: a retry with the same key and the same client-chosen transaction id
/// was answered 409 "already exists" instead of the transaction's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_naming_the_same_transaction_id_gets_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let client = Call::as_(state, "acme", Client);
    let keyed = || submission(&hash, "k");
    let body = json!({ "path": "deposit", "input": { "account": "a", "amount": 4 }, "transaction_id": "mine-1" });
    let (status, first) = client.send_with(keyed(), body.to_string()).await;
    assert_eq!((status, first["deduplicated"].clone()), (StatusCode::OK, json!(false)), "{first}");
    let (status, again) = client.send_with(keyed(), body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!((again["transaction_id"].clone(), again["deduplicated"].clone()), (json!("mine-1"), json!(true)));
    assert_eq!(again["outcome"], first["outcome"]);
    // Without the key, the same id is still a conflict.
    let (status, body) = client.send("POST", &format!("/v1/modules/{hash}/transactions"), body.to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"), "{body}");
}

/// Bug: a key reused with another input was answered with the first
/// request's outcome, so the client believed its own request had run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_refused_on_both_routes() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let client = Call::as_(state, "acme", Client);
    let keyed = || submission(&hash, "k1");
    let (status, first) = client.send_with(keyed(), deposit("alice", 5)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for other in [
        deposit("bob", 5),
        deposit("alice", 6),
        json!({ "path": "balance", "input": { "account": "alice", "amount": 5 } }).to_string(),
    ] {
        let (status, body) = client.send_with(keyed(), other.clone()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"), "{body}");
        let (status, body) = client.send_with(keyed().header("prefer", "respond-async"), other).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"), "{body}");
    }
    assert_eq!(listed(&client).await, [first["transaction_id"].as_str().unwrap()], "nothing else was accepted");
}

/// Bug: with `[recovery] in_flight = "dead_letter"`, a repeat of a recorded
/// key left pending by a crash was dead-lettered at the next start as
/// "interrupted, nothing was committed" although its key's transaction had
/// committed, and replaying that letter deposited a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_repeat_of_a_committed_key_is_not_dead_lettered_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let policy = format!("{BANK_POLICY}[recovery]\nin_flight = \"dead_letter\"\n");
    let (hash, first) = {
        let service = open(&config).await;
        let hash = install(&service.state, "acme", guests::BANK_TRANSFER, &policy).await;
        let keyed = submission(&hash, "once");
        let (status, first) = Call::as_(&service.state, "acme", Client).send_with(keyed, deposit("a", 9)).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        (hash, first)
    };
    // What the old synchronous route of an older build left behind for a
    // repeat when the process died: an acceptance of its own, with the
    // bound key. Moved into the store at the start, it is refused there:
    // the key is bound.
    let pending = PendingTx {
        module: hash.clone(),
        path: Some("deposit".into()),
        input: json!({ "account": "a", "amount": 9 }),
        idempotency_key: Some("once".into()),
        caller: None,
        profile: None,
        notify: None,
        accepted_unix_ms: 1,
    };
    common::leave_legacy_pending(&config.data_dir, "acme", "repeat", &pending);
    let service = open(&config).await;
    let state = &service.state;
    assert_eq!(service.recovered, 0);
    let operator = Call::as_(state, "acme", Operator);
    for _ in 0..500 {
        if listed(&Call::as_(state, "acme", Client)).await.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, letters) = operator.send("GET", "/v1/dlq", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{letters}");
    assert_eq!(letters.as_array().map(Vec::len), Some(0), "nothing to replay: {letters}");
    let ids = listed(&Call::as_(state, "acme", Client)).await;
    assert_eq!(ids, [first["transaction_id"].as_str().unwrap()], "the repeat was the first transaction");
}
