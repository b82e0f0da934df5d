//! The service on PostgreSQL (`[store] url`): each tenant's state in a
//! schema of its own in one database, kept across a restart, and a
//! database that cannot be reached refused at start with a clear error.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{BANK_POLICY, Call, install, open};
use serde_json::json;
use txmirror_service::{OpenError, Role, Service};
use txmirror_tests::guests;
use txmirror_tests::postgres::TestPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keep_their_state_apart_in_one_database_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let mut config = common::config(dir.path());
    config.store.url = Some(server.fresh_database());

    let service = open(&config).await;
    let state = &service.state;
    let mut ids = Vec::new();
    for (tenant, amount) in [("acme", 5), ("globex", 7)] {
        let hash = install(state, tenant, guests::BANK_TRANSFER, BANK_POLICY).await;
        let body = json!({ "path": "deposit", "input": { "account": "a", "amount": amount } });
        let (status, report) = Call::as_(state, tenant, Role::Client)
            .send("POST", &format!("/v1/modules/{hash}/transactions"), body.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert!(report["failure"].is_null(), "{report}");
        ids.push(report["transaction_id"].as_str().unwrap().to_string());
    }
    // One tenant never sees the other's transaction.
    let (status, _) = Call::as_(state, "globex", Role::Client)
        .send("GET", &format!("/v1/transactions/{}", ids[0]), Body::empty())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(service);

    // Started again on the same database, each tenant finds its own.
    let service = open(&config).await;
    for (tenant, id) in [("acme", &ids[0]), ("globex", &ids[1])] {
        let (status, view) = Call::as_(&service.state, tenant, Role::Client)
            .send("GET", &format!("/v1/transactions/{id}"), Body::empty())
            .await;
        assert_eq!((status, view["status"].as_str()), (StatusCode::OK, Some("committed")), "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let mut config = common::config(dir.path());
    config.store.url = Some(server.fresh_database());
    server.stop();
    let error = Service::open(&config).await.expect_err("refused");
    assert!(matches!(error, OpenError::Runtime { .. }), "{error:?}");
    let chain = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(chain.contains("127.0.0.1"), "{chain}");

    config.store.url = Some("mysql://nowhere".into());
    let error = Service::open(&config).await.expect_err("refused");
    assert!(error.to_string().contains("PostgreSQL URL"), "{error}");
}

/// A catalog migrated by a newer build is refused at start, naming the
/// database, its schema and both versions; nothing is served from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_of_a_newer_schema_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let mut config = common::config(dir.path());
    config.store.url = Some(url.clone());
    drop(open(&config).await);
    server.sql(&url, "UPDATE txm_catalog.txm_schema SET version = 99");
    let error = Service::open(&config).await.expect_err("refused");
    let message = format!("{error}: {}", error_chain(&error));
    assert!(message.contains("txm_catalog") && message.contains("format 99"), "{message}");
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cause = error.source();
    while let Some(error) = cause {
        out.push_str(&format!("{error}; "));
        cause = error.source();
    }
    out
}

/// Two nodes on one database: a request whose idempotency key the other
/// node holds for the same request answers with the other's transaction;
/// for a different request (another amount), it is refused, whether the
/// holder is still in flight or already recorded.
/// Two nodes of one service on a fresh database of `server`, each with its
/// own data directory (kept while the first value lives).
async fn two_nodes(server: &TestPostgres) -> ([tempfile::TempDir; 2], Service, Service) {
    let url = server.fresh_database();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = Vec::new();
    for dir in &dirs {
        let mut config = common::config(dir.path());
        config.store.url = Some(url.clone());
        nodes.push(open(&config).await);
    }
    let node_b = nodes.pop().unwrap();
    let node_a = nodes.pop().unwrap();
    (dirs, node_a, node_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_on_another_node_answers_the_same_request_and_refuses_another() {
    let server = TestPostgres::start();
    let (_dirs, node_a, node_b) = two_nodes(&server).await;
    assert_ne!(node_a.state.node().id, node_b.state.node().id);
    let hash = install(&node_a.state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let submit = |state, key: &str, amount: u64| {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/v1/modules/{hash}/transactions"))
            .header("idempotency-key", key)
            .header("prefer", "respond-async");
        let body = json!({ "path": "deposit", "input": { "account": key, "amount": amount } }).to_string();
        async move { Call::as_(state, "acme", Role::Client).send_with(request, body).await }
    };
    for n in 0..5 {
        let key = format!("shared-{n}");
        let (status, first) = submit(&node_a.state, &key, 1).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{first}");
        let (status, again) = submit(&node_b.state, &key, 1).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(again["transaction_id"], first["transaction_id"], "the same transaction");
        let (status, other) = submit(&node_b.state, &key, 2).await;
        assert_eq!(
            (status, other["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
            "{other}"
        );
    }
}

/// Streams on PostgreSQL: a page from an offset, a consumer group whose
/// acknowledged offset survives a restart, each tenant's streams its own,
/// and the predicted view beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_consumer_groups_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestPostgres::start();
    let mut config = common::config(dir.path());
    config.store.url = Some(server.fresh_database());
    let service = open(&config).await;
    let state = &service.state;
    let client = Call::as_(state, "acme", Role::Client);
    let mirrored = format!("failure_prediction_enabled = true\n{BANK_POLICY}");
    let hash = install(state, "acme", guests::BANK_TRANSFER, &mirrored).await;
    let submit = format!("/v1/modules/{hash}/transactions");
    for account in ["a", "b"] {
        let body = json!({ "path": "deposit", "input": { "account": account, "amount": 100 } });
        assert_eq!(client.send("POST", &submit, body.to_string()).await.0, StatusCode::OK);
    }
    for amount in 1..=4 {
        let body = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": amount } });
        let (status, report) = client.send("POST", &submit, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
    }
    let (_, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    let offsets: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets.len(), 4, "{page}");
    assert_eq!(page["events"][3]["payload"]["amount"], 4);
    let ack = json!({ "offset": offsets[1] }).to_string();
    let (status, body) = client.send("POST", "/v1/streams/transfers/groups/audit/ack", ack).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, predicted) = client.send("GET", "/v1/streams/transfers/events?view=predicted", Body::empty()).await;
    let kinds: Vec<&str> =
        predicted["notices"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "confirmed").count(), 4, "{predicted}");
    let (_, theirs) =
        Call::as_(state, "globex", Role::Client).send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!(theirs["events"], json!([]), "another tenant's stream of the same name is its own");
    drop(service);

    // Started again on the same database, the group goes on from its offset.
    let service = open(&config).await;
    let (_, page) = Call::as_(&service.state, "acme", Role::Client)
        .send("GET", "/v1/streams/transfers/events?group=audit", Body::empty())
        .await;
    let rest: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(rest, offsets[2..]);
}

/// A cancel is kept by the node that runs the transaction: another node
/// refuses it naming that node; the node that runs it stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_node_names_the_node_that_runs_it() {
    use txmirror_tests::{Behaviour, TestServer};
    let server = TestPostgres::start();
    let (_dirs, node_a, node_b) = two_nodes(&server).await;
    let delay = std::time::Duration::from_secs(2);
    let gateway = TestServer::start(Behaviour {
        status: 201,
        body: r#"{"charge_id": "ch_1"}"#.into(),
        delay,
        ..Default::default()
    })
    .await;
    let policy = txmirror_tests::payment_grants(&gateway.url(), &gateway.url());
    let hash = install(&node_a.state, "acme", guests::PAYMENT, &policy).await;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(format!("/v1/modules/{hash}/transactions"))
        .header("prefer", "respond-async");
    let body = json!({ "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } }).to_string();
    let (status, accepted) = Call::as_(&node_a.state, "acme", Role::Client).send_with(request, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["transaction_id"].as_str().unwrap();
    let cancel = format!("/v1/transactions/{id}/cancel");

    let (status, refused) = Call::as_(&node_b.state, "acme", Role::Client).send("POST", &cancel, Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains(&node_a.state.node().id), "names the node that runs it: {message}");

    let (status, answer) = Call::as_(&node_a.state, "acme", Role::Client).send("POST", &cancel, Body::empty()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    for _ in 0..600 {
        let (_, view) = Call::as_(&node_b.state, "acme", Role::Client)
            .send("GET", &format!("/v1/transactions/{id}"), Body::empty())
            .await;
        if view["status"] != "pending" {
            assert_eq!(view["record"]["outcome"]["kind"], "cancelled_by_caller", "{view}");
            assert!(gateway.received().iter().all(|r| r.method != "POST"), "nothing charged");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("transaction {id} did not end");
}
