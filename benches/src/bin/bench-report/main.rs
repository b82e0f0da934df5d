//! The measurements behind `docs/benchmarks.md`, run by `cargo xtask bench`
//! (which builds this with the `bench` profile): per-call latency
//! percentiles that criterion does not report, and throughput under many
//! concurrent clients.
//!
//! - `peers`: the peer comparison, p50/p99 per call of each host of the
//!   shared logic, and ratios against a plain component on raw wasmtime
//!   with the tuned pooling configuration;
//! - `durable`: bank transfers from many concurrent clients, committed
//!   durably on the embedded store (on disk, fsync), mirrored and primary
//!   only: transactions per second, latency, CPU per transaction, and how
//!   many transactions each fsync carried;
//! - `nodes`: the same on PostgreSQL with one, two and three nodes, beside
//!   the embedded store, at 64 clients;
//! - `effects`: the effect journal's cost: a path with one unsafe call
//!   (a charge to a gateway on 127.0.0.1), journalled and not, on both stores;
//! - `streams`: the predicted stream's lead time on the payment path (from
//!   the mirror's event to the primary's commit), against a gateway that
//!   answers at once, after 20 ms and after 100 ms;
//! - `delivery`: events per second delivered by `txmirror serve`'s stream
//!   API through Server-Sent Events, and by its webhook relay to a receiver
//!   on 127.0.0.1, draining a backlog of committed events;
//! - `python`: the bank transfer in Python beside the Rust one: component
//!   size, a clean build, the first load (compile) and a load from the
//!   cache, instantiation alone, and a whole transaction;
//!
//! - `engines`: the durable engines side by side: the bank transfer on
//!   txmirror (primary only, mirrored, adaptive), on Restate and on
//!   Temporal, over HTTP at 1, 16 and 64 clients (see `engines.rs`);
//! - `telemetry`: OpenTelemetry's cost on the tiny path: a transaction
//!   with the exporter off (the log's subscriber alone, as `txmirror`
//!   runs without `OTEL_EXPORTER_OTLP_ENDPOINT`) and on (its spans
//!   exported over OTLP/HTTP to a receiver on 127.0.0.1);
//!
//! `bench-report [--quick] [--write FILE] [peers] [durable] [nodes] [effects] [streams] [delivery] [python] [telemetry] [engines]`: with `--write`, each
//! section's table replaces the text between its markers in FILE
//! (`<!-- bench:NAME -->` … `<!-- /bench:NAME -->`). `--quick` runs short,
//! for checking that it works, not for numbers.

#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a benchmark report")]

use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use txmirror_runtime::store::{DEFAULT_BATCH_LIMIT, PostgresStore, RedbStore, StateStore, TransactionOutcome};
use txmirror_runtime::{Policy, Runtime, TxRequest};
use txmirror_tests::guests;
use txmirror_tests::peers::{ComponentPeer, EngineSetup, ORDER, Peer, TRANSFER, TxmirrorPeer};

mod engines;

struct Options {
    quick: bool,
    write: Option<PathBuf>,
    sections: Vec<String>,
}

fn main() -> Result<()> {
    let mut options = Options { quick: false, write: None, sections: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--write" => options.write = Some(args.next().context("--write needs a file")?.into()),
            "peers" | "durable" | "nodes" | "effects" | "streams" | "delivery" | "python" | "telemetry" | "engines" => {
                options.sections.push(arg);
            }
            other => {
                bail!(
                    "unknown argument {other:?}; usage: bench-report [--quick] [--write FILE] [peers] [durable] [nodes] \
                     [effects] [streams] [delivery] [python] [telemetry] [engines]"
                )
            }
        }
    }
    if options.sections.is_empty() {
        options.sections = ["peers", "durable", "nodes", "effects", "python", "engines", "telemetry"]
            .into_iter()
            .map(String::from)
            .collect();
    }
    for section in options.sections.clone() {
        let table = match section.as_str() {
            "peers" => peers(&options)?,
            "nodes" => nodes(&options)?,
            "effects" => effects(&options)?,
            "python" => python(&options)?,
            "streams" => streams(&options)?,
            "delivery" => delivery(&options)?,
            "telemetry" => telemetry(&options)?,
            "engines" => engines::engines(&options)?,
            _ => durable(&options)?,
        };
        println!("{table}");
        if let Some(file) = &options.write {
            replace_section(file, &section, &table)?;
        }
    }
    Ok(())
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
fn replace_section(file: &Path, name: &str, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (start, end) = (format!("<!-- bench:{name} -->\n"), format!("<!-- /bench:{name} -->"));
    let (Some(from), Some(to)) = (text.find(&start), text.find(&end)) else {
        bail!("{} has no {start:?} … {end:?} markers", file.display());
    };
    let text = format!("{}{start}{table}{}", &text[..from], &text[to..]);
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))
}

/// The median and the 99th percentile.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn peers(options: &Options) -> Result<String> {
    let (warm_up, calls) = if options.quick { (20, 200) } else { (500, 5_000) };
    type Build = Box<dyn Fn() -> Box<dyn Peer>>;
    #[allow(unused_mut, reason = "the Extism rows are behind a feature")]
    let mut peers: Vec<(&str, Build)> = vec![
        (
            "(c) raw wasmtime, tuned pooling, fresh instance per call",
            Box::new(|| Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::TunedPooling))),
        ),
        (
            "(c) raw wasmtime, tuned pooling + fuel and epochs",
            Box::new(|| Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::TunedPoolingMetered))),
        ),
        (
            "(c) raw wasmtime, default config, fresh instance per call",
            Box::new(|| Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::Default))),
        ),
        (
            "(a) txmirror transaction, primary only",
            Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, false))),
        ),
        ("(a) txmirror transaction, mirrored", Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, true)))),
    ];
    #[cfg(feature = "extism")]
    {
        use txmirror_tests::peers::ExtismPeer;
        peers
            .push(("(b) Extism, one plugin reused", Box::new(|| Box::new(ExtismPeer::new(guests::PEER_EXTISM, true)))));
        peers.push((
            "(b) Extism, fresh plugin per call",
            Box::new(|| Box::new(ExtismPeer::new(guests::PEER_EXTISM, false))),
        ));
    }
    // Round-robin in rounds, so that the machine's drifts (this is a shared
    // virtual machine) fall on every host alike.
    const ROUNDS: usize = 10;
    let mut built: Vec<Box<dyn Peer>> = peers.iter().map(|(_, build)| build()).collect();
    let paths = [("transfer", TRANSFER), ("normalise", ORDER)];
    for peer in &mut built {
        for (path, input) in paths {
            for _ in 0..warm_up {
                peer.call(path, input).map_err(anyhow::Error::msg)?;
            }
        }
    }
    let mut samples = vec![[Vec::with_capacity(calls), Vec::with_capacity(calls)]; built.len()];
    for _ in 0..ROUNDS {
        for (peer, samples) in built.iter_mut().zip(&mut samples) {
            for ((path, input), samples) in paths.into_iter().zip(samples.iter_mut()) {
                for _ in 0..calls / ROUNDS {
                    let started = Instant::now();
                    peer.call(path, input).map_err(anyhow::Error::msg)?;
                    samples.push(started.elapsed());
                }
            }
        }
    }
    let rows: Vec<(&str, Vec<(Duration, Duration)>)> = peers
        .iter()
        .zip(&mut samples)
        .map(|((name, _), samples)| (*name, samples.iter_mut().map(|s| percentiles(s)).collect()))
        .collect();
    let baseline = rows[0].1.clone();
    let mut table = String::new();
    writeln!(table, "| host | transfer p50 | transfer p99 | normalise p50 | normalise p99 | × (c-tuned), p50 |")?;
    writeln!(table, "|---|---|---|---|---|---|")?;
    for (name, measured) in &rows {
        let ratio = |i: usize| micros(measured[i].0) / micros(baseline[i].0);
        writeln!(
            table,
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.2}× / {:.2}× |",
            micros(measured[0].0),
            micros(measured[0].1),
            micros(measured[1].0),
            micros(measured[1].1),
            ratio(0),
            ratio(1),
        )?;
    }
    writeln!(
        table,
        "\n{calls} calls of each path per host after {warm_up} to warm up, in {ROUNDS} round-robin rounds; one \
         thread; µs per call."
    )?;
    Ok(table)
}

fn telemetry(options: &Options) -> Result<String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use txmirror_service::telemetry::{EXPORTED_SPANS, Telemetry};
    let (warm_up, calls) = if options.quick { (20, 200) } else { (500, 5_000) };
    let background = tokio::runtime::Runtime::new()?;
    let receiver = background.block_on(txmirror_tests::otlp::OtlpReceiver::start());
    let exporter = Telemetry::to_endpoint(&format!("{}/v1/traces", receiver.endpoint()))?;
    // What `txmirror` has without an endpoint: the log at its default level.
    let log = || tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(EnvFilter::new("error"));
    let off = tracing::Dispatch::new(tracing_subscriber::registry().with(log()));
    let on = tracing::Dispatch::new(
        tracing_subscriber::registry().with(log()).with(exporter.layer().with_filter(EnvFilter::new(EXPORTED_SPANS))),
    );
    type Build = Box<dyn Fn() -> Box<dyn Peer>>;
    let rows: Vec<(&str, Build, Option<&tracing::Dispatch>)> = vec![
        (
            "raw wasmtime, tuned pooling (reference)",
            Box::new(|| Box::new(ComponentPeer::new(guests::PEER_COMPONENT, EngineSetup::TunedPooling))),
            None,
        ),
        (
            "primary only, exporter off",
            Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, false))),
            Some(&off),
        ),
        (
            "primary only, exporter on",
            Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, false))),
            Some(&on),
        ),
        ("mirrored, exporter off", Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, true))), Some(&off)),
        ("mirrored, exporter on", Box::new(|| Box::new(TxmirrorPeer::new(guests::PEER_TXMIRROR, true))), Some(&on)),
    ];
    let none = tracing::Dispatch::none();
    let mut built: Vec<Box<dyn Peer>> = rows.iter().map(|(_, build, _)| build()).collect();
    for ((_, _, dispatch), peer) in rows.iter().zip(&mut built) {
        tracing::dispatcher::with_default(dispatch.unwrap_or(&none), || {
            (0..warm_up).try_for_each(|_| peer.call("transfer", TRANSFER).map(drop).map_err(anyhow::Error::msg))
        })?;
    }
    // Round-robin, as in `peers`.
    const ROUNDS: usize = 10;
    let mut samples = vec![Vec::with_capacity(calls); rows.len()];
    for _ in 0..ROUNDS {
        for (((_, _, dispatch), peer), samples) in rows.iter().zip(&mut built).zip(&mut samples) {
            tracing::dispatcher::with_default(dispatch.unwrap_or(&none), || {
                for _ in 0..calls / ROUNDS {
                    let started = Instant::now();
                    peer.call("transfer", TRANSFER).map_err(anyhow::Error::msg)?;
                    samples.push(started.elapsed());
                }
                anyhow::Ok(())
            })?;
        }
    }
    // What was batched leaves now; the receiver's count says it all arrived.
    drop(exporter);
    let exported = receiver.spans();
    let transactions = exported.iter().filter(|span| span.name == "txmirror.transaction").count();
    let measured: Vec<(Duration, Duration)> = samples.iter_mut().map(|s| percentiles(s)).collect();
    let mut table = String::new();
    writeln!(table, "| transfer | p50 | p99 | × raw, p50 | × exporter off, p50 |")?;
    writeln!(table, "|---|---|---|---|---|")?;
    for (n, ((name, _, _), (p50, p99))) in rows.iter().zip(&measured).enumerate() {
        let off =
            if name.ends_with("on") { format!("{:.2}×", micros(*p50) / micros(measured[n - 1].0)) } else { "".into() };
        writeln!(
            table,
            "| {name} | {:.1} µs | {:.1} µs | {:.2}× | {off} |",
            micros(*p50),
            micros(*p99),
            micros(*p50) / micros(measured[0].0),
        )?;
    }
    let made = 2 * (warm_up + calls / ROUNDS * ROUNDS);
    writeln!(
        table,
        "\n{calls} transfers per row after {warm_up} to warm up, in {ROUNDS} round-robin rounds; one thread; the \
         receiver got {} spans in {} requests, the spans of {transactions} of the {made} transactions run with the \
         exporter on (the batch processor drops what overflows its queue of 2,048).",
        exported.len(),
        receiver.requests(),
    )?;
    Ok(table)
}

/// The payment example charging through `gateway` (both paths), mirrored,
/// with the mirror's charges answered by a stub that names a charge.
fn payment_policy(gateway: &txmirror_tests::TestServer) -> String {
    format!(
        r#"failure_prediction_enabled = true
alternative_paths = ["charge-backup"]
[capabilities]
kv = {{ payments = "read-write" }}
streams = ["payments"]
outbound_hosts = ["{authority}"]
[config]
primary_gateway = "{url}"
backup_gateway = "{url}"
[[mirror.stubs]]
method = "POST"
url_prefix = "{url}/charges"
status = 201
body = '{{"charge_id": "stub"}}'
"#,
        authority = gateway.authority(),
        url = gateway.url(),
    )
}

/// How far ahead of the commit the predicted stream shows a payment.
fn streams(options: &Options) -> Result<String> {
    let charges = if options.quick { 20 } else { 300 };
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut table = String::new();
    writeln!(
        table,
        "| gateway answers after | charges | predicted | corrected | confirmed | mean lead, prediction → commit | charge p50 / p99 |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|")?;
    for delay in [0_u64, 20, 100] {
        let gateway = executor.block_on(txmirror_tests::TestServer::start(txmirror_tests::Behaviour {
            status: 201,
            body: r#"{"charge_id":"ch_{n}"}"#.into(),
            delay: Duration::from_millis(delay),
            ..Default::default()
        }));
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(&dir.path().join("state.redb"))?);
        let runtime = Runtime::with_store(txmirror_tests::config(dir.path()), store)?;
        let module = executor.block_on(txmirror_tests::load(&runtime, guests::PAYMENT));
        let policy = Arc::new(Policy::parse(&payment_policy(&gateway), Path::new("policy.toml"))?);
        let mut latencies = Vec::with_capacity(charges);
        for i in 0..charges {
            let input = format!(r#"{{"order_id":"order-{i}","amount_cents":1250,"currency":"EUR"}}"#);
            let request = TxRequest { path: Some("charge".into()), input: input.into_bytes(), ..Default::default() };
            let started = Instant::now();
            let report = executor.block_on(runtime.execute(&module, &policy, request))?;
            anyhow::ensure!(report.failure.is_none(), "charge {i} failed: {:?}", report.failure);
            latencies.push(started.elapsed());
        }
        let stats = runtime.prediction_stats("payments");
        let (p50, p99) = percentiles(&mut latencies);
        writeln!(
            table,
            "| {delay} ms | {charges} | {} | {} | {} | {:.1} ms | {:.1} ms / {:.1} ms |",
            stats.predicted,
            stats.corrected,
            stats.confirmed,
            stats.mean_lead_micros().unwrap_or_default() as f64 / 1e3,
            micros(p50) / 1e3,
            micros(p99) / 1e3,
        )?;
    }
    writeln!(
        table,
        "\nOne client charging one order after another through the payment example, mirrored, on redb on disk; \
         the gateway on 127.0.0.1 (axum) answers after the delay shown. The mirror's charge is answered by a stub, \
         so its `payments` event is published as soon as the mirror reaches it; the lead is from then to the \
         primary's commit. Each prediction is corrected, not confirmed: the event names the gateway's charge id, \
         which only the primary learns."
    )?;
    Ok(table)
}

/// A service on `data_dir` with one tenant, `bench`, whose operator and
/// client token is `BENCH_TOKEN`, and `webhooks`.
fn service_config(data_dir: &Path, webhooks: Vec<txmirror_service::WebhookConfig>) -> txmirror_service::ServiceConfig {
    let token = |role| txmirror_service::TokenConfig {
        name: format!("bench-{role}"),
        tenant: "bench".into(),
        role,
        sha256: txmirror_service::auth::hash_token(&format!("{BENCH_TOKEN}-{role}")),
        profile: None,
    };
    let tokens = vec![token(txmirror_service::Role::Client), token(txmirror_service::Role::Operator)];
    let mut config = txmirror_service::ServiceConfig::new(data_dir, tokens);
    config.cache_dir = txmirror_tests::config(data_dir).cache_dir;
    config.webhooks = webhooks;
    config
}

const BENCH_TOKEN: &str = "bench-token";

/// Commits `events` transfers (one `transfers` event each) into the bench
/// tenant's store, from 16 clients.
fn prefill(executor: &tokio::runtime::Runtime, data_dir: &Path, events: usize) -> Result<()> {
    executor.block_on(async {
        let service = txmirror_service::Service::open(&service_config(data_dir, Vec::new())).await?;
        let runtime = service.state.tenant("bench").context("the bench tenant")?.runtime().clone();
        let module = txmirror_tests::load(&runtime, guests::BANK_TRANSFER).await;
        let policy = Arc::new(Policy::parse(
            "[capabilities]\nkv = { accounts = \"read-write\" }\nstreams = [\"transfers\"]\n",
            Path::new("policy.toml"),
        )?);
        // Each client transfers between accounts of its own: no conflicts.
        for client in 0..16 {
            for account in [format!("a{client}"), format!("b{client}")] {
                let input = format!(r#"{{"account":"{account}","amount":1000000000}}"#);
                let request =
                    TxRequest { path: Some("deposit".into()), input: input.into_bytes(), ..Default::default() };
                runtime.execute(&module, &policy, request).await?;
            }
        }
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..16 {
            let (runtime, module, policy) = (runtime.clone(), module.clone(), policy.clone());
            clients.spawn(async move {
                for _ in (client..events).step_by(16) {
                    let input = format!(r#"{{"from":"a{client}","to":"b{client}","amount":1}}"#);
                    let request =
                        TxRequest { path: Some("transfer".into()), input: input.into_bytes(), ..Default::default() };
                    let report = runtime.execute(&module, &policy, request).await?;
                    anyhow::ensure!(report.failure.is_none(), "a transfer failed: {:?}", report.failure);
                }
                Ok(())
            });
        }
        while let Some(done) = clients.join_next().await {
            done??;
        }
        service.state.shut_down(Duration::ZERO).await;
        Ok(())
    })
}

/// Reads the `transfers` stream as Server-Sent Events from `base` until
/// `events` came: how long it took.
async fn read_sse(base: &str, events: usize) -> Result<Duration> {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let request = hyper::Request::get(format!("{base}/v1/streams/transfers/events"))
        .header("authorization", format!("Bearer {BENCH_TOKEN}-client"))
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())?;
    let started = Instant::now();
    let response = client.request(request).await?;
    anyhow::ensure!(response.status() == 200, "the stream answered {}", response.status());
    let mut body = response.into_body();
    let (mut seen, mut partial) = (0, Vec::new());
    while seen < events {
        let frame = body.frame().await.context("the stream ended early")??;
        let Some(data) = frame.data_ref() else { continue };
        partial.extend_from_slice(data);
        let complete = partial.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        seen += partial[..complete].split(|&b| b == b'\n').filter(|line| line.starts_with(b"id: ")).count();
        partial.drain(..complete);
    }
    Ok(started.elapsed())
}

/// A receiver that answers `204` and counts deliveries.
async fn counting_receiver() -> Result<(String, Arc<std::sync::atomic::AtomicUsize>)> {
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: bytes::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, count))
}

/// Events per second out of the service, through SSE and the relay.
fn delivery(options: &Options) -> Result<String> {
    let events = if options.quick { 500 } else { 20_000 };
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let filled = Instant::now();
    prefill(&executor, &data_dir, events)?;
    eprintln!("delivery: {events} events committed in {:.1} s", filled.elapsed().as_secs_f64());
    let mut table = String::new();
    writeln!(table, "| consumer | events | time | events per second |")?;
    writeln!(table, "|---|---|---|---|")?;
    let mut row = |consumer: &str, took: Duration| {
        writeln!(
            table,
            "| {consumer} | {events} | {:.2} s | {:.0} |",
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64()
        )
    };

    // Server-Sent Events from a real listener.
    let sse = executor.block_on(async {
        let service = txmirror_service::Service::open(&service_config(&data_dir, Vec::new())).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(axum::serve(listener, txmirror_service::app(service.state.clone())).into_future());
        let took = read_sse(&base, events).await;
        server.abort();
        service.state.shut_down(Duration::ZERO).await;
        took
    })?;
    row("one SSE client, from offset 0", sse)?;

    // The relay, from the service's start until the receiver has them all.
    let relayed = executor.block_on(async {
        let (url, count) = counting_receiver().await?;
        let webhook: txmirror_service::WebhookConfig = toml::from_str(&format!(
            "name = \"bench\"\ntenant = \"bench\"\nurl = \"{url}\"\nstreams = [\"transfers\"]\n\
             secret = \"a secret of at least sixteen bytes\"\n"
        ))?;
        let started = Instant::now();
        let service = txmirror_service::Service::open(&service_config(&data_dir, vec![webhook])).await?;
        while count.load(std::sync::atomic::Ordering::Relaxed) < events {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the relay did not finish in 10 minutes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        service.state.shut_down(Duration::ZERO).await;
        Ok(took)
    })?;
    row("the webhook relay, one receiver", relayed)?;
    writeln!(
        table,
        "\nA backlog of {events} committed `transfers` events (bank transfers, redb on disk, one tenant) drained by \
         one consumer of `txmirror serve` in-process, on 127.0.0.1: an SSE client reading from offset 0 over a \
         real socket, and the webhook relay POSTing each event, signed, one at a time and in order, to an axum \
         receiver that answers `204` (timed from the service's start, which includes opening its store)."
    )?;
    Ok(table)
}

/// The examples' sources, for the clean builds of the `python` section.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Builds the Rust example from nothing (a new target directory): the
/// time, as a user's first build sees it.
fn build_rust_example(into: &Path) -> Result<Duration> {
    let started = Instant::now();
    let status = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .env("CARGO_TARGET_DIR", into)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--package", "bank-transfer"])
        .arg("--manifest-path")
        .arg(examples_dir().join("Cargo.toml"))
        .status()?;
    anyhow::ensure!(status.success(), "cargo could not build the Rust example");
    Ok(started.elapsed())
}

/// Builds the Python example with componentize-py, from copies of its
/// sources (it writes `__pycache__` beside what it reads).
fn build_python_example(into: &Path) -> Result<Duration> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (from, to) in [
        (root.join("guest-sdk-python/txmirror"), into.join("sdk/txmirror")),
        (examples_dir().join("bank-transfer-python"), into.join("app")),
    ] {
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(&from)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "py") {
                std::fs::copy(&path, to.join(path.file_name().context("a file name")?))?;
            }
        }
    }
    let started = Instant::now();
    let output = std::process::Command::new(std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()))
        .env("PYTHONPATH", std::env::var_os("TXMIRROR_GUEST_PYTHONPATH").unwrap_or_default())
        .args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
        ])
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "transaction", "componentize", "-p"])
        .arg(into.join("sdk"))
        .arg("-p")
        .arg(into.join("app"))
        .arg("app")
        .arg("-o")
        .arg(into.join("app.wasm"))
        .output()?;
    anyhow::ensure!(output.status.success(), "componentize-py failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(started.elapsed())
}

/// The bank transfer in Rust and in Python, side by side.
fn python(options: &Options) -> Result<String> {
    let (instances, calls) = if options.quick { (20, 50) } else { (300, 1_500) };
    const ROUNDS: usize = 3;
    let examples = [
        ("Rust (`examples/bank-transfer`)", guests::BANK_TRANSFER),
        ("Python (`examples/bank-transfer-python`)", guests::BANK_TRANSFER_PYTHON),
    ];
    let executor = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let scratch = tempfile::tempdir()?;

    let mut cells: Vec<Vec<String>> = vec![Vec::new(); examples.len()];
    let builds = [
        build_rust_example(&scratch.path().join("rust-target"))?,
        build_python_example(&scratch.path().join("python"))?,
    ];
    for (i, (_, wasm)) in examples.iter().enumerate() {
        let bytes = std::fs::read(wasm)?;
        cells[i].push(format!("{:.2} MB", bytes.len() as f64 / 1e6));
        cells[i].push(format!("{:.1} s", builds[i].as_secs_f64()));
        // The first load compiles; a new runtime on the same cache loads
        // the compiled image.
        let cache = scratch.path().join(format!("cache-{i}"));
        let load = |name: &str| -> Result<Duration> {
            let mut config = txmirror_runtime::RuntimeConfig::new(scratch.path().join(format!("{name}-{i}")));
            config.cache_dir = Some(cache.clone());
            config.engine.max_instances = 8;
            let runtime = Runtime::open(config)?;
            let started = Instant::now();
            executor.block_on(runtime.load_module(&bytes))?;
            Ok(started.elapsed())
        };
        cells[i].push(format!("{:.1} s", load("first")?.as_secs_f64()));
        cells[i].push(format!("{:.1} ms", load("cached")?.as_secs_f64() * 1e3));
    }

    // Instantiation alone, then whole transactions (primary only and
    // mirrored, in RAM), each example in turn in every round.
    let raw: Vec<txmirror_benches::RawWasmtime> = examples
        .iter()
        .map(|(_, wasm)| txmirror_benches::RawWasmtime::new(&std::fs::read(wasm)?).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let mut peers: Vec<[TxmirrorPeer; 2]> =
        examples.iter().map(|(_, wasm)| [TxmirrorPeer::new(wasm, false), TxmirrorPeer::new(wasm, true)]).collect();
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; examples.len()];
    for i in 0..examples.len() {
        for _ in 0..instances / 10 {
            executor.block_on(raw[i].instantiate()).map_err(anyhow::Error::from)?;
        }
        for peer in &mut peers[i] {
            for _ in 0..calls / 10 {
                peer.call("transfer", TRANSFER).map_err(anyhow::Error::msg)?;
            }
        }
    }
    for _ in 0..ROUNDS {
        for i in 0..examples.len() {
            for _ in 0..instances / ROUNDS {
                let started = Instant::now();
                executor.block_on(raw[i].instantiate()).map_err(anyhow::Error::from)?;
                samples[i][0].push(started.elapsed());
            }
            for (mode, peer) in peers[i].iter_mut().enumerate() {
                for _ in 0..calls / ROUNDS {
                    let started = Instant::now();
                    peer.call("transfer", TRANSFER).map_err(anyhow::Error::msg)?;
                    samples[i][mode + 1].push(started.elapsed());
                }
            }
        }
    }
    for (i, measured) in samples.iter_mut().enumerate() {
        for samples in measured.iter_mut() {
            let (p50, p99) = percentiles(samples);
            cells[i].push(format!("{:.0} µs / {:.0} µs", micros(p50), micros(p99)));
        }
    }

    let mut table = String::new();
    writeln!(
        table,
        "| guest | component | clean build | first load (compile) | load from the cache | instantiation p50 / p99 | transfer, primary only, p50 / p99 | transfer, mirrored, p50 / p99 |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|")?;
    for ((name, _), cells) in examples.iter().zip(&cells) {
        writeln!(table, "| {name} | {} |", cells.join(" | "))?;
    }
    writeln!(
        table,
        "\nOne clean build and one load of each; instantiation alone on raw wasmtime with the runtime's engine \
         ({instances} instances), and {calls} whole transactions of each kind through the runtime on a store in RAM, \
         in {ROUNDS} rounds that alternate the two guests; one thread."
    )?;
    Ok(table)
}

/// Accounts of the durable benchmark: enough that concurrent transfers
/// rarely touch the same ones.
const ACCOUNTS: usize = 10_000;

struct Run {
    committed: usize,
    failed: usize,
    elapsed: Duration,
    cpu: Duration,
    /// The whole machine's busy CPU time over the run.
    machine_cpu: Duration,
    latency: (Duration, Duration),
    commits_per_fsync: f64,
}

/// A row's rounds as its table shows them: the median round's rate, the
/// rounds' range, the median round's p50, p99 and machine CPU per
/// transaction (as table cells); that round; and the failures of all.
fn rounds_columns(runs: &mut [Run]) -> (String, &Run, usize) {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let (lowest, highest) = (runs[0].rate(), runs[runs.len() - 1].rate());
    let failed = runs.iter().map(|run| run.failed).sum();
    let median = &runs[runs.len() / 2];
    let columns = format!(
        "{:.0} | {lowest:.0}–{highest:.0} | {:.0} µs | {:.0} µs | {:.0} µs",
        median.rate(),
        micros(median.latency.0),
        micros(median.latency.1),
        micros(median.machine_cpu) / median.committed.max(1) as f64,
    );
    (columns, median, failed)
}

impl Run {
    /// Transactions committed per second.
    fn rate(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` tasks on two worker threads transfer between random accounts
/// for `length`, each waiting for its transaction before sending the next,
/// on one embedded store on disk.
fn durable_run(mirrored: bool, clients: usize, batch_limit: usize, length: Duration) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn StateStore> = Arc::new(RedbStore::open(&dir.path().join("state.redb"))?);
    nodes_run(dir.path(), vec![store], mirrored, clients, batch_limit, length)
}

/// As [`durable_run`], with each store of `stores` a node of its own (its
/// own runtime, engine, instance limit and group commit), the clients
/// shared out between them in turn. Accounts are seeded through the first.
fn nodes_run(
    dir: &Path,
    stores: Vec<Arc<dyn StateStore>>,
    mirrored: bool,
    clients: usize,
    batch_limit: usize,
    length: Duration,
) -> Result<Run> {
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    txmirror_tests::seed_accounts(
        stores.first().context("no store")?.as_ref(),
        (0..ACCOUNTS).map(|i| (format!("account-{i}"), 1_000_000_000)),
    );
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bank-transfer/policy.toml"))?;
    let text = text.replace("failure_prediction_enabled = true", &format!("failure_prediction_enabled = {mirrored}"));
    let policy = Arc::new(Policy::parse(&text, Path::new("policy.toml"))?);
    let mut nodes = Vec::new();
    for store in stores {
        let mut config = txmirror_tests::config(dir);
        config.engine.max_instances = u32::try_from(clients * 2 + 8)?;
        config.commit_batch_limit = batch_limit;
        let runtime = Runtime::with_store(config, store)?;
        let module = executor.block_on(txmirror_tests::load(&runtime, guests::BANK_TRANSFER));
        nodes.push((runtime, module));
    }
    let stats = |nodes: &[(Runtime, txmirror_runtime::Module)]| {
        nodes.iter().fold((0, 0), |(batches, transactions), (runtime, _)| {
            (batches + runtime.commit_stats().batches(), transactions + runtime.commit_stats().transactions())
        })
    };
    let (batches_before, transactions_before) = stats(&nodes);
    let cpu = cpu_time::ProcessTime::now();
    let machine = machine_busy();
    let started = Instant::now();
    let results = closed_loop(&executor, clients, started, length, |client| {
        let (runtime, module) = nodes[client % nodes.len()].clone();
        let mut state = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = move || {
            // xorshift64: cheap, deterministic per client.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize % ACCOUNTS
        };
        let transfer = move || {
            let (from, to) = (next(), next());
            // A transfer to the same account is not one.
            let to = if from == to { (to + 1) % ACCOUNTS } else { to };
            let input = format!(r#"{{"from":"account-{from}","to":"account-{to}","amount":1}}"#);
            TxRequest { path: Some("transfer".into()), input: input.into_bytes(), ..Default::default() }
        };
        (runtime, module, policy.clone(), Box::new(transfer) as Requests)
    });
    let elapsed = started.elapsed();
    let cpu = cpu.elapsed();
    let machine_cpu = machine_busy().saturating_sub(machine);
    let (mut latencies, failed) = results;
    let (batches, transactions) = stats(&nodes);
    let (batches, transactions) = (batches - batches_before, transactions - transactions_before);
    Ok(Run {
        committed: latencies.len(),
        failed,
        elapsed,
        cpu,
        machine_cpu,
        latency: percentiles(&mut latencies),
        commits_per_fsync: transactions as f64 / batches.max(1) as f64,
    })
}

/// Each client's next request.
type Requests = Box<dyn FnMut() -> TxRequest + Send>;

/// `clients` tasks, each sending its requests (from `client(i)`: the
/// runtime, module and policy it uses and its requests) one after the
/// other, each waiting for its transaction, until `length` has passed since
/// `started`: the latencies of the committed ones, and how many did not
/// commit.
fn closed_loop(
    executor: &tokio::runtime::Runtime,
    clients: usize,
    started: Instant,
    length: Duration,
    client: impl Fn(usize) -> (Runtime, txmirror_runtime::Module, Arc<Policy>, Requests),
) -> (Vec<Duration>, usize) {
    executor.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let (runtime, module, policy, mut requests) = client(i);
                tokio::spawn(async move {
                    let (mut latencies, mut failed) = (Vec::new(), 0);
                    while started.elapsed() < length {
                        let sent = Instant::now();
                        match runtime.execute(&module, &policy, requests()).await {
                            Ok(report) if matches!(report.outcome, TransactionOutcome::Committed { .. }) => {
                                latencies.push(sent.elapsed())
                            }
                            _ => failed += 1,
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        let mut all = (Vec::new(), 0);
        for task in tasks {
            let (latencies, failed) = task.await.unwrap();
            all.0.extend(latencies);
            all.1 += failed;
        }
        all
    })
}

/// The machine's busy CPU time so far, every process's (the database's
/// too): from `/proc/stat`, in clock ticks of 10 ms.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|cpu| {
            // user nice system idle iowait irq softirq steal: all but idle and iowait.
            cpu.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .filter_map(|(_, n)| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Durable throughput on PostgreSQL with one, two and three nodes, beside
/// the embedded store, mirrored and primary-only: every row once per round,
/// in turn, so that the machine's drift (a neighbour's load, the disk's
/// flush times) falls on all rows alike; each row shows its median round.
fn nodes(options: &Options) -> Result<String> {
    let (length, rounds) = if options.quick { (Duration::from_millis(500), 1) } else { (Duration::from_secs(5), 3) };
    let postgres = txmirror_tests::postgres::TestPostgres::start_durable();
    let clients = 64;
    let rows: Vec<(Option<usize>, bool)> = [(None, false), (None, true)]
        .into_iter()
        .chain([1, 2, 3].into_iter().flat_map(|nodes| [(Some(nodes), false), (Some(nodes), true)]))
        .collect();
    let mut runs: Vec<Vec<Run>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (&(nodes, mirrored), runs) in rows.iter().zip(&mut runs) {
            let dir = tempfile::tempdir()?;
            let run = match nodes {
                None => durable_run(mirrored, clients, DEFAULT_BATCH_LIMIT, length)?,
                Some(count) => {
                    let url = postgres.fresh_database();
                    let stores = (0..count)
                        .map(|_| Ok(Arc::new(PostgresStore::connect(&url)?) as Arc<dyn StateStore>))
                        .collect::<Result<Vec<_>>>()?;
                    nodes_run(dir.path(), stores, mirrored, clients, DEFAULT_BATCH_LIMIT, length)?
                }
            };
            eprintln!("round {round}: nodes={nodes:?} mirrored={mirrored}: {:.0} tx/s", run.rate());
            runs.push(run);
        }
    }
    let mut table = String::new();
    writeln!(
        table,
        "| store | nodes | mode | clients | tx/s (median) | rounds' range | p50 | p99 | CPU per tx (machine) | tx per \
         commit | failed |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for ((nodes, mirrored), mut runs) in rows.into_iter().zip(runs) {
        let (columns, median, failed) = rounds_columns(&mut runs);
        writeln!(
            table,
            "| {} | {} | {} | {clients} | {columns} | {:.1} | {failed} |",
            if nodes.is_some() { "PostgreSQL" } else { "redb" },
            nodes.unwrap_or(1),
            if mirrored { "mirrored" } else { "primary only" },
            median.commits_per_fsync,
        )?;
    }
    writeln!(
        table,
        "\nBank transfers between {ACCOUNTS} accounts from {clients} clients, for {} s per row and round, {rounds} \
         rounds, in one process on this machine (2 cores): each node is a runtime of its own (engine, instance \
         limit, group commit) over its own connection pool, the clients shared out between the nodes. Each row \
         shows its median round (its p50, p99, CPU and commit sizes are that round's), the range of its rounds' \
         rates, and the failures of all its rounds. PostgreSQL 15 runs on 127.0.0.1 with its durable defaults \
         (`fsync=on`, `synchronous_commit=on`: a commit returns once its write-ahead log is flushed); redb fsyncs \
         each group commit. CPU is the whole machine's (the database's too) divided by the transactions \
         committed; \"tx per commit\" is how many transactions each group commit carried.",
        length.as_secs_f64()
    )?;
    Ok(table)
}

fn durable(options: &Options) -> Result<String> {
    let length = if options.quick { Duration::from_millis(500) } else { Duration::from_secs(5) };
    let mut table = String::new();
    writeln!(table, "| mode | clients | tx/s | p50 | p99 | CPU per tx | tx per fsync | failed |")?;
    writeln!(table, "|---|---|---|---|---|---|---|---|")?;
    // The last two rows turn group commit off: one fsync per transaction.
    let rows = [1, 16, 64, 256]
        .into_iter()
        .flat_map(|clients| [(false, clients, DEFAULT_BATCH_LIMIT), (true, clients, DEFAULT_BATCH_LIMIT)])
        .chain([(false, 64, 1), (true, 64, 1)]);
    for (mirrored, clients, batch_limit) in rows {
        let run = durable_run(mirrored, clients, batch_limit, length)?;
        let rate = run.committed as f64 / run.elapsed.as_secs_f64();
        writeln!(
            table,
            "| {}{} | {clients} | {rate:.0} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} | {} |",
            if mirrored { "mirrored" } else { "primary only" },
            if batch_limit == 1 { ", no group commit" } else { "" },
            micros(run.latency.0),
            micros(run.latency.1),
            micros(run.cpu) / run.committed.max(1) as f64,
            run.commits_per_fsync,
            run.failed,
        )?;
        eprintln!("measured {clients} clients, mirrored: {mirrored}, batch limit {batch_limit}");
    }
    writeln!(
        table,
        "\nBank transfers (`examples/bank-transfer`, its own policy) between {ACCOUNTS} accounts, for {} s per row; \
         an embedded store on disk, every commit durable (fsync); two tokio worker threads. CPU is the whole \
         process's (all threads) divided by the transactions committed.",
        length.as_secs_f64()
    )?;
    Ok(table)
}

/// One row of `effects`: `clients` tasks charge, each transaction one
/// unsafe call to `gateway` and one key of its own, for `length`.
fn effects_run(
    executor: &tokio::runtime::Runtime,
    dir: &Path,
    store: Arc<dyn StateStore>,
    gateway: &txmirror_tests::TestServer,
    journal: bool,
    clients: usize,
    length: Duration,
) -> Result<Run> {
    let text = format!(
        "failure_prediction_enabled = false\n[effects]\njournal = {journal}\n\
         [capabilities]\nkv = {{ scratch = \"read-write\" }}\noutbound_hosts = [\"{}\"]\n\
         [config]\nsink = \"{}/charges\"\n",
        gateway.authority(),
        gateway.url()
    );
    let policy = Arc::new(Policy::parse(&text, Path::new("policy.toml"))?);
    let mut config = txmirror_tests::config(dir);
    config.engine.max_instances = u32::try_from(clients * 2 + 8)?;
    let runtime = Runtime::with_store(config, store)?;
    let module = executor.block_on(txmirror_tests::load(&runtime, guests::EFFECTS));
    let machine = machine_busy();
    let cpu = cpu_time::ProcessTime::now();
    let started = Instant::now();
    let results = closed_loop(executor, clients, started, length, |client| {
        let mut n = 0_u64;
        let charge = move || {
            n += 1;
            let input = format!(r#"{{"order":"c{client}-{n}"}}"#);
            TxRequest { path: Some("charge".into()), input: input.into_bytes(), ..Default::default() }
        };
        (runtime.clone(), module.clone(), policy.clone(), Box::new(charge) as Requests)
    });
    let (mut latencies, failed) = results;
    Ok(Run {
        committed: latencies.len(),
        failed,
        elapsed: started.elapsed(),
        cpu: cpu.elapsed(),
        machine_cpu: machine_busy().saturating_sub(machine),
        latency: percentiles(&mut latencies),
        commits_per_fsync: runtime.commit_stats().transactions() as f64
            / runtime.commit_stats().batches().max(1) as f64,
    })
}

/// The effect journal's cost per unsafe call: a path that charges once
/// (the `effects` guest's `charge`: a read, a POST, a write), journalled
/// and not, on the embedded store and on PostgreSQL, primary only; rows in
/// turn, three rounds, each row's median round.
fn effects(options: &Options) -> Result<String> {
    let (length, rounds) = if options.quick { (Duration::from_millis(500), 1) } else { (Duration::from_secs(5), 3) };
    let executor = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let gateway = executor.block_on(txmirror_tests::TestServer::start(txmirror_tests::Behaviour {
        status: 201,
        body: r#"{"charge_id":"ch"}"#.into(),
        ..Default::default()
    }));
    let postgres = txmirror_tests::postgres::TestPostgres::start_durable();
    let clients = 16;
    let rows = [("redb", true), ("redb", false), ("PostgreSQL", true), ("PostgreSQL", false)];
    let mut runs: Vec<Vec<Run>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (&(store, journal), runs) in rows.iter().zip(&mut runs) {
            let dir = tempfile::tempdir()?;
            let opened: Arc<dyn StateStore> = match store {
                "redb" => Arc::new(RedbStore::open(&dir.path().join("state.redb"))?),
                _ => Arc::new(PostgresStore::connect(&postgres.fresh_database())?),
            };
            let run = effects_run(&executor, dir.path(), opened, &gateway, journal, clients, length)?;
            eprintln!("round {round}: {store}, journal {journal}: {:.0} tx/s", run.rate());
            runs.push(run);
        }
    }
    let mut table = String::new();
    writeln!(
        table,
        "| store | journal | clients | tx/s (median) | rounds' range | p50 | p99 | CPU per tx (machine) | failed |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|")?;
    for ((store, journal), mut runs) in rows.into_iter().zip(runs) {
        let (columns, _, failed) = rounds_columns(&mut runs);
        writeln!(table, "| {store} | {} | {clients} | {columns} | {failed} |", if journal { "on" } else { "off" })?;
    }
    writeln!(
        table,
        "\nEach transaction reads a key, POSTs one charge to a gateway on 127.0.0.1 (axum, answering at once) \
         and writes the key, primary only, from {clients} clients, {} s per row and round, {rounds} rounds in \
         turn; each row shows its median round. Journalled, the charge's intent and its answer are each one \
         durable write of their own (an fsync on redb, a committed SQL transaction on PostgreSQL) besides the \
         transaction's group commit.",
        length.as_secs_f64()
    )?;
    Ok(table)
}
