//! One conformance suite for every store behind the `StateStore` seam:
//! the embedded store (redb, on disk) and PostgreSQL (a real server the
//! test starts on 127.0.0.1 and stops at its end). Each check runs on a
//! fresh store of each kind and must hold alike on both.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use txmirror_runtime::store::{
    AcceptRequest, Acceptance, CommitError, CommitRequest, DeadLetter, Effect, EffectResponse, EffectWrite, EventEntry,
    Fence, History, IdempotencyClaim, IdempotencyEntry, PostgresStore, ReadEntry, RedbStore, StateStore, StoreError,
    StreamRetention, TransactionOutcome, TransactionRecord, Versioned, WriteEntry,
};
use txmirror_runtime::{Failure, FailureKind};
use txmirror_tests::postgres::TestPostgres;

fn record(id: &str) -> TransactionRecord {
    TransactionRecord {
        id: id.into(),
        module: "m".into(),
        path: "p".into(),
        input_hash: "h".into(),
        outcome: TransactionOutcome::Committed { version: 0, output: vec![] },
        attempts: vec![],
        history: History::default(),
    }
}

fn write(key: &str, value: &[u8]) -> WriteEntry {
    WriteEntry { namespace: "ns".into(), key: key.into(), value: Some(value.to_vec()) }
}

fn request(id: &str, writes: Vec<WriteEntry>) -> CommitRequest {
    CommitRequest { reads: vec![], writes, events: vec![], record: record(id), idempotency: None, fence: None }
}

fn snapshot_isolation_and_conflict_detection(store: &dyn StateStore) {
    assert_eq!(store.commit(request("t1", vec![write("a", b"1")])).unwrap(), 1);
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.get("ns", "a").unwrap(), Some(Versioned { version: 1, value: b"1".to_vec() }));

    // Another transaction moves `a`: the old snapshot still reads 1, and a
    // commit that read `a` at version 1 is refused.
    store.commit(request("t2", vec![write("a", b"2")])).unwrap();
    assert_eq!(snap.get("ns", "a").unwrap().unwrap().value, b"1");
    assert_eq!(store.snapshot().unwrap().get("ns", "a").unwrap().unwrap().value, b"2");
    let conflicting = CommitRequest {
        reads: vec![ReadEntry { namespace: "ns".into(), key: "a".into(), version: 1 }],
        ..request("t3", vec![write("a", b"3")])
    };
    let err = store.commit(conflicting).unwrap_err();
    assert!(matches!(err, CommitError::Conflict { read_version: 1, current_version: 2, .. }), "{err}");
    assert!(store.transaction("t3").unwrap().is_none(), "a refused commit leaves no record");

    // A delete: absent for later snapshots, present for the one before
    // (whose view its first read fixed), and a read of the absent key
    // (version 0) still validates.
    let before = store.snapshot().unwrap();
    assert!(before.get("ns", "a").unwrap().is_some());
    let delete = WriteEntry { namespace: "ns".into(), key: "a".into(), value: None };
    store.commit(request("t4", vec![delete])).unwrap();
    assert!(store.snapshot().unwrap().get("ns", "a").unwrap().is_none());
    assert!(before.get("ns", "a").unwrap().is_some());
    let after_delete = CommitRequest {
        reads: vec![ReadEntry { namespace: "ns".into(), key: "a".into(), version: 0 }],
        ..request("t5", vec![write("a", b"5")])
    };
    assert_eq!(store.commit(after_delete).unwrap(), 4);
    let duplicate = store.commit(request("t5", vec![])).unwrap_err();
    assert!(matches!(duplicate, CommitError::DuplicateId(ref id) if id == "t5"), "{duplicate}");
    let stored = store.transaction("t5").unwrap().unwrap();
    assert!(matches!(stored.outcome, TransactionOutcome::Committed { version: 4, .. }), "{stored:?}");
}

fn idempotency_claims_are_exclusive_until_they_lapse(store: &dyn StateStore) {
    let claim = |now| Some(IdempotencyClaim { key: "k".into(), now_unix_ms: now, retention_ms: 100 });
    let commit =
        |id: &str, now| store.commit(CommitRequest { idempotency: claim(now), ..request(id, vec![write(id, b"1")]) });
    commit("first", 1_000).unwrap();
    let err = commit("second", 1_050).unwrap_err();
    assert!(
        matches!(&err, CommitError::DuplicateIdempotencyKey { transaction_id, .. } if transaction_id == "first"),
        "{err}"
    );
    assert!(store.snapshot().unwrap().get("ns", "second").unwrap().is_none(), "nothing applied");
    commit("third", 1_100).unwrap();
    let entry = store.idempotency("k").unwrap().unwrap();
    assert_eq!(entry, IdempotencyEntry { transaction_id: "third".into(), expires_unix_ms: 1_200 });

    // A failure's outcome claims a free key, and leaves a held one alone.
    let outcome_claim = IdempotencyClaim { key: "k".into(), now_unix_ms: 1_150, retention_ms: 100 };
    store.record_outcome(record("failed"), Some(outcome_claim.clone()), None, None, Vec::new()).unwrap();
    assert_eq!(store.idempotency("k").unwrap().unwrap().transaction_id, "third");
    store
        .record_outcome(
            record("failed-2"),
            Some(IdempotencyClaim { key: "free".into(), ..outcome_claim }),
            None,
            None,
            Vec::new(),
        )
        .unwrap();
    assert_eq!(store.idempotency("free").unwrap().unwrap().transaction_id, "failed-2");
    assert!(store.transaction("failed").unwrap().is_some());
}

fn scan_stays_inside_namespace_and_prefix(store: &dyn StateStore) {
    let writes = vec![
        write("user/1", b"a"),
        write("user/2", b"b"),
        write("user_3", b"not under user/"),
        write("zzz", b"c"),
        WriteEntry { namespace: "ns2".into(), key: "user/3".into(), value: Some(b"d".to_vec()) },
    ];
    store.commit(request("t", writes)).unwrap();
    store.commit(request("t2", vec![write("user/2", b"b2")])).unwrap();
    let snap = store.snapshot().unwrap();
    let scanned = snap.scan("ns", "user/", 10).unwrap();
    let keys: Vec<&str> = scanned.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["user/1", "user/2"]);
    assert_eq!(scanned[1].1, Versioned { version: 2, value: b"b2".to_vec() }, "the newest value at the snapshot");
    assert_eq!(snap.scan("ns", "", 1).unwrap().len(), 1, "limit is honoured");
    assert_eq!(snap.scan("ns", "%", 10).unwrap().len(), 0, "a prefix is a prefix, not a pattern");
}

fn lapsed_keys_are_purged_and_live_ones_kept(store: &dyn StateStore) {
    for (id, retention) in [("a", 100), ("b", 500), ("c", 100)] {
        let claim = IdempotencyClaim { key: format!("key-{id}"), now_unix_ms: 1_000, retention_ms: retention };
        store.commit(CommitRequest { idempotency: Some(claim), ..request(id, vec![]) }).unwrap();
    }
    assert_eq!(store.purge_lapsed_keys(1_100, 1).unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_lapsed_keys(1_100, 10).unwrap(), 1, "the other lapsed one");
    assert_eq!(store.purge_lapsed_keys(1_100, 10).unwrap(), 0);
    assert!(store.idempotency("key-a").unwrap().is_none() && store.idempotency("key-c").unwrap().is_none());
    assert_eq!(store.idempotency("key-b").unwrap().map(|e| e.transaction_id), Some("b".into()), "live");
    assert!(store.transaction("a").unwrap().is_some(), "the records stay");
}

fn events_records_and_what_was_learnt_read_back(store: &dyn StateStore) {
    let events = |stream: &str, payload: &[u8]| EventEntry { stream: stream.into(), payload: payload.to_vec() };
    store
        .commit(CommitRequest { events: vec![events("s", b"1"), events("other", b"x")], ..request("e1", vec![]) })
        .unwrap();
    store.commit(CommitRequest { events: vec![events("s", b"2")], ..request("e2", vec![]) }).unwrap();
    let read = store.events("s", 0, 10).unwrap();
    let seen: Vec<(u64, u64, &str, &[u8])> =
        read.iter().map(|e| (e.sequence, e.version, e.transaction_id.as_str(), e.payload.as_slice())).collect();
    assert_eq!(seen, [(1, 1, "e1", b"1".as_slice()), (3, 2, "e2", b"2".as_slice())]);
    assert_eq!(store.events("s", 1, 10).unwrap().len(), 1, "from a sequence, exclusive");
    assert_eq!(store.events("s", 0, 1).unwrap().len(), 1, "limit is honoured");

    let ids: Vec<String> = store.transactions(None, 10).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["e1", "e2"]);
    let after: Vec<String> = store.transactions(Some("e1"), 10).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(after, ["e2"]);

    // A failure's record carries events too, at the version the store is
    // at, numbered after the commits' (a transaction's status, say).
    store.record_outcome(record("f1"), None, None, None, vec![events("s", b"ended")]).unwrap();
    let last = store.events("s", 3, 10).unwrap();
    let seen: Vec<(u64, u64, &str, &[u8])> =
        last.iter().map(|e| (e.sequence, e.version, e.transaction_id.as_str(), e.payload.as_slice())).collect();
    assert_eq!(seen, [(4, 2, "f1", b"ended".as_slice())]);
    store.commit(CommitRequest { events: vec![events("s", b"3")], ..request("e3", vec![]) }).unwrap();
    assert_eq!(store.events("s", 4, 10).unwrap().iter().map(|e| (e.sequence, e.version)).collect::<Vec<_>>(), [(5, 3)]);

    assert_eq!(store.learnt("model").unwrap(), None);
    store.save_learnt("model", b"one").unwrap();
    store.save_learnt("model", b"two").unwrap();
    assert_eq!(store.learnt("model").unwrap().as_deref(), Some(b"two".as_slice()));
}

/// A stream reads from an offset among many other streams' events, and a
/// consumer group's offset moves forward only, durably, per stream.
fn streams_read_from_an_offset_and_groups_keep_theirs(store: &dyn StateStore) {
    let event = |stream: &str, n: usize| EventEntry { stream: stream.into(), payload: n.to_string().into_bytes() };
    // 200 commits, each with an event of `noise` and every tenth one of `s`.
    for i in 0..200 {
        let mut events = vec![event("noise", i)];
        if i % 10 == 0 {
            events.push(event("s", i));
        }
        if i % 50 == 0 {
            events.push(event("ss", i));
        }
        store.commit(CommitRequest { events, ..request(&format!("t{i}"), vec![]) }).unwrap();
    }
    let all = store.events("s", 0, 100).unwrap();
    assert_eq!(all.len(), 20);
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence), "in sequence order");
    assert!(all.iter().all(|e| e.stream == "s"));
    let page = store.events("s", all[4].sequence, 3).unwrap();
    assert_eq!(page, all[5..8], "a page from an offset, exclusive");
    assert!(store.events("s", all[19].sequence, 10).unwrap().is_empty(), "nothing past the head");
    assert!(store.events("none", 0, 10).unwrap().is_empty());
    assert_eq!(store.events("ss", 0, 10).unwrap().len(), 4, "a stream's name is not a prefix of another's");

    assert_eq!(store.group_offset("s", "billing").unwrap(), None);
    assert!(store.consumer_groups("s").unwrap().is_empty());
    assert_eq!(store.acknowledge("s", "billing", all[3].sequence).unwrap(), all[3].sequence);
    assert_eq!(store.acknowledge("s", "billing", all[1].sequence).unwrap(), all[3].sequence, "never back");
    assert_eq!(store.acknowledge("s", "audit", all[7].sequence).unwrap(), all[7].sequence);
    assert_eq!(store.acknowledge("noise", "billing", 5).unwrap(), 5);
    assert_eq!(store.group_offset("s", "billing").unwrap(), Some(all[3].sequence));
    assert_eq!(
        store.consumer_groups("s").unwrap(),
        [("audit".to_string(), all[7].sequence), ("billing".to_string(), all[3].sequence)]
    );
    assert_eq!(store.consumer_groups("noise").unwrap(), [("billing".to_string(), 5)]);
}

/// A stream's retention removes its oldest events by count or age, never
/// one a consumer group has not acknowledged unless it overrides the
/// groups, and stops at the first event it keeps.
fn streams_keep_what_their_retention_and_groups_say(store: &dyn StateStore) {
    let event = |stream: &str, n: usize| EventEntry { stream: stream.into(), payload: n.to_string().into_bytes() };
    for i in 0..10 {
        store
            .commit(CommitRequest {
                events: vec![event("s", i), event("noise", i)],
                ..request(&format!("t{i}"), vec![])
            })
            .unwrap();
    }
    let offsets = |store: &dyn StateStore| -> Vec<u64> {
        store.events("s", 0, 100).unwrap().iter().map(|e| e.sequence).collect()
    };
    let all = offsets(store);
    assert_eq!(all.len(), 10);
    assert_eq!(store.purge_stream("s", &StreamRetention::new(None, None), 100).unwrap(), 0, "no limit, no purge");
    // By count: the newest eight stay.
    assert_eq!(store.purge_stream("s", &StreamRetention::new(None, Some(8)), 100).unwrap(), 2);
    assert_eq!(offsets(store), all[2..]);
    assert_eq!(store.events("noise", 0, 100).unwrap().len(), 10, "other streams keep theirs");
    // A group that acknowledged up to the fifth holds the rest.
    store.acknowledge("s", "slow", all[4]).unwrap();
    assert_eq!(store.purge_stream("s", &StreamRetention::new(None, Some(0)), 100).unwrap(), 3);
    assert_eq!(offsets(store), all[5..]);
    // By age: a cutoff in the past keeps everything; one ahead lets all go,
    // but the group still holds what it has not acknowledged, and a limit
    // is a limit.
    assert_eq!(store.purge_stream("s", &StreamRetention::new(Some(1_000), None), 100).unwrap(), 0);
    let ahead = Some(u64::MAX / 2);
    assert_eq!(store.purge_stream("s", &StreamRetention::new(ahead, None), 100).unwrap(), 0);
    let overriding = StreamRetention::new(ahead, None).overriding_groups();
    assert_eq!(store.purge_stream("s", &overriding, 2).unwrap(), 2);
    assert_eq!(offsets(store), all[7..]);
    assert_eq!(store.purge_stream("s", &overriding, 100).unwrap(), 3);
    assert!(offsets(store).is_empty());
    assert_eq!(store.group_offset("s", "slow").unwrap(), Some(all[4]), "the group's offset stays");
}

/// Transfers between ten accounts from many threads at once, each retried
/// on a conflict: every one commits once, and no money appears or vanishes.
fn concurrent_transfers_conserve_money(store: &dyn StateStore, transfers: usize) {
    let accounts = 10;
    let opening: Vec<WriteEntry> = (0..accounts).map(|a| write(&format!("acct/{a}"), b"100")).collect();
    store.commit(request("open", opening)).unwrap();
    let amount = |value: &[u8]| String::from_utf8_lossy(value).parse::<i64>().unwrap();
    let threads = 8;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for n in (thread..transfers).step_by(threads) {
                    let (from, to) = (format!("acct/{}", n % accounts), format!("acct/{}", (n * 7 + 3) % accounts));
                    if from == to {
                        continue;
                    }
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        assert!(tries < 1_000, "transfer {n} kept conflicting");
                        let snap = store.snapshot().unwrap();
                        let (a, b) = (snap.get("ns", &from).unwrap().unwrap(), snap.get("ns", &to).unwrap().unwrap());
                        let reads = vec![
                            ReadEntry { namespace: "ns".into(), key: from.clone(), version: a.version },
                            ReadEntry { namespace: "ns".into(), key: to.clone(), version: b.version },
                        ];
                        let writes = vec![
                            write(&from, (amount(&a.value) - 1).to_string().as_bytes()),
                            write(&to, (amount(&b.value) + 1).to_string().as_bytes()),
                        ];
                        match store.commit(CommitRequest { reads, ..request(&format!("x{n}"), writes) }) {
                            Ok(_) => break,
                            Err(CommitError::Conflict { .. }) => {}
                            Err(other) => panic!("transfer {n}: {other}"),
                        }
                    }
                }
            });
        }
    });
    let snap = store.snapshot().unwrap();
    let total: i64 = (0..accounts).map(|a| amount(&snap.get("ns", &format!("acct/{a}")).unwrap().unwrap().value)).sum();
    assert_eq!(total, 100 * accounts as i64, "money is conserved");
    let committed = store.transactions(None, transfers + 10).unwrap().len();
    let skipped = (0..transfers).filter(|n| n % accounts == (n * 7 + 3) % accounts).count();
    assert_eq!(committed, 1 + transfers - skipped, "each transfer committed once");
}

/// A commit and a failure's record claiming the same keys at once: a key a
/// commit claimed stays its own, whatever the other wrote at the same time.
fn a_committed_claim_is_never_taken_by_a_failure_at_the_same_time(store: &dyn StateStore) {
    let keys = 200;
    let claim = |n: usize| IdempotencyClaim { key: format!("race-{n}"), now_unix_ms: 1_000, retention_ms: 10_000 };
    let committed: Vec<bool> = std::thread::scope(|scope| {
        let commits = scope.spawn(|| {
            (0..keys)
                .map(|n| {
                    let request = CommitRequest { idempotency: Some(claim(n)), ..request(&format!("ok-{n}"), vec![]) };
                    store.commit(request).is_ok()
                })
                .collect()
        });
        for n in 0..keys {
            store.record_outcome(record(&format!("failed-{n}")), Some(claim(n)), None, None, Vec::new()).unwrap();
        }
        commits.join().unwrap()
    });
    for (n, committed) in committed.into_iter().enumerate() {
        let holder = store.idempotency(&format!("race-{n}")).unwrap().unwrap().transaction_id;
        if committed {
            assert_eq!(holder, format!("ok-{n}"), "key {n}");
        } else {
            assert_eq!(holder, format!("failed-{n}"), "key {n}: the commit was refused for the failure's claim");
        }
    }
}

fn dead_letters_page_in_time_then_id_order(store: &dyn StateStore) {
    let letter = |id: &str, at: u64| DeadLetter {
        transaction_id: id.into(),
        module: "m".into(),
        path: "p".into(),
        input: Vec::new(),
        failure: Failure { kind: FailureKind::Unavailable, message: "down".into() },
        attempts: History::default(),
        compensation: None,
        dead_lettered_unix_ms: at,
        idempotency_key: None,
    };
    // Written out of order; two share a millisecond, which their ids order.
    for (id, at) in [("c", 30), ("a", 10), ("z", 20), ("b", 20), ("d", 40)] {
        let failed = TransactionRecord {
            outcome: TransactionOutcome::Failed { kind: FailureKind::Unavailable, message: "down".into() },
            ..record(id)
        };
        store.record_outcome(failed, None, Some(letter(id, at)), None, Vec::new()).unwrap();
    }
    let ids = |page: Vec<DeadLetter>| page.into_iter().map(|l| l.transaction_id).collect::<Vec<_>>();
    assert_eq!(ids(store.dead_letters(None, 10).unwrap()), ["a", "b", "z", "c", "d"]);
    let first = store.dead_letters(None, 2).unwrap();
    assert_eq!(ids(first.clone()), ["a", "b"]);
    let after = first.last().unwrap().position();
    assert_eq!(ids(store.dead_letters(Some(&after), 2).unwrap()), ["z", "c"], "the page goes on past the tie");
    let last = store.dead_letters(None, 5).unwrap().pop().unwrap().position();
    assert!(store.dead_letters(Some(&last), 5).unwrap().is_empty(), "nothing after the last");
    assert!(store.remove_dead_letter("z").unwrap());
    assert_eq!(ids(store.dead_letters(Some(&after), 5).unwrap()), ["c", "d"]);
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn acceptance(id: &str, key: Option<&str>, holder: &str, lease_ms: u64) -> AcceptRequest {
    AcceptRequest {
        transaction_id: id.into(),
        idempotency_key: key.map(str::to_string),
        request: format!("request of {id}").into_bytes(),
        holder: holder.into(),
        lease_ms,
        now_unix_ms: now_ms(),
    }
}

fn fence(id: &str, epoch: u64) -> Fence {
    Fence { transaction_id: id.into(), epoch }
}

/// An accepted transaction is held once, by id and by key, is listed while
/// in flight and among the submissions ever after, and its commit under
/// its lease ends it in the same step.
fn acceptances_are_unique_and_end_with_their_commit(store: &dyn StateStore) {
    let first = store.accept(acceptance("a1", Some("key"), "node-a", 60_000)).unwrap();
    let Acceptance::Accepted { sequence, lease } = first else { panic!("{first:?}") };
    assert_eq!((sequence, lease.holder.as_str(), lease.epoch), (1, "node-a", 1));
    assert!(lease.expires_unix_ms >= now_ms() + 50_000, "{lease:?}");
    assert_eq!(store.accept(acceptance("a1", None, "node-b", 60_000)).unwrap(), Acceptance::IdTaken);
    assert_eq!(
        store.accept(acceptance("a2", Some("key"), "node-b", 60_000)).unwrap(),
        Acceptance::KeyHeld { transaction_id: "a1".into() }
    );
    assert!(matches!(store.accept(acceptance("a3", None, "node-b", 60_000)).unwrap(), Acceptance::Accepted { .. }));
    let held = store.accepted("a1").unwrap().unwrap();
    assert_eq!((held.request, held.idempotency_key), (b"request of a1".to_vec(), Some("key".to_string())));
    let ids = |accepted: Vec<txmirror_runtime::store::Accepted>| -> Vec<String> {
        accepted.into_iter().map(|a| a.transaction_id).collect()
    };
    assert_eq!(ids(store.in_flight(10).unwrap()), ["a1", "a3"]);

    // A commit under the lease that is refused (here, in a group commit,
    // for a conflict) leaves the acceptance as it was.
    let stale_read = ReadEntry { namespace: "ns".into(), key: "k".into(), version: 99 };
    let refused = store.commit_batch(vec![CommitRequest {
        reads: vec![stale_read],
        fence: Some(fence("a1", 1)),
        ..request("a1", vec![write("k", b"v")])
    }]);
    assert!(matches!(refused.as_slice(), [Err(CommitError::Conflict { .. })]), "{refused:?}");
    assert!(store.accepted("a1").unwrap().is_some(), "a refused commit ends nothing");

    let claim = IdempotencyClaim { key: "key".into(), now_unix_ms: now_ms(), retention_ms: 60_000 };
    let commit = CommitRequest {
        idempotency: Some(claim),
        fence: Some(fence("a1", 1)),
        ..request("a1", vec![write("k", b"v")])
    };
    store.commit(commit).unwrap();
    assert_eq!(store.accepted("a1").unwrap(), None, "the commit ended the acceptance");
    assert_eq!(ids(store.in_flight(10).unwrap()), ["a3"]);
    assert!(!store.finish(&fence("a1", 1)).unwrap(), "nothing left to end");
    assert_eq!(
        store.accept(acceptance("a4", Some("key"), "node-b", 60_000)).unwrap(),
        Acceptance::KeyHeld { transaction_id: "a1".into() },
        "the recorded claim holds the key now"
    );
    assert_eq!(store.accept(acceptance("a1", None, "node-b", 60_000)).unwrap(), Acceptance::IdTaken, "recorded");
    let listed: Vec<String> = store.submissions(None, 10).unwrap().into_iter().map(|(_, id)| id).collect();
    assert_eq!(listed, ["a3", "a1"], "newest first, ended or not");
    assert_eq!(store.submissions(Some(2), 10).unwrap(), [(1, "a1".to_string())]);
    assert!(store.finish(&fence("a3", 1)).unwrap());
    assert!(store.in_flight(10).unwrap().is_empty());
}

/// Two acceptances of one key at once, one of them committed as soon as
/// it is accepted: whichever order the store sees them in, exactly one is
/// accepted and the other is told which transaction holds its key, even
/// when the holder has already left the inbox for the idempotency table.
fn acceptances_of_one_key_racing_a_commit_accept_one(store: &dyn StateStore) {
    for round in 0..200 {
        let key = format!("raced-{round}");
        let (quick, other) = (format!("quick-{round}"), format!("other-{round}"));
        let (first, second) = std::thread::scope(|scope| {
            let committing = scope.spawn(|| {
                let acceptance = store.accept(acceptance(&quick, Some(&key), "node-a", 60_000)).unwrap();
                if matches!(acceptance, Acceptance::Accepted { .. }) {
                    let claim = IdempotencyClaim { key: key.clone(), now_unix_ms: now_ms(), retention_ms: 60_000 };
                    let commit = CommitRequest {
                        idempotency: Some(claim),
                        fence: Some(fence(&quick, 1)),
                        ..request(&quick, vec![])
                    };
                    store.commit(commit).unwrap();
                }
                acceptance
            });
            let second = store.accept(acceptance(&other, Some(&key), "node-b", 60_000)).unwrap();
            (committing.join().unwrap(), second)
        });
        match (&first, &second) {
            (Acceptance::Accepted { .. }, Acceptance::KeyHeld { transaction_id }) => {
                assert_eq!(transaction_id, &quick, "round {round}");
            }
            (Acceptance::KeyHeld { transaction_id }, Acceptance::Accepted { .. }) => {
                assert_eq!(transaction_id, &other, "round {round}");
            }
            _ => panic!("round {round}: one key accepted as {first:?} and {second:?}"),
        }
    }
}

/// A lapsed lease is taken over at the next epoch; from then on the old
/// holder's commits and records are refused and change nothing, its
/// renewals find nothing, and the new holder's commits go through.
fn a_taken_over_lease_fences_its_old_holder_out(store: &dyn StateStore) {
    store.accept(acceptance("t1", None, "node-a", 0)).unwrap();
    store.accept(acceptance("t2", None, "node-a", 60_000)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let taken = store.take_over("node-b", 60_000, 10).unwrap();
    assert_eq!(taken.iter().map(|a| (a.transaction_id.as_str(), a.lease.epoch)).collect::<Vec<_>>(), [("t1", 2)]);
    assert_eq!(taken[0].lease.holder, "node-b");
    assert!(store.take_over("node-b", 60_000, 10).unwrap().is_empty(), "node-a's live lease is not taken");
    let version = store.snapshot().unwrap().version();

    let stale = store.commit(CommitRequest { fence: Some(fence("t1", 1)), ..request("t1", vec![write("x", b"1")]) });
    assert!(
        matches!(&stale, Err(CommitError::Store(StoreError::Fenced { current: Some(2), epoch: 1, .. }))),
        "{stale:?}"
    );
    let stale = store.record_outcome(record("t1"), None, None, Some(&fence("t1", 1)), Vec::new());
    assert!(matches!(&stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    assert_eq!(store.snapshot().unwrap().version(), version, "nothing of the old holder's was written");
    assert!(store.transaction("t1").unwrap().is_none());
    assert_eq!(store.renew_leases("node-a", 60_000).unwrap(), 1, "only t2 is still node-a's");

    // A compensation writes under the lease of what it compensates, which
    // stays in flight until its own record.
    let compensation = CommitRequest { fence: Some(fence("t1", 2)), ..request("t1.compensation", vec![]) };
    store.commit(compensation).unwrap();
    assert!(store.accepted("t1").unwrap().is_some());
    store.record_outcome(record("t1"), None, None, Some(&fence("t1", 2)), Vec::new()).unwrap();
    assert!(store.accepted("t1").unwrap().is_none());
    let late = store.commit(CommitRequest { fence: Some(fence("t1", 2)), ..request("t1-again", vec![]) });
    assert!(matches!(&late, Err(CommitError::Store(StoreError::Fenced { current: None, .. }))), "{late:?}");

    // A drained node hands its leases back, and another takes them at once.
    assert_eq!(store.release_leases("node-a").unwrap(), 1);
    let taken = store.take_over("node-c", 60_000, 10).unwrap();
    assert_eq!(taken.iter().map(|a| (a.transaction_id.as_str(), a.lease.epoch)).collect::<Vec<_>>(), [("t2", 2)]);
}

/// Nodes taking over at once share the lapsed leases: each is taken once.
fn nodes_taking_over_at_once_take_each_lease_once(store: &dyn StateStore) {
    for n in 0..60 {
        store.accept(acceptance(&format!("d{n}"), None, "dead", 0)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    let taken: Vec<Vec<String>> = std::thread::scope(|scope| {
        let takers: Vec<_> = ["node-b", "node-c", "node-d"]
            .into_iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..100 {
                        let batch = store.take_over(node, 60_000, 7).unwrap();
                        if batch.is_empty() && !mine.is_empty() {
                            break;
                        }
                        mine.extend(batch.into_iter().map(|a| {
                            assert_eq!((a.lease.holder.as_str(), a.lease.epoch), (node, 2));
                            a.transaction_id
                        }));
                    }
                    mine
                })
            })
            .collect();
        takers.into_iter().map(|taker| taker.join().unwrap()).collect()
    });
    let all: Vec<&String> = taken.iter().flatten().collect();
    let distinct: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (60, 60), "{taken:?}");
}

/// A group commit applies its requests in order, each checked against the
/// state the ones before it left: a conflict or a duplicate refuses only
/// its own request.
fn a_batch_applies_its_requests_in_order(store: &dyn StateStore) {
    store.commit(request("seed", vec![write("k", b"v1")])).unwrap();
    let read = |version| vec![ReadEntry { namespace: "ns".into(), key: "k".into(), version }];
    let delete = WriteEntry { namespace: "ns".into(), key: "k".into(), value: None };
    let results = store.commit_batch(vec![
        CommitRequest { reads: read(1), ..request("a", vec![write("k", b"v2")]) },
        CommitRequest { reads: read(1), ..request("b", vec![write("k", b"v3")]) },
        CommitRequest { reads: read(2), ..request("c", vec![delete]) },
        CommitRequest { reads: vec![], ..request("a", vec![write("x", b"1")]) },
        CommitRequest { reads: read(0), ..request("e", vec![write("j", b"1")]) },
    ]);
    let shown: Vec<String> = results
        .iter()
        .map(|result| match result {
            Ok(version) => format!("ok {version}"),
            Err(CommitError::Conflict { .. }) => "conflict".into(),
            Err(CommitError::DuplicateId(_)) => "duplicate".into(),
            Err(other) => format!("{other}"),
        })
        .collect();
    assert_eq!(shown, ["ok 2", "conflict", "ok 3", "duplicate", "ok 4"]);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.version(), 4);
    assert_eq!(snapshot.get("ns", "k").unwrap(), None);
    assert_eq!(snapshot.get("ns", "x").unwrap(), None, "the duplicate wrote nothing");
    assert_eq!(snapshot.get("ns", "j").unwrap().map(|v| v.version), Some(4));
    assert!(store.transaction("b").unwrap().is_none());
}

/// The effect journal: entries by transaction, path and ordinal, replaced
/// in place, kept apart from other transactions', and refused under a
/// fence another node took over.
fn the_effect_journal_keeps_each_call_and_its_answer(store: &dyn StateStore) {
    let effect = |path: &str, ordinal: u32, response: Option<u16>| Effect {
        path: path.into(),
        ordinal,
        method: "POST".into(),
        url: "http://127.0.0.1:9/charges".into(),
        digest: format!("digest-{path}-{ordinal}"),
        key: format!("key-{path}-{ordinal}"),
        sends: 1,
        sent_unix_ms: 5,
        response: response.map(|status| EffectResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"receipt\":1}".to_vec(),
            unix_ms: 6,
        }),
    };
    assert_eq!(store.effects("t1").unwrap(), Vec::new());
    store.record_effect("t1", &effect("charge", 2, None), None).unwrap();
    store.record_effect("t1", &effect("charge", 1, None), None).unwrap();
    store.record_effect("t1", &effect("refund", 1, Some(201)), None).unwrap();
    store.record_effect("t10", &effect("charge", 1, None), None).unwrap();
    // The intent, then its answer in its place.
    store.record_effect("t1", &effect("charge", 1, Some(200)), None).unwrap();
    let journal = store.effects("t1").unwrap();
    assert_eq!(
        journal,
        vec![effect("charge", 1, Some(200)), effect("charge", 2, None), effect("refund", 1, Some(201))],
        "by path, then ordinal; another transaction's (`t10`) apart"
    );
    assert!(journal[0].succeeded() && journal[1].in_doubt());
    // Under a lease another node took over, nothing is written.
    assert!(matches!(store.accept(acceptance("t2", None, "node-a", 1)).unwrap(), Acceptance::Accepted { .. }));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(store.take_over("node-b", 60_000, 10).unwrap().len(), 1);
    let refused = store.record_effect("t2", &effect("charge", 1, None), Some(&fence("t2", 1))).unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
    store.record_effect("t2", &effect("charge", 1, None), Some(&fence("t2", 2))).unwrap();
    assert_eq!(store.effects("t2").unwrap().len(), 1);
    // Several at once: each its own result; a stale fence refuses its own
    // write alone; the same call written twice, the later stands.
    let write =
        |id: &str, effect: Effect, fence: Option<Fence>| EffectWrite { transaction_id: id.into(), effect, fence };
    let results = store.record_effects(&[
        write("t3", effect("charge", 1, None), None),
        write("t2", effect("charge", 2, None), Some(fence("t2", 1))),
        write("t3", effect("charge", 1, Some(200)), None),
        write("t2", effect("refund", 1, None), Some(fence("t2", 2))),
    ]);
    assert!(matches!(results.as_slice(), [Ok(()), Err(StoreError::Fenced { .. }), Ok(()), Ok(())]), "{results:?}");
    assert_eq!(store.effects("t3").unwrap(), vec![effect("charge", 1, Some(200))]);
    assert_eq!(store.effects("t2").unwrap(), vec![effect("charge", 1, None), effect("refund", 1, None)]);
}

/// Old journal entries of ended transactions go; those of transactions in
/// flight, of dead letters, and recent ones stay.
fn old_journal_entries_of_ended_transactions_are_purged(store: &dyn StateStore) {
    let effect = |ordinal: u32, sent_unix_ms: u64| Effect {
        path: "charge".into(),
        ordinal,
        method: "POST".into(),
        url: "http://127.0.0.1:9/charges".into(),
        digest: "d".into(),
        key: "k".into(),
        sends: 1,
        sent_unix_ms,
        response: None,
    };
    // `ended`: recorded, old; `recent`: recorded, one recent call;
    // `flying`: no record yet; `letter`: dead-lettered.
    for id in ["ended", "recent", "flying", "letter"] {
        store.record_effect(id, &effect(1, 100), None).unwrap();
    }
    store.record_effect("ended", &effect(2, 150), None).unwrap();
    store.record_effect("recent", &effect(2, 5_000), None).unwrap();
    store.commit(request("ended", vec![])).unwrap();
    store.commit(request("recent", vec![])).unwrap();
    let failed = TransactionRecord {
        outcome: TransactionOutcome::Failed { kind: FailureKind::Unavailable, message: "down".into() },
        ..record("letter")
    };
    let letter = DeadLetter {
        transaction_id: "letter".into(),
        module: "m".into(),
        path: "charge".into(),
        input: Vec::new(),
        failure: Failure { kind: FailureKind::Unavailable, message: "down".into() },
        attempts: History::default(),
        compensation: None,
        dead_lettered_unix_ms: 1,
        idempotency_key: None,
    };
    store.record_outcome(failed, None, Some(letter), None, Vec::new()).unwrap();

    assert_eq!(store.purge_effects(1_000, 1).unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_effects(1_000, 100).unwrap(), 2, "the rest of `ended`'s and `recent`'s old call");
    assert!(store.effects("ended").unwrap().is_empty());
    assert_eq!(store.effects("recent").unwrap(), vec![effect(2, 5_000)], "the recent call stays");
    assert_eq!(store.effects("flying").unwrap().len(), 1, "in flight: kept");
    assert_eq!(store.effects("letter").unwrap().len(), 1, "a dead letter's: kept");
    assert_eq!(store.purge_effects(1_000, 100).unwrap(), 0, "nothing more");
    assert!(store.remove_dead_letter("letter").unwrap());
    assert_eq!(store.purge_effects(1_000, 100).unwrap(), 1, "the letter gone, its journal goes");
}

/// A batch closed late: what `more` gives once the store is ready joins the
/// batch after the requests given first, each validated against the ones
/// before it; `more` is asked once.
fn a_batch_left_open_takes_what_arrives_before_it_applies(store: &dyn StateStore) {
    assert_eq!(store.commit(request("seed", vec![write("a", b"0")])).unwrap(), 1);
    let mut asked = 0;
    let mut more = || {
        asked += 1;
        vec![
            // Read `a` at the seed's version, which the first request moved.
            CommitRequest {
                reads: vec![ReadEntry { namespace: "ns".into(), key: "a".into(), version: 1 }],
                ..request("late-1", vec![write("b", b"2")])
            },
            request("late-2", vec![write("c", b"3")]),
        ]
    };
    let results = store.commit_batch_open(vec![request("first", vec![write("a", b"1")])], &mut more);
    assert_eq!(asked, 1, "`more` is asked once");
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(matches!(results[0], Ok(2)), "{results:?}");
    assert!(
        matches!(results[1], Err(CommitError::Conflict { read_version: 1, current_version: 2, .. })),
        "{results:?}"
    );
    assert!(matches!(results[2], Ok(3)), "{results:?}");
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.get("ns", "a").unwrap().map(|found| found.version), Some(2));
    assert_eq!(snapshot.get("ns", "b").unwrap(), None, "the refused request wrote nothing");
    assert_eq!(snapshot.get("ns", "c").unwrap().map(|found| found.version), Some(3));
    assert!(store.transaction("late-1").unwrap().is_none());
    assert!(store.transaction("late-2").unwrap().is_some());
}

/// Snapshots of many versions reading at once, from threads and from tasks
/// (PostgreSQL's store sends the reads that wait together, in one
/// statement): each sees its own version and nothing newer, and the newest
/// versions asked for meanwhile are the newest.
fn snapshots_reading_at_once_each_see_their_own_version(store: &dyn StateStore) {
    let commits = 24_usize;
    let mut snapshots = Vec::new();
    for n in 1..=commits {
        let writes = vec![write("k", n.to_string().as_bytes()), write(&format!("only-{n}"), b"x")];
        store.commit(request(&format!("v{n}"), writes)).unwrap();
        let snapshot = store.snapshot().unwrap();
        // Its first read fixes its view at this commit.
        assert_eq!(snapshot.get("ns", "k").unwrap().unwrap().value, n.to_string().as_bytes());
        snapshots.push((n, snapshot));
    }
    store.commit(request("last", vec![write("k", b"last")])).unwrap();
    let sees = |n: usize, m: usize, found: Option<Versioned>| match found {
        Some(found) => {
            assert!(m <= n, "the snapshot of commit {n} sees `only-{m}`, written after it");
            assert_eq!(found.version, m as u64);
        }
        None => assert!(m > n, "the snapshot of commit {n} misses `only-{m}`"),
    };
    std::thread::scope(|scope| {
        for (n, snapshot) in &snapshots {
            scope.spawn(move || {
                for m in (1..=commits).rev().filter(|m| m % 2 == 1) {
                    sees(*n, m, snapshot.get("ns", &format!("only-{m}")).unwrap());
                }
            });
        }
        for _ in 0..4 {
            scope.spawn(|| {
                let keys = vec![("ns".to_string(), "k".to_string()), ("ns".to_string(), "none".to_string())];
                assert_eq!(store.latest_versions(&keys).unwrap(), vec![commits as u64 + 1, 0]);
            });
        }
    });
    // The same from tasks, through the asynchronous read, of the keys not
    // read yet (a snapshot remembers what it read).
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    executor.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, snapshot) in snapshots {
            tasks.spawn(async move {
                for m in (1..=commits).filter(|m| m % 2 == 0) {
                    let found = snapshot.get_async("ns", &format!("only-{m}")).await.unwrap();
                    assert_eq!(
                        found.map(|found| found.version),
                        Some(m as u64).filter(|_| m <= n),
                        "snapshot {n}, key {m}"
                    );
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

type Check = fn(&dyn StateStore);

const CHECKS: &[(&str, Check)] = &[
    ("snapshot isolation and conflicts", snapshot_isolation_and_conflict_detection),
    ("snapshots reading at once", snapshots_reading_at_once_each_see_their_own_version),
    ("idempotency", idempotency_claims_are_exclusive_until_they_lapse),
    ("scan", scan_stays_inside_namespace_and_prefix),
    ("purge of lapsed keys", lapsed_keys_are_purged_and_live_ones_kept),
    ("events, records, learnt", events_records_and_what_was_learnt_read_back),
    ("streams and consumer groups", streams_read_from_an_offset_and_groups_keep_theirs),
    ("stream retention", streams_keep_what_their_retention_and_groups_say),
    ("1,000 concurrent transfers", |store| concurrent_transfers_conserve_money(store, 1_000)),
    ("claims racing", a_committed_claim_is_never_taken_by_a_failure_at_the_same_time),
    ("batches", a_batch_applies_its_requests_in_order),
    ("batches left open", a_batch_left_open_takes_what_arrives_before_it_applies),
    ("effect journal", the_effect_journal_keeps_each_call_and_its_answer),
    ("dead letters paged", dead_letters_page_in_time_then_id_order),
    ("journal purged", old_journal_entries_of_ended_transactions_are_purged),
    ("acceptances", acceptances_are_unique_and_end_with_their_commit),
    ("acceptances racing a commit", acceptances_of_one_key_racing_a_commit_accept_one),
    ("fences", a_taken_over_lease_fences_its_old_holder_out),
    ("takeovers racing", nodes_taking_over_at_once_take_each_lease_once),
];

#[test]
fn the_embedded_store_conforms() {
    for (name, check) in CHECKS {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb")).unwrap();
        eprintln!("redb: {name}");
        check(&store);
    }
}

#[test]
fn the_postgresql_store_conforms() {
    let server = TestPostgres::start();
    for (name, check) in CHECKS {
        let store = PostgresStore::connect(&server.fresh_database()).unwrap();
        eprintln!("postgres: {name}");
        check(&store);
    }
}

/// A store opened again on the same database goes on from what it holds;
/// a database migrated by a newer build is refused, naming the versions;
/// an unreachable one is refused with an error that names it.
#[test]
fn the_postgresql_store_keeps_its_data_and_refuses_what_it_cannot_read() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let store = PostgresStore::connect(&url).unwrap();
    store.commit(request("kept", vec![write("k", b"v")])).unwrap();
    drop(store);
    let again = PostgresStore::connect(&url).unwrap();
    assert_eq!(again.snapshot().unwrap().get("ns", "k").unwrap().map(|v| v.value), Some(b"v".to_vec()));
    drop(again);
    let newer = PostgresStore::SCHEMA_VERSION + 1;
    server.sql(&url, &format!("UPDATE txm_schema SET version = {newer}"));
    let error = PostgresStore::connect(&url).unwrap_err();
    assert!(matches!(error, StoreError::Format { found, .. } if found == u64::try_from(newer).unwrap()), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1") && message.contains(&format!("format {newer}")), "{message}");

    server.stop();
    let error = PostgresStore::connect(&url).unwrap_err();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("127.0.0.1"), "{error}");
}

/// The race a conformance check can only hope to meet, made to happen:
/// a node's acceptance checks a key, finds it free, and inserts its row
/// while another node's holder of that key (held by an open SQL
/// transaction here) commits, leaving the inbox for the idempotency table.
/// The insert meets no row of the key once it may go on; the key is held
/// all the same, and the acceptance is refused naming its holder.
#[test]
fn an_acceptance_that_meets_its_key_committed_while_it_inserts_is_refused() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    let store = PostgresStore::connect(&url).unwrap();
    let mut holder = server.session(&url);
    holder.send(
        "BEGIN; INSERT INTO txm_inbox (transaction_id, idempotency_key, request, sequence, holder, epoch, expires_unix_ms)
         VALUES ('holder', 'key', '', 1000000, 'node-a', 1, 0);",
    );
    let open = || server.query(&url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'");
    let started = std::time::Instant::now();
    while open() != "1" {
        assert!(started.elapsed() < Duration::from_secs(30), "the holder's SQL transaction never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let acceptance = std::thread::scope(|scope| {
        let accepting = scope.spawn(|| store.accept(acceptance("late", Some("key"), "node-b", 60_000)));
        // The acceptance waits on the holder's row, uncommitted, before it
        // may insert its own.
        let started = std::time::Instant::now();
        while server.query(&url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") != "1" {
            assert!(started.elapsed() < Duration::from_secs(30), "the acceptance never waited on the key");
            assert!(!accepting.is_finished(), "the acceptance did not wait on the key's row");
            std::thread::sleep(Duration::from_millis(20));
        }
        let expires = now_ms() + 60_000;
        holder.send(&format!(
            "DELETE FROM txm_inbox WHERE transaction_id = 'holder';
             INSERT INTO txm_idempotency (key, transaction_id, expires_unix_ms) VALUES ('key', 'holder', {expires});
             COMMIT;"
        ));
        accepting.join().unwrap().unwrap()
    });
    assert!(holder.finish(), "the holder's SQL ran");
    assert_eq!(acceptance, Acceptance::KeyHeld { transaction_id: "holder".into() });
    assert!(store.accepted("late").unwrap().is_none(), "nothing of the refused acceptance is left");
}

/// Nodes that start together on one database each bring its schema up:
/// they migrate once between them, and none fails for the other.
#[test]
fn stores_connecting_at_once_migrate_once_and_all_open() {
    let server = TestPostgres::start();
    let url = server.fresh_database();
    for round in 0..5 {
        let schema = format!("together_{round}");
        std::thread::scope(|scope| {
            let nodes: Vec<_> =
                (0..4).map(|_| scope.spawn(|| PostgresStore::connect_in_schema(&url, &schema))).collect();
            for node in nodes {
                let store = node.join().unwrap().unwrap();
                assert_eq!(store.snapshot().unwrap().version(), 0);
            }
        });
    }
}
