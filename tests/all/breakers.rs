//! Circuit breakers of the hosts guests call (`[breaker]`): a host that
//! fails in a row is no longer called, by the primary or the mirror, until
//! its open period ends and one call shows it well again; a host's
//! concurrency limit holds the calls beyond it.

use crate::payment::{charge, charges, gateway, gateway_policy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tempfile::tempdir;
use txmirror_runtime::trace::{HostCall, HttpOutcome, Trace};
use txmirror_runtime::{BreakerState, TxReport};
use txmirror_tests::{Behaviour, TestServer, guests, load, payment_grants, policy, runtime};

/// The calls of `trace` to `host`, and whether each was short-circuited.
fn calls_to(trace: &Trace, authority: &str) -> Vec<bool> {
    trace
        .events
        .iter()
        .filter_map(|event| match &event.call {
            HostCall::Http { url, outcome, .. } if url.contains(authority) => {
                Some(matches!(outcome, HttpOutcome::ShortCircuited { .. }))
            }
            _ => None,
        })
        .collect()
}

/// Every call of every twin of `report` to `authority`: short-circuited or not.
fn all_calls_to(report: &TxReport, authority: &str) -> Vec<bool> {
    report
        .attempts
        .iter()
        .flat_map(|attempt| {
            let mut calls = calls_to(&attempt.primary, authority);
            calls.extend(attempt.mirror.iter().flat_map(|mirror| calls_to(mirror, authority)));
            calls
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_failing_in_a_row_is_no_longer_called_until_a_trial_shows_it_well() {
    let dir = tempdir().unwrap();
    let failing = Behaviour { status: 503, body: "down".into(), ..Default::default() };
    let (primary, backup) = (TestServer::start(failing).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!(
        // Retries do not wait for the open period (longer than the longest
        // interval): they go to the backup path.
        "{}\n[retry]\nmax_interval_ms = 1000\n[breaker]\nopen_ms = 1500\n[[breaker.hosts]]\nhost = \"{}\"\nfailures = 2\n",
        gateway_policy(&primary, &backup),
        primary.authority()
    );
    let policy = policy(&text);

    // The first charge meets the failing gateway until its breaker opens,
    // and commits on the backup.
    let first = runtime.execute(&module, &policy, charge("charge", "order-1")).await.unwrap();
    assert!(first.failure.is_none(), "{first:#?}");
    assert_eq!(first.path, "charge-backup");
    let host = primary.authority();
    let breaker = |runtime: &txmirror_runtime::Runtime| {
        runtime.breakers().into_iter().find(|view| view.host == host).map(|view| view.state)
    };
    assert_eq!(breaker(&runtime), Some(BreakerState::Open), "{:?}", runtime.breakers());
    assert_eq!(runtime.breakers().len(), 1, "the backup has no rule, so no breaker: {:?}", runtime.breakers());
    let sent = primary.received().len();
    assert_eq!(sent, 2, "both twins' health checks failed, which opened it; nothing was sent after");

    // While it is open, neither twin calls the host: both are refused at
    // once, and the charge goes to the backup.
    let second = runtime.execute(&module, &policy, charge("charge", "order-2")).await.unwrap();
    assert!(second.failure.is_none(), "{second:#?}");
    assert_eq!(second.path, "charge-backup");
    let calls = all_calls_to(&second, &host);
    assert!(!calls.is_empty() && calls.iter().all(|short| *short), "{calls:?}: {second:#?}");
    let mirror = second.attempts[0].mirror.as_ref().expect("the mirror ran");
    assert!(calls_to(mirror, &host).iter().any(|short| *short), "the mirror met it first: {mirror:#?}");
    assert_eq!(primary.received().len(), sent, "nothing reached the host");
    assert_eq!(charges(&backup).len(), 2);

    // Once the open period ends and the host is well, a call goes and
    // closes the breaker; the host is called again.
    primary.set_behaviour(gateway());
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(breaker(&runtime), Some(BreakerState::HalfOpen));
    let third = runtime.execute(&module, &policy, charge("charge", "order-3")).await.unwrap();
    assert!(third.failure.is_none(), "{third:#?}");
    assert_eq!(breaker(&runtime), Some(BreakerState::Closed));
    let calls = all_calls_to(&third, &host);
    assert!(!calls.is_empty() && calls.iter().all(|short| !*short), "{calls:?}: {third:#?}");
    assert!(primary.received().len() > sent, "the host was called again");
}

/// A server that answers `201` after 200 ms and counts how many requests
/// it held at once.
async fn slow_gateway() -> (String, Arc<AtomicUsize>) {
    let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = (in_flight.clone(), most.clone());
    let app = axum::Router::new().fallback(move || {
        let (in_flight, most) = counted.clone();
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            (axum::http::StatusCode::CREATED, r#"{"charge_id": "ch_slow"}"#)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (authority, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_concurrency_limit_holds_the_calls_beyond_it() {
    let dir = tempdir().unwrap();
    let (authority, most) = slow_gateway().await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let url = format!("http://{authority}");
    let text = format!(
        "{}[resource_requirements]\noutbound_timeout_ms = 10000\n[[breaker.hosts]]\nhost = \"{authority}\"\nmax_concurrent = 1\n",
        payment_grants(&url, &url)
    );
    let policy = policy(&text);
    let charges: Vec<_> = (0..4)
        .map(|n| {
            let (runtime, module, policy) = (runtime.clone(), module.clone(), policy.clone());
            tokio::spawn(async move { runtime.execute(&module, &policy, charge("charge", &format!("o-{n}"))).await })
        })
        .collect();
    for charge in charges {
        let report = charge.await.unwrap().unwrap();
        assert!(report.failure.is_none(), "{report:#?}");
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one call at a time reached the host");
}

#[test]
fn breaker_settings_out_of_bounds_are_refused_by_name() {
    for (text, key) in [
        ("[breaker]\nfailures = 0", "breaker.failures"),
        ("[breaker]\nopen_ms = 5", "breaker.open_ms"),
        ("[breaker]\nmax_concurrent = 0", "breaker.max_concurrent"),
        ("[[breaker.hosts]]\nhost = \"user@h\"", "breaker.hosts[0].host"),
        ("[[breaker.hosts]]\nhost = \"h\"\nfailures = 2000", "breaker.hosts[0].failures"),
        ("[breaker]\ncolour = 1", "colour"),
    ] {
        let error = txmirror_runtime::Policy::parse(text, std::path::Path::new("p.toml")).unwrap_err().to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
}

/// A gateway whose charges answer `503` with `Retry-After: 120` and whose
/// health check answers `200`: how many charges it received.
async fn busy_gateway() -> (String, Arc<AtomicUsize>) {
    let charges = Arc::new(AtomicUsize::new(0));
    let counted = charges.clone();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" })).route(
        "/charges",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "120")], "busy") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (authority, charges)
}

/// A `Retry-After` longer than the policy's longest retry interval is not
/// waited out on the path, nor ignored by retrying sooner: the next path
/// runs. The wait is in the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_longest_interval_moves_to_the_next_path() {
    let dir = tempdir().unwrap();
    let (authority, busy_charges) = busy_gateway().await;
    let backup = TestServer::start(gateway()).await;
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!(
        "alternative_paths = [\"charge-backup\"]\n{}[retry]\nmax_attempts = 3\n",
        payment_grants(&format!("http://{authority}"), &backup.url())
    );
    let report = runtime.execute(&module, &policy(&text), charge("charge", "o-1")).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    assert_eq!(report.path, "charge-backup");
    let on_primary = report.attempts.iter().filter(|a| a.attempt.path == "charge").count();
    assert_eq!((on_primary, busy_charges.load(Ordering::SeqCst)), (1, 1), "one try, not three");
    let asked = report.attempts[0].primary.events.iter().find_map(|e| match &e.call {
        HostCall::Http { outcome: HttpOutcome::Answered { status: 503, retry_after_ms, .. }, .. } => *retry_after_ms,
        _ => None,
    });
    assert_eq!(asked, Some(120_000));
}
