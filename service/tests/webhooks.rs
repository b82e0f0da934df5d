//! The webhook relay, with a real receiver on 127.0.0.1: events committed
//! while it is down reach it once it is up, each signed and with an id it
//! deduplicates by; an event it refuses to the end is parked and replayed
//! by an operator; bad configurations are refused at start.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::receiver::{Receiver, SECRET};
use common::{BANK_POLICY, Call, error_code, install, open};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use txmirror_service::Role::{Client, Operator};
use txmirror_service::{AppState, ServiceConfig, WebhookConfig};
use txmirror_tests::guests;
use txmirror_tests::postgres::TestPostgres;

/// A webhook of tenant `acme` on the stream `transfers`, quick to retry.
fn webhook(url: &str) -> WebhookConfig {
    let text = format!(
        r#"
        name = "billing"
        tenant = "acme"
        url = "{url}"
        streams = ["transfers"]
        secret = "{SECRET}"
        timeout_ms = 2000
        max_attempts = 1000
        backoff_ms = 20
        max_backoff_ms = 200
        breaker_failures = 3
        breaker_open_ms = 300
        "#
    );
    toml::from_str(&text).unwrap()
}

/// Commits `amounts.len()` transfers, one of each amount.
async fn transfer(state: &AppState, hash: &str, amounts: impl IntoIterator<Item = u64>) {
    let client = Call::as_(state, "acme", Client);
    let submit = format!("/v1/modules/{hash}/transactions");
    for amount in amounts {
        let body = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": amount } });
        let (status, report) = client.send("POST", &submit, body.to_string()).await;
        assert_eq!(report["outcome"]["status"], "committed", "{status}: {report}");
    }
}

/// Opens the accounts `a` and `b` (deposits emit no event).
async fn deposit(state: &AppState, hash: &str) {
    for account in ["a", "b"] {
        let body = json!({ "path": "deposit", "input": { "account": account, "amount": 100_000 } });
        let (status, report) = Call::as_(state, "acme", Client)
            .send("POST", &format!("/v1/modules/{hash}/transactions"), body.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
    }
}

/// The stream's events as the API shows them.
async fn stream(state: &AppState) -> Vec<Value> {
    let (_, page) = Call::as_(state, "acme", Client).send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    page["events"].as_array().unwrap().clone()
}

async fn webhooks(state: &AppState) -> Value {
    let (status, view) = Call::as_(state, "acme", Operator).send("GET", "/v1/webhooks", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// Waits, within `within`, until `done` holds.
async fn wait_until(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every event of the stream, once each by id, in order, signed, as the
/// stream holds it; the ids the receiver saw more than once.
fn check_every_event_received(events: &[Value], received: &[common::receiver::Received]) -> usize {
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    for delivery in received {
        assert!(delivery.signed && delivery.fresh, "a delivery without a good signature: {delivery:?}");
        if seen.insert(delivery.id.clone()) {
            firsts.push(delivery);
        }
    }
    assert_eq!(firsts.len(), events.len(), "{received:#?}");
    for (event, delivery) in events.iter().zip(&firsts) {
        let offset = event["offset"].as_u64().unwrap();
        assert_eq!(delivery.id, format!("txm_acme_{offset}"), "in the stream's order");
        assert_eq!(delivery.body["id"], delivery.id.as_str());
        assert_eq!(delivery.body["stream"], "transfers");
        assert_eq!(delivery.body["offset"], offset);
        assert_eq!(delivery.body["payload"], event["payload"]);
        assert_eq!(delivery.body["transaction_id"], event["transaction_id"]);
    }
    received.len() - firsts.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_then_up_receives_every_event_deduplicated_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::down();
    let mut config = common::config(dir.path());
    config.webhooks.push(webhook(&receiver.url()));
    let service = open(&config).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    deposit(state, &hash).await;

    // Down: nothing is delivered, the attempts fail, the breaker opens.
    transfer(state, &hash, 1..=8).await;
    wait_until(Duration::from_secs(20), "the breaker opens", async || webhooks(state).await[0]["breaker"] == "open")
        .await;
    let view = webhooks(state).await;
    assert_eq!(view[0]["delivered"], 0, "{view}");
    assert!(view[0]["failed_attempts"].as_u64().unwrap() >= 3, "{view}");
    assert!(view[0]["last_error"].as_str().unwrap().contains("onnect"), "{view}");
    assert_eq!(view[0]["streams"], json!([{ "stream": "transfers", "delivered_through": 0 }]));
    assert!(view[0]["relayed_by"].as_str().unwrap().starts_with(state.node().name.as_str()), "{view}");
    assert!(receiver.received().is_empty());

    // Up, but unwell for its first answers; one answer is lost after the
    // event was kept, so that event comes twice under one id.
    let events = stream(state).await;
    let third = format!("txm_acme_{}", events[2]["offset"]);
    receiver.unavailable_for(2);
    receiver.lose_first_answer(&third);
    receiver.up().await;
    transfer(state, &hash, 9..=12).await;
    let events = stream(state).await;
    assert_eq!(events.len(), 12);
    let last = events[11]["offset"].as_u64().unwrap();
    wait_until(Duration::from_secs(30), "every event delivered", async || {
        webhooks(state).await[0]["streams"][0]["delivered_through"] == last
    })
    .await;
    let received = receiver.received();
    let duplicates = check_every_event_received(&events, &received);
    assert_eq!(duplicates, 1, "the event whose answer was lost came again, under its id");
    assert_eq!(received.iter().filter(|d| d.id == third).count(), 2);
    let view = webhooks(state).await;
    assert_eq!((view[0]["breaker"].clone(), view[0]["dead_letters"].clone()), (json!("closed"), json!(0)), "{view}");
    assert_eq!(view[0]["delivered"], 12, "{view}");

    // The metrics count the attempts; the group is the relay's own.
    let (_, metrics) = Call::as_(state, "acme", Operator).send("GET", "/metrics", Body::empty()).await;
    let text = metrics.as_str().unwrap().to_string();
    for line in [
        "txmirror_webhook_attempts_total{webhook=\"billing\",outcome=\"delivered\"} 12",
        "txmirror_webhook_breaker_state{webhook=\"billing\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(text.contains("txmirror_webhook_attempts_total{webhook=\"billing\",outcome=\"unavailable\"}"), "{text}");
    let (status, groups) =
        Call::as_(state, "acme", Operator).send("GET", "/v1/streams/transfers/groups", Body::empty()).await;
    assert_eq!((status, groups), (StatusCode::OK, json!([{ "group": "webhook:billing", "offset": last }])));
    let ack = json!({ "offset": last }).to_string();
    let (status, body) =
        Call::as_(state, "acme", Client).send("POST", "/v1/streams/transfers/groups/webhook:billing/ack", ack).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
}

/// An event the receiver refuses to the end is parked after its attempts,
/// and the events behind it go on; an operator lists it, replays it while
/// it is still refused (it stays, one attempt more), then once the
/// receiver takes it (it goes). Only operators see webhooks, and only
/// their tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_to_the_end_is_parked_and_an_operator_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::down();
    receiver.refuse_amount(3, true);
    receiver.up().await;
    let mut config = common::config(dir.path());
    config.webhooks.push(WebhookConfig { max_attempts: 3, ..webhook(&receiver.url()) });
    let service = open(&config).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    deposit(state, &hash).await;
    transfer(state, &hash, 1..=5).await;
    let events = stream(state).await;
    let last = events[4]["offset"].as_u64().unwrap();
    wait_until(Duration::from_secs(20), "every event delivered or parked", async || {
        webhooks(state).await[0]["streams"][0]["delivered_through"] == last
    })
    .await;
    let ids: Vec<String> = receiver.received().iter().map(|d| d.id.clone()).collect();
    let expected: Vec<String> =
        events.iter().filter(|e| e["payload"]["amount"] != 3).map(|e| format!("txm_acme_{}", e["offset"])).collect();
    assert_eq!(ids, expected, "the events behind the refused one went on");

    let operator = Call::as_(state, "acme", Operator);
    let letters_url = "/v1/webhooks/billing/dead-letters";
    let (status, letters) = operator.send("GET", letters_url, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{letters}");
    let parked = &events[2];
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    let letter = &letters[0];
    assert_eq!((letter["stream"].clone(), letter["offset"].clone()), (json!("transfers"), parked["offset"].clone()));
    assert_eq!(letter["attempts"], 3, "{letter}");
    assert!(letter["last_error"].as_str().unwrap().contains("422"), "{letter}");
    assert_eq!(webhooks(state).await[0]["dead_letters"], 1);

    let replay_url = "/v1/webhooks/billing/dead-letters/replay";
    let (status, report) = operator.send("POST", replay_url, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["delivered"], 0, "{report}");
    assert_eq!(report["failed"][0]["attempts"], 4, "{report}");
    receiver.refuse_amount(3, false);
    let (_, report) = operator.send("POST", replay_url, Body::empty()).await;
    assert_eq!((report["delivered"].clone(), report["failed"].clone()), (json!(1), json!([])), "{report}");
    let (_, letters) = operator.send("GET", letters_url, Body::empty()).await;
    assert_eq!(letters, json!([]));
    let replayed = receiver.received().last().unwrap().clone();
    assert_eq!(replayed.id, format!("txm_acme_{}", parked["offset"]), "the same id as its first attempts");
    assert!(replayed.signed, "{replayed:?}");
    assert_eq!(replayed.body["payload"], parked["payload"]);

    // Roles, tenants, names.
    let (status, body) = Call::as_(state, "acme", Client).send("GET", "/v1/webhooks", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{body}");
    let (status, body) = Call::as_(state, "acme", Client).send("POST", replay_url, Body::empty()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, theirs) = Call::as_(state, "globex", Operator).send("GET", "/v1/webhooks", Body::empty()).await;
    assert_eq!(theirs, json!([]));
    let (status, body) = Call::as_(state, "globex", Operator).send("GET", letters_url, Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    let (status, _) = operator.send("GET", "/v1/webhooks/billing/dead-letters?limit=0", Body::empty()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Two nodes on PostgreSQL, both configured with the webhook: one relays
/// it at a time (the role's lease in the catalog), and the receiver gets
/// every event once by id; when that node drains, it hands the role back
/// and the other relays what comes next, from the group's offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_one_node_relays_at_a_time_and_another_takes_over() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let receiver = Receiver::down();
    receiver.up().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = |dir: &Path| {
        let mut config = common::config(dir);
        config.store.url = Some(url.clone());
        config.node.lease_ms = 1_000;
        config.webhooks.push(webhook(&receiver.url()));
        config
    };
    let (node_a, node_b) = (open(&node(dir_a.path())).await, open(&node(dir_b.path())).await);
    let hash = install(&node_a.state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    deposit(&node_a.state, &hash).await;
    transfer(&node_a.state, &hash, 1..=5).await;
    transfer(&node_b.state, &hash, 6..=10).await;
    let events = stream(&node_a.state).await;
    assert_eq!(events.len(), 10);
    let through = |n: usize| events[n - 1]["offset"].clone();
    wait_until(Duration::from_secs(30), "ten events delivered", async || {
        webhooks(&node_b.state).await[0]["streams"][0]["delivered_through"] == through(10)
    })
    .await;
    let (view_a, view_b) = (webhooks(&node_a.state).await, webhooks(&node_b.state).await);
    let relayed_by = view_a[0]["relayed_by"].as_str().unwrap().to_string();
    assert_eq!(view_b[0]["relayed_by"], relayed_by.as_str(), "both nodes see one relay");
    let delivered = |view: &Value| view[0]["delivered"].as_u64().unwrap();
    assert_eq!(delivered(&view_a) + delivered(&view_b), 10, "{view_a} {view_b}");
    assert!(delivered(&view_a) == 0 || delivered(&view_b) == 0, "one node relayed: {view_a} {view_b}");

    // The relaying node drains; the other relays what comes next.
    let (leader, other) = if relayed_by == node_a.state.node().id { (&node_a, &node_b) } else { (&node_b, &node_a) };
    assert_eq!(leader.state.shut_down(Duration::from_secs(5)).await, 0);
    transfer(&other.state, &hash, 11..=13).await;
    let events = stream(&other.state).await;
    let last = events[12]["offset"].clone();
    wait_until(Duration::from_secs(30), "the other node relays", async || {
        webhooks(&other.state).await[0]["streams"][0]["delivered_through"] == last
    })
    .await;
    let view = webhooks(&other.state).await;
    assert_eq!(view[0]["relayed_by"], other.state.node().id.as_str(), "{view}");
    assert_eq!(view[0]["delivered"], 3, "{view}");
    assert_eq!(check_every_event_received(&events, &receiver.received()), 0, "nothing twice");
}

/// Webhooks that could not work are refused at start, saying why.
#[test]
fn bad_webhooks_are_refused_with_the_reason() {
    let tokens = r#"
        [[tokens]]
        name = "ops"
        tenant = "acme"
        role = "operator"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
    "#;
    let base = r#"name = "billing"
        tenant = "acme"
        url = "http://127.0.0.1:9/hook"
        streams = ["transfers"]
        secret = "sixteen bytes or more"
    "#;
    let parse =
        |webhook: &str| ServiceConfig::parse(&format!("{tokens}\n[[webhooks]]\n{webhook}"), Path::new("t.toml"));
    parse(base).unwrap();
    let with = |from: &str, to: &str| base.replace(from, to);
    for (webhook, expected) in [
        (with("acme", "nobody"), "no token names tenant `nobody`"),
        (with("http://127.0.0.1:9/hook", "ftp://127.0.0.1/hook"), "must start with http:// or https://"),
        (with("http://127.0.0.1:9/hook", "http://user:pw@127.0.0.1/hook"), "must not hold credentials"),
        (with("http://127.0.0.1:9/hook", "not a url"), "is not a URL"),
        (with("[\"transfers\"]", "[]"), "names no streams"),
        (with("secret = \"sixteen bytes or more\"", ""), "has no secret"),
        (with("sixteen bytes or more", "short"), "at least 16 are needed"),
        (with("sixteen bytes or more", "whsec_???"), "not base64"),
        (with("secret = \"sixteen bytes or more\"", "secret_env = \"TXM_NO_SUCH_VARIABLE\""), "TXM_NO_SUCH_VARIABLE"),
        (format!("{base}max_attempts = 0"), "max_attempts = 0 is outside"),
        (format!("{base}max_backoff_ms = 10"), "max_backoff_ms = 10 is outside"),
        (format!("{base}colour = \"red\""), "unknown field"),
        (format!("{base}\n[[webhooks]]\n{base}"), "two webhooks of this name"),
        (format!("{base}statuses = \"sometimes\""), "unknown variant `sometimes`"),
        (with("[\"transfers\"]", "[\"txmirror.status\"]"), "is the runtime's own; ask for `statuses`"),
    ] {
        let error = parse(&webhook).expect_err(&webhook).to_string();
        assert!(error.contains(expected), "{webhook}\n→ {error}");
    }
}

/// A webhook that receives statuses, on `url`: every end of the tenant's
/// transactions (`all`), or those whose submission names it (`requested`).
fn status_webhook(name: &str, url: &str, statuses: &str) -> WebhookConfig {
    let text = format!(
        r#"
        name = "{name}"
        tenant = "acme"
        url = "{url}"
        statuses = "{statuses}"
        secret = "{SECRET}"
        backoff_ms = 20
        max_backoff_ms = 200
        "#
    );
    toml::from_str(&text).unwrap()
}

/// The status deliveries a receiver got, once each by id: transaction id,
/// status and failure kind.
fn statuses(receiver: &Receiver) -> Vec<(String, String, Option<String>)> {
    let mut seen = BTreeSet::new();
    let mut told = Vec::new();
    for delivery in receiver.received() {
        assert!(delivery.signed && delivery.fresh, "{delivery:?}");
        assert_eq!(delivery.body["type"], "txmirror.status", "{delivery:?}");
        assert_eq!(delivery.body["stream"], "txmirror.status", "{delivery:?}");
        if seen.insert(delivery.id.clone()) {
            let payload = &delivery.body["payload"];
            assert_eq!(payload["transaction_id"], delivery.body["transaction_id"], "{delivery:?}");
            told.push((
                payload["transaction_id"].as_str().unwrap().to_string(),
                payload["status"].as_str().unwrap().to_string(),
                payload["failure"]["kind"].as_str().map(str::to_string),
            ));
        }
    }
    told
}

/// Transactions' ends reach the webhooks that ask for them, written with
/// their records: a tenant's `all` webhook is told every end, committed or
/// failed; a `requested` one only those of the submissions that named it.
/// A submission may name only a webhook configured for statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_the_tenants_webhook_and_the_one_a_submission_names() {
    let dir = tempfile::tempdir().unwrap();
    let (everyone, named) = (Receiver::down(), Receiver::down());
    everyone.up().await;
    named.up().await;
    let mut config = common::config(dir.path());
    config.webhooks.push(status_webhook("everyone", &everyone.url(), "all"));
    config.webhooks.push(status_webhook("on-request", &named.url(), "requested"));
    config.webhooks.push(webhook(&everyone.url()));
    let service = open(&config).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let submit = format!("/v1/modules/{hash}/transactions");
    let client = Call::as_(state, "acme", Client);
    let run = async |body: Value| {
        let (status, report) = client.send("POST", &submit, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        (report["transaction_id"].as_str().unwrap().to_string(), report["outcome"]["status"].clone())
    };
    let (told, outcome) =
        run(json!({ "path": "deposit", "input": { "account": "a", "amount": 5 }, "notify": "on-request" })).await;
    assert_eq!(outcome, "committed");
    let (untold, _) = run(json!({ "path": "deposit", "input": { "account": "b", "amount": 5 } })).await;
    let (refused, outcome) =
        run(json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": 500 }, "notify": "on-request" }))
            .await;
    assert_eq!(outcome, "failed", "a transfer of more than the balance is rejected");

    wait_until(Duration::from_secs(20), "every end told", async || {
        statuses(&everyone).len() >= 3 && statuses(&named).len() >= 2
    })
    .await;
    // Nothing more arrives: each end is one event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = statuses(&everyone);
    assert_eq!(
        all,
        [
            (told.clone(), "committed".to_string(), None),
            (untold, "committed".to_string(), None),
            (refused.clone(), "failed".to_string(), Some("rejected".to_string())),
        ],
        "in the order the ends were recorded"
    );
    assert_eq!(statuses(&named), [all[0].clone(), all[2].clone()], "only the submissions that named it");
    let view = webhooks(state).await;
    let on_request = view.as_array().unwrap().iter().find(|w| w["name"] == "on-request").unwrap().clone();
    assert_eq!(on_request["streams"][0]["stream"], "txmirror.status", "{on_request}");

    // Only a webhook configured for statuses can be named; a guest cannot
    // be granted the status stream (see the policy's tests).
    for (notify, expected) in [("nobody", "has no webhook `nobody`"), ("billing", "is not configured with `statuses`")]
    {
        let body = json!({ "path": "deposit", "input": { "account": "a", "amount": 1 }, "notify": notify });
        let (status, error) = client.send("POST", &submit, body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(expected), "{error}");
    }
}
