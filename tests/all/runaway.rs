//! Runaway guests are stopped by fuel, memory, wall-time and stack limits,
//! each with its own error, and the runtime keeps serving.

use tempfile::tempdir;
use txmirror_runtime::trace::HostCall;
use txmirror_runtime::{FailureKind, TxRequest};
use txmirror_tests::{guests, load, policy, runtime};

fn request(path: &str, input: &str) -> TxRequest {
    TxRequest { path: Some(path.into()), input: input.as_bytes().to_vec(), ..Default::default() }
}

/// What `burn` of `work` really needs, measured without a mirror.
async fn fuel_needed(runtime: &txmirror_runtime::Runtime, module: &txmirror_runtime::Module, work: &str) -> u64 {
    let measured =
        runtime.execute(module, &policy("failure_prediction_enabled = false"), request("burn", work)).await.unwrap();
    measured.attempts[0].primary.fuel_consumed
}

/// The `(from, to)` of every grant of `resource` in a trace.
fn grants(trace: &txmirror_runtime::Trace, resource: &str) -> Vec<(u64, u64)> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.call {
            HostCall::Grant { resource: granted, from, to, .. } if granted == resource => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_runaway_guests_with_distinct_errors() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let limited = policy("[resource_requirements]\nfuel = 50_000_000\nmemory_mib = 16\nwall_time_ms = 5_000\n");
    // Fuel so plentiful that only the clock can stop the loop.
    let timed = policy("[resource_requirements]\nfuel = 1_000_000_000_000_000\nwall_time_ms = 100\n");

    let cases = [
        ("spin", &limited, FailureKind::FuelExhausted, "fuel"),
        ("spin", &timed, FailureKind::WallTimeExceeded, "wall-time"),
        // The mirror shows the need, so the primary is granted memory as far
        // as the mirror got under the ceiling (4 x 16 MiB); then it stops.
        ("memory-bomb", &limited, FailureKind::MemoryLimit, "memory would grow past its limit"),
        ("recurse", &limited, FailureKind::StackOverflow, "stack"),
        ("panic", &limited, FailureKind::GuestTrap, "aborted"),
    ];
    for (path, policy, kind, words) in cases {
        let report = runtime.execute(&module, policy, request(path, "{}")).await.unwrap();
        let failure = report.failure.as_ref().unwrap_or_else(|| panic!("{path} must fail: {report:#?}"));
        assert_eq!(failure.kind, kind, "{path}: {failure:?}");
        assert!(failure.message.contains(words), "{path}: {}", failure.message);
        let expected_attempts = policy.retry.attempts_for(kind) as usize;
        assert_eq!(report.attempts.len(), expected_attempts, "{path}: retried as the policy says");
        let mirror = report.attempts[0].mirror.as_ref().unwrap();
        assert!(mirror.ended.starts_with(kind.as_str()), "the mirror was stopped too: {}", mirror.ended);
        assert_eq!(mirror.failure, Some(kind));
        let prediction = report.attempts[0].prediction.as_ref().unwrap();
        assert_eq!(prediction.features.mirror_failed, 1.0);
        let rules: Vec<&str> = prediction.reasons.iter().map(|r| r.rule.as_str()).collect();
        match kind {
            FailureKind::FuelExhausted => assert_eq!(rules, ["fuel"], "{prediction:?}"),
            // Growing to the ceiling also burns more fuel than the limit: both hold.
            FailureKind::MemoryLimit => assert!(rules.contains(&"memory"), "{prediction:?}"),
            _ => {}
        }
        // The failure is recorded durably.
        let record = runtime.transaction(&report.transaction_id).unwrap().unwrap();
        assert_eq!(record.attempts.len(), expected_attempts);
        // A guest that traps on every path is dead-lettered, not lost.
        let letter = runtime.dead_letter(&report.transaction_id).unwrap().unwrap();
        assert_eq!(letter.failure.kind, kind);

        // The runtime keeps serving.
        let ok = runtime.execute(&module, policy, request("ok", "{}")).await.unwrap();
        assert!(ok.failure.is_none(), "after {path}: {ok:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_use_is_measured() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let policy = policy("");
    let small = runtime.execute(&module, &policy, request("burn", r#"{"rounds": 1000}"#)).await.unwrap();
    let large = runtime.execute(&module, &policy, request("burn", r#"{"rounds": 1000000}"#)).await.unwrap();
    let fuel = |r: &txmirror_runtime::TxReport| r.attempts[0].primary.fuel_consumed;
    assert!(fuel(&large) > fuel(&small) * 100, "{} vs {}", fuel(&large), fuel(&small));
    assert_eq!(fuel(&small), small.attempts[0].mirror.as_ref().unwrap().fuel_consumed, "the twins burn the same fuel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_needs_more_fuel_is_granted_it_without_a_restart() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let work = r#"{"rounds": 20000000}"#;
    let need = fuel_needed(&runtime, &module, work).await;

    // A limit of 60% of the need: the mirror, running with the ceiling,
    // shows the need, and the primary is granted the rest as it runs.
    let limit = need * 6 / 10;
    let granted = policy(&format!("[resource_requirements]\nfuel = {limit}\n"));
    let report = runtime.execute(&module, &granted, request("burn", work)).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.attempts.len(), 1, "no restart");
    let primary = &report.attempts[0].primary;
    assert_eq!(primary.fuel_consumed, need, "the same work, done once");
    let grants = grants(primary, "fuel");
    assert!(!grants.is_empty(), "{primary:#?}");
    assert_eq!(grants[0].0, limit);
    assert!(grants.iter().all(|(_, to)| *to <= limit * 4), "within the ceiling: {grants:?}");
    let prediction = report.attempts[0].prediction.as_ref().unwrap();
    assert!(prediction.reasons.iter().any(|r| r.rule == "fuel"), "{prediction:?}");

    // With the ceiling at the limit, nothing can be granted.
    let capped = policy(&format!("[resource_requirements]\nfuel = {limit}\nfuel_ceiling = {limit}\n"));
    let report = runtime.execute(&module, &capped, request("burn", work)).await.unwrap();
    assert_eq!(report.failure.map(|f| f.kind), Some(FailureKind::FuelExhausted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_needs_more_memory_is_granted_it_within_the_ceiling() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let work = r#"{"mib": 24}"#;

    let granted = policy("[resource_requirements]\nmemory_mib = 16\n");
    let report = runtime.execute(&module, &granted, request("allocate", work)).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.attempts.len(), 1, "no restart");
    let grants = grants(&report.attempts[0].primary, "memory");
    assert!(!grants.is_empty(), "{:#?}", report.attempts[0].primary);
    assert_eq!(grants[0].0, 16 << 20);
    assert!(grants.iter().all(|(_, to)| *to <= 64 << 20), "{grants:?}");

    // Without a mirror, or with the ceiling at the limit, nothing is granted.
    let alone = policy("failure_prediction_enabled = false\n[resource_requirements]\nmemory_mib = 16\n");
    let report = runtime.execute(&module, &alone, request("allocate", work)).await.unwrap();
    assert_eq!(report.failure.map(|f| f.kind), Some(FailureKind::MemoryLimit));
    let capped = policy("[resource_requirements]\nmemory_mib = 16\nmemory_ceiling_mib = 16\n");
    let report = runtime.execute(&module, &capped, request("allocate", work)).await.unwrap();
    assert_eq!(report.failure.map(|f| f.kind), Some(FailureKind::MemoryLimit));
}

/// Regression: a compensation path that failed on every try was itself
/// dead-lettered and compensated, again and again, until the runtime's
/// stack overflowed and the process died (found by the fault workload,
/// where the payment policy's success criteria failed every refund).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_compensation_is_dead_lettered_once_and_not_compensated_again() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let policy = policy("compensation_path = \"panic\"\n[retry]\nmax_attempts = 1\n");
    let report = runtime.execute(&module, &policy, request("panic", "{}")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::GuestTrap));
    let letter = runtime.dead_letter(&report.transaction_id).unwrap().expect("dead-lettered");
    let compensation = letter.compensation.expect("the compensation ran");
    assert!(
        matches!(compensation.outcome, txmirror_runtime::store::TransactionOutcome::Failed { .. }),
        "{compensation:?}"
    );
    let compensated = runtime.dead_letter(&compensation.transaction_id).unwrap().expect("its own letter");
    assert!(compensated.compensation.is_none(), "a compensation is not compensated");
    assert_eq!(runtime.dead_letters(100).unwrap().len(), 2, "the transaction and its compensation, no more");
}

/// The policy's success criteria are written for the transaction's paths;
/// a compensation path's output need not meet them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_criteria_do_not_apply_to_the_compensation() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let policy = policy(
        "compensation_path = \"ok\"\n[retry]\nmax_attempts = 1\n\
         [success_criteria]\nrequired_output_fields = [\"charge_id\"]\n",
    );
    let report = runtime.execute(&module, &policy, request("ok", "{}")).await.unwrap();
    assert_eq!(report.failure.as_ref().map(|f| f.kind), Some(FailureKind::SuccessCriteria));
    let letter = runtime.dead_letter(&report.transaction_id).unwrap().expect("dead-lettered");
    let compensation = letter.compensation.expect("the compensation ran");
    assert!(
        matches!(compensation.outcome, txmirror_runtime::store::TransactionOutcome::Committed { .. }),
        "`ok` has no charge_id, and compensates anyway: {compensation:?}"
    );
}

/// Adaptive mirroring's second look: once the prior is confident, a burn
/// runs without its mirror, runs out of fuel, and gets one more attempt
/// with its mirror, which shows the need; the primary is granted the fuel
/// and the transaction commits although the retry policy allows no retry
/// of fuel exhaustion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_mirroring_gives_an_unmirrored_failure_a_mirrored_second_look() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let work = r#"{"rounds": 20000000}"#;
    let limit = fuel_needed(&runtime, &module, work).await * 6 / 10;
    let adaptive = policy(&format!(
        "[resource_requirements]\nfuel = {limit}\n[mirror]\nmode = \"adaptive\"\nmin_history = 0\nsample = 0\n"
    ));
    let report = runtime.execute(&module, &adaptive, request("burn", work)).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let mirrored: Vec<bool> = report.attempts.iter().map(|a| a.mirror.is_some()).collect();
    assert_eq!(mirrored, [false, true], "an unmirrored attempt, then a mirrored one");
    assert_eq!(report.attempts[0].primary.failure, Some(FailureKind::FuelExhausted));
    assert!(!grants(&report.attempts[1].primary, "fuel").is_empty(), "{:#?}", report.attempts[1].primary);
}

/// Retry delays wait on the runtime's clock, and ids, seeds and jitter come
/// from its randomness: a test of an hour's backoff takes no time, and a
/// seeded runtime draws what another with the same seed draws.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_wait_on_the_clock_and_draws_come_from_the_seeded_randomness() {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};
    use txmirror_runtime::clock::{Clock as _, ManualClock};
    use txmirror_runtime::{Randomness, Runtime, RuntimeConfig};

    let policy = policy(
        "failure_prediction_enabled = false\n[retry]\nmax_attempts = 3\ninitial_interval_ms = 3600000\n\
         max_interval_ms = 36000000\nbackoff_coefficient = 2.0\njitter = 0.5\nnon_retryable = []\n",
    );
    let mut ids = Vec::new();
    let mut waited = Vec::new();
    for _ in 0..2 {
        let dir = tempdir().unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = Arc::new(ManualClock::new(start));
        let config = RuntimeConfig {
            clock: clock.clone(),
            randomness: Randomness::seeded(42),
            ..txmirror_tests::config(dir.path())
        };
        let runtime = Runtime::open(config).unwrap();
        let module = load(&runtime, guests::RUNAWAY).await;
        // Were the waits real, this would take hours; the bound turns a
        // regression into a failure rather than a hung suite.
        let report =
            tokio::time::timeout(Duration::from_secs(120), runtime.execute(&module, &policy, request("panic", "{}")))
                .await
                .expect("the retries waited on the manual clock, not in real time")
                .unwrap();
        assert_eq!(report.attempts.len(), 3, "{report:#?}");
        let waited_for = clock.now().duration_since(start).unwrap();
        // Two waits: 1 h and 2 h, each moved by up to half either way.
        assert!(
            waited_for >= Duration::from_secs(5400) && waited_for <= Duration::from_secs(16200),
            "the clock moved by {waited_for:?}"
        );
        ids.push(report.transaction_id);
        waited.push(waited_for);
    }
    assert_eq!(ids[0], ids[1], "the same seed, the same transaction id");
    assert_eq!(waited[0], waited[1], "the same seed, the same jitter");
}

/// What a module prints is in both twins' traces, bounded; a module that
/// prints a lot is not stopped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guests_output_is_traced_and_bounded() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::RUNAWAY).await;
    let report = runtime.execute(&module, &policy(""), request("chatty", r#"{"bytes": 40000}"#)).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let attempt = &report.attempts[0];
    for trace in [&attempt.primary, attempt.mirror.as_ref().unwrap()] {
        let outputs: Vec<(&str, usize, u64)> = trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                &HostCall::Output { ref stream, ref text, dropped_bytes } => {
                    Some((stream.as_str(), text.len(), dropped_bytes))
                }
                _ => None,
            })
            .collect();
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        let (stdout, stderr) = (outputs[0], outputs[1]);
        assert_eq!((stdout.0, stdout.1), ("stdout", 16 * 1024), "kept up to its bound");
        assert_eq!(u64::try_from(stdout.1).unwrap() + stdout.2, 40_000, "the rest counted");
        assert_eq!(stderr, ("stderr", "chatty: about to print\n".len(), 0));
    }
}
