//! Charges go out once, from the primary only, to granted gateways.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::predict::Action;
use txmirror_runtime::store::TransactionOutcome;
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
    assert_eq!(output["charge_id"], "ch_1");
    let received = primary.received();
    assert_eq!(received.len(), 1, "the mirror's POST was not sent: {received:?}");
    assert_eq!(received[0].idempotency_key.as_deref(), Some("order-1"));
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["amount_cents"], 1250);
    assert!(backup.received().is_empty());

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
    assert_eq!(stored["charge_id"], "ch_1");

    // Charging the same order again sends nothing: it is already recorded.
    let again = runtime.execute(&module, &policy, charge("charge", "order-1")).await.unwrap();
    assert_eq!(again.output_json().unwrap()["charge_id"], "ch_1");
    assert_eq!(primary.received().len(), 1);

    // The backup path and the compensation path.
    let backup_report = runtime.execute(&module, &policy, charge("charge-backup", "order-2")).await.unwrap();
    assert_eq!(backup_report.output_json().unwrap()["gateway"], "backup_gateway");
    assert_eq!(backup.received().len(), 1);
    let refund =
        TxRequest { path: Some("refund".into()), input: br#"{"order_id":"order-1"}"#.to_vec(), ..Default::default() };
    let refunded = runtime.execute(&module, &policy, refund).await.unwrap();
    assert_eq!(refunded.output_json().unwrap()["refunded"], true);
    let refunds: Vec<_> = primary.received().into_iter().filter(|r| r.uri == "/refunds").collect();
    assert_eq!(refunds.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gateway_falls_back_to_the_backup_path() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy_text = gateway_policy(&primary, &backup);

    primary.set_behaviour(Behaviour { status: 503, body: "{}".into(), ..Default::default() });
    let report = runtime.execute(&module, &policy(&policy_text), charge("charge", "order-9")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");
    let paths: Vec<&str> = report.attempts.iter().map(|a| a.attempt.path.as_str()).collect();
    assert_eq!(paths, ["charge", "charge", "charge", "charge-backup"], "three tries, then the alternative");
    assert_eq!(primary.received().len(), 3, "one POST per primary attempt, none from the mirrors");
    assert_eq!(backup.received().len(), 1);
    assert_eq!(report.output_json().unwrap()["gateway"], "backup_gateway");
    // From the second attempt on, the predictor knows the endpoint and the path are failing.
    // (Attempts are scored after their twins end, so the first already sees its own 503.)
    let first = report.attempts[0].prediction.as_ref().unwrap();
    assert_eq!(first.features.path_failure_rate, 0.0, "{first:?}");
    let second = report.attempts[1].prediction.as_ref().unwrap();
    assert_eq!(second.features.endpoint_error_rate, 1.0, "{second:?}");
    assert!(second.features.path_failure_rate > 0.0, "{second:?}");

    // Without the grant, the request never leaves the host, and the backup path takes over.
    let ungranted = policy_text.replace(&format!("\"{}\", ", primary.authority()), "");
    let before = primary.received().len();
    let report = runtime.execute(&module, &policy(&ungranted), charge("charge", "order-10")).await.unwrap();
    let first = &report.attempts[0].attempt.outcome;
    assert!(format!("{first:?}").contains("does not grant"), "{first:?}");
    assert_eq!(report.path, "charge-backup");
    assert_eq!(primary.received().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_gateway_times_out_at_the_policy_limit() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    primary.set_behaviour(Behaviour { delay: std::time::Duration::from_secs(3), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!("{}\n", gateway_policy(&primary, &backup))
        .replace("alternative_paths", "resource_requirements = { outbound_timeout_ms = 200 }\nalternative_paths");
    let report = runtime.execute(&module, &policy(&text), charge("charge", "order-slow")).await.unwrap();
    let trace = &report.attempts[0].primary;
    assert!(
        trace.events.iter().any(|e| matches!(
            &e.call,
            HostCall::Http { outcome: HttpOutcome::Failed { error }, .. } if error.contains("timed out after 200 ms")
        )),
        "{trace:#?}"
    );
    assert!(trace.duration_micros < 2_000_000, "the primary did not wait for the slow gateway");
    // The first timeout taught the predictor: the next attempt's mirror,
    // whose POST is stubbed, is predicted to time out, and the rule says divert.
    let second = report.attempts[1].prediction.as_ref().unwrap();
    assert_eq!(second.features.predicted_timeout, 1.0, "{second:?}");
    assert!(second.reasons.iter().any(|r| r.rule == "timeout" && r.action == Action::Divert), "{second:?}");
    assert_eq!(report.path, "charge-backup", "{report:#?}");
    assert!(report.failure.is_none());
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
    assert_eq!(report.attempts.len(), 6, "three on each path");
    let letters = runtime.store().dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.transaction_id, report.transaction_id);
    assert_eq!(letter.attempts.len(), 6, "the whole history, traces included");
    assert!(letter.attempts.iter().all(|a| a.mirror.is_some() && a.prediction.is_some()));
    let compensation = letter.compensation.as_ref().expect("the compensation path ran");
    assert_eq!(compensation.path, "refund");
    assert!(matches!(compensation.outcome, TransactionOutcome::Committed { .. }), "{compensation:?}");
    assert!(runtime.store().transaction(&compensation.transaction_id).unwrap().is_some());

    // The fault is removed; the replay commits, once.
    primary.set_behaviour(gateway());
    let replayed = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap();
    assert!(replayed.failure.is_none(), "{replayed:#?}");
    assert!(runtime.store().dead_letter(&report.transaction_id).unwrap().is_none(), "the letter is gone");
    let again = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap_err();
    assert!(matches!(again, ExecuteError::NoSuchDeadLetter(_)), "{again}");
    let successes: Vec<_> = primary.received().into_iter().filter(|r| r.uri == "/charges").collect();
    assert_eq!(successes.len(), 4, "three refused charges, then one accepted");
    let stored = runtime.store().snapshot().unwrap().get("payments", "order-dlq").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored["charge_id"], "ch_4");
}
