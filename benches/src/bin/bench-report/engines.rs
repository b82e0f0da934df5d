//! The durable engines side by side (`bench-report engines`): the bank
//! transfer on txmirror (`txmirror serve`'s server, in this process, on
//! redb on disk: primary only, mirrored, adaptive), on Restate (its
//! server and the SDK service `restate-bank`, two processes) and on
//! Temporal (its development server, a Python worker and the gateway of
//! `benches/temporal-bank/bank.py`, three processes), driven by
//! one HTTP client harness on 127.0.0.1 with an idempotency key per
//! request.
//!
//! Before anything is measured, the engines are checked to behave alike:
//! the same transfers leave the same balances, and a request repeated
//! with its key moves money once.
//!
//! Restate's server comes from the npm registry and is installed by
//! `cargo xtask bench` (`xtask/src/setup.rs`) into `target/peers/`; the
//! bench finds it there, or at `TXMIRROR_RESTATE_SERVER`. Temporal's CLI
//! (whose development server keeps its state in SQLite on disk), its
//! Python SDK and the gateway's HTTP server come from PyPI, installed the
//! same way into `target/peers/temporal/` (or `TXMIRROR_TEMPORAL_PEER`).

use crate::{ACCOUNTS, Options, Run, machine_busy, percentiles, rounds_columns};
use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use txmirror_tests::guests;

/// Every account's balance before the first transfer, on every engine.
const SEED: u64 = 1_000_000_000;
/// The txmirror services' token, for every role.
const TOKEN: &str = "engines-token";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One engine, as the client harness sees it: where a transfer goes.
trait Engine: Send + Sync {
    /// The request for a transfer of `amount` from `from` to `to`, under `key`.
    fn transfer(&self, from: &str, to: &str, amount: u64, key: &str) -> hyper::Request<Full<Bytes>>;
    /// `account`'s balance (Restate's and Temporal's deposits settle after the debits' answers).
    fn balance<'a>(&'a self, client: &'a HttpClient, account: &'a str) -> Pending<'a, u64>;
}

type Pending<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A txmirror service in this process, its module's policy set to `mode`.
struct Txmirror {
    base: String,
    hash: String,
    service: txmirror_service::Service,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

impl Txmirror {
    async fn start(client: &HttpClient, mode: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let tokens =
            [txmirror_service::Role::Developer, txmirror_service::Role::Operator, txmirror_service::Role::Client]
                .into_iter()
                .map(|role| txmirror_service::TokenConfig {
                    name: format!("engines-{role}"),
                    tenant: "bench".into(),
                    role,
                    sha256: txmirror_service::auth::hash_token(&format!("{TOKEN}-{role}")),
                    profile: None,
                })
                .collect();
        let mut config = txmirror_service::ServiceConfig::new(dir.path().join("data"), tokens);
        config.cache_dir = txmirror_tests::config(dir.path()).cache_dir;
        let service = txmirror_service::Service::open(&config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = tokio_util::sync::CancellationToken::new();
        let server = txmirror_service::server::serve(
            listener,
            service.state.clone(),
            txmirror_service::server::ServerConfig::default(),
            stop.clone(),
        );
        tokio::spawn(server);
        let wasm = std::fs::read(guests::BANK_TRANSFER)?;
        let module =
            send(client, request("POST", &format!("{base}/v1/modules"), "developer", "application/wasm", wasm)).await?;
        ensure!(module.0 == 201, "the module was refused: {module:?}");
        let hash: serde_json::Value = serde_json::from_slice(&module.1)?;
        let hash = hash["hash"].as_str().context("the module's hash")?.to_string();
        let policy = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bank-transfer/policy.toml"),
        )?;
        let policy = match mode {
            "primary only" => policy.replace("failure_prediction_enabled = true", "failure_prediction_enabled = false"),
            "mirrored" => policy,
            _ => format!("{policy}\n[mirror]\nmode = \"adaptive\"\n"),
        };
        let url = format!("{base}/v1/modules/{hash}/policy");
        let put = send(client, request("PUT", &url, "operator", "application/toml", policy.into_bytes())).await?;
        ensure!(put.0 == 200, "the policy was refused: {put:?}");
        let this = Self { base, hash, service, stop, _dir: dir };
        this.seed().await?;
        Ok(this)
    }

    /// Seeds the accounts the load and the check use, as deposits.
    async fn seed(&self) -> Result<()> {
        let runtime = self.service.state.tenant("bench").context("the bench tenant")?.runtime().clone();
        let module = txmirror_tests::load(&runtime, guests::BANK_TRANSFER).await;
        let policy = Arc::new(txmirror_runtime::Policy::parse(
            "[capabilities]\nkv = { accounts = \"read-write\" }\n",
            Path::new("seed.toml"),
        )?);
        let accounts: Vec<String> = (0..ACCOUNTS).map(account).chain((0..CHECKED).map(checked)).collect();
        let mut seeding = tokio::task::JoinSet::new();
        for share in accounts.chunks(accounts.len().div_ceil(16)) {
            let (runtime, module, policy, share) = (runtime.clone(), module.clone(), policy.clone(), share.to_vec());
            seeding.spawn(async move {
                for account in share {
                    let input = format!(r#"{{"account":"{account}","amount":{SEED}}}"#).into_bytes();
                    let request =
                        txmirror_runtime::TxRequest { path: Some("deposit".into()), input, ..Default::default() };
                    let report = runtime.execute(&module, &policy, request).await?;
                    ensure!(report.failure.is_none(), "seeding {account} failed: {:?}", report.failure);
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = seeding.join_next().await {
            done??;
        }
        Ok(())
    }

    async fn stop(self) {
        self.stop.cancel();
        self.service.state.shut_down(Duration::ZERO).await;
    }
}

impl Engine for Txmirror {
    fn transfer(&self, from: &str, to: &str, amount: u64, key: &str) -> hyper::Request<Full<Bytes>> {
        let body = format!(r#"{{"path":"transfer","input":{{"from":"{from}","to":"{to}","amount":{amount}}}}}"#);
        let url = format!("{}/v1/modules/{}/transactions", self.base, self.hash);
        let mut request = request("POST", &url, "client", "application/json", body.into_bytes());
        request.headers_mut().insert("idempotency-key", key.parse().expect("a key is a header value"));
        request
    }

    fn balance<'a>(&'a self, client: &'a HttpClient, account: &'a str) -> Pending<'a, u64> {
        Box::pin(self.read_balance(client, account))
    }
}

impl Txmirror {
    async fn read_balance(&self, client: &HttpClient, account: &str) -> Result<u64> {
        let body = format!(r#"{{"path":"balance","input":{{"account":"{account}"}}}}"#);
        let url = format!("{}/v1/modules/{}/transactions", self.base, self.hash);
        let (status, body) =
            send(client, request("POST", &url, "client", "application/json", body.into_bytes())).await?;
        ensure!(status == 200, "balance of {account}: {status}");
        let report: serde_json::Value = serde_json::from_slice(&body)?;
        let output: Vec<u8> = report["outcome"]["output"]
            .as_array()
            .context("an output")?
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).context("a byte"))
            .collect::<Result<_>>()?;
        let output: serde_json::Value = serde_json::from_slice(&output)?;
        output["balance"].as_u64().context("a balance")
    }
}

/// Restate's server and the bank service, two processes on 127.0.0.1,
/// killed when dropped.
struct Restate {
    ingress: AccountRoutes,
    _processes: Processes,
    _dir: tempfile::TempDir,
}

impl Restate {
    async fn start(client: &HttpClient) -> Result<Self> {
        let binary = restate_server()?;
        let bank = std::env::current_exe()?.with_file_name("restate-bank");
        ensure!(bank.exists(), "{} is missing: `cargo xtask bench engines` builds it", bank.display());
        let dir = tempfile::tempdir()?;
        let [ingress, admin, node, endpoint] = [free_port()?, free_port()?, free_port()?, free_port()?];
        let log = std::fs::File::create(dir.path().join("restate.log"))?;
        // The server is in the guard before the service starts: a service
        // that fails to start leaves no server behind.
        let mut processes = Processes(Vec::new());
        processes.0.push(
            Command::new(&binary)
                .args(["--listen-mode", "tcp", "--bind-ip", "127.0.0.1", "--node-name", "bench", "--no-logo"])
                .arg("--base-dir")
                .arg(dir.path().join("base"))
                .env("RESTATE_INGRESS__BIND_PORT", ingress.to_string())
                .env("RESTATE_ADMIN__BIND_PORT", admin.to_string())
                .env("RESTATE_BIND_PORT", node.to_string())
                .env("RESTATE_DISABLE_TELEMETRY", "true")
                .env("RESTATE_ADMIN__DISABLE_WEB_UI", "true")
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?,
        );
        processes.0.push(Command::new(&bank).arg(endpoint.to_string()).stdout(Stdio::null()).spawn()?);
        let this =
            Self { ingress: AccountRoutes(format!("http://127.0.0.1:{ingress}")), _processes: processes, _dir: dir };
        // Registers the service once the admin API answers (at most 60 s).
        let register = format!(r#"{{"uri":"http://127.0.0.1:{endpoint}"}}"#);
        let started = Instant::now();
        loop {
            let request = hyper::Request::post(format!("http://127.0.0.1:{admin}/deployments"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(register.clone())))?;
            match send(client, request).await {
                Ok((201 | 200, _)) => break,
                Ok(_) | Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                answer => bail!("Restate did not register the bank service in 60 s: {answer:?}"),
            }
        }
        Ok(this)
    }
}

impl Engine for Restate {
    fn transfer(&self, from: &str, to: &str, amount: u64, key: &str) -> hyper::Request<Full<Bytes>> {
        self.ingress.transfer(from, to, amount, key)
    }

    fn balance<'a>(&'a self, client: &'a HttpClient, account: &'a str) -> Pending<'a, u64> {
        Box::pin(self.ingress.balance(client, account))
    }
}

/// Processes of a peer, killed when dropped, the last started first.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The routes of Restate's ingress for the virtual object `Account`, which
/// the Temporal bank's gateway serves too: `POST {base}/Account/{id}/transfer`
/// with the idempotency key in a header, and `POST {base}/Account/{id}/balance`.
struct AccountRoutes(String);

impl AccountRoutes {
    fn transfer(&self, from: &str, to: &str, amount: u64, key: &str) -> hyper::Request<Full<Bytes>> {
        let body = format!(r#"{{"to":"{to}","amount":{amount}}}"#);
        hyper::Request::post(format!("{}/Account/{from}/transfer", self.0))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))
            .expect("a transfer is a request")
    }

    fn balance_request(&self, account: &str) -> Result<hyper::Request<Full<Bytes>>> {
        Ok(hyper::Request::post(format!("{}/Account/{account}/balance", self.0)).body(Full::new(Bytes::new()))?)
    }

    async fn balance(&self, client: &HttpClient, account: &str) -> Result<u64> {
        let (status, body) = send(client, self.balance_request(account)?).await?;
        ensure!(status == 200, "balance of {account}: {status}");
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Temporal's development server (with its SQLite store on disk), the
/// bank's worker and its HTTP gateway (`benches/temporal-bank/bank.py`),
/// three processes on 127.0.0.1, killed when dropped.
struct Temporal {
    gateway: AccountRoutes,
    processes: Processes,
    dir: tempfile::TempDir,
}

impl Temporal {
    async fn start(client: &HttpClient) -> Result<Self> {
        let peer = temporal_peer()?;
        let cli = peer.join("bin/temporal");
        let bank = Path::new(env!("CARGO_MANIFEST_DIR")).join("temporal-bank/bank.py");
        let dir = tempfile::tempdir()?;
        let [frontend, http, metrics, gateway] = [free_port()?, free_port()?, free_port()?, free_port()?];
        let logs = dir.path().to_path_buf();
        let log = |name: &str| std::fs::File::create(logs.join(name));
        let mut this = Self {
            gateway: AccountRoutes(format!("http://127.0.0.1:{gateway}")),
            processes: Processes(Vec::new()),
            dir,
        };
        let server_log = log("server.log")?;
        this.processes.0.push(
            Command::new(&cli)
                .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1", "--log-level", "warn"])
                .args(["--port", &frontend.to_string(), "--http-port", &http.to_string()])
                .args(["--metrics-port", &metrics.to_string()])
                .arg("--db-filename")
                .arg(this.dir.path().join("temporal.db"))
                .stdout(server_log.try_clone()?)
                .stderr(server_log)
                .spawn()
                .with_context(|| format!("cannot start {}", cli.display()))?,
        );
        let address = format!("127.0.0.1:{frontend}");
        for (role, args) in [("worker", vec![address.clone()]), ("gateway", vec![address.clone(), gateway.to_string()])]
        {
            let role_log = log(&format!("{role}.log"))?;
            this.processes.0.push(
                Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
                    .arg(&bank)
                    .arg(role)
                    .args(&args)
                    .env("PYTHONPATH", &peer)
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .stdout(role_log.try_clone()?)
                    .stderr(role_log)
                    .spawn()
                    .with_context(|| format!("cannot start the Temporal bank's {role}"))?,
            );
        }
        // Ready once the gateway answers a balance through the server (at most 60 s).
        let started = Instant::now();
        loop {
            match send(client, this.gateway.balance_request("ready")?).await {
                Ok((200, _)) => break,
                Ok(_) | Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                answer => bail!("Temporal's bank did not answer in 60 s: {answer:?}\n{}", this.logs()),
            }
        }
        Ok(this)
    }

    /// The processes' logs, for an error.
    fn logs(&self) -> String {
        ["server.log", "worker.log", "gateway.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!("--- {name}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Engine for Temporal {
    fn transfer(&self, from: &str, to: &str, amount: u64, key: &str) -> hyper::Request<Full<Bytes>> {
        self.gateway.transfer(from, to, amount, key)
    }

    fn balance<'a>(&'a self, client: &'a HttpClient, account: &'a str) -> Pending<'a, u64> {
        Box::pin(self.gateway.balance(client, account))
    }
}

/// Where the Temporal peer's packages are (its CLI in `bin/`).
fn temporal_peer() -> Result<PathBuf> {
    let path = match std::env::var_os("TXMIRROR_TEMPORAL_PEER") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/temporal"),
    };
    ensure!(
        path.join("bin/temporal").exists(),
        "{} is missing: `cargo xtask bench engines` installs it",
        path.display()
    );
    Ok(path)
}

/// Where Restate's server is.
fn restate_server() -> Result<PathBuf> {
    let path = match std::env::var_os("TXMIRROR_RESTATE_SERVER") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers/restate-server/package/bin/restate-server"),
    };
    ensure!(path.exists(), "{} is missing: `cargo xtask bench engines` installs it", path.display());
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn account(n: usize) -> String {
    format!("account-{n}")
}

/// The accounts of the behaviour check, apart from the load's.
const CHECKED: usize = 4;

fn checked(n: usize) -> String {
    format!("check-{n}")
}

fn request(method: &str, url: &str, role: &str, media: &str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}-{role}"))
        .header("content-type", media)
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

async fn send(client: &HttpClient, request: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// The same transfers on every engine leave the same balances, and a
/// request sent twice with its key moves money once.
async fn check_alike(client: &HttpClient, engines: &[(&str, &dyn Engine)]) -> Result<()> {
    let mut expected = vec![SEED; CHECKED];
    let transfers: Vec<(usize, usize, u64)> = (0..40)
        .map(|i| (i % CHECKED, (i * 7 + 1) % CHECKED, 1 + (i as u64 * 13) % 97))
        .filter(|(f, t, _)| f != t)
        .collect();
    for (from, to, amount) in &transfers {
        expected[*from] -= amount;
        expected[*to] += amount;
    }
    for (name, engine) in engines {
        for (n, (from, to, amount)) in transfers.iter().enumerate() {
            let key = format!("check-{n}");
            // The first transfer is sent twice with its key.
            for _ in 0..if n == 0 { 2 } else { 1 } {
                let (status, body) =
                    send(client, engine.transfer(&checked(*from), &checked(*to), *amount, &key)).await?;
                ensure!(status == 200, "{name}: transfer {n}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
        // Restate's and Temporal's deposits settle after the debits' answers.
        let started = Instant::now();
        loop {
            let mut balances = Vec::new();
            for n in 0..CHECKED {
                balances.push(engine.balance(client, &checked(n)).await?);
            }
            if balances == expected {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{name} ends with balances {balances:?}, not {expected:?} (the repeated key counted once)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// `clients` tasks sending transfers between random accounts to `engine`,
/// each waiting for its answer before the next, for `length`.
async fn closed_loop(
    client: &HttpClient,
    engine: Arc<dyn Engine>,
    clients: usize,
    length: Duration,
    tag: &str,
) -> Result<Run> {
    let cpu = cpu_time::ProcessTime::now();
    let machine = machine_busy();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, engine, tag) = (client.clone(), engine.clone(), tag.to_string());
        tasks.spawn(async move {
            let mut state = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ started.elapsed().as_nanos() as u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as usize % ACCOUNTS
            };
            let (mut latencies, mut failed) = (Vec::new(), 0);
            let mut n = 0;
            while started.elapsed() < length {
                let (from, to) = (next(), next());
                let to = if from == to { (to + 1) % ACCOUNTS } else { to };
                let request = engine.transfer(&account(from), &account(to), 1, &format!("{tag}-{c}-{n}"));
                n += 1;
                let sent = Instant::now();
                match send(&client, request).await {
                    Ok((200, _)) => latencies.push(sent.elapsed()),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        });
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, f) = done?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    Ok(Run {
        committed: latencies.len(),
        failed,
        elapsed,
        cpu: cpu.elapsed(),
        machine_cpu: machine_busy().saturating_sub(machine),
        latency: percentiles(&mut latencies),
        commits_per_fsync: 0.0,
    })
}

pub(crate) fn engines(options: &Options) -> Result<String> {
    let (length, rounds) = if options.quick { (Duration::from_millis(500), 1) } else { (Duration::from_secs(5), 3) };
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    executor.block_on(async {
        // No Nagle: a request written in two pieces (head, body) must not
        // wait for the server's delayed acknowledgement.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        let mut txmirror = Vec::new();
        for mode in ["primary only", "mirrored", "adaptive"] {
            txmirror.push((mode, Arc::new(Txmirror::start(&client, mode).await?)));
        }
        let restate = Arc::new(Restate::start(&client).await?);
        let temporal = Arc::new(Temporal::start(&client).await?);
        let mut engines: Vec<(String, Arc<dyn Engine>)> =
            txmirror.iter().map(|(mode, engine)| (format!("txmirror, {mode}"), engine.clone() as Arc<dyn Engine>)).collect();
        engines.push(("Restate 1.7.12 (Rust SDK 0.13)".to_string(), restate.clone()));
        engines.push(("Temporal 1.9.1 dev server (Python SDK 1.35)".to_string(), temporal.clone()));
        {
            let checked: Vec<(&str, &dyn Engine)> = engines.iter().map(|(name, e)| (name.as_str(), e.as_ref())).collect();
            check_alike(&client, &checked).await?;
        }
        eprintln!("engines: every engine ends the check's transfers with the same balances, the repeated key once");
        let loads = [1, 16, 64];
        let mut runs: Vec<Vec<Run>> = (0..engines.len() * loads.len()).map(|_| Vec::new()).collect();
        for round in 1..=rounds {
            for (e, (name, engine)) in engines.iter().enumerate() {
                for (l, clients) in loads.iter().enumerate() {
                    let run = closed_loop(&client, engine.clone(), *clients, length, &format!("r{round}-{e}-{clients}")).await?;
                    eprintln!("round {round}: {name}, {clients} clients: {:.0} tx/s, {} failed", run.rate(), run.failed);
                    runs[e * loads.len() + l].push(run);
                }
            }
        }
        let mut table = String::new();
        writeln!(table, "| engine | clients | tx/s (median) | rounds' range | p50 | p99 | CPU per tx (machine) | failed |")?;
        writeln!(table, "|---|---|---|---|---|---|---|---|")?;
        for (e, (name, _)) in engines.iter().enumerate() {
            for (l, clients) in loads.iter().enumerate() {
                let (columns, _, failed) = rounds_columns(&mut runs[e * loads.len() + l]);
                writeln!(table, "| {name} | {clients} | {columns} | {failed} |")?;
            }
        }
        writeln!(
            table,
            "\nBank transfers of 1 between {ACCOUNTS} accounts, each request with its own idempotency key, over HTTP/1.1 \
             on 127.0.0.1 from one client harness (hyper, in the bench's process, two tokio workers shared with the \
             in-process txmirror services), {} s per row and round, {rounds} rounds, every row once per round in turn. \
             A request counts when its answer is `200` (committed). CPU is the whole machine's busy time over the run \
             (every process: client, server, handlers) per transfer.",
            length.as_secs_f64()
        )?;
        drop(engines);
        drop(restate);
        drop(temporal);
        for (_, engine) in txmirror {
            if let Ok(engine) = Arc::try_unwrap(engine) {
                engine.stop().await;
            }
        }
        Ok(table)
    })
}
