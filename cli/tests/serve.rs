//! `txmirror serve` as a process on 127.0.0.1: the real binary, killed and
//! restarted, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "tests")]

mod common;

use common::{
    Server, agent, call, charge_until_sent, install_bank, install_payment, slow_gateway, submit_and_wait, token,
    write_config, write_config_with,
};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txmirror_service::Role;
use txmirror_service::auth::hash_token;
use txmirror_tests::guests;

/// Every transaction a client had acknowledged (`202`) before the process
/// was killed is committed exactly once after a restart; the others are
/// committed or were never accepted; none is lost and none doubled.
/// Ten rounds of: start, a bounded stream of deposits from two clients,
/// `kill -9` mid-stream, restart, check.
#[test]
fn acknowledged_transactions_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let agent = agent();
    let server = Server::start(&config);
    let hash = install_bank(&agent, &server.base);
    drop(server);

    const ROUNDS: usize = 10;
    const PER_CLIENT: usize = 40;
    const KILL_AFTER: usize = 25;
    let mut acknowledged_total = Vec::new();
    let mut submitted_total = Vec::new();
    let mut recovered_rounds = 0;
    for round in 0..ROUNDS {
        let mut server = Server::start(&config);
        if server.log().contains("left in flight are being ended") {
            recovered_rounds += 1;
        }
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let submitted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|client| {
                let (acknowledged, submitted, stop) = (acknowledged.clone(), submitted.clone(), stop.clone());
                let url = format!("{}/v1/modules/{hash}/transactions", server.base);
                let agent = agent.clone();
                std::thread::spawn(move || {
                    for i in 0..PER_CLIENT {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let id = format!("r{round}-c{client}-{i}");
                        let body = json!({ "path": "deposit", "input": { "account": "a", "amount": 1 }, "transaction_id": id });
                        submitted.lock().unwrap().push(id.clone());
                        match call(&agent, "POST", &url, Role::Client, Some(body.to_string().into_bytes())) {
                            Ok((202, answer)) => {
                                assert_eq!(answer["transaction_id"], id.as_str());
                                acknowledged.lock().unwrap().push(id);
                            }
                            Ok((status, answer)) => panic!("{id}: {status} {answer}"),
                            Err(_) => break, // The process is gone.
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().unwrap().len() < KILL_AFTER && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SIGKILL: no shutdown, no flush.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.join().unwrap();
        }
        acknowledged_total.extend(acknowledged.lock().unwrap().drain(..));
        submitted_total.extend(submitted.lock().unwrap().drain(..));
    }

    // A last start ends what the last kill left in flight; then every
    // acknowledged transaction must be committed, and the balance must
    // count each committed deposit once.
    let server = Server::start(&config);
    let view =
        |id: &str| call(&agent, "GET", &format!("{}/v1/transactions/{id}", server.base), Role::Client, None).unwrap();
    let mut committed = 0;
    for id in &submitted_total {
        let mut answer = view(id);
        for _ in 0..3000 {
            if answer.1["status"] != "pending" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            answer = view(id);
        }
        let (status, body) = answer;
        let acked = acknowledged_total.contains(id);
        match (status, body["status"].as_str()) {
            (200, Some("committed")) => committed += 1,
            (404, _) if !acked => {} // Never accepted: the process died first.
            other => panic!("{id} (acknowledged: {acked}): {other:?} {body}\n{}", server.log()),
        }
    }
    let url = format!("{}/v1/modules/{hash}/transactions", server.base);
    let (status, report) = submit_and_wait(&agent, &url, &json!({ "path": "balance", "input": { "account": "a" } }));
    assert_eq!(status, 200, "{report}");
    let output: Value = serde_json::from_slice(
        &report["outcome"]["output"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    println!(
        "{ROUNDS} kills: {} submitted, {} acknowledged, {committed} committed, balance {}; {recovered_rounds} starts recovered transactions in flight",
        submitted_total.len(),
        acknowledged_total.len(),
        output["balance"]
    );
    assert!(acknowledged_total.len() >= ROUNDS * KILL_AFTER, "each round acknowledged at least {KILL_AFTER}");
    assert_eq!(output["balance"], json!(committed), "each committed deposit counted exactly once: {report}");
}

#[test]
fn serve_refuses_a_missing_or_bad_configuration_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["serve", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("cannot read") && stderr.contains("txmirror token new"), "{stderr}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 8080\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["serve", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("listen"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // `token new` prints the token once (stderr) and an entry with its hash.
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["token", "new", "--tenant", "acme", "--role", "operator"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let token = String::from_utf8_lossy(&out.stderr).rsplit(' ').next().unwrap().trim().to_string();
    assert!(token.starts_with("txm_"), "{token}");
    let entry = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(entry.contains(&hash_token(&token)) && !entry.contains(&token), "{entry}");
    let config = txmirror_service::ServiceConfig::parse(&entry, Path::new("entry.toml")).unwrap();
    assert_eq!(config.tokens[0].role, Role::Operator);
}

/// SIGTERM: admission stops, the transactions in flight finish, the
/// process exits 0; the operator page and health answer before that.
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let agent = agent();
    let mut server = Server::start(&config);
    let mut health = agent.get(format!("{}/healthz", server.base)).call().unwrap();
    assert_eq!(health.body_mut().read_to_string().unwrap(), "ok");
    let mut page = agent.get(format!("{}/", server.base)).call().unwrap();
    assert!(page.body_mut().read_to_string().unwrap().contains("txmirror operator"));
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "still running 20 s after SIGTERM: {}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A bounded load on loopback (four clients, a fixed number of mirrored
/// deposits each): the server's resident memory after the first quarter
/// stays flat to the end, so nothing accumulates per transaction.
#[test]
fn memory_stays_flat_under_a_bounded_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let agent = agent();
    let server = Server::start(&config);
    let hash = install_bank(&agent, &server.base);
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 1000;
    let url = format!("{}/v1/modules/{hash}/transactions", server.base);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (url, agent, done) = (url.clone(), agent.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    // Synchronous: each answer is the transaction's report.
                    let body = json!({ "path": "deposit", "input": { "account": format!("c{client}-{}", i % 50), "amount": 1 } });
                    let (status, report) = submit_and_wait(&agent, &url, &body);
                    assert_eq!(status, 200, "{report}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let total = CLIENTS * PER_CLIENT;
    let started = Instant::now();
    while done.load(Ordering::SeqCst) < total && started.elapsed() < Duration::from_secs(600) {
        samples.lock().unwrap().push((done.load(Ordering::SeqCst), resident_kib(server.child.id())));
        std::thread::sleep(Duration::from_millis(100));
    }
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();
    let samples = samples.lock().unwrap().clone();
    let after_warm_up: Vec<u64> = samples.iter().filter(|(n, _)| *n >= total / 4).map(|(_, kib)| *kib).collect();
    let (low, high) = (*after_warm_up.iter().min().unwrap(), *after_warm_up.iter().max().unwrap());
    println!(
        "{total} transactions in {:.1} s ({:.0} tx/s); resident memory after the first quarter {} to {} KiB ({} samples)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        low,
        high,
        after_warm_up.len()
    );
    assert!(after_warm_up.len() >= 3, "too few samples: {samples:?}");
    // What grows is mostly the store's page cache over a growing file (about 2 KiB
    // a transaction record); a leak of a request, an instance or a trace would
    // be far more.
    assert!(high - low < 16 * 1024, "resident memory grew by {} KiB under a steady load: {samples:?}", high - low);
}

/// The CLI against a running service: the same commands, through the API,
/// with the service's errors as the command's exit code and message.
#[test]
fn the_cli_drives_a_service_with_server_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let server = Server::start(&config);
    let cli = |role: Role, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_txmirror"))
            .args(["--server", &server.base, "--token", &token(role)])
            .args(args)
            .output()
            .unwrap()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    let out = cli(Role::Developer, &["upload", guests::BANK_TRANSFER]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hash = text(&out.stdout).lines().next().unwrap().strip_prefix("module ").unwrap().to_string();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n").unwrap();
    let out = cli(Role::Client, &["put-policy", &hash, policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a client may not put a policy");
    assert!(text(&out.stderr).contains("403 forbidden"), "{}", text(&out.stderr));
    assert_eq!(cli(Role::Operator, &["put-policy", &hash, policy.to_str().unwrap()]).status.code(), Some(0));

    let deposit = ["submit", &hash, "--path", "deposit", "--input", r#"{"account":"a","amount":4}"#];
    let out = cli(Role::Client, &[&deposit[..], &["--transaction-id", "cli-1"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("transaction cli-1 COMMITTED"), "{}", text(&out.stdout));
    let out =
        cli(Role::Client, &["submit", &hash, "--path", "transfer", "--input", r#"{"from":"a","to":"z","amount":1}"#]);
    assert_eq!(out.status.code(), Some(1), "a rejected transfer fails: {}", text(&out.stdout));
    let out = cli(Role::Client, &["submit", &hash, "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--input is not JSON"), "{}", text(&out.stderr));
    let out = cli(Role::Operator, &["tx", "show", "cli-1"]);
    assert!(text(&out.stdout).contains("mirror trace"), "{}", text(&out.stdout));
    let out = cli(Role::Operator, &["tx", "list", "--status", "committed"]);
    assert!(text(&out.stdout).starts_with("cli-1  committed  path deposit"), "{}", text(&out.stdout));
    let out = cli(Role::Operator, &["dlq", "replay", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("404 not_found"), "{}", text(&out.stderr));
    // A letter made under a starved policy, found by filters and replayed
    // in bulk once the policy gives fuel again.
    let starved = dir.path().join("starved.toml");
    std::fs::write(
        &starved,
        "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n[resource_requirements]\nfuel = 1000\n",
    )
    .unwrap();
    assert_eq!(cli(Role::Operator, &["put-policy", &hash, starved.to_str().unwrap()]).status.code(), Some(0));
    let out = cli(Role::Client, &[&deposit[..], &["--transaction-id", "cli-dead"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(cli(Role::Operator, &["put-policy", &hash, policy.to_str().unwrap()]).status.code(), Some(0));
    let out = cli(Role::Operator, &["dlq", "list", "--path", "deposit", "--since", "1h"]);
    assert!(text(&out.stdout).starts_with("cli-dead  path deposit"), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = cli(Role::Operator, &["dlq", "list", "--path", "transfer"]);
    assert_eq!(text(&out.stdout), "", "no letter of that path");
    let out = cli(Role::Operator, &["dlq", "list", "--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--since `last tuesday` is not a time"), "{}", text(&out.stderr));
    let out = cli(Role::Operator, &["dlq", "drop-all"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pass --all"), "{}", text(&out.stderr));
    let out = cli(Role::Operator, &["dlq", "replay-all", "--kind", "fuel_exhausted"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("cli-dead  committed as "), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("1 selected, 1 committed, 0 failed"), "{}", text(&out.stdout));
    assert_eq!(text(&cli(Role::Operator, &["dlq", "list"]).stdout), "");
    let out = cli(Role::Operator, &["model", "status"]);
    assert!(text(&out.stdout).contains("\"configured\": false"), "{}", text(&out.stdout));
    // Commands of one side only say so.
    let local = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_txmirror"))
            .arg("--data-dir")
            .arg(dir.path().join("local"))
            .args(args)
            .env_remove("TXMIRROR_SERVER")
            .output()
            .unwrap()
    };
    let out = local(&["tx", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give --server URL"), "{}", text(&out.stderr));
    let out = local(&["dlq", "replay", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs the module and --policy"), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_txmirror"))
        .args(["--server", &server.base, "tx", "list"])
        .env_remove("TXMIRROR_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--server needs a token"), "{}", text(&out.stderr));
}

/// The transaction's status and failure kind, once it has ended (within 60 s).
fn ended(base: &str, id: &str) -> (String, Option<String>) {
    let started = Instant::now();
    loop {
        let (status, view) =
            call(&agent(), "GET", &format!("{base}/v1/transactions/{id}"), Role::Client, None).unwrap();
        let state = view["status"].as_str().unwrap_or_default().to_string();
        if status == 200 && matches!(state.as_str(), "committed" | "failed") {
            let kind = view["record"]["outcome"]["kind"].as_str().map(String::from);
            return (state, kind);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{id} never ended: {view}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9` of the service while the gateway holds a charge it received
/// and has not answered, then a restart: the rerun finds the charge in the
/// journal, in doubt, and sends it again with the same key (a gateway that
/// honours keys charges once), or, with `effects.in_doubt =
/// "dead_letter"`, sends nothing and dead-letters the transaction.
#[test]
fn a_charge_in_doubt_at_a_crash_is_never_charged_under_two_keys() {
    for in_doubt in ["resend", "dead_letter"] {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let gateway = slow_gateway(&runtime, Duration::from_secs(3));
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path());
        let agent = agent();
        let server = Server::start(&config);
        let hash = install_payment(&agent, &server.base, &gateway, &format!("[effects]\nin_doubt = \"{in_doubt}\""));
        let id = charge_until_sent(&agent, &server.base, &hash, &gateway, "order-7");
        // Received and not answered: killed now.
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        gateway.set_behaviour(txmirror_tests::Behaviour {
            status: 201,
            body: r#"{"charge_id": "ch-{n}"}"#.into(),
            ..Default::default()
        });
        let restarted = Server::start(&config);
        let (state, kind) = ended(&restarted.base, &id);
        let posts: Vec<_> = gateway.received().into_iter().filter(|r| r.method == "POST").collect();
        let keys: std::collections::BTreeSet<_> = posts.iter().map(|r| r.idempotency_key.clone()).collect();
        assert_eq!(keys, [Some("order-7".to_string())].into(), "the guest's own key, on every send");
        match in_doubt {
            "resend" => {
                assert_eq!(state, "committed", "{kind:?}");
                assert_eq!(posts.len(), 2, "sent again once, under the same key");
            }
            _ => {
                assert_eq!((state.as_str(), kind.as_deref()), ("failed", Some("effect_in_doubt")));
                assert_eq!(posts.len(), 1, "not sent again");
                let (status, letter) =
                    call(&agent, "GET", &format!("{}/v1/dlq/{id}", restarted.base), Role::Operator, None).unwrap();
                assert_eq!(status, 200, "{letter}");
            }
        }
        println!("in_doubt = {in_doubt}: {state} ({kind:?}) after {} sends under one key", posts.len());
    }
}

/// The HTTP API fuzzed from its own OpenAPI document (schemathesis, from
/// `tests/requirements.txt`) against a real `txmirror serve`, with a
/// bounded number of examples per operation, as a client, an operator and
/// a developer: no server error, and every status, content type, header
/// and body as the document says. Uploads and policies are drawn from a
/// real component and policy among broken ones, the document's links are
/// followed, and most requests that name a module name one installed
/// first (`tests/schemathesis/txmirror_hooks.py`).
#[test]
fn the_api_holds_to_its_openapi_document_under_a_fuzzer() {
    let tools = std::env::var_os("TXMIRROR_TEST_PYTHONPATH").expect("set by .cargo/config.toml");
    assert!(
        Path::new(&tools).join("schemathesis").is_dir(),
        "schemathesis is missing from {}: `cargo xtask setup` installs it (tests/requirements.txt)",
        Path::new(&tools).display()
    );
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/schemathesis");
    let python_path = format!("{}:{}", Path::new(&tools).display(), hooks.display());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&write_config(dir.path()));
    let module = install_bank(&agent(), &server.base);
    let policy = "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n";
    for role in [Role::Client, Role::Operator, Role::Developer] {
        let out = Command::new("python3")
            .args(["-m", "schemathesis.cli", "run", &format!("{}/openapi.json", server.base)])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance"])
            .args(["--checks", "response_schema_conformance,response_headers_conformance"])
            .args(["--max-examples", "10", "--seed", "7", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {}", token(role))])
            .env("PYTHONPATH", &python_path)
            .env("SCHEMATHESIS_HOOKS", "txmirror_hooks")
            .env("TXMIRROR_FUZZ_COMPONENT", guests::BANK_TRANSFER)
            .env("TXMIRROR_FUZZ_POLICY", policy)
            .env("TXMIRROR_FUZZ_MODULE", &module)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "as {role}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Tested: 33"), "every operation was tried, as {role}:\n{text}");
        let summary: Vec<&str> =
            text.lines().filter(|line| line.contains("API Links") || line.contains("generated")).collect();
        println!("as {role}: {}", summary.join("; "));
    }
}

/// HTTPS with a certificate `txmirror tls self-signed` made: the CLI
/// reaches the service with `--ca-file` and not without it; clear text on
/// the TLS port gets no answer; a network address without TLS is refused
/// before anything listens; bad TLS files are refused at start.
#[test]
fn the_service_speaks_tls_and_refuses_tokens_in_clear_on_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let txmirror = env!("CARGO_BIN_EXE_txmirror");
    let tls = dir.path().join("tls");
    let out = Command::new(txmirror).args(["tls", "self-signed", "--out-dir"]).arg(&tls).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[server.tls]"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(tls.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let again = Command::new(txmirror).args(["tls", "self-signed", "--out-dir"]).arg(&tls).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "an existing key was overwritten");

    let config = write_config_with(
        &dir.path().join("service"),
        &format!(
            "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            tls.join("cert.pem").display().to_string(),
            tls.join("key.pem").display().to_string()
        ),
    );
    let server = Server::start(&config);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let cli = |ca: bool| {
        let mut command = Command::new(txmirror);
        command.args(["--server", &server.base, "--token", &token(Role::Operator)]);
        if ca {
            command.arg("--ca-file").arg(tls.join("cert.pem"));
        }
        command.args(["tx", "list"]).output().unwrap()
    };
    let trusted = cli(true);
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let untrusted = cli(false);
    assert_eq!(untrusted.status.code(), Some(5), "the web's roots trusted a self-signed certificate");
    let error = String::from_utf8_lossy(&untrusted.stderr);
    assert!(error.contains("cannot reach the service"), "{error}");
    // Clear text on the TLS port: no HTTP answer.
    let address = server.base.trim_start_matches("https://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::{Read as _, Write as _};
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "clear text was served on the TLS port");
    drop(server);

    // Plain HTTP on a network address: refused, and nothing listens.
    let plain = write_config(&dir.path().join("plain"));
    let out = Command::new(txmirror)
        .args(["serve", "--config"])
        .arg(&plain)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("not a loopback address") && error.contains("allow_plain_http"), "{error}");
    assert!(!error.contains("serving on"), "{error}");

    // A key that is not the certificate's, and a missing file.
    let other = dir.path().join("other");
    let made = Command::new(txmirror).args(["tls", "self-signed", "--out-dir"]).arg(&other).output().unwrap();
    assert!(made.status.success());
    for (cert, key, expected) in [
        (tls.join("cert.pem"), other.join("key.pem"), "refused"),
        (tls.join("missing.pem"), tls.join("key.pem"), "missing.pem"),
        (tls.join("key.pem"), tls.join("key.pem"), "no certificate"),
    ] {
        let config = write_config_with(
            &dir.path().join("bad"),
            &format!(
                "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        );
        let out = Command::new(txmirror).args(["serve", "--config"]).arg(&config).output().unwrap();
        assert!(!out.status.success());
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(error.contains("[server.tls]") && error.contains(expected), "{expected}: {error}");
    }
}

/// `txmirror paths report` against a service: the arms of a module's split,
/// compared, as text and as JSON.
#[test]
fn paths_report_compares_a_splits_arms_through_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&write_config(dir.path()));
    let agent = agent();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gateway = slow_gateway(&runtime, Duration::ZERO);
    let split =
        "[split]\nsticky = \"key\"\n[[split.arms]]\nname = \"primary-only\"\nshare = 1.0\norder = [\"charge\"]\n";
    let hash = install_payment(&agent, &server.base, &gateway, split);
    let report = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_txmirror"));
        command.args(["--server", &server.base, "--token", &token(Role::Operator), "paths", "report", &hash]);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let empty = report(false);
    assert!(empty.status.success(), "{}", String::from_utf8_lossy(&empty.stderr));
    assert!(String::from_utf8_lossy(&empty.stdout).contains("ran on a split's arm"));
    let url = format!("{}/v1/modules/{hash}/transactions", server.base);
    let body = json!({ "input": { "order_id": "o-1", "amount_cents": 100, "currency": "EUR" } });
    let (status, answer) = submit_and_wait(&agent, &url, &body);
    assert_eq!(status, 200, "{answer}");
    let text = report(false);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("primary-only") && text.contains("1 tx"), "{text}");
    let json: Value = serde_json::from_slice(&report(true).stdout).unwrap();
    assert_eq!(json["arms"][0]["arm"], "primary-only", "{json}");
    assert_eq!(json["arms"][0]["committed"], 1, "{json}");
}
