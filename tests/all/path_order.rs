//! Paths tried in the order the caller's profile prefers, when the policy
//! describes them (`[paths.NAME]`, `[profiles.NAME]`): the order and its
//! reasons are kept with the first attempt.

use crate::payment::{gateway, gateway_policy};
use serde_json::json;
use tempfile::tempdir;
use txmirror_runtime::{ExecuteError, TxRequest};
use txmirror_tests::{TestServer, guests, load, policy, runtime};

/// A charge that names no path, for `profile`.
fn charge(order: &str, profile: Option<&str>) -> TxRequest {
    let input = json!({ "order_id": order, "amount_cents": 1250, "currency": "EUR" });
    TxRequest { input: input.to_string().into_bytes(), profile: profile.map(str::to_string), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_the_paths_in_the_order_its_profile_prefers() {
    let dir = tempdir().unwrap();
    let (primary, backup) = (TestServer::start(gateway()).await, TestServer::start(gateway()).await);
    let runtime = runtime(dir.path());
    let module = load(&runtime, guests::PAYMENT).await;
    let text = format!(
        "{}\n[paths.charge]\nexpected_latency_ms = 800\ncost = 0.30\nreliability = 0.99\n\
         [paths.charge-backup]\nexpected_latency_ms = 200\ncost = 0.10\nreliability = 0.95\n\
         [profiles.cautious]\nrisk_tolerance = 0.0\n[profiles.hurried]\nrisk_tolerance = 1.0\nspeed_weight = 1.0\n",
        gateway_policy(&primary, &backup)
    );
    let policy = policy(&text);

    let hurried = runtime.execute(&module, &policy, charge("o-1", Some("hurried"))).await.unwrap();
    assert!(hurried.failure.is_none(), "{hurried:#?}");
    assert_eq!(hurried.path, "charge-backup", "the faster path first");
    let order: Vec<&str> = hurried.attempts[0].path_order.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(order, ["charge-backup", "charge"]);
    let first = &hurried.attempts[0].path_order[0];
    assert_eq!((first.profile.as_str(), first.expected_latency_ms, first.cost), ("hurried", Some(200), Some(0.10)));
    assert!((first.score - 0.75).abs() < 1e-9, "1 - 200/800: {first:?}");

    let cautious = runtime.execute(&module, &policy, charge("o-2", Some("cautious"))).await.unwrap();
    assert_eq!(cautious.path, "charge", "the more reliable path first");
    assert!((cautious.attempts[0].path_order[0].success - 0.99).abs() < 1e-9);

    // Without a profile, the policy's default weighing (no `default`
    // profile here: risk tolerance 0.25, speed against cost 0.5).
    let plain = runtime.execute(&module, &policy, charge("o-3", None)).await.unwrap();
    assert_eq!(plain.attempts[0].path_order[0].profile, "default");
    // A caller that names the path runs it first, unordered.
    let named = TxRequest { path: Some("charge".into()), ..charge("o-4", Some("hurried")) };
    let named = runtime.execute(&module, &policy, named).await.unwrap();
    assert_eq!((named.path.as_str(), named.attempts[0].path_order.len()), ("charge", 0));

    // The order is kept in the record.
    let recorded = runtime.transaction(&hurried.transaction_id).unwrap().unwrap();
    assert_eq!(recorded.history[0].path_order, hurried.attempts[0].path_order);

    let error = runtime.execute(&module, &policy, charge("o-5", Some("reckless"))).await.unwrap_err();
    assert!(matches!(error, ExecuteError::UnknownProfile { .. }), "{error}");
    assert!(error.to_string().contains("cautious, hurried"), "{error}");

    // A policy that describes no paths orders nothing, and still refuses a
    // profile it lacks instead of running as if none were named.
    let plain_policy = txmirror_tests::policy(&gateway_policy(&primary, &backup));
    let error = runtime.execute(&module, &plain_policy, charge("o-6", Some("hurried"))).await.unwrap_err();
    assert!(matches!(error, ExecuteError::UnknownProfile { .. }), "{error}");
    assert!(error.to_string().contains("none"), "{error}");
}

#[test]
fn path_descriptions_and_profiles_out_of_bounds_are_refused_by_name() {
    for (text, key) in [
        ("[paths.a]\nreliability = 0", "paths.a.reliability"),
        ("[paths.a]\nreliability = 1.5", "paths.a.reliability"),
        ("[paths.a]\ncost = -1", "paths.a.cost"),
        ("[paths.a]\nexpected_latency_ms = 0", "paths.a.expected_latency_ms"),
        ("[paths.a]\nspeed = 1", "speed"),
        ("[profiles.p]\nrisk_tolerance = 2", "profiles.p.risk_tolerance"),
        ("[profiles.p]\nspeed_weight = -0.1", "profiles.p.speed_weight"),
    ] {
        let error = txmirror_runtime::Policy::parse(text, std::path::Path::new("p.toml")).unwrap_err().to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
}
