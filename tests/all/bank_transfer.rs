//! Transfers move money, refuse overdrafts, and optimistic concurrency
//! keeps every update under contention.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use tempfile::tempdir;
use txmirror_runtime::store::{
    AcceptRequest, Acceptance, Accepted, AttemptOutcome, CommitError, CommitRequest, DeadLetter, Effect, EffectWrite,
    Fence, IdempotencyClaim, IdempotencyEntry, LetterPosition, RedbStore, StateSnapshot, StateStore, StoreError,
    StoredEvent, TransactionRecord,
};
use txmirror_runtime::{FailureKind, Module, Policy, Runtime, RuntimeConfig, TxReport, TxRequest};
use txmirror_tests::{guests, load, policy, runtime};

const POLICY: &str = "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n";

fn request(path: &str, input: Value) -> TxRequest {
    TxRequest { path: Some(path.into()), input: input.to_string().into_bytes(), ..Default::default() }
}

async fn deposit(runtime: &Runtime, module: &Module, policy: &Arc<Policy>, account: &str, amount: u64) {
    let report = runtime
        .execute(module, policy, request("deposit", json!({"account": account, "amount": amount})))
        .await
        .unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
}

fn balance(runtime: &Runtime, account: &str) -> u64 {
    let stored = runtime.snapshot().unwrap().get("accounts", account).unwrap().unwrap();
    serde_json::from_slice(&stored.value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_move_money_and_refuse_overdrafts() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(POLICY);
    deposit(&runtime, &module, &policy, "alice", 100).await;
    deposit(&runtime, &module, &policy, "bob", 0).await;

    let report = runtime
        .execute(&module, &policy, request("transfer", json!({"from": "alice", "to": "bob", "amount": 30})))
        .await
        .unwrap();
    assert_eq!(report.output_json().unwrap(), json!({"from_balance": 70, "to_balance": 30}));
    assert_eq!((balance(&runtime, "alice"), balance(&runtime, "bob")), (70, 30));
    let events = runtime.events("transfers", 0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].transaction_id, report.transaction_id);

    let version = runtime.snapshot().unwrap().version();
    let overdraft = runtime
        .execute(&module, &policy, request("transfer", json!({"from": "alice", "to": "bob", "amount": 1000})))
        .await
        .unwrap();
    let failure = overdraft.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Rejected);
    assert!(failure.message.contains("insufficient funds"), "{}", failure.message);
    assert_eq!(runtime.snapshot().unwrap().version(), version, "a rejected transfer commits nothing");

    let invalid = runtime
        .execute(&module, &policy, request("transfer", json!({"from": "alice", "to": "alice", "amount": 0})))
        .await
        .unwrap();
    let failure = invalid.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::Validation);
    assert!(failure.message.contains("amount") && failure.message.contains("to:"), "{}", failure.message);
}

/// A store whose first two snapshots wait for each other, so that two
/// transactions are sure to read the same version: a fault-injection seam.
#[derive(Debug)]
struct RacingStore {
    inner: RedbStore,
    barrier: Barrier,
    waiting: AtomicUsize,
}

impl StateStore for RacingStore {
    fn snapshot(&self) -> Result<Arc<dyn StateSnapshot>, StoreError> {
        let snapshot = self.inner.snapshot()?;
        if self.waiting.fetch_add(1, Ordering::SeqCst) < 2 {
            self.barrier.wait();
        }
        Ok(snapshot)
    }
    fn commit(&self, request: CommitRequest) -> Result<u64, CommitError> {
        self.inner.commit(request)
    }
    fn record_outcome(
        &self,
        record: TransactionRecord,
        claim: Option<IdempotencyClaim>,
        letter: Option<DeadLetter>,
        fence: Option<&Fence>,
        events: Vec<txmirror_runtime::store::EventEntry>,
    ) -> Result<(), StoreError> {
        self.inner.record_outcome(record, claim, letter, fence, events)
    }
    fn dead_letters(&self, after: Option<&LetterPosition>, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(after, limit)
    }
    fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        self.inner.dead_letter(id)
    }
    fn remove_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove_dead_letter(id)
    }
    fn idempotency(&self, key: &str) -> Result<Option<IdempotencyEntry>, StoreError> {
        self.inner.idempotency(key)
    }
    fn purge_lapsed_keys(&self, now_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.inner.purge_lapsed_keys(now_unix_ms, limit)
    }
    fn transaction(&self, id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        self.inner.transaction(id)
    }
    fn transactions(&self, after: Option<&str>, limit: usize) -> Result<Vec<TransactionRecord>, StoreError> {
        self.inner.transactions(after, limit)
    }
    fn events(&self, stream: &str, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(stream, after, limit)
    }
    fn group_offset(&self, stream: &str, group: &str) -> Result<Option<u64>, StoreError> {
        self.inner.group_offset(stream, group)
    }
    fn acknowledge(&self, stream: &str, group: &str, offset: u64) -> Result<u64, StoreError> {
        self.inner.acknowledge(stream, group, offset)
    }
    fn consumer_groups(&self, stream: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.consumer_groups(stream)
    }
    fn purge_stream(
        &self,
        stream: &str,
        retention: &txmirror_runtime::store::StreamRetention,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.inner.purge_stream(stream, retention, limit)
    }
    fn learnt(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.learnt(name)
    }
    fn save_learnt(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.save_learnt(name, bytes)
    }
    fn accept(&self, request: AcceptRequest) -> Result<Acceptance, StoreError> {
        self.inner.accept(request)
    }
    fn accepted(&self, id: &str) -> Result<Option<Accepted>, StoreError> {
        self.inner.accepted(id)
    }
    fn in_flight(&self, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        self.inner.in_flight(limit)
    }
    fn submissions(&self, before: Option<u64>, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        self.inner.submissions(before, limit)
    }
    fn finish(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.inner.finish(fence)
    }
    fn renew_leases(&self, holder: &str, lease_ms: u64) -> Result<usize, StoreError> {
        self.inner.renew_leases(holder, lease_ms)
    }
    fn take_over(&self, holder: &str, lease_ms: u64, limit: usize) -> Result<Vec<Accepted>, StoreError> {
        self.inner.take_over(holder, lease_ms, limit)
    }
    fn release_leases(&self, holder: &str) -> Result<usize, StoreError> {
        self.inner.release_leases(holder)
    }
    fn record_effects(&self, writes: &[EffectWrite]) -> Vec<Result<(), StoreError>> {
        self.inner.record_effects(writes)
    }
    fn effects(&self, id: &str) -> Result<Vec<Effect>, StoreError> {
        self.inner.effects(id)
    }
    fn purge_effects(&self, before_unix_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.inner.purge_effects(before_unix_ms, limit)
    }
}

async fn racing_pair(max_attempts: u32) -> (Runtime, [TxReport; 2]) {
    let dir = tempdir().unwrap().keep();
    let inner = RedbStore::open(&dir.join("state.redb")).unwrap();
    let store = Arc::new(RacingStore { inner, barrier: Barrier::new(2), waiting: AtomicUsize::new(2) });
    let mut config = RuntimeConfig::new(&dir);
    config.engine.max_instances = 16;
    let runtime = Runtime::with_store(config, store.clone()).unwrap();
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(&format!("{POLICY}[retry]\nconflict_attempts = {max_attempts}\n"));
    deposit(&runtime, &module, &policy, "alice", 100).await;
    deposit(&runtime, &module, &policy, "bob", 100).await;
    deposit(&runtime, &module, &policy, "carol", 100).await;
    store.waiting.store(0, Ordering::SeqCst);

    let spawn = |to: &'static str| {
        let (runtime, module, policy) = (runtime.clone(), module.clone(), policy.clone());
        tokio::spawn(async move {
            runtime
                .execute(&module, &policy, request("transfer", json!({"from": "alice", "to": to, "amount": 60})))
                .await
                .unwrap()
        })
    };
    let (a, b) = tokio::join!(spawn("bob"), spawn("carol"));
    (runtime, [a.unwrap(), b.unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_transactions_one_commits_the_other_sees_the_conflict() {
    let (runtime, reports) = racing_pair(1).await;
    let committed: Vec<&TxReport> = reports.iter().filter(|r| r.failure.is_none()).collect();
    let conflicted: Vec<&TxReport> =
        reports.iter().filter(|r| r.failure.as_ref().is_some_and(|f| f.kind == FailureKind::Conflict)).collect();
    assert_eq!((committed.len(), conflicted.len()), (1, 1), "{reports:#?}");
    assert_eq!(reports[0].attempts[0].attempt.snapshot_version, reports[1].attempts[0].attempt.snapshot_version);
    assert_eq!(balance(&runtime, "alice"), 40, "one debit, not two, and not a lost one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_retries_from_a_fresh_snapshot() {
    // With retries, the loser runs again on the winner's result and finds
    // the money gone: no lost update, no overdraft.
    let (runtime, reports) = racing_pair(3).await;
    let retried = reports.iter().find(|r| r.attempts.len() == 2).expect("one transaction retried");
    assert!(
        matches!(&retried.attempts[0].attempt.outcome, AttemptOutcome::Failed { kind: FailureKind::Conflict, .. }),
        "{retried:#?}"
    );
    assert_eq!(retried.failure.as_ref().map(|f| f.kind), Some(FailureKind::Rejected), "{retried:#?}");
    assert_eq!(balance(&runtime, "alice"), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_money() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(&format!("{POLICY}[retry]\nconflict_attempts = 50\n"));
    let accounts = ["a", "b", "c", "d"];
    for account in accounts {
        deposit(&runtime, &module, &policy, account, 1_000).await;
    }

    let transfers = 1_000;
    let mut tasks = Vec::new();
    for i in 0..transfers {
        let (runtime, module, policy) = (runtime.clone(), module.clone(), policy.clone());
        let (from, to) = (accounts[i % 4], accounts[(i / 4 + 1 + i) % 4]);
        let to = if to == from { accounts[(i + 1) % 4] } else { to };
        let amount = (i % 7 + 1) as u64;
        tasks.push(tokio::spawn(async move {
            let report = runtime
                .execute(&module, &policy, request("transfer", json!({"from": from, "to": to, "amount": amount})))
                .await
                .unwrap();
            (from, to, amount, report)
        }));
    }
    let mut expected: std::collections::HashMap<&str, i64> = accounts.iter().map(|a| (*a, 1_000)).collect();
    let (mut committed, mut conflicts, mut gave_up, mut contended) = (0, 0, 0, 0);
    for task in tasks {
        let (from, to, amount, report) = task.await.unwrap();
        contended += report
            .attempts
            .iter()
            .filter(|a| a.prediction.as_ref().is_some_and(|p| p.reasons.iter().any(|r| r.rule == "contention")))
            .count();
        conflicts += report
            .attempts
            .iter()
            .filter(|a| matches!(&a.attempt.outcome, AttemptOutcome::Failed { kind: FailureKind::Conflict, .. }))
            .count();
        match &report.failure {
            None => {
                committed += 1;
                *expected.get_mut(from).unwrap() -= amount as i64;
                *expected.get_mut(to).unwrap() += amount as i64;
            }
            Some(failure) => {
                assert!(
                    matches!(failure.kind, FailureKind::Rejected | FailureKind::Conflict),
                    "a transfer may only fail for want of funds or after exhausting retries: {failure:?}"
                );
                gave_up += 1;
            }
        }
    }
    let total: u64 = accounts.iter().map(|a| balance(&runtime, a)).sum();
    assert_eq!(total, 4_000, "money is conserved");
    for account in accounts {
        assert_eq!(balance(&runtime, account) as i64, expected[account], "no lost update on {account}");
    }
    assert_eq!(runtime.events("transfers", 0, 10_000).unwrap().len(), committed);
    eprintln!(
        "{committed} of {transfers} transfers committed, {gave_up} gave up; {conflicts} conflicts were retried; \
         the predictor saw contention in {contended} attempts"
    );
    assert!(conflicts > 0, "the hot accounts were contended");
    assert!(contended > 0, "and the predictor saw it");
    assert_eq!(gave_up, 0, "with backoff, every transfer commits within its retry budget");
}

/// Adaptive mirroring: the mirror runs while the path and caller have too
/// little history, stops once the prior is confident, and runs again for a
/// caller the runtime has not seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_mirroring_runs_the_mirror_only_while_the_prior_is_uncertain() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::BANK_TRANSFER).await;
    let policy = policy(&format!("{POLICY}[mirror]\nmode = \"adaptive\"\nmin_history = 3\nsample = 0\n"));
    let mirrored = |report: &TxReport| report.attempts.iter().map(|a| a.mirror.is_some()).collect::<Vec<_>>();
    let deposit_as = |caller: &str| TxRequest {
        caller: Some(caller.into()),
        ..request("deposit", json!({"account": "alice", "amount": 1}))
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        let report = runtime.execute(&module, &policy, deposit_as("shop")).await.unwrap();
        assert!(report.failure.is_none(), "{report:#?}");
        seen.extend(mirrored(&report));
    }
    assert_eq!(seen, [true, true, true, false, false], "mirrored until three outcomes were known");
    let newcomer = runtime.execute(&module, &policy, deposit_as("another shop")).await.unwrap();
    assert_eq!(mirrored(&newcomer), [true], "a caller without history is mirrored");
    assert_eq!(balance(&runtime, "alice"), 6, "skipping the mirror changes no outcome");
}
