//! The API through `app().oneshot(...)`: no socket, the real runtime and
//! stores, real guests built from source.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{BANK_POLICY, Call, error_code, install, open, poll};
use serde_json::{Value, json};
use txmirror_runtime::store::{AcceptRequest, Acceptance, RedbStore, StateStore};
use txmirror_service::Role::{Client, Developer, Operator};
use txmirror_service::lifecycle::PendingTx;
use txmirror_tests::guests;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_policies_and_transactions_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let (developer, operator, client) =
        (Call::as_(state, "acme", Developer), Call::as_(state, "acme", Operator), Call::as_(state, "acme", Client));
    assert_eq!(Call::anonymous(state).send("GET", "/healthz", Body::empty()).await, (StatusCode::OK, json!("ok")));
    assert_eq!(Call::anonymous(state).send("GET", "/readyz", Body::empty()).await.0, StatusCode::OK);

    // A module that is not one is refused, saying why.
    let (status, body) = developer.send("POST", "/v1/modules", "garbage").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "module_refused"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not a WebAssembly file"), "{body}");
    let huge = vec![0_u8; txmirror_service::MAX_MODULE_BYTES + 1];
    let (status, body) = developer.send("POST", "/v1/modules", huge).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{body}");

    let wasm = std::fs::read(guests::BANK_TRANSFER).unwrap();
    let (status, module) = developer.send("POST", "/v1/modules", wasm).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let hash = module["hash"].as_str().unwrap().to_string();
    assert!(module["paths"].as_array().unwrap().contains(&json!("deposit")), "{module}");
    let imports = module["imports"].as_array().unwrap();
    assert!(imports.iter().any(|i| i.as_str().unwrap().starts_with("txmirror:transaction/kv")), "{module}");
    assert_eq!(module["policy"], Value::Null);
    let (_, listed) = operator.send("GET", "/v1/modules", Body::empty()).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(developer.send("GET", &format!("/v1/modules/{hash}"), Body::empty()).await.1, module);
    let (status, body) = developer.send("GET", "/v1/modules/0000", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // No transaction without a policy; a bad policy is refused with its key.
    let submit = format!("/v1/modules/{hash}/transactions");
    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 5 } }).to_string();
    let (status, body) = client.send("POST", &submit, deposit.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "no_policy"), "{body}");
    let policy_uri = format!("/v1/modules/{hash}/policy");
    let (status, body) = operator.send("GET", &policy_uri, Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    let (status, body) = operator.send("PUT", &policy_uri, "[resource_requirements]\nfuel = 0\n").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "policy_refused"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("resource_requirements.fuel"), "{body}");
    let (status, body) = operator.send("PUT", &policy_uri, vec![0xff_u8, 0xfe]).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "policy_refused"), "{body}");
    let (status, body) = operator.send("PUT", &policy_uri, BANK_POLICY).await;
    assert_eq!((status, body["policy"].clone()), (StatusCode::OK, json!(BANK_POLICY)), "{body}");
    assert_eq!(developer.send("GET", &policy_uri, Body::empty()).await, (StatusCode::OK, json!(BANK_POLICY)));

    // Malformed and unknown requests.
    for bad in ["{", r#"{"input": {}, "pathh": "deposit"}"#, "[]"] {
        let (status, body) = client.send("POST", &submit, bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }
    for bad in [json!({ "path": "steal", "input": {} }), json!({ "input": {}, "transaction_id": "a/b" })] {
        let (status, body) = client.send("POST", &submit, bad.to_string()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    }
    let huge = vec![b' '; txmirror_service::MAX_REQUEST_BYTES + 1];
    let (status, body) = client.send("POST", &submit, huge).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{body}");
    let (status, body) = client.send("POST", "/v1/modules/0000/transactions", deposit.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    let (status, body) = client.send("GET", "/v1/nothing-here", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");

    // A transaction, and its durable record with the whole story.
    let (status, report) = client.send("POST", &submit, deposit.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["outcome"]["status"], "committed", "{report}");
    let id = report["transaction_id"].as_str().unwrap();
    let (status, view) = client.send("GET", &format!("/v1/transactions/{id}"), Body::empty()).await;
    assert_eq!((status, view["status"].clone()), (StatusCode::OK, json!("committed")), "{view}");
    assert_eq!(view["record"]["path"], "deposit");
    assert!(view["record"]["history"][0]["mirror"].is_object(), "the mirror's trace is in the story: {view}");
    let (status, body) = client.send("GET", "/v1/transactions/nope", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let same_id = json!({ "path": "deposit", "input": { "account": "a", "amount": 1 }, "transaction_id": id });
    let (status, body) = client.send("POST", &submit, same_id.to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"), "{body}");

    // The same Idempotency-Key twice: one execution, the same answer.
    let keyed = || Request::builder().method("POST").uri(&submit).header("idempotency-key", "dep-1");
    let (_, first) = client.send_with(keyed(), deposit.clone()).await;
    let (_, second) = client.send_with(keyed(), deposit.clone()).await;
    assert_eq!(first["transaction_id"], second["transaction_id"]);
    assert_eq!((first["deduplicated"].clone(), second["deduplicated"].clone()), (json!(false), json!(true)));

    // A module goes; its transactions' records stay.
    assert_eq!(developer.send("DELETE", &format!("/v1/modules/{hash}"), Body::empty()).await.0, StatusCode::NO_CONTENT);
    let (status, body) = client.send("POST", &submit, deposit).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    assert_eq!(client.send("GET", &format!("/v1/transactions/{id}"), Body::empty()).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_submission_polling_idempotency_and_list_filters() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let client = Call::as_(state, "acme", Client);
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let submit = format!("/v1/modules/{hash}/transactions");
    let later = || Request::builder().method("POST").uri(&submit).header("prefer", "respond-async");

    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 7 }, "transaction_id": "async-1" });
    let (status, accepted) = client.send_with(later(), deposit.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted, json!({ "transaction_id": "async-1", "deduplicated": false, "background": false }));
    let view = poll(&client, "async-1").await;
    assert_eq!(view["status"], "committed", "{view}");

    // An idempotency key bound to a transaction answers with that transaction.
    let keyed = || later().header("idempotency-key", "order-9");
    let transfer = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": 1 } }).to_string();
    let (_, first) = client.send_with(keyed(), transfer.clone()).await;
    let first_id = first["transaction_id"].as_str().unwrap().to_string();
    let (status, second) = client.send_with(keyed(), transfer).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(second, json!({ "transaction_id": first_id, "deduplicated": true, "background": false }));
    let view = poll(&client, &first_id).await;
    assert_eq!(view["status"], "failed", "no account b: {view}");
    assert_eq!(view["record"]["outcome"]["kind"], "rejected", "{view}");

    // The list, newest first, with filters and paging.
    let (status, list) = client.send("GET", "/v1/transactions", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> =
        list["transactions"].as_array().unwrap().iter().map(|t| t["transaction_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first_id.as_str(), "async-1"]);
    assert_eq!(list["transactions"][1]["decisions"].as_array().unwrap().len(), 1, "{list}");
    let (_, failed) = client.send("GET", "/v1/transactions?status=failed", Body::empty()).await;
    assert_eq!(failed["transactions"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["transactions"][0]["failure"], "rejected");
    let (_, by_path) = client.send("GET", &format!("/v1/transactions?path=deposit&module={hash}"), Body::empty()).await;
    assert_eq!(by_path["transactions"][0]["transaction_id"], "async-1", "{by_path}");
    let (_, page) = client.send("GET", "/v1/transactions?limit=1", Body::empty()).await;
    assert_eq!(page["transactions"].as_array().unwrap().len(), 1);
    let next = page["next_before"].as_u64().unwrap();
    let (_, rest) = client.send("GET", &format!("/v1/transactions?before={next}"), Body::empty()).await;
    assert_eq!(rest["transactions"][0]["transaction_id"], "async-1", "{rest}");
    assert_eq!(rest["next_before"], Value::Null);
    let long_key = "k".repeat(txmirror_runtime::store::MAX_NAME_LEN + 1);
    let (status, body) = client.send_with(later().header("idempotency-key", long_key), deposit.to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    for bad in ["status=lost", "limit=x", "colour=red"] {
        let (status, body) = client.send("GET", &format!("/v1/transactions?{bad}"), Body::empty()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_tenants_see_nothing_of_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    let submit = format!("/v1/modules/{hash}/transactions");
    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 100 }, "transaction_id": "t1" });
    assert_eq!(Call::as_(state, "acme", Client).send("POST", &submit, deposit.to_string()).await.0, StatusCode::OK);

    // No token, a malformed header, an unknown token: 401 with a challenge.
    for header in [None, Some("Basic abc"), Some("Bearer "), Some("Bearer not-a-token")] {
        let mut request = Request::builder().method("GET").uri("/v1/modules");
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let (status, body) = Call::anonymous(state).send_with(request, Body::empty()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{header:?}: {body}");
    }

    // Each role only where it belongs.
    let forbidden = [
        (Client, "POST", "/v1/modules".to_string()),
        (Operator, "POST", "/v1/modules".to_string()),
        (Client, "GET", "/v1/modules".to_string()),
        (Client, "DELETE", format!("/v1/modules/{hash}")),
        (Developer, "PUT", format!("/v1/modules/{hash}/policy")),
        (Client, "PUT", format!("/v1/modules/{hash}/policy")),
        (Developer, "POST", submit.clone()),
        (Operator, "POST", submit.clone()),
        (Developer, "GET", "/v1/transactions/t1".to_string()),
        (Developer, "GET", "/v1/transactions".to_string()),
        (Client, "GET", "/v1/dlq".to_string()),
        (Developer, "POST", "/v1/dlq/t1/replay".to_string()),
        (Client, "DELETE", "/v1/dlq/t1".to_string()),
        (Developer, "POST", "/v1/dlq/replay".to_string()),
        (Client, "POST", "/v1/dlq/drop".to_string()),
        (Client, "GET", "/v1/model".to_string()),
        (Developer, "POST", "/v1/model/reload".to_string()),
        (Client, "GET", "/metrics".to_string()),
    ];
    for (role, method, uri) in forbidden {
        let (status, body) = Call::as_(state, "acme", role).send(method, &uri, deposit.to_string()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{role} {method} {uri}: {body}");
    }

    // Another tenant's module, transaction and dead letter answer exactly
    // as ones that do not exist, and its key-value namespaces are its own.
    let globex = |role| Call::as_(state, "globex", role);
    let message = |(status, body): (StatusCode, Value)| {
        assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
        body["error"]["message"].as_str().unwrap().to_string()
    };
    for (role, method, uri, real_id, missing_id) in [
        (Developer, "GET", "/v1/modules/ID", hash.as_str(), "0000"),
        (Operator, "GET", "/v1/modules/ID/policy", hash.as_str(), "0000"),
        (Client, "POST", "/v1/modules/ID/transactions", hash.as_str(), "0000"),
        (Client, "GET", "/v1/transactions/ID", "t1", "t0"),
        (Operator, "GET", "/v1/transactions/ID", "t1", "t0"),
    ] {
        let leaked = message(globex(role).send(method, &uri.replace("ID", real_id), deposit.to_string()).await);
        let missing = message(globex(role).send(method, &uri.replace("ID", missing_id), deposit.to_string()).await);
        assert_eq!(leaked.replace(real_id, missing_id), missing, "{method} {uri}");
    }
    let (_, globex_modules) = globex(Developer).send("GET", "/v1/modules", Body::empty()).await;
    assert_eq!(globex_modules, json!([]));
    let (_, globex_list) = globex(Client).send("GET", "/v1/transactions", Body::empty()).await;
    assert_eq!(globex_list["transactions"], json!([]));
    // The same module uploaded by globex runs over globex's accounts, which
    // acme's deposit never touched; and a transaction id acme used is free.
    let globex_hash = install(state, "globex", guests::BANK_TRANSFER, BANK_POLICY).await;
    assert_eq!(globex_hash, hash);
    let balance = json!({ "path": "balance", "input": { "account": "a" }, "transaction_id": "t1" });
    let (status, report) = globex(Client).send("POST", &submit, balance.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["outcome"]["kind"], "rejected", "globex has no account a: {report}");
    let (_, acme_view) = Call::as_(state, "acme", Client).send("GET", "/v1/transactions/t1", Body::empty()).await;
    assert_eq!(acme_view["record"]["path"], "deposit", "acme's t1 is untouched: {acme_view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_dropped_in_bulk_by_filter() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let operator = Call::as_(state, "acme", Operator);
    // So little fuel that every attempt traps: each transaction is dead-lettered.
    let starved = format!("{BANK_POLICY}[resource_requirements]\nfuel = 1000\n");
    let bank = install(state, "acme", guests::BANK_TRANSFER, &starved).await;
    let runaway = install(state, "acme", guests::RUNAWAY, "[retry]\nmax_attempts = 1\n").await;
    let submit = |hash: &str, id: &str, path: &str, input: Value| {
        let uri = format!("/v1/modules/{hash}/transactions");
        let body = json!({ "path": path, "input": input, "transaction_id": id }).to_string();
        async move {
            let (status, report) = Call::as_(state, "acme", Client).send("POST", &uri, body).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            // Letters a few milliseconds apart, so that a time range can
            // fall between any two.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            report
        }
    };
    let deposit = json!({ "account": "a", "amount": 5 });
    submit(&bank, "d1", "deposit", deposit.clone()).await;
    submit(&bank, "d2", "deposit", deposit).await;
    submit(&bank, "t1", "transfer", json!({ "from": "a", "to": "c", "amount": 1 })).await;
    submit(&runaway, "p1", "panic", json!({})).await;

    let ids = |letters: &Value| -> Vec<String> {
        letters.as_array().unwrap().iter().map(|l| l["transaction_id"].as_str().unwrap().to_string()).collect()
    };
    let list = |query: &str| {
        let uri = format!("/v1/dlq{query}");
        let operator = &operator;
        async move {
            let (status, letters) = operator.send("GET", &uri, Body::empty()).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {letters}");
            letters
        }
    };
    let all = list("").await;
    assert_eq!(ids(&all), ["d1", "d2", "t1", "p1"], "oldest first: {all}");
    let at = |i: usize| all[i]["dead_lettered_unix_ms"].as_u64().unwrap();
    assert_eq!(ids(&list("?path=deposit").await), ["d1", "d2"]);
    assert_eq!(ids(&list("?kind=guest_trap").await), ["p1"]);
    assert_eq!(ids(&list(&format!("?module={runaway}")).await), ["p1"]);
    assert_eq!(ids(&list(&format!("?since_unix_ms={}&until_unix_ms={}", at(1), at(3))).await), ["d2", "t1"]);
    assert_eq!(ids(&list("?kind=fuel_exhausted&limit=2").await), ["d1", "d2"]);
    for (query, says) in [
        ("?kind=no_such_kind", "not a failure kind"),
        ("?since_unix_ms=5&until_unix_ms=5", "the time range is empty"),
        ("?limit=0", "from 1 to 500"),
        ("?limit=501", "from 1 to 500"),
        ("?colour=red", "unknown field"),
    ] {
        let (status, body) = operator.send("GET", &format!("/v1/dlq{query}"), Body::empty()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }

    // Still starved: the replay fails again, and its letter stays as it was,
    // with no letter of its own.
    let (status, replayed) =
        operator.send("POST", "/v1/dlq/replay", json!({ "path": "deposit", "limit": 1 }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!((replayed["selected"].clone(), replayed["failed"].clone()), (json!(1), json!(1)), "{replayed}");
    assert_eq!(replayed["letters"][0]["transaction_id"], "d1", "{replayed}");
    assert!(replayed["letters"][0]["error"].as_str().unwrap().contains("fuel_exhausted"), "{replayed}");
    assert_eq!(ids(&list("").await), ["d1", "d2", "t1", "p1"]);

    // With fuel, the deposits commit and leave the queue; the transfer runs
    // and is rejected (account `c` does not exist), so its letter stays.
    let (status, body) = operator.send("PUT", &format!("/v1/modules/{bank}/policy"), BANK_POLICY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, replayed) =
        operator.send("POST", "/v1/dlq/replay", json!({ "kind": "fuel_exhausted" }).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(
        (replayed["selected"].clone(), replayed["committed"].clone(), replayed["failed"].clone()),
        (json!(3), json!(2), json!(1)),
        "{replayed}"
    );
    assert!(replayed["letters"][2]["error"].as_str().unwrap().contains("no account `c`"), "{replayed}");
    assert_eq!(ids(&list("").await), ["t1", "p1"]);
    let balance = submit(&bank, "b1", "balance", json!({ "account": "a" })).await;
    let output = balance["attempts"][0]["primary"]["output"].as_str().unwrap();
    assert_eq!(output, r#"{"account":"a","balance":10}"#, "each deposit committed once: {balance}");

    // A drop needs a filter, or `all` said outright; another tenant's drop
    // of everything drops none of acme's.
    let (status, body) = operator.send("POST", "/v1/dlq/drop", json!({}).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    let (status, body) = operator.send("POST", "/v1/dlq/drop", json!({ "pth": "transfer" }).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{body}");
    let globex = Call::as_(state, "globex", Operator);
    let (status, dropped) = globex.send("POST", "/v1/dlq/drop", json!({ "all": true }).to_string()).await;
    assert_eq!((status, dropped), (StatusCode::OK, json!({ "dropped": [] })));
    let (status, dropped) = operator.send("POST", "/v1/dlq/drop", json!({ "path": "transfer" }).to_string()).await;
    assert_eq!((status, dropped), (StatusCode::OK, json!({ "dropped": ["t1"] })));
    let (status, dropped) = operator.send("POST", "/v1/dlq/drop", json!({ "all": true }).to_string()).await;
    assert_eq!((status, dropped), (StatusCode::OK, json!({ "dropped": ["p1"] })));
    assert_eq!(list("").await, json!([]));

    // The bulk routes' names are no transaction ids.
    let body = json!({ "path": "balance", "input": { "account": "a" }, "transaction_id": "replay" }).to_string();
    let (status, refused) =
        Call::as_(state, "acme", Client).send("POST", &format!("/v1/modules/{bank}/transactions"), body).await;
    assert_eq!((status, error_code(&refused)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("reserved"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_queue_the_model_metrics_and_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.model = Some(txmirror_tests::models::PLACEHOLDER.into());
    let service = open(&config).await;
    let state = &service.state;
    let operator = Call::as_(state, "acme", Operator);
    let hash = install(state, "acme", guests::RUNAWAY, "[retry]\nmax_attempts = 1\n").await;
    let submit = format!("/v1/modules/{hash}/transactions");
    let body = json!({ "path": "panic", "input": {}, "transaction_id": "doomed" }).to_string();
    let (status, report) = Call::as_(state, "acme", Client).send("POST", &submit, body).await;
    assert_eq!((status, report["failure"]["kind"].clone()), (StatusCode::OK, json!("guest_trap")), "{report}");

    let (status, letters) = operator.send("GET", "/v1/dlq", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(letters[0]["transaction_id"], "doomed", "{letters}");
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(Call::as_(state, "globex", Operator).send("GET", "/v1/dlq", Body::empty()).await.1, json!([]));
    let (status, letter) = operator.send("GET", "/v1/dlq/doomed", Body::empty()).await;
    assert_eq!((status, letter["path"].clone()), (StatusCode::OK, json!("panic")), "{letter}");
    let (status, replayed) = operator.send("POST", "/v1/dlq/doomed/replay", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["failure"]["kind"], "guest_trap", "the fault is still there: {replayed}");
    let (status, body) = operator.send("POST", "/v1/dlq/nope/replay", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "{body}");
    let (status, body) = Call::as_(state, "globex", Operator).send("DELETE", "/v1/dlq/doomed", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"), "not globex's to drop: {body}");
    assert_eq!(operator.send("DELETE", "/v1/dlq/doomed", Body::empty()).await.0, StatusCode::NO_CONTENT);
    assert_eq!(operator.send("DELETE", "/v1/dlq/doomed", Body::empty()).await.0, StatusCode::NOT_FOUND);

    let (status, model) = operator.send("GET", "/v1/model", Body::empty()).await;
    assert_eq!((status, model["model"]["name"].clone()), (StatusCode::OK, json!("placeholder")), "{model}");
    let (status, reloaded) = operator.send("POST", "/v1/model/reload", Body::empty()).await;
    assert_eq!((status, reloaded["reloaded"].clone()), (StatusCode::OK, json!("unchanged")), "{reloaded}");

    // Metrics: acme's outcomes, predictions and latencies; nothing in globex's.
    let (status, text) = operator.send("GET", "/metrics", Body::empty()).await;
    let text = text.as_str().unwrap().to_string();
    assert_eq!(status, StatusCode::OK, "{text}");
    for line in [
        "txmirror_transactions_total{outcome=\"failed\"} 2",
        "txmirror_predictions_total{source=\"rules_and_model\"} 2",
        "txmirror_transaction_duration_seconds_count 2",
        "txmirror_transactions_in_flight 0",
        "txmirror_fuel_consumed_total{twin=\"mirror\"}",
        "txmirror_instance_duration_seconds_count{twin=\"primary\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let (_, globex_text) = Call::as_(state, "globex", Operator).send("GET", "/metrics", Body::empty()).await;
    assert!(!globex_text.as_str().unwrap().contains("outcome="), "{globex_text}");

    // The OpenAPI document names every route, with the bearer scheme.
    let (status, document) = Call::anonymous(state).send("GET", "/openapi.json", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/modules", "post"),
        ("/v1/modules", "get"),
        ("/v1/modules/{hash}", "get"),
        ("/v1/modules/{hash}", "delete"),
        ("/v1/modules/{hash}/policy", "put"),
        ("/v1/modules/{hash}/policy", "get"),
        ("/v1/modules/{hash}/transactions", "post"),
        ("/v1/transactions", "get"),
        ("/v1/transactions/{id}", "get"),
        ("/v1/dlq", "get"),
        ("/v1/dlq/{id}", "get"),
        ("/v1/dlq/{id}", "delete"),
        ("/v1/dlq/{id}/replay", "post"),
        ("/v1/dlq/replay", "post"),
        ("/v1/dlq/drop", "post"),
        ("/v1/model", "get"),
        ("/v1/model/reload", "post"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_policies_and_idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let keyed = |uri: &str| Request::builder().method("POST").uri(uri).header("idempotency-key", "k1");
    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 3 } }).to_string();
    let (hash, first) = {
        let service = open(&config).await;
        let hash = install(&service.state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
        let client = Call::as_(&service.state, "acme", Client);
        let (_, first) = client.send_with(keyed(&format!("/v1/modules/{hash}/transactions")), deposit.clone()).await;
        (hash, first)
    };
    let service = open(&config).await;
    let state = &service.state;
    let (status, module) =
        Call::as_(state, "acme", Operator).send("GET", &format!("/v1/modules/{hash}"), Body::empty()).await;
    assert_eq!((status, module["policy"].clone()), (StatusCode::OK, json!(BANK_POLICY)), "{module}");
    let client = Call::as_(state, "acme", Client);
    let (status, again) = client.send_with(keyed(&format!("/v1/modules/{hash}/transactions")), deposit).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["transaction_id"].clone(), again["deduplicated"].clone()),
        (first["transaction_id"].clone(), json!(true))
    );
}

/// A transaction accepted by a process that died before recording it: the
/// next start runs it again (policy `rerun`, the default) or dead-letters
/// it (`dead_letter`), and readiness and admission end with shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_transactions_are_ended_at_the_next_start_and_shutdown_stops_admission() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let dead_letter_policy = format!("{BANK_POLICY}[recovery]\nin_flight = \"dead_letter\"\n");
    let (rerun_hash, parked_hash) = {
        let service = open(&config).await;
        let rerun = install(&service.state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
        let parked = install(&service.state, "globex", guests::BANK_TRANSFER, &dead_letter_policy).await;
        (rerun, parked)
    };
    let pending = |hash: &str| PendingTx {
        module: hash.to_string(),
        path: Some("deposit".into()),
        input: json!({ "account": "a", "amount": 11 }),
        idempotency_key: None,
        caller: None,
        profile: None,
        notify: None,
        accepted_unix_ms: 1,
    };
    for (tenant, hash, id) in [("acme", &rerun_hash, "crashed-1"), ("globex", &parked_hash, "crashed-2")] {
        // What an acceptance leaves behind when the process dies right
        // after it: a lease of the dead process's, not lapsed yet (one
        // process holds a redb file, so its next start takes it at once).
        let store = RedbStore::open(&config.data_dir.join("tenants").join(tenant).join("state.redb")).unwrap();
        let accepted = store
            .accept(AcceptRequest {
                transaction_id: id.into(),
                idempotency_key: None,
                request: serde_json::to_vec(&pending(hash)).unwrap(),
                holder: "dead:00000000".into(),
                lease_ms: 60_000,
                now_unix_ms: 1,
            })
            .unwrap();
        assert!(matches!(accepted, Acceptance::Accepted { .. }), "{accepted:?}");
    }
    // What an older build left: its accepted transactions in the catalog.
    common::leave_legacy_pending(&config.data_dir, "acme", "crashed-3", &pending(&rerun_hash));
    let service = open(&config).await;
    assert_eq!(service.recovered, 3);
    let state = &service.state;
    for id in ["crashed-1", "crashed-3"] {
        let view = poll(&Call::as_(state, "acme", Client), id).await;
        assert_eq!(view["status"], "committed", "{view}");
    }
    let view = poll(&Call::as_(state, "globex", Client), "crashed-2").await;
    assert_eq!((view["status"].clone(), view["dead_lettered"].clone()), (json!("failed"), json!(true)), "{view}");
    assert_eq!(view["record"]["outcome"]["kind"], "interrupted");
    let (status, replayed) =
        Call::as_(state, "globex", Operator).send("POST", "/v1/dlq/crashed-2/replay", Body::empty()).await;
    assert_eq!((status, replayed["outcome"]["status"].clone()), (StatusCode::OK, json!("committed")), "{replayed}");

    assert_eq!(state.shut_down(std::time::Duration::from_secs(5)).await, 0);
    let deposit = json!({ "path": "deposit", "input": { "account": "a", "amount": 1 } }).to_string();
    let (status, body) =
        Call::as_(state, "acme", Client).send("POST", &format!("/v1/modules/{rerun_hash}/transactions"), deposit).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"), "{body}");
    assert_eq!(Call::anonymous(state).send("GET", "/readyz", Body::empty()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = Call::as_(state, "acme", Client).send("GET", "/v1/transactions/crashed-1", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "reads go on while shutting down");
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let path = std::path::Path::new("txmirror.toml");
    let hash = txmirror_service::auth::hash_token("t");
    let token = |name: &str, tenant: &str, sha: &str| {
        format!("[[tokens]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"client\"\nsha256 = \"{sha}\"\n")
    };
    for (text, expected) in [
        (String::new(), "no [[tokens]]"),
        ("listen = \"nowhere\"\n".to_string(), "listen"),
        ("colour = 1\n".to_string(), "unknown field `colour`"),
        (token("a", "Acme Corp", &hash), "tenant `Acme Corp`"),
        (token("a", "acme", "not-hex"), "64 lower-case hex digits"),
        (token("a", "acme", &hash) + &token("a", "acme", &hash), "two tokens are named `a`"),
        (token("a", "acme", &hash) + &token("b", "acme", &hash), "the same hash"),
        (token("a", "acme", &hash).replace("client", "admin"), "unknown variant `admin`"),
        (format!("shutdown_deadline_secs = 99999\n{}", token("a", "acme", &hash)), "over an hour"),
        (format!("{}[node]\nlease_ms = 10\n", token("a", "acme", &hash)), "lease_ms = 10 is outside"),
        (format!("{}[node]\nname = \"Node One\"\n", token("a", "acme", &hash)), "[node] name `Node One`"),
        (format!("{}[node]\ncolour = 1\n", token("a", "acme", &hash)), "unknown field `colour`"),
    ] {
        let error = txmirror_service::ServiceConfig::parse(&text, path).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let config = txmirror_service::ServiceConfig::parse(&token("a", "acme", &hash), path).unwrap();
    assert_eq!((config.listen.to_string(), config.shutdown_deadline_secs), ("127.0.0.1:8080".to_string(), 30));
}
