//! A submission names its caller's profile: the paths run in the order it
//! prefers, the order shows with the transaction, and a profile the policy
//! does not have is refused before anything is accepted.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{Call, error_code, install, open};
use serde_json::json;
use txmirror_service::Role::Client;
use txmirror_tests::{Behaviour, TestServer, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_runs_its_paths_in_its_profiles_order() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway =
        TestServer::start(Behaviour { status: 201, body: r#"{"charge_id": "ch_1"}"#.into(), ..Default::default() })
            .await;
    let policy = format!(
        "alternative_paths = [\"charge-backup\"]\n{}[paths.charge]\nexpected_latency_ms = 900\n\
         [paths.charge-backup]\nexpected_latency_ms = 100\n[profiles.hurried]\nrisk_tolerance = 1.0\nspeed_weight = 1.0\n",
        txmirror_tests::payment_grants(&gateway.url(), &gateway.url()),
    );
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let client = Call::as_(state, "acme", Client);
    let submit = format!("/v1/modules/{hash}/transactions");
    let input = json!({ "order_id": "o-1", "amount_cents": 100, "currency": "EUR" });

    let (status, report) =
        client.send("POST", &submit, json!({ "input": input, "profile": "hurried" }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["path"], "charge-backup", "{report}");
    let (_, view) = client
        .send("GET", &format!("/v1/transactions/{}", report["transaction_id"].as_str().unwrap()), Body::empty())
        .await;
    let order = &view["record"]["history"][0]["path_order"];
    assert_eq!(
        (order[0]["path"].as_str(), order[0]["profile"].as_str()),
        (Some("charge-backup"), Some("hurried")),
        "{view}"
    );

    let (status, body) =
        client.send("POST", &submit, json!({ "input": input, "profile": "reckless" }).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no profile `reckless`; it has hurried"), "{body}");
    let (_, list) = client.send("GET", "/v1/transactions", Body::empty()).await;
    assert_eq!(list["transactions"].as_array().unwrap().len(), 1, "nothing was accepted for the refused one: {list}");
}

/// A token names the profile its submissions run under, where a module's
/// policy has it; a submission's own profile comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_names_its_callers_profile() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    for token in config.tokens.iter_mut().filter(|t| t.tenant == "acme" && t.role == Client) {
        token.profile = Some("hurried".into());
    }
    let service = open(&config).await;
    let state = &service.state;
    let gateway =
        TestServer::start(Behaviour { status: 201, body: r#"{"charge_id": "ch_1"}"#.into(), ..Default::default() })
            .await;
    let grants = txmirror_tests::payment_grants(&gateway.url(), &gateway.url());
    let described = "alternative_paths = [\"charge-backup\"]\n";
    let paths = "[paths.charge]\nexpected_latency_ms = 900\n[paths.charge-backup]\nexpected_latency_ms = 100\n";
    let profiles =
        "[profiles.hurried]\nrisk_tolerance = 1.0\nspeed_weight = 1.0\n[profiles.cautious]\nrisk_tolerance = 0.0\n";
    let hash = install(state, "acme", guests::PAYMENT, &format!("{described}{grants}{paths}{profiles}")).await;
    let client = Call::as_(state, "acme", Client);
    let submit = format!("/v1/modules/{hash}/transactions");
    let body = |order: &str, profile: Option<&str>| {
        let input = json!({ "order_id": order, "amount_cents": 100, "currency": "EUR" });
        json!({ "input": input, "profile": profile }).to_string()
    };
    let (_, report) = client.send("POST", &submit, body("o-1", None)).await;
    let first = &report["attempts"][0]["path_order"][0];
    assert_eq!(
        (first["path"].as_str(), first["profile"].as_str()),
        (Some("charge-backup"), Some("hurried")),
        "{report}"
    );
    let (_, report) = client.send("POST", &submit, body("o-2", Some("cautious"))).await;
    assert_eq!(report["attempts"][0]["path_order"][0]["profile"], "cautious", "{report}");

    // A module whose policy has no such profile runs under its default.
    let plain = format!("{described}{grants}{paths}");
    let other = install(state, "acme", guests::PAYMENT, &plain).await;
    assert_eq!(other, hash, "the same module: its policy is replaced");
    let (status, report) = client.send("POST", &submit, body("o-3", None)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["attempts"][0]["path_order"][0]["profile"], "default", "{report}");
}
