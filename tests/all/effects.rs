//! The mirror persists nothing and sends no unsafe call; the twins see the
//! same world.

use serde_json::Value;
use tempfile::tempdir;
use txmirror_runtime::store::TransactionOutcome;
use txmirror_runtime::trace::{Effect, HostCall, HttpOutcome};
use txmirror_runtime::{GateStage, GateVerdict, Role, TxRequest};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

/// A runtime with a guest (the effects guest unless told), a sink server
/// and a granted directory (`files`, seen as `/data`).
pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) server: TestServer,
    pub(crate) runtime: txmirror_runtime::Runtime,
    pub(crate) module: txmirror_runtime::Module,
    pub(crate) policy: std::sync::Arc<txmirror_runtime::Policy>,
}

impl Fixture {
    async fn new(behaviour: Behaviour) -> Self {
        Self::with(guests::EFFECTS, behaviour).await
    }

    pub(crate) async fn with(guest: &str, behaviour: Behaviour) -> Self {
        let dir = tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let server = TestServer::start(behaviour).await;
        let runtime = runtime(&dir.path().join("data"));
        let module = load(&runtime, guest).await;
        let policy = policy(&effects_policy(&server, &files));
        Self { _dir: dir, server, runtime, module, policy }
    }

    /// The directory the policy grants read-write, as `/data`.
    pub(crate) fn files(&self) -> std::path::PathBuf {
        self._dir.path().join("files")
    }

    async fn execute(&self, path: &str) -> txmirror_runtime::TxReport {
        let request = TxRequest { path: Some(path.into()), input: b"{}".to_vec(), ..Default::default() };
        self.runtime.execute(&self.module, &self.policy, request).await.unwrap()
    }
}

pub(crate) fn effects_policy(server: &TestServer, files: &std::path::Path) -> String {
    format!(
        r#"
        [capabilities]
        kv = {{ scratch = "read-write" }}
        streams = ["effects"]
        outbound_hosts = ["{authority}"]
        files = [{{ host = "{files}", guest = "/data", access = "read-write" }}]

        [config]
        sink = "{url}/sink"
        "#,
        authority = server.authority(),
        url = server.url(),
        files = files.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_persists_nothing_but_traces_every_attempt() {
    let dir = tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server =
        TestServer::start(Behaviour { status: 201, body: r#"{"ok":true}"#.into(), ..Default::default() }).await;
    let runtime = runtime(&dir.path().join("data"));
    let module = load(&runtime, guests::EFFECTS).await;
    let policy = policy(&effects_policy(&server, &files));
    let request = || TxRequest { path: Some("all-effects".into()), input: b"{}".to_vec(), ..Default::default() };

    // The mirror alone.
    let version_before = runtime.snapshot().unwrap().version();
    let dry = runtime.dry_run(&module, &policy, request()).await.unwrap();
    assert_eq!(dry.trace.role, Role::Mirror);
    assert_eq!(runtime.snapshot().unwrap().version(), version_before, "the store did not move");
    assert!(runtime.snapshot().unwrap().get("scratch", "written").unwrap().is_none(), "no key written");
    assert!(runtime.events("effects", 0, 10).unwrap().is_empty(), "no event stored");
    assert!(!files.join("probe.txt").exists(), "no file written");
    assert!(server.received().is_empty(), "the server received nothing: {:?}", server.received());

    // ...yet its trace shows all four attempts.
    let calls: Vec<&HostCall> = dry.trace.events.iter().map(|e| &e.call).collect();
    assert!(
        calls.iter().any(
            |c| matches!(c, HostCall::KvWrite { namespace, effect: Effect::Withheld, .. } if namespace == "scratch")
        ),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, HostCall::FileOpen { path, write: true, error: Some(_) } if path == "probe.txt")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, HostCall::Emit { stream, effect: Effect::Withheld, .. } if stream == "effects")),
        "{calls:#?}"
    );
    assert!(calls.iter().any(|c| matches!(c, HostCall::Http { method, safe: false, outcome: HttpOutcome::Stubbed { .. }, .. } if method == "POST")), "{calls:#?}");
    let output: Value = serde_json::from_str(dry.result.as_ref().unwrap()).unwrap();
    assert!(output["file"].is_string(), "the mirror's file write was refused: {output}");

    // The primary of a mirrored transaction does persist, and the mirror
    // beside it still sends nothing: exactly one POST arrives.
    let report = runtime.execute(&module, &policy, request()).await.unwrap();
    assert!(matches!(report.outcome, TransactionOutcome::Committed { .. }), "{report:#?}");
    let attempt = &report.attempts[0];
    assert!(attempt.mirror.is_some(), "the mirror ran");
    assert_eq!(runtime.snapshot().unwrap().get("scratch", "written").unwrap().unwrap().value, br#""by the guest""#);
    assert_eq!(std::fs::read(files.join("probe.txt")).unwrap(), b"written by the guest");
    assert_eq!(runtime.events("effects", 0, 10).unwrap().len(), 1);
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].method, "POST");
    let mirror = attempt.mirror.as_ref().unwrap();
    assert!(
        mirror.events.iter().any(|e| matches!(&e.call, HostCall::Http { outcome: HttpOutcome::Stubbed { .. }, .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_see_the_same_version_randomness_and_clock() {
    let dir = tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = TestServer::start(Behaviour::default()).await;
    let runtime = runtime(&dir.path().join("data"));
    let module = load(&runtime, guests::EFFECTS).await;
    let policy = policy(&effects_policy(&server, &files));
    let write = TxRequest { path: Some("all-effects".into()), input: b"{}".to_vec(), ..Default::default() };
    runtime.execute(&module, &policy, write).await.unwrap();

    let observe = || TxRequest { path: Some("observe".into()), input: b"{}".to_vec(), ..Default::default() };
    let first = runtime.execute(&module, &policy, observe()).await.unwrap();
    let attempt = &first.attempts[0];
    let primary: Value = serde_json::from_str(attempt.primary.output.as_ref().unwrap()).unwrap();
    let mirror: Value = serde_json::from_str(attempt.mirror.as_ref().unwrap().output.as_ref().unwrap()).unwrap();
    assert_eq!(primary, mirror, "same random values, clock and stored data");
    assert_eq!(primary["stored"], "by the guest");
    let versions = |trace: &txmirror_runtime::Trace| -> Vec<Option<u64>> {
        trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::KvGet { version, .. } => Some(*version),
                _ => None,
            })
            .collect()
    };
    assert_eq!(versions(&attempt.primary), vec![Some(1)]);
    assert_eq!(versions(&attempt.primary), versions(attempt.mirror.as_ref().unwrap()));

    // Another transaction draws other random values.
    let second = runtime.execute(&module, &policy, observe()).await.unwrap();
    let other: Value = serde_json::from_str(second.attempts[0].primary.output.as_ref().unwrap()).unwrap();
    assert_ne!(primary["random"], other["random"]);
}

/// For secrets, the policy gives the primary the operating system's
/// generator: it then differs from the mirror's stream, and from a seeded
/// replay of the same transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_may_draw_secrets_from_the_system() {
    let dir = tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = TestServer::start(Behaviour::default()).await;
    let observe = || TxRequest { path: Some("observe".into()), input: b"{}".to_vec(), ..Default::default() };
    // Each on a fresh store, with the same seed for the runtime's own draws.
    let draws = |policy_text: String| {
        let data = tempdir().unwrap();
        let config = txmirror_runtime::RuntimeConfig {
            randomness: txmirror_runtime::Randomness::seeded(7),
            ..txmirror_tests::config(data.path())
        };
        let runtime = txmirror_runtime::Runtime::open(config).unwrap();
        async move {
            let _data = data;
            let module = load(&runtime, guests::EFFECTS).await;
            let report = runtime.execute(&module, &policy(&policy_text), observe()).await.unwrap();
            let attempt = &report.attempts[0];
            let random = |output: &Option<String>| -> Value {
                serde_json::from_str::<Value>(output.as_ref().unwrap()).unwrap()["random"].clone()
            };
            (random(&attempt.primary.output), random(&attempt.mirror.as_ref().unwrap().output))
        }
    };
    let shared = effects_policy(&server, &files);
    let system = format!("{shared}\n[randomness]\nprimary = \"system\"\n");
    let (primary, mirror) = draws(shared.clone()).await;
    assert_eq!(primary, mirror, "shared by default");
    assert_eq!(draws(shared).await, (primary.clone(), mirror.clone()), "and the same for the same seed");
    let (secret, mirror_then) = draws(system.clone()).await;
    assert_eq!(mirror_then, mirror, "the mirror keeps the seeded stream");
    assert_ne!(secret, mirror_then, "the primary's comes from the system");
    assert_ne!(draws(system).await.0, secret, "and is not replayed by the seed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_granted_by_default() {
    let dir = tempdir().unwrap();
    let server = TestServer::start(Behaviour::default()).await;
    let runtime = runtime(&dir.path().join("data"));
    let module = load(&runtime, guests::EFFECTS).await;
    // A policy that sets the sink but grants neither the namespace, nor the
    // stream, nor the host, nor any directory.
    let policy = policy(&format!("[config]\nsink = \"{}/sink\"\n", server.url()));
    let report = runtime
        .execute(
            &module,
            &policy,
            TxRequest { path: Some("all-effects".into()), input: b"{}".to_vec(), ..Default::default() },
        )
        .await
        .unwrap();
    let output = report.output_json().expect("the guest reports the refusals and commits nothing else");
    assert!(output["kv"].as_str().unwrap().contains("denied"), "{output}");
    assert!(output["file"].is_string(), "{output}");
    assert!(output["post_error"].as_str().unwrap().contains("refused by the host"), "{output}");
    assert!(output["event"].as_str().unwrap().contains("stream `effects` is not granted"), "{output}");
    assert!(server.received().is_empty());
    assert!(runtime.snapshot().unwrap().get("scratch", "written").unwrap().is_none());
    assert!(runtime.events("effects", 0, 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_sends_safe_requests() {
    let fx = Fixture::new(Behaviour { status: 200, body: r#"{"n": {n}}"#.into(), ..Default::default() }).await;
    let report = fx.execute("fetch").await;
    assert!(report.failure.is_none(), "{report:#?}");
    let received = fx.server.received();
    assert_eq!(received.len(), 2, "both twins sent their GET: {received:?}");
    assert!(received.iter().all(|r| r.method == "GET"));
    let mirror = report.attempts[0].mirror.as_ref().unwrap();
    assert!(
        mirror.events.iter().any(|e| matches!(
            &e.call,
            HostCall::Http { safe: true, outcome: HttpOutcome::Answered { status: 200, .. }, .. }
        )),
        "{mirror:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_stops_a_certain_failure_before_its_first_unsafe_call() {
    let fx = Fixture::new(Behaviour::default()).await;
    let report = fx.execute("careless").await;
    let failure = report.failure.as_ref().expect("stopped");
    assert_eq!(failure.kind, txmirror_runtime::FailureKind::PredictedFailure, "{failure:?}");
    assert!(failure.message.contains("the guest found the input invalid"), "{}", failure.message);
    assert!(fx.server.received().is_empty(), "nothing was sent: {:?}", fx.server.received());
    assert_eq!(fx.runtime.snapshot().unwrap().version(), 0, "nothing was committed");
    assert_eq!(report.attempts.len(), 1, "a certain failure is final");
    assert!(fx.runtime.dead_letter(&report.transaction_id).unwrap().is_none(), "and not a dead letter");
    let gate = report.attempts[0].primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { decision, .. } => Some(*decision),
        _ => None,
    });
    assert_eq!(gate, Some(GateVerdict::FailFast));
}

/// The contention the predictor saw in a report's last attempt.
fn contended_keys(report: &txmirror_runtime::TxReport) -> f32 {
    report.attempts.last().and_then(|a| a.prediction.as_ref()).map_or(-1.0, |p| p.features.contended_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_a_running_transactions_write_set_counts_as_contended() {
    // The sink holds the writer's POST, so the writer's primary sits with
    // `scratch/written` in its buffered write set, uncommitted.
    let fixture = std::sync::Arc::new(
        Fixture::new(Behaviour { delay: std::time::Duration::from_millis(600), ..Default::default() }).await,
    );
    let writer = tokio::spawn({
        let fixture = fixture.clone();
        async move { fixture.execute("all-effects").await }
    });
    let mut polls = 0;
    while !fixture.server.received().iter().any(|r| r.method == "POST") {
        assert!(polls < 500, "the writer never reached its POST");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        polls += 1;
    }
    let reader = fixture.execute("observe").await;
    assert_eq!(reader.output_json().unwrap()["stored"], Value::Null, "nothing is committed yet");
    assert_eq!(contended_keys(&reader), 1.0, "the writer's buffered write is seen: {reader:#?}");
    let prediction = reader.attempts[0].prediction.as_ref().unwrap();
    assert!(prediction.reasons.iter().any(|r| r.rule == "contention"), "{prediction:?}");

    let writer = writer.await.unwrap();
    assert!(writer.failure.is_none(), "{writer:#?}");
    let after = fixture.execute("observe").await;
    assert_eq!(after.output_json().unwrap()["stored"], "by the guest");
    assert_eq!(contended_keys(&after), 0.0, "committed and released: no contention left");
}

/// The gate before the commit of the primary's last attempt: `(waited, timed out, decision)`.
fn commit_gate(report: &txmirror_runtime::TxReport) -> Option<(u64, bool, GateVerdict)> {
    report.attempts.last()?.primary.events.iter().find_map(|e| match &e.call {
        HostCall::Gate { waited_micros, timed_out, decision, before: GateStage::Commit, .. } => {
            Some((*waited_micros, *timed_out, *decision))
        }
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_before_the_commit_stops_a_certain_failure_with_nothing_written() {
    let fx = Fixture::new(Behaviour::default()).await;
    let report = fx.execute("sloppy").await;
    let failure = report.failure.as_ref().expect("stopped");
    assert_eq!(failure.kind, txmirror_runtime::FailureKind::PredictedFailure, "{failure:?}");
    assert!(failure.message.contains("before any effect"), "{}", failure.message);
    assert_eq!(fx.runtime.snapshot().unwrap().version(), 0, "nothing was committed");
    assert!(fx.runtime.events("effects", 0, 10).unwrap().is_empty(), "no event");
    let (_, timed_out, decision) = commit_gate(&report).expect("the commit was gated");
    assert_eq!((timed_out, decision), (false, GateVerdict::FailFast));

    // A clean transaction passes the same gate, and the pass is recorded.
    let report = fx.execute("observe").await;
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(commit_gate(&report).map(|(_, timed_out, d)| (timed_out, d)), Some((false, GateVerdict::Pass)));
}

/// Bug: the gate before the commit was stamped with the guest call's own
/// duration, a time from another origin than the trace's other lines (a
/// trace read `2982 µs emit …` and then `446 µs gate before commit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_before_the_commit_is_stamped_on_the_traces_own_clock() {
    let fx = Fixture::new(Behaviour::default()).await;
    for path in ["observe", "all-effects"] {
        let report = fx.execute(path).await;
        let events = &report.attempts.last().expect("an attempt").primary.events;
        let gate = events
            .iter()
            .find(|e| matches!(e.call, HostCall::Gate { before: GateStage::Commit, .. }))
            .expect("the commit was gated");
        let latest_end = events
            .iter()
            .filter(|e| !matches!(e.call, HostCall::Gate { before: GateStage::Commit, .. }))
            .map(|e| e.at_micros + e.duration_micros)
            .max()
            .expect("the guest called its host");
        assert!(
            gate.at_micros >= latest_end,
            "{path}: the gate before the commit ({} µs) comes after every call ({latest_end} µs): {events:#?}",
            gate.at_micros
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_before_the_commit_waits_for_a_slow_mirror_no_longer_than_the_policy_says() {
    // The mirror's stubbed answer sends it into a long loop; the real sink's does not.
    let dir = tempdir().unwrap();
    let server = TestServer::start(Behaviour::default()).await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::EFFECTS).await;
    let policy = policy(&format!(
        "[capabilities]\noutbound_hosts = [\"{}\"]\n[config]\nsink = \"{}/sink\"\n\
         [prediction]\ngate_timeout_ms = 100\n\
         [[mirror.stubs]]\nmethod = \"POST\"\nurl_prefix = \"{}/sink\"\nstatus = 200\nbody = '{{\"spin\": 100000000000}}'\n",
        server.authority(),
        server.url(),
        server.url()
    ));
    let request = TxRequest { path: Some("diverge".into()), input: b"{}".to_vec(), ..Default::default() };
    let started = std::time::Instant::now();
    let report = runtime.execute(&module, &policy, request).await.unwrap();
    assert!(report.failure.is_none(), "the primary commits: {report:#?}");
    assert_eq!(report.output_json().unwrap()["spins"], 0);
    let (waited, timed_out, decision) = commit_gate(&report).expect("the commit was gated");
    assert!(timed_out, "the mirror was still looping");
    assert_eq!(decision, GateVerdict::Pass, "a gate that times out lets the primary pass");
    assert!((100_000..2_000_000).contains(&waited), "waited about the policy's 100 ms: {waited} µs");
    let mirror = report.attempts[0].mirror.as_ref().unwrap();
    assert!(mirror.ended.contains("stopped at the gate before the commit"), "{}", mirror.ended);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the mirror's loop did not hold the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exploration_share_runs_flagged_attempts_unadjusted() {
    // Every `sloppy` transaction is flagged (a validation issue), and the
    // gate before the commit fails it fast, unless it is explored.
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::EFFECTS).await;
    let policy = policy(
        "[capabilities]\nkv = { scratch = \"read-write\" }\nstreams = [\"effects\"]\n[prediction]\nexploration_share = 0.25\n",
    );
    let transactions = 400;
    let mut explored = 0;
    for i in 0..transactions {
        let request = TxRequest {
            transaction_id: Some(format!("explore-{i}")),
            path: Some("sloppy".into()),
            input: b"{}".to_vec(),
            ..Default::default()
        };
        let report = runtime.execute(&module, &policy, request).await.unwrap();
        let attempt = &report.attempts[0];
        let (_, _, decision) = commit_gate(&report).expect("gated");
        if attempt.explored {
            explored += 1;
            assert!(report.failure.is_none(), "an explored attempt runs unadjusted and commits: {report:#?}");
            assert_eq!(
                decision,
                GateVerdict::Explored(txmirror_runtime::Action::FailFast),
                "the gate records what it would have done"
            );
        } else {
            assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(txmirror_runtime::FailureKind::PredictedFailure));
            assert_eq!(decision, GateVerdict::FailFast);
        }
    }
    // Binomial(400, 0.25): mean 100, standard deviation 8.7; four of them either side.
    assert!((65..=135).contains(&explored), "{explored} of {transactions} explored, expected about 100");

    // The draw depends on the transaction id alone: the same ids explore the same attempts.
    let again = TxRequest {
        transaction_id: Some("explore-again".into()),
        path: Some("sloppy".into()),
        input: b"{}".to_vec(),
        ..Default::default()
    };
    let first = runtime.execute(&module, &policy, again.clone()).await.unwrap().attempts[0].explored;
    let dir2 = tempdir().unwrap();
    let other = txmirror_tests::runtime(dir2.path());
    let module2 = load(&other, guests::EFFECTS).await;
    assert_eq!(other.execute(&module2, &policy, again).await.unwrap().attempts[0].explored, first);
}
