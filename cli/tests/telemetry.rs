//! OpenTelemetry from `txmirror serve`, a real process, to an OTLP
//! receiver in this test's process: a transaction is one trace that
//! continues the caller's W3C `traceparent`.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Server, agent, install_payment, token, write_config};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use txmirror_service::Role;
use txmirror_tests::otlp::{OtlpReceiver, ReceivedSpan};

/// The caller's trace: its id and the span the request is made in.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Charges through the payment example with `traceparent` (or without);
/// the transaction's id.
fn charge(agent: &ureq::Agent, base: &str, hash: &str, order: &str, traceparent: Option<&str>) -> String {
    let body =
        serde_json::json!({ "path": "charge", "input": { "order_id": order, "amount_cents": 990, "currency": "EUR" } });
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{base}/v1/modules/{hash}/transactions"))
        .header("authorization", format!("Bearer {}", token(Role::Client)))
        .header("content-type", "application/json");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let mut response = agent.run(request.body(body.to_string().into_bytes()).unwrap()).unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(response.status().as_u16(), 200, "{report}");
    assert_eq!(report["outcome"]["status"], "committed", "{report}");
    report["transaction_id"].as_str().unwrap().to_string()
}

/// Waits (at most 30 s) until `receiver` has the commit span of the
/// transaction `id`'s trace, then that trace's spans.
fn trace_of(receiver: &OtlpReceiver, id: &str, server: &Server) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = receiver.spans();
        let trace = spans
            .iter()
            .find(|s| s.name == "txmirror.transaction" && s.attribute("txmirror.transaction_id").as_deref() == Some(id))
            .map(|s| s.trace_id.clone());
        if let Some(trace) = trace {
            let spans: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).cloned().collect();
            // The request's span ends last, after the response is written.
            if spans.iter().any(|s| s.name.starts_with("POST ")) {
                return spans;
            }
        }
        assert!(Instant::now() < deadline, "no trace of {id} after 30 s: {spans:#?}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

#[test]
fn a_transaction_is_one_trace_that_continues_the_callers_traceparent() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(OtlpReceiver::start());
    let gateway = runtime.block_on(txmirror_tests::TestServer::start(txmirror_tests::Behaviour {
        status: 201,
        body: r#"{"charge_id": "ch-{n}"}"#.into(),
        ..Default::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let endpoint = receiver.endpoint();
    let server = Server::start_with_env(
        &config,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let agent = agent();
    let hash = install_payment(&agent, &server.base, &gateway, "");

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let id = charge(&agent, &server.base, &hash, "o-1", Some(&traceparent));
    let spans = trace_of(&receiver, &id, &server);
    assert_eq!(spans[0].trace_id, TRACE_ID, "the caller's trace is continued");
    assert!(spans.iter().all(|s| s.service_name.as_deref() == Some("txmirror")), "{spans:#?}");

    // The request, a child of the caller's span; the run, of the request;
    // the transaction, of the run.
    let request = one(&spans, "POST /v1/modules/{hash}/transactions");
    assert_eq!(request.parent_span_id, CALLER_SPAN);
    assert_eq!(request.attribute("http.response.status_code").as_deref(), Some("200"));
    let run = one(&spans, "txmirror.run");
    assert_eq!(run.parent_span_id, request.span_id);
    assert_eq!(run.attribute("txmirror.tenant").as_deref(), Some("acme"));
    let transaction = one(&spans, "txmirror.transaction");
    assert_eq!(transaction.parent_span_id, run.span_id);
    assert_eq!(transaction.attribute("txmirror.outcome").as_deref(), Some("committed"));
    assert_eq!(transaction.attribute("txmirror.attempts").as_deref(), Some("1"));
    assert_eq!(transaction.attribute("txmirror.path").as_deref(), Some("charge"));

    // One attempt, with its twins and its commit in it.
    let attempt = one(&spans, "txmirror.attempt");
    assert_eq!(attempt.parent_span_id, transaction.span_id);
    assert_eq!(attempt.attribute("txmirror.attempt").as_deref(), Some("1"));
    assert_eq!(attempt.attribute("txmirror.mirrored").as_deref(), Some("true"));
    assert_eq!(attempt.attribute("txmirror.outcome").as_deref(), Some("committed"));
    for twin in ["txmirror.primary", "txmirror.mirror", "txmirror.commit"] {
        assert_eq!(one(&spans, twin).parent_span_id, attempt.span_id, "{twin}: {spans:#?}");
    }
    assert!(one(&spans, "txmirror.commit").attribute("txmirror.version").is_some());

    // The gate stood before the charge (in the primary) and before the
    // commit (in the attempt), each with its probability and decision.
    let gates: Vec<_> =
        spans.iter().flat_map(|s| s.events.iter().filter(|(name, _)| name == "gate").map(move |e| (s, e))).collect();
    let stages: Vec<_> =
        gates.iter().map(|(_, (_, a))| a["txmirror.gate.before"].as_str().unwrap().to_string()).collect();
    assert_eq!(stages, ["unsafe call", "commit"], "{gates:#?}");
    assert_eq!(gates[0].0.name, "txmirror.primary");
    for (_, (_, attributes)) in &gates {
        let probability = attributes["txmirror.gate.failure_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&probability), "{attributes:?}");
        assert_eq!(attributes["txmirror.gate.decision"], "pass", "{attributes:?}");
        assert!(attributes.contains_key("txmirror.gate.rules") && attributes.contains_key("txmirror.gate.source"));
    }

    // A request without a trace context starts a trace of its own.
    let other = charge(&agent, &server.base, &hash, "o-2", None);
    let own = trace_of(&receiver, &other, &server);
    assert_ne!(own[0].trace_id, TRACE_ID);
    assert!(one(&own, "POST /v1/modules/{hash}/transactions").parent_span_id.is_empty());
}

/// An endpoint the exporter cannot use is refused before anything starts,
/// saying what would work; no endpoint, no exporter and no error.
#[test]
fn an_unusable_endpoint_is_refused_at_start() {
    for (variable, value, says) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318", "plain HTTP"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318", "plain HTTP"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_txmirror")).args(["--help"]).env(variable, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert!(stderr.contains(variable) && stderr.contains(says), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["--help"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("http/protobuf"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["--help"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
