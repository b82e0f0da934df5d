//! Event streams through the API: pages from an offset, a long poll,
//! Server-Sent Events resumed from `Last-Event-ID`, consumer groups whose
//! acknowledged offsets move forward only, and roles and tenants enforced.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{BANK_POLICY, Call, error_code, install, open};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt as _;
use txmirror_service::Role::{Client, Developer, Operator};
use txmirror_service::{AppState, app};
use txmirror_tests::guests;

/// Deposits into two accounts, then `transfers` transfers of 1 between them.
async fn transfer(client: &Call<'_>, hash: &str, transfers: usize) {
    let submit = format!("/v1/modules/{hash}/transactions");
    for account in ["a", "b"] {
        let deposit = json!({ "path": "deposit", "input": { "account": account, "amount": 1000 } });
        let (status, report) = client.send("POST", &submit, deposit.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
    }
    for i in 0..transfers {
        let body = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": i + 1 } });
        let (status, report) = client.send("POST", &submit, body.to_string()).await;
        assert_eq!(report["outcome"]["status"], "committed", "{status}: {report}");
    }
}

fn offsets(page: &Value) -> Vec<u64> {
    page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_in_pages_and_by_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = &service.state;
    let client = Call::as_(state, "acme", Client);
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    transfer(&client, &hash, 5).await;

    let (status, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = offsets(&page);
    assert_eq!(all.len(), 5, "{page}");
    assert_eq!(page["events"][0]["payload"], json!({ "from": "a", "to": "b", "amount": 1 }));
    assert!(page["events"][0]["transaction_id"].is_string());
    assert_eq!(page["next_after"], all[4]);
    let (_, page) =
        client.send("GET", &format!("/v1/streams/transfers/events?after={}&limit=2", all[1]), Body::empty()).await;
    assert_eq!(offsets(&page), all[2..4]);
    assert_eq!(page["next_after"], all[3]);
    let (_, empty) = client.send("GET", &format!("/v1/streams/transfers/events?after={}", all[4]), Body::empty()).await;
    assert_eq!((offsets(&empty), empty["next_after"].clone()), (vec![], json!(all[4])));

    // A consumer group reads from what it acknowledged, at least once.
    let group = "/v1/streams/transfers/events?group=billing&limit=3";
    let (_, first) = client.send("GET", group, Body::empty()).await;
    assert_eq!(offsets(&first), all[..3]);
    let ack = |offset: u64| json!({ "offset": offset }).to_string();
    let (status, acked) = client.send("POST", "/v1/streams/transfers/groups/billing/ack", ack(all[1])).await;
    assert_eq!((status, acked), (StatusCode::OK, json!({ "group": "billing", "offset": all[1] })));
    let (_, again) = client.send("GET", group, Body::empty()).await;
    assert_eq!(offsets(&again), all[2..5], "the unacknowledged ones come again");
    let (_, kept) = client.send("POST", "/v1/streams/transfers/groups/billing/ack", ack(all[0])).await;
    assert_eq!(kept["offset"], all[1], "an older acknowledgement changes nothing");
    for bogus in [0, all[4] + 1, all[0] + 1] {
        if all.contains(&bogus) {
            continue;
        }
        let (status, body) = client.send("POST", "/v1/streams/transfers/groups/billing/ack", ack(bogus)).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bogus}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("is not an event of stream"), "{body}");
    }
    let operator = Call::as_(state, "acme", Operator);
    let (_, groups) = operator.send("GET", "/v1/streams/transfers/groups", Body::empty()).await;
    assert_eq!(groups, json!([{ "group": "billing", "offset": all[1] }]));

    // Bad requests say what is wrong.
    for bad in [
        "/v1/streams/transfers/events?limit=0",
        "/v1/streams/transfers/events?limit=501",
        "/v1/streams/transfers/events?wait_ms=30001",
        "/v1/streams/transfers/events?after=-1",
        "/v1/streams/transfers/events?color=red",
    ] {
        let (status, body) = client.send("GET", bad, Body::empty()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }
    let long = format!("/v1/streams/{}/events", "s".repeat(txmirror_runtime::vocab::MAX_NAME_LEN + 1));
    assert_eq!(client.send("GET", &long, Body::empty()).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    for bad in ["{", "{\"offset\": \"1\"}", "{\"offset\": 1, \"extra\": 2}"] {
        let (status, body) = client.send("POST", "/v1/streams/transfers/groups/billing/ack", bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }

    // Roles and tenants: a developer may not read; another tenant's
    // stream of the same name is its own, empty.
    let (status, body) =
        Call::as_(state, "acme", Developer).send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"), "{body}");
    assert_eq!(
        Call::anonymous(state).send("GET", "/v1/streams/transfers/events", Body::empty()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, theirs) =
        Call::as_(state, "globex", Client).send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!(offsets(&theirs), Vec::<u64>::new());
    let (_, their_groups) =
        Call::as_(state, "globex", Operator).send("GET", "/v1/streams/transfers/groups", Body::empty()).await;
    assert_eq!(their_groups, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_an_event_commits() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = service.state.clone();
    let client = Call::as_(&state, "acme", Client);
    let hash = install(&state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    transfer(&client, &hash, 1).await;
    let (_, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    let head = page["next_after"].as_u64().unwrap();

    // Nothing new: the poll waits as long as it was told, then answers empty.
    let started = std::time::Instant::now();
    let (_, empty) =
        client.send("GET", &format!("/v1/streams/transfers/events?after={head}&wait_ms=300"), Body::empty()).await;
    assert_eq!(offsets(&empty), Vec::<u64>::new());
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A transfer commits while the poll waits: the poll answers with it.
    let waiting = {
        let state = state.clone();
        tokio::spawn(async move {
            Call::as_(&state, "acme", Client)
                .send("GET", &format!("/v1/streams/transfers/events?after={head}&wait_ms=20000"), Body::empty())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let submit = format!("/v1/modules/{hash}/transactions");
    let body = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": 7 } });
    assert_eq!(client.send("POST", &submit, body.to_string()).await.0, StatusCode::OK);
    let (status, page) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["events"][0]["payload"]["amount"], 7);
}

/// The events of a Server-Sent Events response until `count` have come
/// (at most 10 s): each one's `id` and its data.
async fn sse(state: &AppState, uri: &str, last_event_id: Option<u64>, count: usize) -> Vec<(u64, Value)> {
    sse_typed(state, uri, last_event_id, count).await.into_iter().map(|(id, _, data)| (id, data)).collect()
}

/// As [`sse`], with each event's type (`message` when it names none).
async fn sse_typed(state: &AppState, uri: &str, last_event_id: Option<u64>, count: usize) -> Vec<(u64, String, Value)> {
    let mut request = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {}", common::token("acme", Client)))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = app(state.clone()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let (mut text, mut events) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("the events came in time");
        let frame = frame.expect("the stream stays open").unwrap();
        let Ok(data) = frame.into_data() else { continue };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let field = |name: &str| message.lines().find_map(|line| line.strip_prefix(name)).map(str::to_string);
            if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                let kind = field("event: ").unwrap_or_else(|| "message".into());
                events.push((id.parse().unwrap(), kind, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_follow_a_stream_and_resume_from_the_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = service.state.clone();
    let client = Call::as_(&state, "acme", Client);
    let hash = install(&state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    transfer(&client, &hash, 3).await;

    let seen = sse(&state, "/v1/streams/transfers/events", None, 3).await;
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(seen[2].1["payload"]["amount"], 3);
    assert_eq!(seen[2].1["offset"], ids[2]);

    // Resumed after the first: the other two, then one that commits while
    // the stream is open.
    let following = {
        let (state, first) = (state.clone(), ids[0]);
        tokio::spawn(async move { sse(&state, "/v1/streams/transfers/events", Some(first), 3).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    transfer(&client, &hash, 1).await;
    let resumed = following.await.unwrap();
    assert_eq!(resumed.iter().map(|(id, _)| *id).take(2).collect::<Vec<_>>(), ids[1..]);
    assert!(resumed[2].0 > ids[2]);
    assert_eq!(resumed[2].1["payload"]["amount"], 1);

    let request = Request::builder()
        .uri("/v1/streams/transfers/events")
        .header("authorization", format!("Bearer {}", common::token("acme", Client)))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday");
    let response = app(state.clone()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "a bad Last-Event-ID is refused");
}

/// A consumer of the predicted view sees a transfer's event before its
/// commit settles it, then its confirmation; the predictions report counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_predicted_view_shows_a_prediction_then_its_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let service = open(&common::config(dir.path())).await;
    let state = service.state.clone();
    let client = Call::as_(&state, "acme", Client);
    let mirrored = format!("failure_prediction_enabled = true\n{BANK_POLICY}");
    let hash = install(&state, "acme", guests::BANK_TRANSFER, &mirrored).await;
    let following = {
        let state = state.clone();
        tokio::spawn(async move { sse_typed(&state, "/v1/streams/transfers/events?view=predicted", None, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    transfer(&client, &hash, 1).await;
    let seen = following.await.unwrap();
    let kinds: Vec<&str> = seen.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["predicted", "confirmed"], "{seen:?}");
    assert_eq!(seen[0].2["payload"], json!({ "from": "a", "to": "b", "amount": 1 }));
    assert_eq!(seen[1].2["settles"], seen[0].0);
    assert_eq!(seen[0].2["transaction_id"], seen[1].2["transaction_id"]);

    let (status, page) = client.send("GET", "/v1/streams/transfers/events?view=predicted", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["notices"].as_array().unwrap().len(), 2, "{page}");
    let (_, report) = client.send("GET", "/v1/streams/transfers/predictions", Body::empty()).await;
    assert_eq!((report["predicted"].clone(), report["confirmed"].clone()), (json!(1), json!(1)), "{report}");
    assert_eq!(report["mismatch_rate"], json!(0.0));
    assert!(report["mean_lead_ms"].is_number(), "{report}");
    // The metrics say the same, per stream.
    let (status, metrics) = Call::as_(&state, "acme", Operator).send("GET", "/metrics", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    for line in [
        "txmirror_stream_events_total{stream=\"transfers\"} 1",
        "txmirror_stream_predictions{stream=\"transfers\",kind=\"confirmed\"} 1",
        "txmirror_stream_prediction_mismatch_ratio{stream=\"transfers\"} 0.0",
        "txmirror_stream_prediction_lead_seconds{stream=\"transfers\"}",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    for bad in ["view=guessed", "view=predicted&group=g"] {
        let (status, body) = client.send("GET", &format!("/v1/streams/transfers/events?{bad}"), Body::empty()).await;
        assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bad_request"), "{bad}: {body}");
    }
}

/// A `[[retention]]` rule trims a stream to its newest events, but keeps
/// what a consumer group has not acknowledged; bad rules are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_a_stream_but_keeps_what_a_group_has_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.retention = vec![txmirror_service::RetentionConfig {
        stream: "transfers".into(),
        tenant: Some("acme".into()),
        max_age_secs: None,
        max_events: Some(2),
        purge_unacknowledged: false,
    }];
    config.check().unwrap();
    let service = open(&config).await;
    let state = &service.state;
    let client = Call::as_(state, "acme", Client);
    let hash = install(state, "acme", guests::BANK_TRANSFER, BANK_POLICY).await;
    transfer(&client, &hash, 5).await;
    let (_, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    let all = offsets(&page);
    // A group that read the first event only holds the other four.
    let ack = json!({ "offset": all[0] }).to_string();
    assert_eq!(client.send("POST", "/v1/streams/transfers/groups/slow/ack", ack).await.0, StatusCode::OK);
    assert_eq!(txmirror_service::lifecycle::purge_streams(state), 1);
    let (_, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!(offsets(&page), all[1..]);
    // Acknowledged, the rest beyond the newest two goes.
    let ack = json!({ "offset": all[4] }).to_string();
    assert_eq!(client.send("POST", "/v1/streams/transfers/groups/slow/ack", ack).await.0, StatusCode::OK);
    assert_eq!(txmirror_service::lifecycle::purge_streams(state), 2);
    let (_, page) = client.send("GET", "/v1/streams/transfers/events", Body::empty()).await;
    assert_eq!(offsets(&page), all[3..]);

    for (rule, says) in [
        (txmirror_service::RetentionConfig { max_events: None, ..config.retention[0].clone() }, "neither"),
        (txmirror_service::RetentionConfig { tenant: Some("nobody".into()), ..config.retention[0].clone() }, "nobody"),
        (txmirror_service::RetentionConfig { stream: String::new(), ..config.retention[0].clone() }, "stream"),
    ] {
        let bad = txmirror_service::ServiceConfig { retention: vec![rule], ..config.clone() };
        let error = bad.check().unwrap_err();
        assert!(error.contains(says), "{error}");
    }
}
