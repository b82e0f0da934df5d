//! The predicted view of event streams: a mirror's events are published
//! before its primary commits, then confirmed, corrected or retracted.

use crate::payment::{charge, gateway, gateway_policy};
use serde_json::{Value, json};
use tempfile::tempdir;
use txmirror_runtime::{NoticeKind, PredictionNotice, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

fn kinds(notices: &[PredictionNotice]) -> Vec<NoticeKind> {
    notices.iter().map(|n| n.kind).collect()
}

fn payload(notice: &PredictionNotice) -> Value {
    serde_json::from_slice(&notice.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_predicted_then_confirmed() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(
        "failure_prediction_enabled = true\n[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n",
    );
    for account in ["a", "b"] {
        let input = json!({ "account": account, "amount": 100 }).to_string().into_bytes();
        let request = TxRequest { path: Some("deposit".into()), input, ..Default::default() };
        assert!(runtime.execute(&module, &policy, request).await.unwrap().failure.is_none());
    }
    let input = json!({ "from": "a", "to": "b", "amount": 30 }).to_string().into_bytes();
    let request = TxRequest { path: Some("transfer".into()), input, ..Default::default() };
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");

    let notices = runtime.predicted_events("transfers", 0, 10);
    assert_eq!(kinds(&notices), [NoticeKind::Predicted, NoticeKind::Confirmed], "{notices:#?}");
    let (predicted, confirmed) = (&notices[0], &notices[1]);
    assert_eq!(predicted.transaction_id, report.transaction_id);
    assert_eq!(payload(predicted), json!({ "from": "a", "to": "b", "amount": 30 }));
    assert_eq!(confirmed.settles, Some(predicted.offset));
    assert_eq!(confirmed.payload, runtime.events("transfers", 0, 10).unwrap()[0].payload, "what committed");
    assert!(confirmed.lead_micros.is_some());
    let stats = runtime.prediction_stats("transfers");
    assert_eq!((stats.predicted, stats.confirmed, stats.mismatch_rate()), (1, 1, Some(0.0)));

    // A rejected transfer's mirror emits nothing: nothing is predicted.
    let input = json!({ "from": "a", "to": "b", "amount": 1000 }).to_string().into_bytes();
    let request = TxRequest { path: Some("transfer".into()), input, ..Default::default() };
    assert!(runtime.execute(&module, &policy, request).await.unwrap().failure.is_some());
    assert_eq!(runtime.predicted_events("transfers", 0, 10).len(), 2);
}

/// A charge's event names the gateway's charge id, which the mirror (whose
/// charge a stub answers) cannot know: predicted with the stub's id, then
/// corrected with the real one, and counted as a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_predicted_with_the_stubs_charge_id_is_corrected() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&gateway_policy(&primary, &backup));
    let report = runtime.execute(&module, &policy, charge("charge", "order-1")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let notices = runtime.predicted_events("payments", 0, 10);
    assert_eq!(kinds(&notices), [NoticeKind::Predicted, NoticeKind::Corrected], "{notices:#?}");
    assert_eq!(payload(&notices[0]), json!({ "charged": "order-1", "charge_id": "stub" }));
    assert_eq!(notices[1].payload, runtime.events("payments", 0, 10).unwrap()[0].payload, "what committed");
    assert!(payload(&notices[1])["charge_id"].as_str().unwrap().starts_with("ch_"), "the gateway's id");
    let stats = runtime.prediction_stats("payments");
    assert_eq!((stats.corrected, stats.mismatch_rate()), (1, Some(1.0)));
}

/// The primary gateway refuses the charge the mirror's stub accepted: the
/// first attempt's prediction is retracted, and the attempt that commits
/// predicts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempts_prediction_is_retracted() {
    let dir = tempdir().unwrap();
    let failing = Behaviour { failing_bodies: Some(("order-2".into(), 500)), ..gateway() };
    let (primary, backup) = (TestServer::start(failing).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&gateway_policy(&primary, &backup));
    let report = runtime.execute(&module, &policy, charge("charge", "order-2")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert!(report.attempts.len() >= 2, "{report:#?}");

    let notices = runtime.predicted_events("payments", 0, 50);
    let summary: Vec<(NoticeKind, u32)> = notices.iter().map(|n| (n.kind, n.attempt)).collect();
    let retracted: Vec<&PredictionNotice> = notices.iter().filter(|n| n.kind == NoticeKind::Retracted).collect();
    // Each failed attempt whose mirror charged (and emitted) has its
    // prediction retracted, saying how the attempt ended.
    for (number, attempt) in report.attempts.iter().enumerate().take(report.attempts.len() - 1) {
        let number = u32::try_from(number + 1).unwrap();
        let predicted = notices.iter().any(|n| n.attempt == number && n.kind == NoticeKind::Predicted);
        let withdrawn = retracted.iter().find(|n| n.attempt == number);
        assert_eq!(predicted, withdrawn.is_some(), "attempt {number}: {summary:?}");
        if let (Some(notice), txmirror_runtime::store::AttemptOutcome::Failed { kind, .. }) =
            (withdrawn, &attempt.attempt.outcome)
        {
            assert!(notice.reason.as_deref().unwrap().contains(kind.as_str()), "{:?}", notice.reason);
        }
    }
    assert!(!retracted.is_empty(), "{summary:?}");
    // The attempt that committed settles its own prediction, if its mirror ran.
    let last = u32::try_from(report.attempts.len()).unwrap();
    let settled: Vec<NoticeKind> = notices.iter().filter(|n| n.attempt == last).map(|n| n.kind).collect();
    let stats = runtime.prediction_stats("payments");
    if report.attempts.last().unwrap().mirror.is_some() {
        // Its mirror's prediction corrected, or, when the mirror emitted
        // nothing (the backup's stubbed answer names no charge), the
        // committed event counted as unpredicted.
        assert!(settled.is_empty() || settled == [NoticeKind::Predicted, NoticeKind::Corrected], "{summary:?}");
        assert_eq!(stats.confirmed + stats.corrected + stats.unpredicted, 1, "{stats:?}");
    } else {
        assert!(settled.is_empty(), "{summary:?}");
    }
    assert_eq!(runtime.prediction_stats("payments").retracted, retracted.len() as u64);
}
