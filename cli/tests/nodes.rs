//! Several `txmirror serve` processes on one PostgreSQL, which the tests
//! start on 127.0.0.1 and stop at their end: nodes killed with SIGKILL,
//! stalled with SIGSTOP past their leases, and the database restarted
//! under load. Clients retry what was not answered on another node with
//! the same idempotency key, as a client behind a load balancer would.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "tests")]

mod common;

use common::{
    Server, agent, call, charge_until_sent, install_bank, install_payment, slow_gateway, submit_and_wait, token,
    write_config_with,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txmirror_service::Role;
use txmirror_tests::postgres::TestPostgres;

/// The nodes' lease in these tests: short, so that takeovers come soon.
const LEASE_MS: u64 = 2_000;

fn node_config(dir: &Path, url: &str, name: &str, lease_ms: u64) -> PathBuf {
    let extra = format!("\n[store]\nurl = \"{url}\"\n\n[node]\nname = \"{name}\"\nlease_ms = {lease_ms}\n");
    write_config_with(&dir.join(name), &extra)
}

/// A node's start, with the log at `info` so that takeovers show.
fn start_node(config: &Path) -> Server {
    Server::start_with_env(config, &[("TXMIRROR_LOG", "info")])
}

/// `GET /v1/nodes` on a node.
fn nodes_view(base: &str) -> Value {
    let (status, body) = call(&agent(), "GET", &format!("{base}/v1/nodes"), Role::Operator, None).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn this_node(base: &str) -> String {
    nodes_view(base)["this_node"].as_str().unwrap().to_string()
}

/// The transactions in flight whose lease `holder` holds, as `base` sees them.
fn held_by(base: &str, holder: &str) -> BTreeSet<String> {
    let view = nodes_view(base);
    view["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|lease| lease["holder"] == holder)
        .map(|lease| lease["transaction_id"].as_str().unwrap().to_string())
        .collect()
}

/// Submits a deposit of 1 into `account` with an idempotency key, asking for
/// `202`; the answer, or `None` if the node could not be reached.
fn submit_keyed(base: &str, hash: &str, account: &str, key: &str) -> Option<(u16, Value)> {
    let body = json!({ "path": "deposit", "input": { "account": account, "amount": 1 } });
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{base}/v1/modules/{hash}/transactions"))
        .header("authorization", format!("Bearer {}", token(Role::Client)))
        .header("prefer", "respond-async")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string().into_bytes())
        .unwrap();
    let mut response = agent().run(request).ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Submits until a node acknowledges (`202`), trying the nodes in turn from
/// `first`: a node that is gone, or answers `503`, sends the client to the
/// next. The acknowledged transaction's id, or `None` after `tries`.
fn submit_until_acknowledged(
    bases: &Mutex<Vec<String>>,
    first: usize,
    hash: &str,
    account: &str,
    key: &str,
    tries: usize,
) -> Option<String> {
    for attempt in 0..tries {
        let base = {
            let bases = bases.lock().unwrap();
            bases[(first + attempt) % bases.len()].clone()
        };
        match submit_keyed(&base, hash, account, key) {
            Some((202, answer)) => return Some(answer["transaction_id"].as_str().unwrap().to_string()),
            Some((503, _)) | None => std::thread::sleep(Duration::from_millis(50)),
            Some((status, answer)) => panic!("{key} on {base}: {status} {answer}"),
        }
    }
    None
}

/// The balance of `account`, read through `base`.
fn balance(base: &str, hash: &str, account: &str) -> u64 {
    let url = format!("{base}/v1/modules/{hash}/transactions");
    let (status, report) =
        submit_and_wait(&agent(), &url, &json!({ "path": "balance", "input": { "account": account } }));
    assert_eq!(status, 200, "{report}");
    let bytes: Vec<u8> = report["outcome"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect();
    serde_json::from_slice::<Value>(&bytes).unwrap()["balance"].as_u64().unwrap()
}

/// Waits until no transaction of the tenant is in flight on any node.
fn wait_until_idle(base: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let view = nodes_view(base);
        if view["leases"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(started.elapsed() < within, "still in flight after {within:?}: {view}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status of a transaction as `base` shows it.
fn status_of(base: &str, id: &str) -> String {
    let (status, view) = call(&agent(), "GET", &format!("{base}/v1/transactions/{id}"), Role::Client, None).unwrap();
    assert_eq!(status, 200, "{id}: {view}");
    view["status"].as_str().unwrap().to_string()
}

/// Three nodes under a bounded load with idempotency keys. First, every key
/// is sent to all three nodes at once: each runs it once. Then a random
/// node is killed with SIGKILL ten times at random moments while clients
/// retry their unanswered requests on another node with the same key, and
/// restarted. Every acknowledged transaction commits exactly once, each
/// balance counts its deposit once, and each dead node's transactions in
/// flight are taken over within the lease time plus one second.
#[test]
fn three_nodes_lose_and_double_nothing_when_nodes_are_killed() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let configs: Vec<PathBuf> =
        (1..=3).map(|n| node_config(dir.path(), &url, &format!("node-{n}"), LEASE_MS)).collect();
    let mut nodes: Vec<Server> = configs.iter().map(|config| start_node(config)).collect();
    let hash = install_bank(&agent(), &nodes[0].base);
    let bases = Arc::new(Mutex::new(nodes.iter().map(|node| node.base.clone()).collect::<Vec<_>>()));
    let seen = nodes_view(&nodes[0].base);
    assert_eq!(seen["nodes"].as_array().unwrap().len(), 3, "{seen}");

    // One key sent to the three nodes at once runs once.
    for n in 0..15 {
        let key = format!("together-{n}");
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let sends: Vec<_> = nodes
                .iter()
                .map(|node| {
                    let (base, hash, key) = (node.base.clone(), hash.clone(), key.clone());
                    scope.spawn(move || submit_keyed(&base, &hash, &key, &key).unwrap())
                })
                .collect();
            sends.into_iter().map(|send| send.join().unwrap()).collect()
        });
        let ids: BTreeSet<&str> = answers.iter().map(|(_, a)| a["transaction_id"].as_str().unwrap()).collect();
        assert!(answers.iter().all(|(status, _)| *status == 202), "{answers:?}");
        assert_eq!(ids.len(), 1, "one transaction for one key: {answers:?}");
    }
    wait_until_idle(&nodes[0].base, Duration::from_secs(60));
    for n in 0..15 {
        assert_eq!(balance(&nodes[n % 3].base, &hash, &format!("together-{n}")), 1, "together-{n}");
    }

    // Ten kills under load.
    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 60;
    const KILLS: usize = 10;
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let sent: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (bases, hash, acknowledged, sent, stop) =
                (bases.clone(), hash.clone(), acknowledged.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("k-{client}-{i}");
                    sent.lock().unwrap().insert(key.clone());
                    if let Some(id) = submit_until_acknowledged(&bases, client + i, &hash, &key, &key, 400) {
                        acknowledged.lock().unwrap().insert(key, id);
                    }
                }
            })
        })
        .collect();
    // A small generator of the test's own, seeded, so that a failure can
    // be replayed: which node dies, and after how many acknowledgements.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut slowest_takeover = Duration::ZERO;
    let mut taken_over = 0;
    for kill in 0..KILLS {
        let target = (kill + 1) * CLIENTS * PER_CLIENT / (KILLS + 2) + usize::try_from(next(10)).unwrap();
        let waiting = Instant::now();
        while acknowledged.lock().unwrap().len() < target && waiting.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let victim = usize::try_from(next(3)).unwrap();
        let survivor = nodes[(victim + 1) % 3].base.clone();
        let dead_id = this_node(&nodes[victim].base);
        nodes[victim].child.kill().unwrap();
        nodes[victim].child.wait().unwrap();
        let killed_at = Instant::now();
        let orphans = held_by(&survivor, &dead_id);
        // The dead node's work is taken over by the others, within the
        // lease and a second.
        while !held_by(&survivor, &dead_id).is_empty() {
            assert!(
                killed_at.elapsed() < Duration::from_millis(LEASE_MS + 1_000),
                "kill {kill}: {dead_id}'s transactions still not taken over after {:?}: {}",
                killed_at.elapsed(),
                nodes_view(&survivor)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if !orphans.is_empty() {
            slowest_takeover = slowest_takeover.max(killed_at.elapsed());
            taken_over += orphans.len();
        }
        nodes[victim] = start_node(&configs[victim]);
        bases.lock().unwrap()[victim].clone_from(&nodes[victim].base);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }

    let base = nodes[0].base.clone();
    wait_until_idle(&base, Duration::from_secs(120));
    let acknowledged = acknowledged.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    for (key, id) in &acknowledged {
        assert_eq!(status_of(&base, id), "committed", "{key} was acknowledged as {id}");
    }
    let mut committed = 0;
    for (n, key) in sent.iter().enumerate() {
        let balance = balance(&nodes[n % 3].base, &hash, key);
        if acknowledged.contains_key(key) {
            assert_eq!(balance, 1, "{key}: acknowledged, so committed once");
        } else {
            assert!(balance <= 1, "{key}: {balance} deposits for one key");
        }
        committed += balance;
    }
    println!(
        "{KILLS} kills of 3 nodes: {} keys sent, {} acknowledged, {committed} committed; {taken_over} transactions \
         taken over from dead nodes, the slowest {:.2} s after the kill (lease {:.1} s)",
        sent.len(),
        acknowledged.len(),
        slowest_takeover.as_secs_f64(),
        Duration::from_millis(LEASE_MS).as_secs_f64()
    );
    assert!(acknowledged.len() >= CLIENTS * PER_CLIENT * 3 / 4, "most keys were acknowledged");
    assert!(taken_over > 0, "no kill found a transaction in flight: the takeover went untested");
}

/// A node stopped with SIGSTOP past its lease while a charge is in flight,
/// then resumed: the other node has taken the transaction over (epoch 2)
/// and committed it; the stalled node's write is refused by the epoch, so
/// the order is recorded once.
/// Two nodes on a fresh database (lease 1 s) with the payment example
/// installed, charging through a gateway that answers each charge after
/// 700 ms: long enough to stop or kill a node while its charge is on the
/// way. Everything stops when it is dropped.
struct ChargingNodes {
    _postgres: TestPostgres,
    /// The gateway's server runs on it.
    _runtime: tokio::runtime::Runtime,
    gateway: txmirror_tests::TestServer,
    _dir: tempfile::TempDir,
    first: Server,
    other: Server,
    /// The payment module's hash.
    hash: String,
}

impl ChargingNodes {
    fn start(first: &str, other: &str) -> Self {
        let postgres = TestPostgres::start();
        let url = postgres.fresh_database();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let gateway = slow_gateway(&runtime, Duration::from_millis(700));
        let dir = tempfile::tempdir().unwrap();
        let first = start_node(&node_config(dir.path(), &url, first, 1_000));
        let other = start_node(&node_config(dir.path(), &url, other, 1_000));
        let hash = install_payment(&agent(), &first.base, &gateway, "");
        Self { _postgres: postgres, _runtime: runtime, gateway, _dir: dir, first, other, hash }
    }
}

#[test]
fn a_node_stalled_past_its_lease_cannot_commit() {
    let ChargingNodes { _postgres, _runtime, gateway, _dir, first: stalled, other, hash } =
        ChargingNodes::start("stalls", "stays");
    let agent = agent();

    let stalled_id = this_node(&stalled.base);
    // Stopped while its charge waits for the gateway.
    let id = charge_until_sent(&agent, &stalled.base, &hash, &gateway, "order-1");
    signal("STOP", stalled.child.id());
    let stopped_at = Instant::now();
    // The other node takes it over once the lease lapses, and ends it.
    let mut other_took_it = false;
    while stopped_at.elapsed() < Duration::from_secs(30) {
        let view = nodes_view(&other.base);
        let lease =
            view["leases"].as_array().unwrap().iter().find(|lease| lease["transaction_id"] == id.as_str()).cloned();
        match lease {
            Some(lease) if lease["holder"] != stalled_id.as_str() => {
                assert_eq!(lease["epoch"], 2, "{view}");
                other_took_it = true;
            }
            Some(_) => {}
            None => {
                other_took_it = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(other_took_it, "the other node never took the transaction over");
    assert_eq!(status_of(&other.base, &id), "committed");
    signal("CONT", stalled.child.id());
    // The stalled node wakes, its charge answered; its commit is refused.
    let woke = Instant::now();
    while !stalled.log().contains("another node took the transaction over") {
        assert!(woke.elapsed() < Duration::from_secs(30), "no refusal in the stalled node's log:\n{}", stalled.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status_of(&stalled.base, &id), "committed");
    // The node that took over found the charge in the journal, sent and
    // unanswered, and sent it again under the same key; the stalled node,
    // fenced out, sent nothing more.
    let posts: Vec<_> = gateway.received().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts.iter().all(|r| r.idempotency_key.as_deref() == Some("order-1")), "{posts:?}");
    let view: Value = {
        let (status, view) =
            call(&agent, "GET", &format!("{}/v1/transactions/{id}", other.base), Role::Client, None).unwrap();
        assert_eq!(status, 200);
        view
    };
    let bytes: Vec<u8> = view["record"]["outcome"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect();
    println!(
        "the stalled node's commit was refused; the record was committed once: {}",
        String::from_utf8_lossy(&bytes)
    );
    let metrics = {
        let request = ureq::http::Request::builder()
            .uri(format!("{}/metrics", other.base))
            .header("authorization", format!("Bearer {}", token(Role::Operator)))
            .body(Vec::new())
            .unwrap();
        agent.run(request).unwrap().body_mut().read_to_string().unwrap()
    };
    assert!(metrics.contains("txmirror_takeovers_total 1"), "{metrics}");
    let heartbeat =
        format!("txmirror_node_heartbeat_age_seconds{{node=\"{}\",state=\"serving\"}}", this_node(&other.base));
    assert!(metrics.contains(&heartbeat), "{metrics}");
}

/// A node killed (SIGKILL) while its charge waits for the gateway: the
/// other node takes the transaction over once the lease lapses, finds the
/// charge in the journal sent and unanswered, and sends it again under the
/// same key, which a gateway that honours keys charges once; it commits.
#[test]
fn a_node_killed_after_its_charge_left_is_taken_over_and_charges_once() {
    let ChargingNodes { _postgres, _runtime, gateway, _dir, first: killed, other, hash } =
        ChargingNodes::start("killed", "survives");
    let agent = agent();

    let id = charge_until_sent(&agent, &killed.base, &hash, &gateway, "order-k");
    signal("KILL", killed.child.id());
    let killed_at = Instant::now();
    while status_of(&other.base, &id) != "committed" {
        assert!(killed_at.elapsed() < Duration::from_secs(30), "never committed: {}", status_of(&other.base, &id));
        std::thread::sleep(Duration::from_millis(20));
    }
    let posts: Vec<_> = gateway.received().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 2, "sent by the killed node, then again by the other: {posts:?}");
    let keys: BTreeSet<_> = posts.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys, BTreeSet::from([Some("order-k".to_string())]), "one key: one charge at the gateway");
    println!("taken over and committed {} ms after the kill", killed_at.elapsed().as_millis());
}

/// PostgreSQL stopped (as a crash would) and started again under load:
/// while it is down, submissions fail with `503 store_unavailable`; the
/// nodes reconnect by themselves; every acknowledged deposit commits once.
#[test]
fn a_database_restart_under_load_loses_nothing_acknowledged() {
    let postgres = TestPostgres::start();
    let url = postgres.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Server> =
        (1..=2).map(|n| start_node(&node_config(dir.path(), &url, &format!("node-{n}"), LEASE_MS))).collect();
    let hash = install_bank(&agent(), &nodes[0].base);
    let bases = Arc::new(Mutex::new(nodes.iter().map(|node| node.base.clone()).collect::<Vec<_>>()));
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|client| {
            let (bases, hash, acknowledged, refused) =
                (bases.clone(), hash.clone(), acknowledged.clone(), refused.clone());
            std::thread::spawn(move || {
                for i in 0..120 {
                    let key = format!("k-{client}-{i}");
                    // Every answer that is not `202` is kept, to be checked:
                    // while the database is down, it must say so.
                    for attempt in 0..600 {
                        let base = bases.lock().unwrap()[(client + i + attempt) % 2].clone();
                        match submit_keyed(&base, &hash, &key, &key) {
                            Some((202, answer)) => {
                                let id = answer["transaction_id"].as_str().unwrap().to_string();
                                acknowledged.lock().unwrap().insert(key.clone(), id);
                                break;
                            }
                            Some(other) => refused.lock().unwrap().push(other),
                            None => panic!("{base} did not answer"),
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 60 {
        std::thread::sleep(Duration::from_millis(5));
    }
    postgres.stop();
    std::thread::sleep(Duration::from_secs(2));
    postgres.start_again();
    for client in clients {
        client.join().unwrap();
    }
    let base = nodes[0].base.clone();
    wait_until_idle(&base, Duration::from_secs(120));
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), 240, "every key was acknowledged in the end");
    for key in acknowledged.keys() {
        assert_eq!(balance(&base, &hash, key), 1, "{key}");
    }
    let refused = refused.lock().unwrap().clone();
    assert!(!refused.is_empty(), "no request was refused while the database was down");
    for (status, answer) in &refused {
        assert_eq!((*status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
    }
    println!(
        "a database restart under load: {} requests refused while it was down, all 240 keys committed once",
        refused.len()
    );
}

fn signal(name: &str, pid: u32) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
