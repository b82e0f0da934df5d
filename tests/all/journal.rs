//! The effect journal: no attempt or retry of a transaction sends an unsafe
//! call that an earlier attempt sent and saw succeed; every unsafe call
//! carries the transaction's key for that call. Charges are counted per
//! key by a real gateway on 127.0.0.1.

use serde_json::{Value, json};
use std::collections::HashMap;
use tempfile::tempdir;
use txmirror_runtime::store::{AttemptOutcome, TransactionOutcome};
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_runtime::{FailureKind, TxReport, TxRequest, effect_key};
use txmirror_tests::{Behaviour, Received, TestServer, guests, load, policy, runtime};

/// The effects guest, a gateway and a runtime, under a policy made of
/// `extra` and what every test here needs.
struct Fixture {
    _dir: tempfile::TempDir,
    gateway: TestServer,
    runtime: txmirror_runtime::Runtime,
    module: txmirror_runtime::Module,
    policy: std::sync::Arc<txmirror_runtime::Policy>,
}

impl Fixture {
    async fn new(behaviour: Behaviour, extra: &str) -> Self {
        let dir = tempdir().unwrap();
        let gateway = TestServer::start(behaviour).await;
        let runtime = runtime(&dir.path().join("data"));
        let module = load(&runtime, guests::EFFECTS).await;
        let text = format!(
            r#"
            {extra}

            [capabilities]
            kv = {{ scratch = "read-write" }}
            streams = ["effects"]
            outbound_hosts = ["{authority}"]

            [config]
            sink = "{url}/charges"
            "#,
            authority = gateway.authority(),
            url = gateway.url(),
        );
        let policy = policy(&text);
        Self { _dir: dir, gateway, runtime, module, policy }
    }

    async fn charge(&self, id: &str, input: Value) -> TxReport {
        self.run("charge", id, input).await
    }

    async fn run(&self, path: &str, id: &str, input: Value) -> TxReport {
        let request = TxRequest {
            transaction_id: Some(id.into()),
            path: Some(path.into()),
            input: input.to_string().into_bytes(),
            ..Default::default()
        };
        self.runtime.execute(&self.module, &self.policy, request).await.unwrap()
    }

    async fn charge_owned(&self, id: String) -> TxReport {
        self.charge(&id, json!({})).await
    }

    /// The POSTs the gateway received, counted by idempotency key.
    fn charges(&self) -> HashMap<Option<String>, usize> {
        let mut counted = HashMap::new();
        for received in self.gateway.received().into_iter().filter(|r: &Received| r.method == "POST") {
            *counted.entry(received.idempotency_key).or_default() += 1;
        }
        counted
    }
}

fn failures(report: &TxReport) -> Vec<FailureKind> {
    report
        .attempts
        .iter()
        .filter_map(|attempt| match &attempt.attempt.outcome {
            AttemptOutcome::Failed { kind, .. } => Some(*kind),
            AttemptOutcome::Committed => None,
        })
        .collect()
}

fn http_outcomes(report: &TxReport, attempt: usize, mirror: bool) -> Vec<HttpOutcome> {
    let attempt = &report.attempts[attempt];
    let trace = if mirror { attempt.mirror.as_ref().unwrap() } else { &attempt.primary };
    trace
        .events
        .iter()
        .filter_map(|event| match &event.call {
            HostCall::Http { safe: false, outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

const RETRIES: &str = r#"
    failure_prediction_enabled = false
    [retry]
    max_attempts = 3
    initial_interval_ms = 1
    jitter = 0.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_fails_after_its_charge_is_retried_without_charging_again() {
    let fixture =
        Fixture::new(Behaviour { body: r#"{"receipt":"r-{n}"}"#.into(), ..Behaviour::default() }, RETRIES).await;
    let report = fixture.charge("t-unavailable", json!({ "then": "unavailable" })).await;
    assert_eq!(failures(&report), vec![FailureKind::Unavailable; 3], "three attempts, each failing after the charge");
    let key = effect_key("t-unavailable", "charge", 1);
    assert_eq!(fixture.charges(), HashMap::from([(Some(key), 1)]), "one charge, keyed, in three attempts");
    // The later attempts got the first attempt's answer, not a new one.
    for attempt in 1..3 {
        assert_eq!(
            http_outcomes(&report, attempt, false),
            vec![HttpOutcome::Replayed { status: 200, response_bytes: r#"{"receipt":"r-1"}"#.len() }]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_success_criterion_after_the_charge_is_retried_without_charging_again() {
    let extra = format!("{RETRIES}\n[success_criteria]\nrequired_output_fields = [\"receipt\"]\n");
    let fixture = Fixture::new(Behaviour::default(), &extra).await;
    let report = fixture.charge("t-criterion", json!({ "then": "no-receipt" })).await;
    assert_eq!(failures(&report), vec![FailureKind::SuccessCriteria; 3]);
    assert_eq!(fixture.charges(), HashMap::from([(Some(effect_key("t-criterion", "charge", 1)), 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_conflict_after_their_charges_each_charge_once() {
    let fixture =
        Fixture::new(Behaviour { delay: std::time::Duration::from_millis(5), ..Behaviour::default() }, RETRIES).await;
    let count = 12;
    // All at once: each reads the receipt key, charges, and writes it.
    let reports = futures_join((0..count).map(|i| fixture.charge_owned(format!("t-race-{i}"))).collect()).await;
    let conflicts: usize =
        reports.iter().map(|report| failures(report).iter().filter(|k| **k == FailureKind::Conflict).count()).sum();
    assert!(conflicts > 0, "the test needs conflicts after the charge to mean anything");
    for report in &reports {
        assert!(matches!(report.outcome, TransactionOutcome::Committed { .. }), "{:?}", report.failure);
    }
    let expected: HashMap<Option<String>, usize> =
        (0..count).map(|i| (Some(effect_key(&format!("t-race-{i}"), "charge", 1)), 1)).collect();
    assert_eq!(fixture.charges(), expected, "one charge per transaction, after {conflicts} conflicts");
}

/// Awaits every future at once.
async fn futures_join<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_asks_a_different_charge_at_the_same_point_ends_the_transaction_unsent() {
    let fixture = Fixture::new(Behaviour { body: r#""{n} EUR""#.into(), ..Behaviour::default() }, RETRIES).await;
    let report = fixture.run("quote", "t-quote", json!({})).await;
    // The first attempt charged the first quote; the second was quoted
    // anew and would charge something else: refused, and not retried.
    assert_eq!(failures(&report), vec![FailureKind::Unavailable, FailureKind::EffectMismatch]);
    let failure = report.failure.clone().unwrap();
    assert_eq!(failure.kind, FailureKind::EffectMismatch);
    assert!(failure.message.contains("unsafe call 1 of path `quote`"), "{}", failure.message);
    assert_eq!(fixture.charges(), HashMap::from([(Some(effect_key("t-quote", "quote", 1)), 1)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_answer_never_came_is_sent_again_with_the_same_key_by_default() {
    let slow = Behaviour { delay: std::time::Duration::from_millis(400), ..Behaviour::default() };
    let extra = format!("{RETRIES}\n[resource_requirements]\noutbound_timeout_ms = 100\n");
    let fixture = Fixture::new(slow, &extra).await;
    let report = fixture.charge("t-doubt", json!({})).await;
    assert_eq!(failures(&report).len(), 3, "{:?}", report.failure);
    // Every send carried the one key: a gateway that honours it charges once.
    assert_eq!(fixture.charges(), HashMap::from([(Some(effect_key("t-doubt", "charge", 1)), 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_in_doubt_is_not_sent_again_when_the_policy_says_so() {
    let slow = Behaviour { delay: std::time::Duration::from_millis(400), ..Behaviour::default() };
    let extra = format!(
        "{RETRIES}\n[resource_requirements]\noutbound_timeout_ms = 100\n[effects]\nin_doubt = \"dead_letter\"\n"
    );
    let fixture = Fixture::new(slow, &extra).await;
    let report = fixture.charge("t-doubt-letter", json!({})).await;
    assert_eq!(failures(&report).last(), Some(&FailureKind::EffectInDoubt), "{:?}", report.failure);
    assert_eq!(failures(&report).len(), 2, "not retried once in doubt");
    assert_eq!(fixture.charges(), HashMap::from([(Some(effect_key("t-doubt-letter", "charge", 1)), 1)]));
    let letter = fixture.runtime.dead_letter("t-doubt-letter").unwrap();
    assert!(letter.is_some(), "in the dead-letter queue for an operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_key_is_kept_and_the_header_is_the_policys() {
    let fixture = Fixture::new(Behaviour::default(), "[effects]\nidempotency_header = \"X-Request-Key\"").await;
    let report = fixture.charge("t-header", json!({})).await;
    assert!(matches!(report.outcome, TransactionOutcome::Committed { .. }), "{:?}", report.failure);
    let received = fixture.gateway.received();
    let post = received.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.idempotency_key, None, "not under the default name");
    assert_eq!(post.header("x-request-key"), Some(effect_key("t-header", "charge", 1).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrys_mirror_is_answered_from_the_journal() {
    let fixture = Fixture::new(
        Behaviour {
            body: r#"{"receipt":"real"}"#.into(),
            delay: std::time::Duration::from_millis(5),
            ..Behaviour::default()
        },
        "[retry]\ninitial_interval_ms = 1",
    )
    .await;
    let reports = futures_join((0..12).map(|i| fixture.charge_owned(format!("t-mirror-{i}"))).collect()).await;
    let retried: Vec<&TxReport> = reports.iter().filter(|report| report.attempts.len() > 1).collect();
    assert!(!retried.is_empty(), "the test needs retries after a charge");
    for report in retried {
        let mirror = http_outcomes(report, 1, true);
        assert_eq!(mirror, vec![HttpOutcome::Stubbed { status: 200, source: "journal".into() }], "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sdk_tells_the_transaction_id_and_the_keys() {
    let fixture = Fixture::new(Behaviour::default(), "").await;
    let report = fixture.run("whoami", "t-who", json!({})).await;
    let TransactionOutcome::Committed { output, .. } = &report.outcome else { panic!("{:?}", report.failure) };
    let output: Value = serde_json::from_slice(output).unwrap();
    assert_eq!(output, json!({ "transaction_id": "t-who", "first_key": effect_key("t-who", "whoami", 1) }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_calls_are_keyed_and_sent_again() {
    let fixture = Fixture::new(Behaviour::default(), &format!("{RETRIES}\n[effects]\njournal = false\n")).await;
    let report = fixture.charge("t-unjournalled", json!({ "then": "unavailable" })).await;
    assert_eq!(failures(&report), vec![FailureKind::Unavailable; 3]);
    assert_eq!(fixture.charges(), HashMap::from([(Some(effect_key("t-unjournalled", "charge", 1)), 3)]));
}
