//! The operator page in a real browser: Debian's Chromium, headless, driven
//! through ChromeDriver (both installed by `cargo xtask setup`) against the
//! service listening on 127.0.0.1.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{BANK_POLICY, Call, install};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use txmirror_service::Role::{Client, Operator};
use txmirror_service::lifecycle::PendingTx;
use txmirror_tests::guests;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_shows_a_submitted_transaction_and_replays_a_dead_letter() {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(std::path::Path::new(tool).exists(), "{tool} is missing: `cargo xtask setup` installs it");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.quotas.push(txmirror_service::quota::QuotaConfig {
        tenant: Some("acme".into()),
        max_in_flight: Some(7),
        ..Default::default()
    });
    // A webhook whose receiver is down: the page shows its row.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    config.webhooks.push(
        toml::from_str(&format!(
            "name = \"billing\"\ntenant = \"acme\"\nurl = \"http://{closed}/hook\"\nstreams = [\"transfers\"]\n\
             secret = \"a secret of at least sixteen bytes\"\n"
        ))
        .unwrap(),
    );
    // A dead letter that a replay can commit: a deposit the previous process
    // accepted and never ran, under a policy that dead-letters such ones.
    let policy = format!("{BANK_POLICY}[recovery]\nin_flight = \"dead_letter\"\n");
    let hash = install(&common::open(&config).await.state, "acme", guests::BANK_TRANSFER, &policy).await;
    let pending = PendingTx {
        module: hash.clone(),
        path: Some("deposit".into()),
        input: json!({ "account": "a", "amount": 5 }),
        idempotency_key: None,
        caller: None,
        profile: None,
        notify: None,
        accepted_unix_ms: 1,
    };
    common::leave_legacy_pending(&config.data_dir, "acme", "interrupted-1", &pending);
    let service = common::open(&config).await;
    let state = service.state.clone();
    let deposit =
        json!({ "path": "deposit", "input": { "account": "b", "amount": 1 }, "transaction_id": "seen-by-browser" });
    let (status, report) = Call::as_(&state, "acme", Client)
        .send("POST", &format!("/v1/modules/{hash}/transactions"), deposit.to_string())
        .await;
    assert_eq!(status, 200, "{report}");
    // A transfer: the streams table shows its event.
    let submit = format!("/v1/modules/{hash}/transactions");
    let client = Call::as_(&state, "acme", Client);
    let deposit = json!({ "path": "deposit", "input": { "account": "c", "amount": 5 } });
    assert_eq!(client.send("POST", &submit, deposit.to_string()).await.0, 200);
    let transfer = json!({ "path": "transfer", "input": { "from": "c", "to": "b", "amount": 2 } });
    let (status, report) = client.send("POST", &submit, transfer.to_string()).await;
    assert_eq!(
        (status, report["outcome"]["status"].as_str()),
        (axum::http::StatusCode::OK, Some("committed")),
        "{report}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, txmirror_service::app(state.clone())).into_future());

    let port = free_port();
    let _driver = Driver(
        Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let started = Instant::now();
    let browser = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(browser) => break browser,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot start Chromium through ChromeDriver: {error}"),
        }
    };

    let token = common::token("acme", Operator);
    browser.goto(&format!("{base}/#token={token}")).await.unwrap();
    let wait = Duration::from_secs(20);
    let row = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#transactions tr[data-id='seen-by-browser']"))
        .await
        .unwrap();
    let text = row.text().await.unwrap();
    assert!(text.contains("committed") && text.contains("deposit") && text.contains("pass"), "{text}");
    let stream = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#streams tr[data-stream='transfers']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stream.starts_with("transfers 1 "), "one event committed: {stream}");
    let webhook = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#webhooks tr[data-id='billing']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(webhook.starts_with(&format!("billing http://{closed}/hook transfers #")), "{webhook}");
    // The tenant's quota: nothing in flight, of 7; no rate; no instance share.
    let quota = browser.find(Locator::Css("#quota tr[data-id='acme']")).await.unwrap().text().await.unwrap();
    assert!(quota.starts_with("0 7 none none none 0 0 "), "{quota}");
    let model = browser.find(Locator::Id("model")).await.unwrap().text().await.unwrap();
    assert!(model.contains("no model configured"), "{model}");
    let node = format!("#nodes tr[data-id='{}']", state.node().id);
    let node = browser.find(Locator::Css(&node)).await.unwrap().text().await.unwrap();
    assert!(node.contains("serving") && node.contains("this page's"), "{node}");
    assert!(!browser.current_url().await.unwrap().as_str().contains(&token), "the token leaves the address bar");

    let letter =
        browser.wait().at_most(wait).for_element(Locator::Css("#dlq tr[data-id='interrupted-1']")).await.unwrap();
    assert!(letter.text().await.unwrap().contains("interrupted"), "{}", letter.text().await.unwrap());
    letter.find(Locator::Css("button.replay")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + wait;
    let replayed = loop {
        let text = browser.find(Locator::Id("replayed")).await.unwrap().text().await.unwrap();
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(replayed.starts_with("replay of interrupted-1: committed"), "{replayed}");
    let (status, _) =
        Call::as_(&state, "acme", Operator).send("GET", "/v1/dlq/interrupted-1", axum::body::Body::empty()).await;
    assert_eq!(status, 404, "a replay that commits removes the letter");
    let deadline = Instant::now() + wait;
    while browser.find(Locator::Css("#dlq tr[data-id='interrupted-1']")).await.is_ok() {
        assert!(Instant::now() < deadline, "the replayed letter is still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await.unwrap();
    server.abort();
}
