//! The Python SDK's capabilities through the runtime
//! (`tests/guests/python-tour`): config, print and log into the trace, a
//! safe GET from both twins, an unsafe POST keyed by the runtime and sent by
//! the primary alone, the journal seen from the guest, and the refusals of
//! what the policy does not grant, each raised as an `Error`.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::TxRequest;
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

fn tour_policy(server: &TestServer) -> String {
    format!(
        r#"
        [capabilities]
        kv = {{ scratch = "read-write" }}
        streams = ["payments"]
        outbound_hosts = ["{authority}"]

        [config]
        gateway = "{url}"
        "#,
        authority = server.authority(),
        url = server.url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_path_uses_every_capability_and_its_charge_is_sent_once() {
    let dir = tempdir().unwrap();
    let server =
        TestServer::start(Behaviour { status: 201, body: r#"{"charge_id":"ch_1"}"#.into(), ..Behaviour::default() })
            .await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PYTHON_TOUR).await;
    let policy = policy(&tour_policy(&server));
    let input = json!({ "order_id": "o-1", "amount": 1250 }).to_string().into_bytes();
    let request = TxRequest { path: Some("charge".into()), input, ..Default::default() };
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let output = report.output_json().unwrap();
    assert_eq!(output["health"], 201);
    assert_eq!(output["status"], 201);
    assert_eq!(output["answer"], json!({ "charge_id": "ch_1" }));
    let key = output["key"].as_str().unwrap();
    assert!(key.starts_with("txm-"), "{output}");
    assert_eq!(output["sent"], json!([["POST", format!("{}/charges", server.url()), 201]]));

    // The primary's POST went out once, under the runtime's key; both twins
    // sent the health check.
    let received = server.received();
    let posts: Vec<_> = received.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "{received:#?}");
    assert_eq!(posts[0].idempotency_key.as_deref(), Some(key));
    assert_eq!(serde_json::from_slice::<Value>(&posts[0].body).unwrap(), json!({ "order_id": "o-1", "amount": 1250 }));
    assert_eq!(received.iter().filter(|r| r.uri == "/health").count(), 2, "{received:#?}");

    let attempt = &report.attempts[0];
    let printed = |trace: &txmirror_runtime::Trace| {
        trace.events.iter().any(|e| matches!(&e.call, HostCall::Output { stream, text, .. } if stream == "stdout" && text == "charging o-1\n"))
    };
    let mirror = attempt.mirror.as_ref().unwrap();
    assert!(printed(&attempt.primary) && printed(mirror), "print goes to the trace: {:#?}", attempt.primary);
    assert!(
        attempt.primary.events.iter().any(|e| matches!(&e.call, HostCall::Log { message, .. } if message == &format!("transaction {}", report.transaction_id))),
        "{:#?}",
        attempt.primary
    );
    let stubbed = mirror.events.iter().any(
        |e| matches!(&e.call, HostCall::Http { method, outcome: HttpOutcome::Stubbed { .. }, .. } if method == "POST"),
    );
    assert!(stubbed, "the mirror's POST was answered by a stub: {mirror:#?}");
    let stored = runtime.snapshot().unwrap().get("scratch", "o-1").unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored.value).unwrap(), json!({ "status": 201 }));
    assert_eq!(runtime.events("payments", 0, 10).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_policy_does_not_grant_is_refused_as_an_error_in_python() {
    let dir = tempdir().unwrap();
    let server = TestServer::start(Behaviour::default()).await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PYTHON_TOUR).await;
    let policy = policy(&tour_policy(&server));
    let request = TxRequest { path: Some("trespass".into()), input: b"{}".to_vec(), ..Default::default() };
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let output = report.output_json().unwrap();
    assert!(output["namespace"].as_str().unwrap().contains("key-value store: Denied"), "{output}");
    assert!(output["host"].as_str().unwrap().contains("refused by the host"), "{output}");
    assert!(output["missing-config"].as_str().unwrap().contains("config `nope` is not set"), "{output}");
    assert!(output["stream"].as_str().unwrap().contains("stream `transfers` is not granted"), "{output}");
    assert!(server.received().is_empty());
    assert!(runtime.snapshot().unwrap().get("secrets", "k").unwrap().is_none());
    assert!(runtime.events("transfers", 0, 10).unwrap().is_empty());
}
