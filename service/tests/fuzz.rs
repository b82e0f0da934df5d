//! The API fed what a careless or hostile client sends: random JSON,
//! random bytes, random query strings, to every endpoint that reads a
//! body or a query. Every answer is a clear refusal or a success, never a
//! server error, and the service keeps serving.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{BANK_POLICY, Call, install, open};
use proptest::prelude::*;
use serde_json::Value;
use txmirror_service::Role;
use txmirror_tests::guests;

/// JSON of any shape, a few levels deep, with the field names the API
/// reads among random ones, so that values reach the checks behind serde.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "(\\PC){0,24}".prop_map(Value::String),
        prop_oneof![Just("deposit"), Just("balance"), Just("transfer"), Just("replay"), Just("")]
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let names = prop_oneof![
            Just("path".to_string()),
            Just("input".to_string()),
            Just("transaction_id".to_string()),
            Just("kind".to_string()),
            Just("limit".to_string()),
            Just("all".to_string()),
            Just("since_unix_ms".to_string()),
            Just("until_unix_ms".to_string()),
            Just("account".to_string()),
            Just("amount".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(names, inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[test]
fn random_requests_are_answered_without_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = runtime.block_on(open(&common::config(dir.path())));
    let state = &service.state;
    let hash = runtime.block_on(install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY));
    let client = Call::as_(state, "acme", Role::Client);
    let operator = Call::as_(state, "acme", Role::Operator);
    let submit = format!("/v1/modules/{hash}/transactions");
    let check = |what: &str, (status, body): (StatusCode, Value)| -> Result<(), TestCaseError> {
        prop_assert!(!status.is_server_error(), "{what}: {status} {body}");
        if status.is_client_error() {
            prop_assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{what}: {body}");
        }
        Ok(())
    };
    let config = ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(body in json(), bytes in proptest::collection::vec(any::<u8>(), 0..64),
                        query in "[a-z_=&0-9%.-]{0,40}")| {
        let text = body.to_string();
        check("submit", runtime.block_on(client.send("POST", &submit, text.clone())))?;
        check("bulk replay", runtime.block_on(operator.send("POST", "/v1/dlq/replay", text.clone())))?;
        check("bulk drop", runtime.block_on(operator.send("POST", "/v1/dlq/drop", text.clone())))?;
        check("submit bytes", runtime.block_on(client.send("POST", &submit, Body::from(bytes.clone()))))?;
        check("policy", runtime.block_on(operator.send("PUT", &format!("/v1/modules/{hash}/policy"), Body::from(bytes.clone()))))?;
        check("dead letters", runtime.block_on(operator.send("GET", &format!("/v1/dlq?{query}"), Body::empty())))?;
        check("transactions", runtime.block_on(client.send("GET", &format!("/v1/transactions?{query}"), Body::empty())))?;
    });
    // Still serving: the policy reads back (random bytes that happen to be
    // a valid policy, whitespace say, may have replaced it), and a deposit
    // runs under the policy put back.
    let (status, policy) = runtime.block_on(operator.send("GET", &format!("/v1/modules/{hash}/policy"), Body::empty()));
    assert!(status == StatusCode::OK && policy.is_string(), "{status} {policy}");
    let (status, _) = runtime.block_on(operator.send("PUT", &format!("/v1/modules/{hash}/policy"), BANK_POLICY));
    assert_eq!(status, StatusCode::OK);
    let deposit = serde_json::json!({ "path": "deposit", "input": { "account": "a", "amount": 1 } }).to_string();
    let (status, report) = runtime.block_on(client.send("POST", &submit, deposit));
    assert_eq!((status, report["outcome"]["status"].clone()), (StatusCode::OK, Value::from("committed")), "{report}");
}
