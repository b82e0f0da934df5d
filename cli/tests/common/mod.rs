//! What the tests of `txmirror serve` as a process share: configuration
//! files, the running binary, and calls to its API.

#![allow(dead_code, reason = "each test binary uses its own part")]

use serde_json::Value;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use txmirror_service::Role;
use txmirror_service::auth::hash_token;
use txmirror_tests::guests;

pub const TENANT: &str = "acme";

pub fn token(role: Role) -> String {
    format!("process-test-{role}")
}

/// A configuration file for one tenant with a token per role.
pub fn write_config(dir: &Path) -> PathBuf {
    write_config_with(dir, "")
}

/// A configuration file for one tenant with a token per role, and `extra`
/// (TOML tables) at its end.
pub fn write_config_with(dir: &Path, extra: &str) -> PathBuf {
    let cache = txmirror_tests::config(dir).cache_dir.unwrap();
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ncache_dir = {:?}\nshutdown_deadline_secs = 5\n",
        cache.display().to_string()
    );
    for role in [Role::Developer, Role::Operator, Role::Client] {
        text.push_str(&format!(
            "\n[[tokens]]\nname = \"{role}\"\ntenant = \"{TENANT}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            hash_token(&token(role))
        ));
    }
    text.push_str(extra);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("txmirror.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The running binary, its address and what it printed.
pub struct Server {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts the binary with these environment variables set.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_txmirror"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("txmirror serving on ") {
                    let _ = address_tx.send(address.to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = address_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", log.lock().unwrap()));
        Self { child, base, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Calls the API as `role`, asking for asynchronous answers (`Prefer:
/// respond-async`): a submission answers `202` as soon as it is accepted.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    role: Role,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), ureq::Error> {
    send(agent, method, url, role, body, true)
}

/// Submits a transaction and waits for its report.
pub fn submit_and_wait(agent: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    send(agent, "POST", url, Role::Client, Some(body.to_string().into_bytes()), false).unwrap()
}

pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    role: Role,
    body: Option<Vec<u8>>,
    asynchronous: bool,
) -> Result<(u16, Value), ureq::Error> {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {}", token(role)));
    if asynchronous {
        request = request.header("prefer", "respond-async");
    }
    if body.as_ref().is_some_and(|body| !body.is_empty()) {
        request = request.header("content-type", media_type(url));
    }
    let mut response = agent.run(request.body(body.unwrap_or_default()).unwrap())?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// The media type of a body sent to `url`, as the service takes it.
pub fn media_type(url: &str) -> &'static str {
    if url.ends_with("/policy") {
        "application/toml"
    } else if url.ends_with("/v1/modules") {
        "application/wasm"
    } else {
        "application/json"
    }
}

/// Uploads bank-transfer with a policy granting its accounts; returns its hash.
pub fn install_bank(agent: &ureq::Agent, base: &str) -> String {
    let wasm = std::fs::read(guests::BANK_TRANSFER).unwrap();
    let (status, module) = call(agent, "POST", &format!("{base}/v1/modules"), Role::Developer, Some(wasm)).unwrap();
    assert_eq!(status, 201, "{module}");
    let hash = module["hash"].as_str().unwrap().to_string();
    let policy = b"[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n".to_vec();
    let (status, body) =
        call(agent, "PUT", &format!("{base}/v1/modules/{hash}/policy"), Role::Operator, Some(policy)).unwrap();
    assert_eq!(status, 200, "{body}");
    hash
}

/// Uploads the payment example with a policy whose gateways are `gateway`,
/// with `extra` (TOML) at its start and the mirror's charges stubbed;
/// returns its hash.
pub fn install_payment(agent: &ureq::Agent, base: &str, gateway: &txmirror_tests::TestServer, extra: &str) -> String {
    let wasm = std::fs::read(guests::PAYMENT).unwrap();
    let (status, module) = call(agent, "POST", &format!("{base}/v1/modules"), Role::Developer, Some(wasm)).unwrap();
    assert_eq!(status, 201, "{module}");
    let hash = module["hash"].as_str().unwrap().to_string();
    let policy = format!(
        "{extra}\n[capabilities]\nkv = {{ payments = \"read-write\" }}\nstreams = [\"payments\"]\noutbound_hosts = [\"{0}\"]\n\
         [resource_requirements]\nwall_time_ms = 30_000\noutbound_timeout_ms = 20_000\n\
         [config]\nprimary_gateway = \"{1}\"\nbackup_gateway = \"{1}\"\n\
         [[mirror.stubs]]\nmethod = \"POST\"\nurl_prefix = \"{1}/charges\"\nstatus = 201\nbody = '{{\"charge_id\": \"stub\"}}'\n",
        gateway.authority(),
        gateway.url()
    );
    let (status, body) =
        call(agent, "PUT", &format!("{base}/v1/modules/{hash}/policy"), Role::Operator, Some(policy.into_bytes()))
            .unwrap();
    assert_eq!(status, 200, "{body}");
    hash
}

/// Submits a charge of `order` through the payment example (`hash`) for an
/// asynchronous answer, and waits (at most 30 s) until `gateway` has
/// received it; the transaction's id.
pub fn charge_until_sent(
    agent: &ureq::Agent,
    base: &str,
    hash: &str,
    gateway: &txmirror_tests::TestServer,
    order: &str,
) -> String {
    let charge =
        serde_json::json!({ "path": "charge", "input": { "order_id": order, "amount_cents": 990, "currency": "EUR" } });
    let url = format!("{base}/v1/modules/{hash}/transactions");
    let (status, accepted) = call(agent, "POST", &url, Role::Client, Some(charge.to_string().into_bytes())).unwrap();
    assert_eq!(status, 202, "{accepted}");
    let started = std::time::Instant::now();
    while gateway.received().iter().all(|r| r.method != "POST") {
        assert!(started.elapsed() < Duration::from_secs(30), "the charge never left");
        std::thread::sleep(Duration::from_millis(2));
    }
    accepted["transaction_id"].as_str().unwrap().to_string()
}

/// A payment gateway on 127.0.0.1 that answers each request with a new
/// charge id (`ch-{n}`) after `delay`: long enough to stop or kill a node
/// while its charge is on the way.
pub fn slow_gateway(runtime: &tokio::runtime::Runtime, delay: Duration) -> txmirror_tests::TestServer {
    let behaviour = txmirror_tests::Behaviour {
        status: 201,
        body: r#"{"charge_id": "ch-{n}"}"#.into(),
        delay,
        ..Default::default()
    };
    runtime.block_on(txmirror_tests::TestServer::start(behaviour))
}
