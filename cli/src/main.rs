//! `txmirror`: run transactions and inspect what they did.
//!
//! Exit codes:
//! - 0: the transaction committed (or, with `--dry-run`, the path returned);
//! - 1: the transaction ran and failed (the report says why);
//! - 2: the command line is wrong;
//! - 3: the module was refused;
//! - 4: the policy was refused, or does not fit the module;
//! - 5: the store or the runtime failed.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use txmirror_runtime::dataset;
use txmirror_runtime::predict::Model;
use txmirror_runtime::predict::evaluation::evaluate;
use txmirror_runtime::store::TransactionOutcome;
use txmirror_runtime::{
    ExecuteError, ModelConfig, ModuleError, Policy, PolicyError, Runtime, RuntimeConfig, StartError, TxReport,
    TxRequest,
};

mod remote;
mod render;
mod serve;
mod workload;

#[derive(Parser, Debug)]
#[command(
    name = "txmirror",
    version,
    about = "Run Wasm transactions beside a read-only mirror that predicts their failures."
)]
struct Cli {
    /// The data directory of the embedded store and the compile cache.
    #[arg(long, global = true, env = "TXMIRROR_DATA_DIR", default_value = "txmirror-data")]
    data_dir: PathBuf,

    /// An ONNX failure-prediction model (see models/README.md) that scores
    /// beside the policy's rules; replacing the file swaps the model in.
    /// Without one, the rules decide alone. The ONNX Runtime library is
    /// found through ORT_DYLIB_PATH.
    #[arg(long, global = true, env = "TXMIRROR_MODEL")]
    model: Option<PathBuf>,

    /// A running service (`txmirror serve`) to talk to instead of the local
    /// store: `tx`, `dlq`, `model status|reload`, `module upload`, `policy
    /// put` and `submit` then go through its API.
    #[arg(long, global = true, env = "TXMIRROR_SERVER")]
    server: Option<String>,

    /// The bearer token for --server.
    #[arg(long, global = true, env = "TXMIRROR_TOKEN", hide_env_values = true)]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one transaction and prints its result, commit version and traces.
    Run {
        /// The module: a Wasm component targeting txmirror:transaction.
        module: PathBuf,
        /// The policy file (TOML).
        #[arg(long)]
        policy: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Runs only the mirror: shows what would happen, changes nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prints the full report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Uploads a module to the service (--server; developer token).
    Upload {
        /// The module.
        module: PathBuf,
    },
    /// Puts a module's policy on the service (--server; operator token).
    PutPolicy {
        /// The module's hash.
        module: String,
        /// The policy file (TOML).
        policy: PathBuf,
    },
    /// Submits a transaction to the service (--server; client token).
    Submit {
        /// The module's hash.
        module: String,
        #[command(flatten)]
        request: RequestArgs,
        /// Returns once the transaction is durably accepted, with its id.
        #[arg(long = "async")]
        asynchronous: bool,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Loads a module and prints its hash and paths.
    Inspect {
        /// The module.
        module: PathBuf,
    },
    /// Transactions recorded in the store.
    Tx {
        #[command(subcommand)]
        command: TxCommand,
    },
    /// The dead-letter queue: transactions that failed on every path.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Prints the events of a stream.
    Events {
        /// The stream.
        stream: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Drives the example modules through the runtime against local
    /// gateways with injected faults (see docs/learning.md).
    Workload {
        /// The seed: one seed, one workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many transactions.
        #[arg(long, default_value_t = 500)]
        size: usize,
        /// `observe`: predictions recorded, no action taken; `act`: the
        /// predictor acts; `adaptive`: it acts, with a mirror only where the
        /// prior is uncertain; `retry-only`: no mirror at all.
        #[arg(long, value_enum, default_value = "observe")]
        mode: workload::Mode,
        /// Where the example modules were built.
        #[arg(long, default_value = "target/wasm32-wasip2/release")]
        modules: PathBuf,
        /// Transactions in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Stops starting transactions after this many seconds.
        #[arg(long, default_value_t = 600)]
        time_limit_secs: u64,
        /// In `act` and `adaptive` modes, the share of attempts left unadjusted for honest labels.
        #[arg(long, default_value_t = 0.05)]
        exploration_share: f32,
        /// Also writes the summary and every outcome as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Serves the runtime over HTTP (the API: GET /openapi.json; the
    /// operator page: GET /). The configuration file sets the listen
    /// address, the data directory, the model and the tokens; the global
    /// --data-dir and --model are not used.
    Serve {
        /// The configuration file (TOML; see docs/service.md).
        #[arg(long, default_value = "txmirror.toml")]
        config: PathBuf,
        /// Listens here instead of the configuration's address (port 0: any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Tokens for the service.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The learning loop: datasets of labelled attempts.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

/// What a transaction request names, for `run` and `submit`.
#[derive(clap::Args, Debug)]
struct RequestArgs {
    /// The input document, or `@FILE` to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The path to run; the policy's default path if omitted.
    #[arg(long)]
    path: Option<String>,
    /// The transaction id; generated if omitted.
    #[arg(long)]
    transaction_id: Option<String>,
    /// Makes the request idempotent: a repeat with the same key runs
    /// nothing and gets the first one's outcome.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Makes a token: prints it once on standard error, and on standard
    /// output the `[[tokens]]` entry (with only its SHA-256) to append to the
    /// service's configuration.
    New {
        /// The tenant the token acts for.
        #[arg(long)]
        tenant: String,
        /// developer, operator or client.
        #[arg(long)]
        role: RoleArg,
        /// A name for logs; TENANT-ROLE if omitted.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum RoleArg {
    Developer,
    Operator,
    Client,
}

impl From<RoleArg> for txmirror_service::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Developer => Self::Developer,
            RoleArg::Operator => Self::Operator,
            RoleArg::Client => Self::Client,
        }
    }
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Writes every scored attempt in the store as a labelled example
    /// (CSV with a format line; see docs/learning.md).
    ExportDataset {
        /// The file to write; `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
    /// The service's model and why its file last failed to load (--server).
    Status,
    /// Makes the service load its model file again now (--server).
    Reload,
    /// Scores a dataset's labelled examples with the model (`--model`) and
    /// prints the numbers of its model card, beside the rules alone.
    Evaluate {
        /// A dataset file (see docs/learning.md).
        #[arg(long)]
        dataset: PathBuf,
        /// The threshold; the one the model was trained with if omitted.
        #[arg(long)]
        threshold: Option<f64>,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
        /// Also writes every labelled example's model score and label (CSV).
        #[arg(long)]
        scores_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Lists dead letters, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Prints a dead letter with its whole history.
    Show {
        /// The transaction id.
        id: String,
    },
    /// Runs a dead letter again (once); removes it if it commits.
    Replay {
        /// The transaction id.
        id: String,
        /// The module it failed on (its hash must match); not with --server.
        module: Option<PathBuf>,
        /// The policy to run it under; not with --server.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Prints the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes a dead letter without running it.
    Drop {
        /// The transaction id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TxCommand {
    /// Prints the whole story of a transaction: attempts, paths, traces,
    /// predictions, gate decisions and outcome.
    Show {
        /// The transaction id.
        id: String,
        /// Prints the durable record as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lists recent transactions, newest first (--server).
    List {
        /// Only `pending`, `committed` or `failed` ones.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// An error with the exit code it maps to.
struct Failed {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = match error.downcast_ref::<ExecuteError>() {
            _ if error.is::<ModuleError>() => 3,
            _ if error.is::<PolicyError>() => 4,
            Some(
                ExecuteError::Policy(_)
                | ExecuteError::UnknownPath { .. }
                | ExecuteError::DuplicateId(_)
                | ExecuteError::InvalidIdempotencyKey(_)
                | ExecuteError::IdempotencyKeyReused { .. }
                | ExecuteError::NoSuchDeadLetter(_)
                | ExecuteError::ModuleMismatch { .. },
            ) => 4,
            _ => 5,
        };
        Self { code, error }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TXMIRROR_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(5);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failed { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failed> {
    if let Some(server) = &cli.server {
        let remote = remote::Remote::new(server, cli.token.clone())?;
        // The client is blocking: it runs off the async workers.
        return tokio::task::spawn_blocking(move || remote_command(&remote, cli.command))
            .await
            .map_err(|e| Failed { code: 5, error: e.into() })?;
    }
    match cli.command {
        Command::Upload { .. }
        | Command::PutPolicy { .. }
        | Command::Submit { .. }
        | Command::Tx { command: TxCommand::List { .. } }
        | Command::Model { command: ModelCommand::Status | ModelCommand::Reload } => Err(Failed {
            code: 2,
            error: anyhow::anyhow!("this command talks to a service: give --server URL (and --token)"),
        }),
        Command::Run {
            module,
            policy,
            request: RequestArgs { input, path, transaction_id, idempotency_key },
            dry_run,
            json,
        } => {
            let runtime = open_with_model(&cli.data_dir, cli.model.as_deref())?;
            let policy = Arc::new(Policy::from_file(&policy)?);
            let module = load(&runtime, &module).await?;
            let input = read_input(&input)?;
            let request = TxRequest { transaction_id, path, input, idempotency_key, caller: None };
            if dry_run {
                let dry = runtime.dry_run(&module, &policy, request).await?;
                print(&if json { serde_json::to_string_pretty(&dry)? } else { render::dry_run(&dry) });
                return Ok(if dry.result.is_ok() { 0 } else { 1 });
            }
            let report = runtime.execute(&module, &policy, request).await?;
            print(&if json { serde_json::to_string_pretty(&report)? } else { render::report(&report) });
            Ok(exit_code(&report))
        }
        Command::Inspect { module } => {
            let runtime = open(&cli.data_dir)?;
            let module = load(&runtime, &module).await?;
            print(&format!(
                "module {}\npaths: {}\npre-initialised: {}",
                module.hash(),
                module.paths().join(", "),
                if module.is_preinitialized() { "yes" } else { "no" }
            ));
            Ok(0)
        }
        Command::Tx { command: TxCommand::Show { id, json } } => {
            let runtime = open(&cli.data_dir)?;
            match runtime.transaction(&id)? {
                Some(record) if json => {
                    print(&serde_json::to_string_pretty(&record)?);
                    Ok(0)
                }
                Some(record) => {
                    let mut report = TxReport::from_record(record);
                    report.deduplicated = false;
                    print(&render::report(&report));
                    Ok(0)
                }
                None => Err(Failed {
                    code: 4,
                    error: anyhow::anyhow!("no transaction `{id}` in {}", cli.data_dir.display()),
                }),
            }
        }
        Command::Dlq { command } => dlq(&cli.data_dir, cli.model.as_deref(), command).await,
        Command::Workload { seed, size, mode, modules, concurrency, time_limit_secs, exploration_share, report } => {
            let runtime = open_with_model(&cli.data_dir, cli.model.as_deref())?;
            let options = workload::Options {
                seed,
                size,
                mode,
                modules,
                concurrency,
                time_limit: std::time::Duration::from_secs(time_limit_secs),
                exploration_share,
            };
            let summary = workload::run(&runtime, &options).await?;
            print(&summary.text());
            if let Some(report) = report {
                std::fs::write(&report, serde_json::to_string_pretty(&summary)?)
                    .with_context(|| format!("cannot write {}", report.display()))?;
            }
            Ok(0)
        }
        Command::Serve { config, listen } => Ok(serve::serve(&config, listen).await?),
        Command::Token { command: TokenCommand::New { tenant, role, name } } => {
            print(&serve::new_token(&tenant, role.into(), name.as_deref()));
            Ok(0)
        }
        Command::Model { command: ModelCommand::Evaluate { dataset, threshold, json, scores_out } } => {
            let Some(model_path) = cli.model.as_deref() else {
                return Err(Failed { code: 2, error: anyhow::anyhow!("`model evaluate` needs --model FILE.onnx") });
            };
            let model = Model::load(model_path, None)
                .map_err(|error| anyhow::Error::new(error).context("the prediction model was refused"))?;
            let file = std::fs::File::open(&dataset).with_context(|| format!("cannot open {}", dataset.display()))?;
            let examples = dataset::read_csv(std::io::BufReader::new(file))
                .with_context(|| format!("cannot read the dataset {}", dataset.display()))?;
            let threshold = threshold.or(model.info().threshold).unwrap_or(0.5);
            let mut by_model = Vec::new();
            let mut by_rules = Vec::new();
            for example in examples.iter() {
                let Some(failed) = example.failed else { continue };
                by_model.push((f64::from(model.score(&example.features)?), failed));
                by_rules.push((f64::from(example.rules_probability), failed));
            }
            let (model_numbers, rules_numbers) = (evaluate(&by_model, threshold), evaluate(&by_rules, 0.3));
            if let Some(path) = scores_out {
                let mut text = String::from("model_probability,rules_probability,failed\n");
                for ((model, failed), (rules, _)) in by_model.iter().zip(&by_rules) {
                    text.push_str(&format!("{model},{rules},{}\n", u8::from(*failed)));
                }
                std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                let value = serde_json::json!({
                    "model": model.info().label(),
                    "threshold": threshold,
                    "holdout": model_numbers,
                    "rules_alone": rules_numbers,
                });
                print(&serde_json::to_string_pretty(&value)?);
            } else {
                print(&render::evaluation(&model.info().label(), threshold, &model_numbers, &rules_numbers));
            }
            Ok(0)
        }
        Command::Model { command: ModelCommand::ExportDataset { out } } => {
            let runtime = open(&cli.data_dir)?;
            let count = export_dataset(&runtime, &out)?;
            eprintln!("wrote {count} examples to {}", out.display());
            Ok(0)
        }
        Command::Events { stream, after, limit } => {
            let runtime = open(&cli.data_dir)?;
            for event in runtime.events(&stream, after, limit)? {
                let payload = String::from_utf8_lossy(&event.payload);
                print(&format!("#{} v{} {} {payload}", event.sequence, event.version, event.transaction_id));
            }
            Ok(0)
        }
    }
}

async fn dlq(data_dir: &Path, model: Option<&Path>, command: DlqCommand) -> Result<u8, Failed> {
    let runtime = match command {
        DlqCommand::Replay { .. } => open_with_model(data_dir, model)?,
        _ => open(data_dir)?,
    };
    let missing =
        |id: &str| Failed { code: 4, error: anyhow::anyhow!("no dead letter `{id}` in {}", data_dir.display()) };
    match command {
        DlqCommand::List { limit } => {
            for letter in runtime.dead_letters(limit)? {
                print(&format!(
                    "{}  path {}  {} attempts  {}: {}",
                    letter.transaction_id,
                    letter.path,
                    letter.attempts.len(),
                    letter.failure.kind,
                    letter.failure.message
                ));
            }
            Ok(0)
        }
        DlqCommand::Show { id } => {
            let letter = runtime.dead_letter(&id)?.ok_or_else(|| missing(&id))?;
            print(&serde_json::to_string_pretty(&letter)?);
            Ok(0)
        }
        DlqCommand::Replay { id, module, policy, json } => {
            let (Some(module), Some(policy)) = (module, policy) else {
                return Err(Failed {
                    code: 2,
                    error: anyhow::anyhow!("a local replay needs the module and --policy (the service knows both)"),
                });
            };
            let policy = Arc::new(Policy::from_file(&policy)?);
            let module = load(&runtime, &module).await?;
            let report = runtime.replay_dead_letter(&module, &policy, &id).await.map_err(|error| match error {
                ExecuteError::NoSuchDeadLetter(_) => missing(&id),
                other => Failed::from(other),
            })?;
            print(&if json { serde_json::to_string_pretty(&report)? } else { render::report(&report) });
            Ok(exit_code(&report))
        }
        DlqCommand::Drop { id } => {
            if runtime.drop_dead_letter(&id)? {
                print(&format!("dropped {id}"));
                Ok(0)
            } else {
                Err(missing(&id))
            }
        }
    }
}

/// A command through a service's API.
fn remote_command(remote: &remote::Remote, command: Command) -> Result<u8, Failed> {
    match command {
        Command::Upload { module } => remote::upload(remote, &module),
        Command::PutPolicy { module, policy } => remote::put_policy(remote, &module, &policy),
        Command::Submit {
            module,
            request: RequestArgs { input, path, transaction_id, idempotency_key },
            asynchronous,
            json,
        } => {
            let input = read_input(&input)?;
            let input: serde_json::Value = serde_json::from_slice(&input)
                .map_err(|e| Failed { code: 2, error: anyhow::anyhow!("--input is not JSON: {e}") })?;
            let body = serde_json::json!({ "input": input, "path": path, "transaction_id": transaction_id });
            remote::submit(remote, &module, body, idempotency_key.as_deref(), asynchronous, json)
        }
        Command::Tx { command: TxCommand::Show { id, json } } => remote::tx_show(remote, &id, json),
        Command::Tx { command: TxCommand::List { status, limit } } => remote::tx_list(remote, status.as_deref(), limit),
        Command::Dlq { command: DlqCommand::List { .. } } => remote::dlq_list(remote),
        Command::Dlq { command: DlqCommand::Show { id } } => remote::show(remote, &format!("/v1/dlq/{id}")),
        Command::Dlq { command: DlqCommand::Replay { id, json, .. } } => {
            remote::print_report(remote::post(remote, &format!("/v1/dlq/{id}/replay"))?, json)
        }
        Command::Dlq { command: DlqCommand::Drop { id } } => {
            remote::delete(remote, &format!("/v1/dlq/{id}"))?;
            print(&format!("dropped {id}"));
            Ok(0)
        }
        Command::Model { command: ModelCommand::Status } => remote::show(remote, "/v1/model"),
        Command::Model { command: ModelCommand::Reload } => {
            let answer = remote::post(remote, "/v1/model/reload")?;
            print(&serde_json::to_string_pretty(&answer).map_err(|e| Failed { code: 5, error: e.into() })?);
            Ok(0)
        }
        _ => Err(Failed {
            code: 2,
            error: anyhow::anyhow!("this command works on a local store only: leave out --server"),
        }),
    }
}

/// Writes the dataset of every transaction in the store, page by page.
fn export_dataset(runtime: &Runtime, out: &Path) -> anyhow::Result<usize> {
    let mut examples = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = runtime.transactions(after.as_deref(), 1_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        examples.extend(page.iter().flat_map(dataset::examples));
    }
    let count = if out == Path::new("-") {
        dataset::write_csv(std::io::stdout().lock(), examples)?
    } else {
        let file = std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        dataset::write_csv(std::io::BufWriter::new(file), examples)?
    };
    Ok(count)
}

fn open(data_dir: &Path) -> anyhow::Result<Runtime> {
    open_with_model(data_dir, None)
}

/// Opens the runtime, with the prediction model if one is given.
fn open_with_model(data_dir: &Path, model: Option<&Path>) -> anyhow::Result<Runtime> {
    let mut config = RuntimeConfig::new(data_dir);
    config.model = model.map(ModelConfig::new);
    Runtime::open(config).map_err(|error| match error {
        StartError::Model(error) => anyhow::Error::new(error).context("the prediction model was refused"),
        other => anyhow::Error::new(other).context(format!("cannot open the data directory {}", data_dir.display())),
    })
}

async fn load(runtime: &Runtime, path: &Path) -> Result<txmirror_runtime::Module, Failed> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))?;
    runtime.load_module(&bytes).await.map_err(|error| Failed {
        code: 3,
        error: anyhow::Error::new(error).context(format!("module {} refused", path.display())),
    })
}

fn read_input(input: &str) -> anyhow::Result<Vec<u8>> {
    match input.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("cannot read input file {file}")),
        None => Ok(input.as_bytes().to_vec()),
    }
}

fn exit_code(report: &TxReport) -> u8 {
    match report.outcome {
        TransactionOutcome::Committed { .. } => 0,
        _ => 1,
    }
}

#[allow(clippy::print_stdout, reason = "printing is what the command-line tool is for")]
fn print(text: &str) {
    println!("{text}");
}
