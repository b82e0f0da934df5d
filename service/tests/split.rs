//! A module's A/B split through the API: submissions land on arms by their
//! idempotency keys, and the report compares the arms for operators and
//! developers.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Call, error_code, install, open};
use serde_json::json;
use txmirror_service::Role::{Client, Developer, Operator};
use txmirror_tests::{Behaviour, TestServer, guests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_report_compares_the_arms_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let gateway =
        TestServer::start(Behaviour { status: 201, body: r#"{"charge_id": "ch_{n}"}"#.into(), ..Default::default() })
            .await;
    let policy = format!(
        "alternative_paths = [\"charge-backup\"]\n{}[paths.charge]\ncost = 0.10\n[paths.charge-backup]\ncost = 0.30\n\
         [split]\nsticky = \"key\"\n[[split.arms]]\nname = \"backup-first\"\nshare = 0.5\norder = [\"charge-backup\"]\n",
        txmirror_tests::payment_grants(&gateway.url(), &gateway.url())
    );
    let hash = install(state, "acme", guests::PAYMENT, &policy).await;
    let client = Call::as_(state, "acme", Client);
    for order in 0..16 {
        let body = json!({ "input": { "order_id": format!("o-{order}"), "amount_cents": 100, "currency": "EUR" } });
        let request = Request::builder()
            .method("POST")
            .uri(format!("/v1/modules/{hash}/transactions"))
            .header("idempotency-key", format!("key-{order}"));
        let (status, report) = client.send_with(request, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let arm = report["attempts"][0]["split_arm"].as_str().unwrap().to_string();
        let first = report["attempts"][0]["attempt"]["path"].as_str().unwrap();
        assert_eq!(first, if arm == "backup-first" { "charge-backup" } else { "charge" }, "{arm}");
    }
    let uri = format!("/v1/modules/{hash}/paths/report");
    let (status, report) = Call::as_(state, "acme", Operator).send("GET", &uri, Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["module"], hash.as_str());
    let arms = report["arms"].as_array().unwrap();
    let total: u64 = arms.iter().map(|arm| arm["transactions"].as_u64().unwrap()).sum();
    assert_eq!(total, 16, "{report}");
    assert_eq!(arms[0]["arm"], "control", "{report}");
    for arm in arms {
        assert_eq!(arm["success_rate"]["value"], 1.0, "{arm}");
        let expected = if arm["arm"] == "control" { 0.10 } else { 0.30 };
        assert!((arm["cost"]["value"].as_f64().unwrap() - expected).abs() < 1e-9, "{arm}");
    }
    // Developers may read it; clients may not; a bad scan and an unknown
    // module are refused.
    let (status, _) = Call::as_(state, "acme", Developer).send("GET", &uri, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = client.send("GET", &uri, Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = Call::as_(state, "acme", Operator).send("GET", &format!("{uri}?scan=0"), Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    let nowhere = format!("/v1/modules/{}/paths/report", "0".repeat(64));
    let (status, _) = Call::as_(state, "acme", Operator).send("GET", &nowhere, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another tenant's records are not this one's.
    let (status, _) = Call::as_(state, "globex", Operator).send("GET", &uri, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the module is acme's");
}
