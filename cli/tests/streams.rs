//! Event streams of a real `txmirror serve`: a Server-Sent Events client
//! that follows a stream across a `kill -9` and a restart misses nothing
//! and sees nothing twice, and a consumer group run by the CLI handles each
//! event once across the same crash.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "tests")]

mod common;

use common::{Server, agent, call, install_bank, submit_and_wait, token, write_config};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txmirror_service::Role;

/// Follows `stream` with `Accept: text/event-stream` from the server whose
/// address `base` holds now, reconnecting with `Last-Event-ID` whenever the
/// connection ends, until `wanted` events came or `deadline` passed:
/// the ids, in the order they came (also in `seen`, as they come), and how
/// many connections it took.
fn follow(base: Arc<Mutex<String>>, seen: Arc<Mutex<Vec<u64>>>, wanted: usize, deadline: Instant) -> (Vec<u64>, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let (mut ids, mut connections): (Vec<u64>, usize) = (Vec::new(), 0);
    while ids.len() < wanted && Instant::now() < deadline {
        let url = format!("{}/v1/streams/transfers/events", base.lock().unwrap());
        let mut request = ureq::http::Request::builder()
            .uri(&url)
            .header("authorization", format!("Bearer {}", token(Role::Client)))
            .header("accept", "text/event-stream");
        if let Some(last) = ids.last() {
            request = request.header("last-event-id", last.to_string());
        }
        let Ok(response) = agent.run(request.body(()).unwrap()) else {
            // The server is down: try again shortly.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if response.status() != 200 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        connections += 1;
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("id: ") {
                ids.push(id.parse().unwrap());
                seen.lock().unwrap().push(*ids.last().unwrap());
                if ids.len() >= wanted {
                    break;
                }
            }
        }
    }
    (ids, connections)
}

fn transfers(agent: &ureq::Agent, base: &str, hash: &str, amounts: std::ops::Range<u64>) {
    for amount in amounts {
        let body = json!({ "path": "transfer", "input": { "from": "a", "to": "b", "amount": amount } });
        let (status, report) = submit_and_wait(agent, &format!("{base}/v1/modules/{hash}/transactions"), &body);
        assert_eq!((status, report["outcome"]["status"].as_str()), (200, Some("committed")), "{report}");
    }
}

fn tail(base: &str, args: &[&str]) -> Vec<u64> {
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["--server", base, "--token", &token(Role::Client), "events", "tail", "transfers"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| line.strip_prefix('#').and_then(|rest| rest.split(' ').next()).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_follower_and_a_consumer_group_miss_nothing_across_kill_9() {
    const BEFORE: u64 = 6;
    const AFTER: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut server = Server::start(&config);
    let agent = agent();
    let hash = install_bank(&agent, &server.base);
    for account in ["a", "b"] {
        let body = json!({ "path": "deposit", "input": { "account": account, "amount": 10_000 } });
        assert_eq!(submit_and_wait(&agent, &format!("{}/v1/modules/{hash}/transactions", server.base), &body).0, 200);
    }
    let base = Arc::new(Mutex::new(server.base.clone()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let follower = {
        let (base, seen) = (base.clone(), seen.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        std::thread::spawn(move || follow(base, seen, (BEFORE + AFTER) as usize, deadline))
    };
    transfers(&agent, &server.base, &hash, 1..BEFORE + 1);
    // The group handles three events, and acknowledges each.
    let handled_before = tail(&server.base, &["--group", "billing", "--count", "3"]);
    assert_eq!(handled_before.len(), 3);

    // The follower has the events so far (at most 30 s), so that what it
    // gets after the restart shows it resumed rather than started over.
    let waiting = Instant::now();
    while seen.lock().unwrap().len() < BEFORE as usize {
        assert!(waiting.elapsed() < Duration::from_secs(30), "the follower got {:?}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no shutdown, no flush; then the same data directory again,
    // on a new port.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = Server::start(&config);
    *base.lock().unwrap() = server.base.clone();
    transfers(&agent, &server.base, &hash, BEFORE + 1..BEFORE + AFTER + 1);

    let (followed, connections) = follower.join().unwrap();
    let (status, page) =
        call(&agent, "GET", &format!("{}/v1/streams/transfers/events?limit=500", server.base), Role::Client, None)
            .unwrap();
    assert_eq!(status, 200, "{page}");
    let committed: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e: &Value| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(committed.len(), (BEFORE + AFTER) as usize);
    assert_eq!(followed, committed, "every event once, in order, across the kill");
    assert!(connections >= 2, "the follower reconnected after the kill ({connections} connections)");

    // The group goes on after its last acknowledgement: the rest, none twice.
    let handled_after = tail(&server.base, &["--group", "billing"]);
    let mut handled = handled_before.clone();
    handled.extend(&handled_after);
    assert_eq!(handled, committed, "each event handled once by the group");
    assert!(tail(&server.base, &["--group", "billing"]).is_empty(), "nothing left for the group");
    let (_, groups) =
        call(&agent, "GET", &format!("{}/v1/streams/transfers/groups", server.base), Role::Operator, None).unwrap();
    assert_eq!(groups, json!([{ "group": "billing", "offset": committed.last().unwrap() }]));
}

/// Runs the CLI against `base` as an operator: its exit code and output.
fn webhooks(base: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["--server", base, "--token", &token(Role::Operator), "webhooks"])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

/// Answers every request on `listener` with `204`, until the test ends; the
/// `webhook-id`s it received.
fn accept_all(listener: std::net::TcpListener) -> Arc<Mutex<Vec<String>>> {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if let Some(value) = lower.strip_prefix("webhook-id:") {
                    seen.lock().unwrap().push(value.trim().to_string());
                }
            }
            let mut body = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            std::io::Write::write_all(&mut stream, b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").unwrap();
        }
    });
    ids
}

/// The CLI shows a webhook whose receiver is down, its parked events, and
/// replays them: refused again while the receiver is down (exit 1, the
/// letters stay), delivered once it is up (exit 0, they go). The secret
/// comes from the environment.
#[test]
fn the_cli_lists_webhooks_and_replays_their_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let webhook = format!(
        "\n[[webhooks]]\nname = \"billing\"\ntenant = \"acme\"\nurl = \"http://{address}/hook\"\nstreams = [\"transfers\"]\n\
         secret_env = \"TXM_TEST_WEBHOOK_SECRET\"\nmax_attempts = 2\nbackoff_ms = 10\nmax_backoff_ms = 20\n"
    );
    let config = common::write_config_with(dir.path(), &webhook);
    let server = Server::start_with_env(&config, &[("TXM_TEST_WEBHOOK_SECRET", "a secret of at least sixteen bytes")]);
    let agent = agent();
    let hash = install_bank(&agent, &server.base);
    for account in ["a", "b"] {
        let body = json!({ "path": "deposit", "input": { "account": account, "amount": 10_000 } });
        assert_eq!(submit_and_wait(&agent, &format!("{}/v1/modules/{hash}/transactions", server.base), &body).0, 200);
    }
    transfers(&agent, &server.base, &hash, 1..3);
    let started = Instant::now();
    loop {
        let (code, text) = webhooks(&server.base, &["dead-letters", "billing"]);
        assert_eq!(code, 0, "{text}");
        if text.lines().filter(|line| line.starts_with("transfers #")).count() == 2 {
            assert!(text.contains("2 attempts, last: ") && text.contains("onnect"), "{text}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the events were not parked: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, text) = webhooks(&server.base, &["list"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("billing → http://{address}/hook")) && text.contains("2 dead letters"), "{text}");
    assert!(text.contains("transfers: delivered through #"), "{text}");

    let (code, text) = webhooks(&server.base, &["replay", "billing"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("0 delivered, 2 failed again") && text.contains("3 attempts"), "{text}");
    let received = accept_all(std::net::TcpListener::bind(address).unwrap());
    let (code, text) = webhooks(&server.base, &["replay", "billing"]);
    assert_eq!((code, text.lines().next()), (0, Some("2 delivered, 0 failed again")), "{text}");
    assert_eq!(received.lock().unwrap().len(), 2);
    let (_, text) = webhooks(&server.base, &["dead-letters", "billing"]);
    assert!(text.contains("webhook billing has no dead letters"), "{text}");
    let (code, text) = webhooks(&server.base, &["replay", "nobody"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("no webhook `nobody`"), "{text}");
}
