//! Idempotency keys: one execution per key, the same answer for every
//! request that carries it, and keys that lapse after their retention.

use serde_json::json;
use tempfile::tempdir;
use txmirror_runtime::{ExecuteError, TxRequest};
use txmirror_tests::{guests, load, policy, runtime};

fn deposit(key: &str) -> TxRequest {
    TxRequest {
        path: Some("deposit".into()),
        input: json!({ "account": "alice", "amount": 10 }).to_string().into_bytes(),
        idempotency_key: Some(key.into()),
        ..Default::default()
    }
}

fn balance(runtime: &txmirror_runtime::Runtime) -> u64 {
    let stored = runtime.store().snapshot().unwrap().get("accounts", "alice").unwrap().unwrap();
    serde_json::from_slice(&stored.value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_run_once() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\n");

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (runtime, module, policy) = (runtime.clone(), module.clone(), policy.clone());
            tokio::spawn(async move { runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap() })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.unwrap());
    }
    assert_eq!(balance(&runtime), 10, "one deposit, not fifty");
    let executed: Vec<_> = reports.iter().filter(|r| !r.deduplicated).collect();
    assert_eq!(executed.len(), 1, "exactly one request ran the transaction");
    let first = executed[0];
    for report in &reports {
        assert_eq!(report.transaction_id, first.transaction_id);
        assert_eq!(report.outcome, first.outcome, "identical answers");
    }

    // Later, the key still answers with the recorded outcome; another key runs.
    let again = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.transaction_id.as_str(), &again.outcome), (first.transaction_id.as_str(), &first.outcome));
    let other = runtime.execute(&module, &policy, deposit("pay-2")).await.unwrap();
    assert!(!other.deduplicated);
    assert_eq!(balance(&runtime), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_and_lapse_after_their_retention() {
    let dir = tempdir().unwrap();
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\n[idempotency]\nretention_secs = 1\n");
    let first = {
        let runtime = runtime(dir.path());
        let module = load(&runtime, guests::BANK_TRANSFER).await;
        runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap()
    };
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let repeat = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    assert!(repeat.deduplicated, "the key outlived the process");
    assert_eq!(repeat.transaction_id, first.transaction_id);
    assert_eq!(balance(&runtime), 10);

    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let after = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    assert!(!after.deduplicated, "the claim lapsed");
    assert_ne!(after.transaction_id, first.transaction_id);
    assert_eq!(balance(&runtime), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_under_the_key_and_bad_keys_refused() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\n");
    let overdraft = || TxRequest {
        path: Some("transfer".into()),
        input: json!({ "from": "nobody", "to": "alice", "amount": 5 }).to_string().into_bytes(),
        idempotency_key: Some("t-1".into()),
        ..Default::default()
    };
    let first = runtime.execute(&module, &policy, overdraft()).await.unwrap();
    assert!(first.failure.is_some());
    let repeat = runtime.execute(&module, &policy, overdraft()).await.unwrap();
    assert!(repeat.deduplicated);
    assert_eq!(repeat.failure, first.failure, "the recorded failure, kind and message");

    let bad = TxRequest { idempotency_key: Some(String::new()), ..deposit("x") };
    let err = runtime.execute(&module, &policy, bad).await.unwrap_err();
    assert!(matches!(err, ExecuteError::InvalidIdempotencyKey(_)), "{err}");
}
