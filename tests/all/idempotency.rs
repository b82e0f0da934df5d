//! Idempotency keys: one execution per key, the same answer for every
//! request that carries it, and keys that lapse after their retention.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tempfile::tempdir;
use txmirror_runtime::clock::ManualClock;
use txmirror_runtime::{ExecuteError, Runtime, RuntimeConfig, TxRequest};
use txmirror_tests::{config, guests, load, policy, runtime};

fn deposit(key: &str) -> TxRequest {
    TxRequest {
        path: Some("deposit".into()),
        input: json!({ "account": "alice", "amount": 10 }).to_string().into_bytes(),
        idempotency_key: Some(key.into()),
        ..Default::default()
    }
}

fn balance(runtime: &Runtime) -> u64 {
    let stored = runtime.snapshot().unwrap().get("accounts", "alice").unwrap().unwrap();
    serde_json::from_slice(&stored.value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_run_once() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");

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
    let policy = policy(
        "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[idempotency]\nretention_secs = 1\n",
    );
    // Time moves when the test says, not while it sleeps.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let runtime = || Runtime::open(RuntimeConfig { clock: clock.clone(), ..config(dir.path()) }).unwrap();
    let first = {
        let runtime = runtime();
        let module = load(&runtime, guests::BANK_TRANSFER).await;
        runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap()
    };
    let runtime = runtime();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let repeat = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    assert!(repeat.deduplicated, "the key outlived the process");
    assert_eq!(repeat.transaction_id, first.transaction_id);
    assert_eq!(balance(&runtime), 10);

    clock.advance(Duration::from_millis(999));
    let still = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    assert!(still.deduplicated, "the claim lasts its whole retention");
    clock.advance(Duration::from_millis(1));
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
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");
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

/// Bug: a key reused with another input ran nothing and answered with the
/// first request's outcome, so a client crediting bob with alice's key was
/// told its deposit had committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_refused_even_while_the_first_runs() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy("[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n");
    let to = |account: &str, path: &str| TxRequest {
        path: Some(path.into()),
        input: json!({ "account": account, "amount": 10 }).to_string().into_bytes(),
        idempotency_key: Some("k1".into()),
        ..Default::default()
    };

    // Two requests with one key at once: whichever runs, the other is refused.
    let (a, b) = tokio::join!(
        runtime.execute(&module, &policy, to("alice", "deposit")),
        runtime.execute(&module, &policy, to("bob", "deposit"))
    );
    let refused = match (a, b) {
        (Ok(ran), Err(refused)) | (Err(refused), Ok(ran)) => {
            assert!(!ran.deduplicated);
            refused
        }
        (a, b) => panic!("one runs, one is refused: {a:?} {b:?}"),
    };
    assert!(matches!(refused, ExecuteError::IdempotencyKeyReused { .. }), "{refused}");

    // Once recorded, the key still refuses another account, another amount
    // or another path, and answers the same request.
    let recorded = runtime.execute(&module, &policy, to("alice", "deposit")).await;
    let winner_is_alice = recorded.is_ok();
    let (winner, loser) = if winner_is_alice { ("alice", "bob") } else { ("bob", "alice") };
    let other_amount = TxRequest {
        input: json!({ "account": winner, "amount": 11 }).to_string().into_bytes(),
        ..to(winner, "deposit")
    };
    for other in [to(loser, "deposit"), other_amount, to(winner, "balance")] {
        let err = runtime.execute(&module, &policy, other).await.unwrap_err();
        assert!(err.to_string().contains("idempotency key `k1` was used for another request"), "{err}");
    }
    let repeat = runtime.execute(&module, &policy, to(winner, "deposit")).await.unwrap();
    assert!(repeat.deduplicated);
    let stored = runtime.snapshot().unwrap();
    assert!(stored.get("accounts", loser).unwrap().is_none(), "the refused request ran nothing");
    assert_eq!(serde_json::from_slice::<u64>(&stored.get("accounts", winner).unwrap().unwrap().value).unwrap(), 10);
}

/// Bug: recovery in `dead_letter` mode dead-lettered a repeat whose key was
/// bound to a committed transaction ("interrupted, nothing was committed"),
/// and replaying that letter deposited a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_answers_a_repeat_of_a_committed_key_and_dead_letters_nothing() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(
        "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[recovery]\nin_flight = \"dead_letter\"\n",
    );
    let first = runtime.execute(&module, &policy, deposit("pay-1")).await.unwrap();
    let recovered = runtime.recover_interrupted(&module, &policy, "repeat", deposit("pay-1")).await.unwrap();
    assert_eq!((recovered.transaction_id.as_str(), recovered.deduplicated), (first.transaction_id.as_str(), true));
    assert!(runtime.dead_letters(10).unwrap().is_empty(), "nothing to replay");
    assert!(runtime.transaction("repeat").unwrap().is_none(), "the repeat was the first transaction");
    assert_eq!(balance(&runtime), 10);

    // A transaction interrupted before it ran is dead-lettered with its key
    // free; the replay takes the key, so a client's retry cannot commit twice.
    let interrupted = runtime.recover_interrupted(&module, &policy, "lost", deposit("pay-2")).await.unwrap();
    assert_eq!(interrupted.failure.unwrap().kind, txmirror_runtime::FailureKind::Interrupted);
    let retried = runtime.execute(&module, &policy, deposit("pay-2")).await.unwrap();
    assert!(!retried.deduplicated, "the dead-lettered transaction released its key");
    let replayed = runtime.replay_dead_letter(&module, &policy, "lost").await.unwrap();
    assert_eq!((replayed.transaction_id.as_str(), replayed.deduplicated), (retried.transaction_id.as_str(), true));
    assert_eq!(balance(&runtime), 20, "the retry committed; the replay repeated nothing");
    assert!(runtime.dead_letter("lost").unwrap().is_none(), "the letter is answered");
}
