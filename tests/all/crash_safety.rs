//! A commit interrupted at any write leaves the whole transaction or nothing.

use tempfile::tempdir;
use txmirror_runtime::store::{
    CommitRequest, EventEntry, FaultInjectingBackend, FaultPlan, ReadEntry, RedbStore, StateStore, TransactionOutcome,
    TransactionRecord, WriteEntry,
};

fn record(id: &str) -> TransactionRecord {
    TransactionRecord {
        id: id.into(),
        module: "m".into(),
        path: "transfer".into(),
        input_hash: "h".into(),
        outcome: TransactionOutcome::Committed { version: 0, output: b"{}".to_vec() },
        attempts: vec![],
        history: txmirror_runtime::store::History::default(),
    }
}

fn transfer(id: &str, from: u64, to: u64) -> CommitRequest {
    CommitRequest {
        reads: vec![],
        writes: vec![
            WriteEntry {
                namespace: "accounts".into(),
                key: "alice".into(),
                value: Some(from.to_string().into_bytes()),
            },
            WriteEntry { namespace: "accounts".into(), key: "bob".into(), value: Some(to.to_string().into_bytes()) },
        ],
        events: vec![EventEntry { stream: "transfers".into(), payload: b"{}".to_vec() }],
        record: record(id),
        idempotency: None,
        fence: None,
    }
}

fn read(store: &RedbStore, key: &str) -> Option<String> {
    store.snapshot().unwrap().get("accounts", key).unwrap().map(|v| String::from_utf8(v.value).unwrap())
}

#[test]
fn a_crash_at_any_write_of_a_commit_leaves_all_or_nothing() {
    let mut crashed_at_least_once = false;
    let mut completed = false;
    for crash_at in 0..200 {
        let dir = tempdir().unwrap();
        let file = dir.path().join("state.redb");
        let plan = FaultPlan::new();
        {
            let store =
                RedbStore::open_with_backend(FaultInjectingBackend::open(&file, plan.clone()).unwrap()).unwrap();
            store.commit(transfer("t1", 100, 0)).unwrap();
            plan.crash_after_writes(crash_at);
            let result = store.commit(CommitRequest {
                reads: vec![ReadEntry { namespace: "accounts".into(), key: "alice".into(), version: 1 }],
                ..transfer("t2", 40, 60)
            });
            if !plan.crashed() {
                result.unwrap();
                completed = true;
            } else {
                crashed_at_least_once = true;
            }
            // The store is dropped here as if the process died.
        }

        // Reopen what is on disk, without faults.
        let store = RedbStore::open(&file).unwrap();
        let (alice, bob) = (read(&store, "alice"), read(&store, "bob"));
        let t2 = store.transaction("t2").unwrap();
        let events = store.events("transfers", 0, 10).unwrap().len();
        match (alice.as_deref(), bob.as_deref()) {
            (Some("40"), Some("60")) => {
                assert!(t2.is_some(), "crash at write {crash_at}: state without its record");
                assert_eq!(events, 2, "crash at write {crash_at}");
            }
            (Some("100"), Some("0")) => {
                assert!(t2.is_none(), "crash at write {crash_at}: record without its state");
                assert_eq!(events, 1, "crash at write {crash_at}");
            }
            other => panic!("crash at write {crash_at}: torn state {other:?}"),
        }
        assert!(store.transaction("t1").unwrap().is_some(), "the earlier commit survives");
        if completed {
            break;
        }
    }
    assert!(crashed_at_least_once, "the fault plan never fired");
    assert!(completed, "the commit never completed without a crash");
}
