//! Charges go out once, from the primary only, to granted gateways.

use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::store::{AttemptOutcome, TransactionOutcome};
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_runtime::{FailureKind, GateVerdict, HedgeTrigger, ReplayError, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, policy as policy_with, runtime};

pub(crate) fn charge(path: &str, order: &str) -> TxRequest {
    let input = json!({ "order_id": order, "amount_cents": 1250, "currency": "EUR" });
    TxRequest { path: Some(path.into()), input: input.to_string().into_bytes(), ..Default::default() }
}

pub(crate) fn gateway_policy(primary: &TestServer, backup: &TestServer) -> String {
    format!(
        r#"
        alternative_paths = ["charge-backup"]
        compensation_path = "refund"
        [capabilities]
        kv = {{ payments = "read-write" }}
        streams = ["payments"]
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
pub(crate) fn charges(server: &TestServer) -> Vec<txmirror_tests::Received> {
    server.received().into_iter().filter(|r| r.method == "POST" && r.uri == "/charges").collect()
}

pub(crate) fn gateway() -> Behaviour {
    Behaviour { status: 201, body: r#"{"charge_id": "ch_{n}"}"#.into(), ..Default::default() }
}

/// A runtime with the payment module, two healthy gateways and the policy
/// that grants them.
struct Payments {
    _dir: tempfile::TempDir,
    /// Shared, so that a test can change its behaviour from another task.
    primary: std::sync::Arc<TestServer>,
    backup: TestServer,
    runtime: txmirror_runtime::Runtime,
    module: txmirror_runtime::Module,
    policy: std::sync::Arc<txmirror_runtime::Policy>,
}

impl Payments {
    async fn start() -> Self {
        Self::with(gateway(), gateway_policy).await
    }

    /// The primary gateway behaving as `primary`, and the policy `text`
    /// writes for the two gateways.
    async fn with(primary: Behaviour, text: impl Fn(&TestServer, &TestServer) -> String) -> Self {
        let dir = tempdir().unwrap();
        let (primary, backup) = (TestServer::start(primary).await, TestServer::start(gateway()).await);
        let runtime = runtime(dir.path());
        let module = load(&runtime, guests::PAYMENT).await;
        let policy = policy(&text(&primary, &backup));
        Self { _dir: dir, primary: std::sync::Arc::new(primary), backup, runtime, module, policy }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_is_sent_once_by_the_primary() {
    let Payments { _dir, primary, backup, runtime, module, policy } = Payments::start().await;

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
        HostCall::Gate { decision, .. } => Some(*decision),
        _ => None,
    });
    assert_eq!(gate, Some(GateVerdict::Pass), "the charge passed the gate");

    let mirror = report.attempts[0].mirror.as_ref().unwrap();
    assert!(
        mirror.events.iter().any(|e| matches!(
            &e.call,
            HostCall::Http { outcome: HttpOutcome::Stubbed { status: 201, source }, .. } if source == "policy"
        )),
        "{mirror:#?}"
    );
    let stored = runtime.snapshot().unwrap().get("payments", "order-1").unwrap().unwrap();
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
        matches!(&first.attempt.outcome, AttemptOutcome::Failed { kind: FailureKind::Diverted, .. }),
        "{:?}",
        first.attempt.outcome
    );
    assert!(charges(&primary).is_empty(), "diverted before its charge: {:?}", primary.received());
    assert_eq!(charges(&backup).len(), 1, "one charge in all");
    assert_eq!(report.output_json().unwrap()["gateway"], "backup_gateway");
    let gate = first.primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { decision, reasons, failure_probability, .. } => {
            Some((*decision, reasons.clone(), *failure_probability))
        }
        _ => None,
    });
    let (decision, reasons, probability) = gate.expect("the gate decided");
    assert_eq!(decision, GateVerdict::Divert);
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
        HostCall::Gate { decision, reasons, .. } => Some((*decision, reasons.clone())),
        _ => None,
    });
    let (decision, reasons) = gate.expect("the gate decided");
    assert_eq!(decision, GateVerdict::Divert);
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
    let letters = runtime.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.transaction_id, report.transaction_id);
    assert_eq!(letter.attempts.len(), 4, "the whole history, traces included");
    assert!(letter.attempts.iter().all(|a| a.mirror.is_some() && a.prediction.is_some()));
    let compensation = letter.compensation.as_ref().expect("the compensation path ran");
    assert_eq!(compensation.path, "refund");
    assert!(matches!(compensation.outcome, TransactionOutcome::Committed { .. }), "{compensation:?}");
    assert!(runtime.transaction(&compensation.transaction_id).unwrap().is_some());
    assert!(charges(&primary).is_empty());

    // Replayed while the fault lasts: it fails, and leaves the letter as it
    // was, with no letter of its own and no second compensation; twice in
    // a row, at once.
    for _ in 0..2 {
        let failed = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap();
        assert!(failed.failure.is_some(), "{failed:#?}");
        let letters = runtime.dead_letters(10).unwrap();
        assert_eq!(letters.len(), 1, "still the one letter");
        assert_eq!(letters[0].transaction_id, report.transaction_id);
        assert!(runtime.transaction(&format!("{}.compensation", failed.transaction_id)).unwrap().is_none());
    }

    // The fault is removed; the replay commits, once. (The failed replays'
    // charges were refused with 503: nothing was charged.)
    let refused = charges(&primary).len();
    primary.set_behaviour(gateway());
    let replayed = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap();
    assert!(replayed.failure.is_none(), "{replayed:#?}");
    assert_eq!(replayed.path, "charge");
    assert!(runtime.dead_letter(&report.transaction_id).unwrap().is_none(), "the letter is gone");
    let again = runtime.replay_dead_letter(&module, &policy, &report.transaction_id).await.unwrap_err();
    assert!(matches!(again, ReplayError::NoSuchDeadLetter(_)), "{again}");
    assert_eq!(charges(&primary).len() - refused, 1, "one charge, from the replay");
    let stored = runtime.snapshot().unwrap().get("payments", "order-dlq").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert!(stored["charge_id"].as_str().unwrap().starts_with("ch_"));
}

/// Every path charges and then fails (a success criterion the charge's
/// output never meets): the compensation refunds exactly the charges that
/// were sent, at the gateways that took them, and the dead letter shows
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compensation_refunds_exactly_the_charges_that_were_sent() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!(
        "failure_prediction_enabled = false\n{}\n[success_criteria]\nrequired_output_fields = [\"settled\"]\n",
        gateway_policy(&primary, &backup)
    );
    let policy = policy(&text);
    let report = runtime.execute(&module, &policy, charge("charge", "order-comp")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::SuccessCriteria));
    let paths: std::collections::BTreeSet<&str> = report.attempts.iter().map(|a| a.attempt.path.as_str()).collect();
    assert_eq!(paths, ["charge", "charge-backup"].into(), "both paths tried");
    // Each path charged once, however many attempts it made.
    let (charged_primary, charged_backup) = (charges(&primary), charges(&backup));
    assert_eq!((charged_primary.len(), charged_backup.len()), (1, 1));
    // The gateways answered `ch_{n}`, n counting their requests: the charge
    // was request 2 at each (after the health check).
    assert_eq!(refunds(&primary), vec![json!({ "charge_id": "ch_2" })], "the primary's charge, refunded");
    assert_eq!(refunds(&backup), vec![json!({ "charge_id": "ch_2" })], "the backup's charge, refunded");
    let letter = runtime.dead_letter(&report.transaction_id).unwrap().unwrap();
    let sent: Vec<(&str, u32, Option<u16>)> =
        letter.effects.iter().map(|e| (e.path.as_str(), e.ordinal, e.response.as_ref().map(|r| r.status))).collect();
    assert_eq!(sent, vec![("charge", 1, Some(201)), ("charge-backup", 1, Some(201))], "the letter shows what was sent");
    let compensation = letter.compensation.unwrap();
    assert!(matches!(compensation.outcome, TransactionOutcome::Committed { .. }), "{compensation:?}");
}

/// A dead letter nothing compensated still holds the charges its paths
/// made: a replay goes on from its journal, as a retry would, and sends
/// none of them again. One whose compensation committed starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_goes_on_from_the_letters_journal_unless_it_was_compensated() {
    // The policies differ below: the one `start` makes is not used.
    let Payments { _dir, primary, backup, runtime, module, policy: _ } = Payments::start().await;
    // Every charge goes through, and no output is ever `settled`: both
    // paths charge once and fail; without a compensation path, nothing
    // is refunded.
    let base = gateway_policy(&primary, &backup).replace("compensation_path = \"refund\"", "");
    let unmet = |compensate: bool| {
        let compensation = if compensate { "compensation_path = \"refund\"\n" } else { "" };
        policy(&format!(
            "failure_prediction_enabled = false\n{compensation}{base}\n[success_criteria]\nrequired_output_fields = [\"settled\"]\n"
        ))
    };
    let met = policy(&format!("failure_prediction_enabled = false\n{base}"));

    let report = runtime.execute(&module, &unmet(false), charge("charge", "order-kept")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::SuccessCriteria));
    assert_eq!((charges(&primary).len(), charges(&backup).len()), (1, 1));
    let letter = runtime.dead_letter(&report.transaction_id).unwrap().unwrap();
    assert!(letter.compensation.is_none());

    let replayed = runtime.replay_dead_letter(&module, &met, &report.transaction_id).await.unwrap();
    assert!(replayed.failure.is_none(), "{replayed:#?}");
    assert!(replayed.transaction_id.starts_with(&format!("{}.replay-", report.transaction_id)));
    let replayed_charge = replayed.attempts[0].primary.events.iter().any(|e| {
        matches!(&e.call, HostCall::Http { safe: false, outcome: HttpOutcome::Replayed { status: 201, .. }, .. })
    });
    assert!(replayed_charge, "the charge answered from the letter's journal: {:#?}", replayed.attempts[0].primary);
    assert_eq!((charges(&primary).len(), charges(&backup).len()), (1, 1), "nothing charged again");
    let stored = runtime.snapshot().unwrap().get("payments", "order-kept").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored["charge_id"], "ch_2", "the first charge's id, from its recorded answer");

    // Compensated, the letter's charges were refunded: its replay charges anew.
    let report = runtime.execute(&module, &unmet(true), charge("charge", "order-undone")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::SuccessCriteria));
    let letter = runtime.dead_letter(&report.transaction_id).unwrap().unwrap();
    assert!(matches!(letter.compensation.unwrap().outcome, TransactionOutcome::Committed { .. }));
    let before = charges(&primary).len();
    let replayed = runtime.replay_dead_letter(&module, &met, &report.transaction_id).await.unwrap();
    assert!(replayed.failure.is_none(), "{replayed:#?}");
    assert!(!replayed.transaction_id.contains(".replay-"), "a fresh transaction: {}", replayed.transaction_id);
    assert_eq!(charges(&primary).len(), before + 1, "charged again, under a new key");
}

/// A policy whose only rule always holds, with the given action: every
/// charge is doubted, so the gate acts on every attempt.
fn doubting_policy(primary: &TestServer, backup: &TestServer, action: &str, extra: &str) -> String {
    format!(
        "{extra}\n{}\n[[prediction.rules]]\nname = \"doubt\"\nwhen = \"attempt >= 1\"\nweight = 0.5\n\
         reason = \"every charge is doubted\"\naction = \"{action}\"\n",
        gateway_policy(primary, backup)
    )
}

/// `before: decision` of every gate the primary passed, in order.
pub(crate) fn gate_decisions(trace: &txmirror_runtime::Trace) -> Vec<String> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.call {
            HostCall::Gate { decision, before, .. } => Some(format!("{before}: {decision}")),
            _ => None,
        })
        .collect()
}

fn failed_kind(outcome: &AttemptOutcome) -> Option<FailureKind> {
    match outcome {
        AttemptOutcome::Failed { kind, .. } => Some(*kind),
        AttemptOutcome::Committed => None,
    }
}

/// The refunds (POST /refunds) a gateway received, their bodies as JSON.
fn refunds(server: &TestServer) -> Vec<Value> {
    server
        .received()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri == "/refunds")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// Whether the trace shows an unsafe call that left the host.
fn sent_a_charge(trace: &txmirror_runtime::Trace) -> bool {
    trace.events.iter().any(|e| {
        matches!(
            &e.call,
            HostCall::Http { safe: false, outcome: HttpOutcome::Answered { .. } | HttpOutcome::Failed { .. }, .. }
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_the_predictor_asks_for_beats_a_slow_primary_with_one_charge() {
    // The primary gateway is slow; the predictor doubts every charge.
    let slow = Behaviour { delay: std::time::Duration::from_millis(300), ..gateway() };
    let Payments { _dir, primary, backup, runtime, module, policy } =
        Payments::with(slow, |primary, backup| doubting_policy(primary, backup, "hedge", "")).await;

    let report = runtime.execute(&module, &policy, charge("charge", "order-hedged")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup", "the hedge reached its charge first and won");
    let [first, hedge] = report.attempts.as_slice() else { panic!("two attempts: {report:#?}") };
    // The primary asked for its hedge, yielded the token, and lost.
    assert_eq!(gate_decisions(&first.primary), ["unsafe call: cancelled"]);
    assert_eq!(failed_kind(&first.attempt.outcome), Some(FailureKind::Cancelled), "{:?}", first.attempt.outcome);
    assert!(!sent_a_charge(&first.primary), "the loser sent no unsafe call: {:#?}", first.primary);
    assert_eq!((hedge.attempt.number, hedge.attempt.path.as_str()), (2, "charge-backup"));
    assert_eq!(hedge.attempt.outcome, AttemptOutcome::Committed);
    let start = hedge.hedge.expect("the hedge says what it hedged");
    assert_eq!((start.of_attempt, start.by), (1, HedgeTrigger::Predictor));
    assert!(charges(&primary).is_empty(), "nothing charged by the loser");
    assert_eq!(charges(&backup).len(), 1, "one charge in all");
    assert!(refunds(&primary).is_empty() && refunds(&backup).is_empty(), "nothing to compensate");

    // The durable record tells both sides of the race.
    let record = runtime.transaction(&report.transaction_id).unwrap().unwrap();
    assert_eq!(record.history.len(), 2);
    assert_eq!(record.history[1].hedge, Some(start));
    assert!(matches!(record.outcome, TransactionOutcome::Committed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout, reason = "what the hedge saved is printed for the record, not asserted")]
async fn a_slow_but_healthy_primary_loses_to_a_timed_hedge() {
    // Nothing is predicted: the primary is only slow (every request of its
    // gateway takes 600 ms), and the policy hedges after 100 ms.
    let slow = Behaviour { delay: std::time::Duration::from_millis(600), ..gateway() };
    let Payments { _dir, primary, backup, runtime, module, policy } = Payments::with(slow, |primary, backup| {
        format!("{}\n[hedge]\nafter_ms = 100\n", gateway_policy(primary, backup))
    })
    .await;

    let started = std::time::Instant::now();
    let report = runtime.execute(&module, &policy, charge("charge", "order-timed")).await.unwrap();
    // Printed, not asserted: what the hedge saved on this machine.
    println!("hedged after 100 ms: the charge committed in {} ms", started.elapsed().as_millis());
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup", "{report:#?}");
    let [first, hedge] = report.attempts.as_slice() else { panic!("two attempts: {report:#?}") };
    assert_eq!(failed_kind(&first.attempt.outcome), Some(FailureKind::Cancelled), "{:?}", first.attempt.outcome);
    assert!(!sent_a_charge(&first.primary), "cancelled before its charge: {:#?}", first.primary);
    let start = hedge.hedge.expect("a hedge");
    assert_eq!((start.of_attempt, start.by), (1, HedgeTrigger::Delay));
    assert!((100_000..600_000).contains(&start.after_micros), "started after the policy's delay: {start:?}");
    assert_eq!((charges(&primary).len(), charges(&backup).len()), (0, 1), "exactly one charge");

    // The same charge without a hedge waits for the slow gateway twice
    // (its health check, then the charge).
    let unhedged = policy_with(&gateway_policy(&primary, &backup));
    let started = std::time::Instant::now();
    let report = runtime.execute(&module, &unhedged, charge("charge", "order-waited")).await.unwrap();
    println!("without a hedge: the charge committed in {} ms", started.elapsed().as_millis());
    assert_eq!((report.path.as_str(), report.attempts.len()), ("charge", 1), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_waits_on_its_percentile_of_the_path() {
    let Payments { _dir, primary, backup, runtime, module, policy } = Payments::with(gateway(), |primary, backup| {
        format!("{}\n[hedge]\nafter_percentile = 95\nmin_samples = 20\n", gateway_policy(primary, backup))
    })
    .await;
    // Twenty quick charges teach the path how long it takes; with fewer,
    // and no fixed delay, nothing is hedged.
    let mut slowest = 0;
    for n in 0..20 {
        let report = runtime.execute(&module, &policy, charge("charge", &format!("order-quick-{n}"))).await.unwrap();
        assert_eq!(report.attempts.len(), 1, "no hedge before the path has its samples: {report:#?}");
        slowest = slowest.max(report.attempts[0].attempt.duration_micros);
    }
    primary.set_behaviour(Behaviour { delay: std::time::Duration::from_millis(1_500), ..gateway() });
    let report = runtime.execute(&module, &policy, charge("charge", "order-late")).await.unwrap();
    assert_eq!(report.path, "charge-backup", "{report:#?}");
    let start = report.attempts[1].hedge.expect("a hedge");
    assert_eq!(start.by, HedgeTrigger::Delay);
    assert!(start.after_micros < 1_500_000, "long before the slow gateway answered: {start:?}");
    assert!(
        start.after_micros >= slowest / 2,
        "after about the 95th percentile of the quick ones (slowest {slowest} µs): {start:?}"
    );
    assert_eq!(charges(&backup).len(), 1);
    assert_eq!(charges(&primary).len(), 20, "the quick ones only");
}

/// The primary holds the token, sends its charge, gets no answer in time
/// and fails; the hedge then charges and commits. The primary's charge may
/// have gone through: the compensation refunds it (by its key, having no
/// charge id), and only it; the committed charge stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_that_wins_after_the_primary_charged_has_that_charge_compensated() {
    let slow = Behaviour { delay: std::time::Duration::from_millis(700), ..gateway() };
    // The health check and the charge each time out at 300 ms; the hedge
    // starts at 450 ms, while the primary waits for its charge's answer.
    // The predictor, which would divert the primary at its failed health
    // check, is kept from acting.
    let Payments { _dir, primary, backup, runtime, module, policy } = Payments::with(slow, |primary, backup| {
        format!(
            "resource_requirements = {{ outbound_timeout_ms = 300 }}\n{}\n[hedge]\nafter_ms = 450\n\
             [prediction]\nthreshold = 0.99\n",
            gateway_policy(primary, backup)
        )
    })
    .await;
    // Once the charge has reached it, the primary gateway answers at once
    // again, so that the refund goes through.
    let healed = tokio::spawn({
        let primary = primary.clone();
        async move {
            for _ in 0..500 {
                if !charges(&primary).is_empty() {
                    primary.set_behaviour(gateway());
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            false
        }
    });

    let report = runtime.execute(&module, &policy, charge("charge", "order-doubt")).await.unwrap();
    assert!(healed.await.unwrap(), "the primary gateway received the charge");
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");
    let [first, hedge] = report.attempts.as_slice() else { panic!("two attempts: {report:#?}") };
    assert_eq!(failed_kind(&first.attempt.outcome), Some(FailureKind::Unavailable), "{:?}", first.attempt.outcome);
    assert_eq!(hedge.hedge.map(|h| h.by), Some(HedgeTrigger::Delay));
    assert_eq!((charges(&primary).len(), charges(&backup).len()), (1, 1));
    assert_eq!(
        refunds(&primary),
        vec![json!({ "idempotency_key": "order-doubt" })],
        "the primary's charge, in doubt, refunded by its key"
    );
    assert!(refunds(&backup).is_empty(), "the committed charge stands");
    let compensation = runtime.transaction(&format!("{}.compensation", report.transaction_id)).unwrap().unwrap();
    assert!(matches!(compensation.outcome, TransactionOutcome::Committed { .. }), "{compensation:?}");
    let stored = runtime.snapshot().unwrap().get("payments", "order-doubt").unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!((stored["gateway"].clone(), stored["refunded"].clone()), (json!("backup_gateway"), json!(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_timeouts_let_a_slow_gateway_answer() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    // Slower than the policy's 400 ms timeout, faster than twice it.
    primary.set_behaviour(Behaviour { delay: std::time::Duration::from_millis(600), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let limits = "resource_requirements = { outbound_timeout_ms = 400 }";
    let text = doubting_policy(&primary, &backup, "adjust_timeouts", limits)
        .replace("when = \"attempt >= 1\"", "when = \"predicted_timeout > 0\"");
    let report = runtime.execute(&module, &policy(&text), charge("charge", "order-patient")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge", "adjusted, not diverted");
    assert_eq!(report.attempts.len(), 1);
    let trace = &report.attempts[0].primary;
    assert_eq!(gate_decisions(trace), ["unsafe call: adjust_timeouts", "commit: pass"]);
    let grants: Vec<(String, u64, u64)> = trace
        .events
        .iter()
        .filter_map(|e| match &e.call {
            HostCall::Grant { resource, from, to, .. } => Some((resource.clone(), *from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, [("outbound_timeout_ms".into(), 400, 800), ("wall_time_ms".into(), 10_000, 10_400)]);
    assert_eq!(charges(&primary).len(), 1);
    assert!(charges(&backup).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_timeouts_earn_the_path_more_attempts_and_carry_over() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    // Slower than the ceiling: raising the timeouts cannot save it.
    primary.set_behaviour(Behaviour { delay: std::time::Duration::from_millis(1_500), ..gateway() });
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = doubting_policy(
        &primary,
        &backup,
        "adjust_timeouts",
        "resource_requirements = { outbound_timeout_ms = 400, outbound_timeout_ceiling_ms = 800 }\n\
         retry = { max_attempts = 1, adjusted_extra_attempts = 1, initial_interval_ms = 10 }",
    )
    .replace("when = \"attempt >= 1\"", "when = \"predicted_timeout > 0\"")
    .replace("alternative_paths = [\"charge-backup\"]", "alternative_paths = []")
    .replace("compensation_path = \"refund\"", "");
    let report = runtime.execute(&module, &policy(&text), charge("charge", "order-hopeless")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::Unavailable), "{report:#?}");
    assert_eq!(report.attempts.len(), 2, "one attempt, plus one for the raised timeouts");
    let timed_out_after = |trace: &txmirror_runtime::Trace| -> Vec<String> {
        trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::Http { outcome: HttpOutcome::Failed { error }, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        timed_out_after(&report.attempts[0].primary),
        ["timed out after 400 ms", "timed out after 800 ms"],
        "the health check at the policy's timeout, the charge at the raised one"
    );
    assert_eq!(
        timed_out_after(&report.attempts[1].primary),
        ["timed out after 800 ms", "timed out after 800 ms"],
        "the next attempt starts with the raised timeouts"
    );
}

/// The path's baseline was learnt from the primary's trace (its gate event
/// and its real answers included) and compared with the mirror's, so a
/// healthy charge strayed 22–35 standard deviations from it and the
/// `deviation` rule held on nearly every attempt. Learnt and compared on
/// the mirror, a healthy path stays on its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_path_stays_on_its_baseline() {
    // Every part stays bound: the gateways and the directory live as long as the test.
    let Payments { _dir, primary: _primary, backup: _backup, runtime, module, policy } = Payments::start().await;
    let mut deviations = Vec::new();
    for n in 0..8 {
        let report = runtime.execute(&module, &policy, charge("charge", &format!("order-b{n}"))).await.unwrap();
        assert!(report.commit_version().is_some(), "{report:#?}");
        let prediction = report.attempts[0].prediction.as_ref().expect("the mirror ran and was scored");
        assert!(prediction.reasons.iter().all(|r| r.rule != "deviation"), "order-b{n}: {prediction:?}");
        deviations.push(prediction.features.baseline_deviation);
    }
    // The first five build the baseline; from then on it is judged.
    assert!(deviations[..5].iter().all(|d| *d == 0.0), "{deviations:?}");
    assert!(deviations[5..].iter().all(|d| *d < 3.0), "{deviations:?}");
}

/// On the last path there is nothing to divert to. A charge the prediction
/// all but condemns (here a rule of weight 0.95 that always holds, acting
/// by divert) is failed fast there rather than sent only to fail; a policy
/// that sets `last_path_fail_fast = 1` lets it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_last_path_a_condemned_charge_fails_fast_instead_of_being_sent() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let condemning = |extra: &str| {
        policy(&format!(
            "{}\n[prediction]\n{extra}\n[[prediction.rules]]\nname = \"doom\"\nwhen = \"attempt >= 1\"\n\
             weight = 0.95\nreason = \"every charge is condemned\"\naction = \"divert\"\n",
            gateway_policy(&primary, &backup)
        ))
    };

    let report = runtime.execute(&module, &condemning(""), charge("charge", "order-condemned")).await.unwrap();
    let failure = report.failure.as_ref().expect("failed");
    assert_eq!(failure.kind, FailureKind::PredictedFailure, "{report:#?}");
    let paths: Vec<&str> = report.attempts.iter().map(|a| a.attempt.path.as_str()).collect();
    assert_eq!(paths, ["charge", "charge-backup"], "diverted once, then stopped on the last path");
    assert_eq!(gate_decisions(&report.attempts[1].primary), ["unsafe call: fail_fast"]);
    assert!(charges(&primary).is_empty() && charges(&backup).is_empty(), "no charge was sent");

    let report = runtime
        .execute(&module, &condemning("last_path_fail_fast = 1"), charge("charge", "order-let-run"))
        .await
        .unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");
    assert_eq!(gate_decisions(&report.attempts[1].primary), ["unsafe call: pass", "commit: pass"]);
    assert_eq!(charges(&backup).len(), 1);
}

/// Before the commit nothing has left the host, and a failed attempt is
/// retried from a fresh snapshot: a deposit the prediction condemns on its
/// only path, having sent nothing, is not failed fast for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_commit_a_condemned_attempt_on_the_last_path_is_not_failed_fast() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(
        "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[[prediction.rules]]\nname = \"doom\"\n\
         when = \"attempt >= 1\"\nweight = 0.95\nreason = \"every deposit is condemned\"\naction = \"divert\"\n",
    );
    let input = json!({ "account": "a", "amount": 5 }).to_string().into_bytes();
    let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(gate_decisions(&report.attempts[0].primary), ["commit: pass"]);
}
