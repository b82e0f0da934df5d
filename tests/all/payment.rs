//! Charges go out once, from the primary only, to granted gateways.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_runtime::{FailureKind, TxRequest};
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
async fn failing_and_ungranted_gateways_commit_nothing() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy_text = gateway_policy(&primary, &backup);

    primary.set_behaviour(Behaviour { status: 503, body: "{}".into(), ..Default::default() });
    let report = runtime.execute(&module, &policy(&policy_text), charge("charge", "order-9")).await.unwrap();
    let failure = report.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Unavailable);
    assert!(failure.message.contains("503"), "{}", failure.message);
    assert!(runtime.store().snapshot().unwrap().get("payments", "order-9").unwrap().is_none());

    // Without the grant, the request never leaves the host.
    let ungranted = policy_text.replace(&format!("\"{}\", ", primary.authority()), "");
    let before = primary.received().len();
    let report = runtime.execute(&module, &policy(&ungranted), charge("charge", "order-10")).await.unwrap();
    let failure = report.failure.unwrap();
    assert!(failure.message.contains("does not grant"), "{}", failure.message);
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
    let failure = report.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Unavailable, "{failure:?}");
    let trace = &report.attempts[0].primary;
    assert!(
        trace.events.iter().any(|e| matches!(
            &e.call,
            HostCall::Http { outcome: HttpOutcome::Failed { error }, .. } if error.contains("timed out after 200 ms")
        )),
        "{trace:#?}"
    );
    assert!(trace.duration_micros < 2_000_000, "the primary did not wait for the slow gateway");
}
