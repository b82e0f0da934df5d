//! A caller's cancel, at the runtime: looked at before each attempt and
//! between them; a cancelled transaction keeps its idempotency key and
//! goes to no dead-letter queue. (The service's tests cancel within an
//! attempt, before and after its charge; the CLI's with a real Ctrl-C.)

use crate::payment::{charge, charges, gateway, gateway_policy};
use std::sync::Arc;
use std::time::Duration;
use tempfile::tempdir;
use txmirror_runtime::store::TransactionOutcome;
use txmirror_runtime::{CancelToken, FailureKind, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

fn cancelled_kind(outcome: &TransactionOutcome) -> Option<FailureKind> {
    match outcome {
        TransactionOutcome::Failed { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cancelled_before_it_starts_runs_nothing_and_keeps_its_key() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let policy = policy(&gateway_policy(&primary, &backup));
    let cancel = CancelToken::new();
    cancel.cancel();
    let request = |cancel: Option<CancelToken>| TxRequest {
        idempotency_key: Some("order-1".into()),
        cancel,
        ..charge("charge", "o-1")
    };
    let report = runtime.execute(&module, &policy, request(Some(cancel))).await.unwrap();
    assert_eq!(cancelled_kind(&report.outcome), Some(FailureKind::CancelledByCaller), "{:?}", report.outcome);
    assert!(report.failure.as_ref().unwrap().message.contains("before its first attempt"), "{:?}", report.failure);
    assert!(report.attempts.is_empty());
    assert!(!runtime.is_dead_lettered(&report.transaction_id).unwrap(), "a cancel is not a dead letter");
    assert!(runtime.transaction(&format!("{}.compensation", report.transaction_id)).unwrap().is_none());

    // The same request again gets the cancelled outcome: it is not run
    // behind its caller's back.
    let again = runtime.execute(&module, &policy, request(None)).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.transaction_id, report.transaction_id);
    assert!(primary.received().is_empty() && backup.received().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_waiting_to_retry_ends_the_transaction_there() {
    let dir = tempdir().unwrap();
    // Healthy to its health check; every charge answered `503`.
    let failing = Behaviour { failing_bodies: Some(("order_id".into(), 503)), ..gateway() };
    let (primary, backup) = (TestServer::start(failing).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    // Three attempts on the primary, two seconds apart, before the backup.
    let text =
        format!("{}\n[retry]\nmax_attempts = 3\ninitial_interval_ms = 2000\n", gateway_policy(&primary, &backup));
    let policy = policy(&text);
    let cancel = CancelToken::new();
    let request = TxRequest { cancel: Some(cancel.clone()), ..charge("charge", "o-2") };
    let running = {
        let (runtime, module, policy) = (runtime.clone(), module.clone(), Arc::clone(&policy));
        tokio::spawn(async move { runtime.execute(&module, &policy, request).await })
    };
    // The first attempt's charge was refused: the transaction waits to retry.
    for _ in 0..400 {
        if !charges(&primary).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(charges(&primary).len(), 1, "{:?}", primary.received());
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), running).await.unwrap().unwrap().unwrap();
    assert_eq!(cancelled_kind(&report.outcome), Some(FailureKind::CancelledByCaller), "{:?}", report.outcome);
    let message = &report.failure.as_ref().unwrap().message;
    assert!(message.contains("between two attempts") && message.contains("unavailable"), "{message}");
    assert_eq!(report.attempts.len(), 1, "no attempt after the cancel");
    assert_eq!(charges(&primary).len(), 1);
    assert!(charges(&backup).is_empty(), "the backup path never ran");
    assert!(!runtime.is_dead_lettered(&report.transaction_id).unwrap());
    // A refused charge did nothing: there is nothing to compensate.
    assert!(runtime.transaction(&format!("{}.compensation", report.transaction_id)).unwrap().is_none());
}
