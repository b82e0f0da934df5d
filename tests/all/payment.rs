//! Charges go out once, from the primary only, to granted gateways.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::store::{AttemptOutcome, TransactionOutcome};
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_runtime::{ExecuteError, FailureKind, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

fn charge(path: &str, order: &str) -> TxRequest {
    let input = json!({ "order_id": order, "amount_cents": 1250, "currency": "EUR" });
    TxRequest { path: Some(path.into()), input: input.to_string().into_bytes(), ..Default::default() }
}

fn gateway_policy(primary: &TestServer, backup: &TestServer) -> String {
    format!(
        r#"
        alternative_paths = ["charge-backup"]
        compensation_path = "refund"
        [capabilities]
        kv = {{ payments = "read-write" }}
        outbound_hosts = ["{}", "{}"]
        [config]
        primary_gateway = "{}"
        backup_gateway = "{}"
        [[mirror.stubs]]
        method = "POST"
        url_prefix = "{}/charges"
        status = 201
        body = '{{"charge_id": "stub"}}'
        "#,
        primary.authority(),
        backup.authority(),
        primary.url(),
        backup.url(),
        primary.url(),
    )
}

/// The charges (POST /charges) a gateway received; health checks aside.
fn charges(server: &TestServer) -> Vec<txmirror_tests::Received> {
    server.received().into_iter().filter(|r| r.method == "POST" && r.uri == "/charges").collect()
}

fn gateway() -> Behaviour {
    Behaviour { status: 201, body: r#"{"charge_id": "ch_{n}"}"#.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_is_sent_once_by_the_primary() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&gateway_policy(&primary, &backup));

    let report = runtime.execute(&module, &policy, charge("charge", "order-1")).await.unwrap();
    let output = report.output_json().unwrap_or_else(|| panic!("{report:#?}"));
    let charge_id = output["charge_id"].as_str().unwrap().to_string();
    assert!(charge_id.starts_with("ch_"), "{output}");
    let received = charges(&primary);
    assert_eq!(received.len(), 1, "the mirror's POST was not sent: {received:?}");
    assert_eq!(received[0].idempotency_key.as_deref(), Some("order-1"));
    let length = received[0].body.len().to_string();
    assert_eq!(received[0].content_length.as_deref(), Some(length.as_str()), "a known length, not chunked");
    let health = primary.received().into_iter().filter(|r| r.uri == "/health").count();
    assert_eq!(health, 2, "the health check is safe: both twins sent it");
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["amount_cents"], 1250);
    assert!(backup.received().is_empty());
    let gate = report.attempts[0].primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { decision, .. } => Some(decision.clone()),
        _ => None,
    });
    assert_eq!(gate.as_deref(), Some("pass"), "the charge passed the gate");

    let mirror = report.attempts[0].mirror.as_ref().unwrap();
    assert!(
        mirror.events.iter().any(|e| matches!(
            &e.call,
            HostCall::Http { outcome: HttpOutcome::Stubbed { status: 201, source }, .. } if source == "policy"
        )),
        "{mirror:#?}"
    );
    let stored = runtime.store().snapshot().unwrap().get("payments", "order-1").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored["charge_id"], charge_id.as_str());

    // Charging the same order again sends nothing: it is already recorded.
    let again = runtime.execute(&module, &policy, charge("charge", "order-1")).await.unwrap();
    assert_eq!(again.output_json().unwrap()["charge_id"], charge_id.as_str());
    assert_eq!(charges(&primary).len(), 1);

    // The backup path and the compensation path.
    let backup_report = runtime.execute(&module, &policy, charge("charge-backup", "order-2")).await.unwrap();
    assert_eq!(backup_report.output_json().unwrap()["gateway"], "backup_gateway");
    assert_eq!(charges(&backup).len(), 1);
    let refund =
        TxRequest { path: Some("refund".into()), input: br#"{"order_id":"order-1"}"#.to_vec(), ..Default::default() };
    let refunded = runtime.execute(&module, &policy, refund).await.unwrap();
    assert_eq!(refunded.output_json().unwrap()["refunded"], true);
    let refunds: Vec<_> = primary.received().into_iter().filter(|r| r.uri == "/refunds").collect();
    assert_eq!(refunds.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gateway_is_avoided_before_anything_is_charged() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy_text = gateway_policy(&primary, &backup);

    // The primary gateway answers everything with 503, its health check included.
    primary.set_behaviour(Behaviour { status: 503, body: "{}".into(), ..Default::default() });
    let report = runtime.execute(&module, &policy(&policy_text), charge("charge", "order-9")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");
    let first = &report.attempts[0];
    assert!(
        matches!(&first.attempt.outcome, AttemptOutcome::Failed { kind, .. } if kind == "diverted"),
        "{:?}",
        first.attempt.outcome
    );
    assert!(charges(&primary).is_empty(), "diverted before its charge: {:?}", primary.received());
    assert_eq!(charges(&backup).len(), 1, "one charge in all");
    assert_eq!(report.output_json().unwrap()["gateway"], "backup_gateway");
    let gate = first.primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { decision, reasons, failure_probability, .. } => {
            Some((decision.clone(), reasons.clone(), *failure_probability))
        }
        _ => None,
    });
    let (decision, reasons, probability) = gate.expect("the gate decided");
    assert_eq!(decision, "divert");
    assert_eq!(reasons, ["failing_endpoint"]);
    assert!(probability >= 0.3);

    // Without the grant, the request never leaves the host, and the backup path takes over.
    let ungranted = policy_text.replace(&format!("\"{}\", ", primary.authority()), "");
    let before = primary.received().len();
    let report = runtime.execute(&module, &policy(&ungranted), charge("charge", "order-10")).await.unwrap();
    assert_eq!(report.path, "charge-backup", "{report:#?}");
    assert_eq!(primary.received().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gateway_is_predicted_to_time_out_and_never_charged() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    primary.set_behaviour(Behaviour { delay: std::time::Duration::from_secs(3), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!("{}\n", gateway_policy(&primary, &backup))
        .replace("alternative_paths", "resource_requirements = { outbound_timeout_ms = 200 }\nalternative_paths");
    let report = runtime.execute(&module, &policy(&text), charge("charge", "order-slow")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");

    // The mirror's health check timed out; the gate read it as a predicted
    // timeout and diverted the primary before its charge.
    let first = &report.attempts[0];
    let mirror = first.mirror.as_ref().unwrap();
    assert!(mirror.events.iter().any(|e| matches!(
        &e.call,
        HostCall::Http { safe: true, outcome: HttpOutcome::Failed { error }, .. } if error.contains("timed out after 200 ms")
    )), "{mirror:#?}");
    let gate = first.primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { decision, reasons, .. } => Some((decision.clone(), reasons.clone())),
        _ => None,
    });
    let (decision, reasons) = gate.expect("the gate decided");
    assert_eq!(decision, "divert");
    assert!(reasons.contains(&"timeout".to_string()), "{reasons:?}");
    assert!(charges(&primary).is_empty(), "the slow gateway received no charge");
    assert_eq!(charges(&backup).len(), 1, "one charge in total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_path_fails_it_compensates_dead_letters_and_replays_once() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let down = Behaviour { status: 503, body: "{}".into(), ..Default::default() };
    primary.set_behaviour(down.clone());
    backup.set_behaviour(down);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&gateway_policy(&primary, &backup));

    let report = runtime.execute(&module, &policy, charge("charge", "order-dlq")).await.unwrap();
    let failure = report.failure.as_ref().unwrap();
    assert_eq!(failure.kind, FailureKind::Unavailable);
    let paths: Vec<&str> = report.attempts.iter().map(|a| a.attempt.path.as_str()).collect();
    assert_eq!(
        paths,
        ["charge", "charge-backup", "charge-backup", "charge-backup"],
        "diverted, then three tries on the last path"
    );
    let letters = runtime.store().dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.transaction_id, report.transaction_id);
    assert_eq!(letter.attempts.len(), 4, "the whole history, traces included");
    assert!(letter.attempts.iter().all(|a| a.mirror.is_some() && a.prediction.is_some()));
    let compensation = letter.compensation.as_ref().expect("the compensation path ran");
    assert_eq!(compensation.path, "refund");
    assert!(matches!(compensation.outcome, TransactionOutcome::Committed { .. }), "{compensation:?}");
    assert!(runtime.store().transaction(&compensation.transaction_id).unwrap().is_some());
    assert!(charges(&primary).is_empty());

    // The fault is removed; the replay commits, once.
    primary.set_behaviour(gateway());
    let replayed = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap();
    assert!(replayed.failure.is_none(), "{replayed:#?}");
    assert_eq!(replayed.path, "charge");
    assert!(runtime.store().dead_letter(&report.transaction_id).unwrap().is_none(), "the letter is gone");
    let again = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap_err();
    assert!(matches!(again, ExecuteError::NoSuchDeadLetter(_)), "{again}");
    assert_eq!(charges(&primary).len(), 1, "one charge, from the replay");
    let stored = runtime.store().snapshot().unwrap().get("payments", "order-dlq").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert!(stored["charge_id"].as_str().unwrap().starts_with("ch_"));
}
