//! The subcommands, one file and one struct each, each with `execute`;
//! dispatched once, in [`Command::execute`].
//!
//! A command acts on a [`Target`]: the local store (`--data-dir`), or a
//! running service (`--server`). Those that make sense on one side only
//! refuse the other with exit code 2.

mod dlq;
mod events;
mod inspect;
mod model;
mod nodes;
mod paths;
mod put_policy;
mod run;
mod serve;
mod submit;
mod tls;
mod token;
mod tx;
mod upload;
mod webhooks;
mod workload;

use crate::exit::Failed;
use crate::remote::Remote;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use txmirror_runtime::store::TransactionOutcome;
use txmirror_runtime::{ModelConfig, Module, Runtime, RuntimeConfig, StartError, TxReport};

/// What `txmirror` does.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Runs one transaction and prints its result, commit version and traces.
    Run(run::RunCommand),
    /// Uploads a module to the service (--server; developer token).
    Upload(upload::UploadCommand),
    /// Puts a module's policy on the service (--server; operator token).
    PutPolicy(put_policy::PutPolicyCommand),
    /// Submits a transaction to the service (--server; client token).
    Submit(submit::SubmitCommand),
    /// Loads a module and prints its hash and paths.
    Inspect(inspect::InspectCommand),
    /// Transactions recorded in the store.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// The dead-letter queue: transactions that failed on every path.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// A stream's committed events, and its consumer groups.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Drives the example modules through the runtime against local
    /// gateways with injected faults (see docs/learning.md).
    Workload(workload::WorkloadCommand),
    /// Serves the runtime over HTTP (the API: GET /openapi.json; the
    /// operator page: GET /). The configuration file sets the listen
    /// address, the data directory, the model and the tokens; the global
    /// --data-dir and --model are not used.
    Serve(serve::ServeCommand),
    /// Tokens for the service.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// How a module's paths fare: its A/B split's arms compared.
    #[command(subcommand)]
    Paths(paths::PathsCommand),
    /// Certificates for the service's HTTPS.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// The learning loop: datasets of labelled attempts, and the model.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// The nodes serving one database, and the tenant's transactions in
    /// flight with the node holding each (--server; operator token).
    Nodes(nodes::NodesCommand),
    /// The webhook relay: progress, breakers, undeliverable events and
    /// their replay (--server; operator token).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

impl Command {
    /// Runs the command.
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match self {
            Self::Run(command) => command.execute(target).await,
            Self::Upload(command) => command.execute(target).await,
            Self::PutPolicy(command) => command.execute(target).await,
            Self::Submit(command) => command.execute(target).await,
            Self::Inspect(command) => command.execute(target).await,
            Self::Tx(command) => command.execute(target).await,
            Self::Dlq(command) => command.execute(target).await,
            Self::Events(command) => command.execute(target).await,
            Self::Workload(command) => command.execute(target).await,
            Self::Serve(command) => command.execute(target).await,
            Self::Token(command) => command.execute(target).await,
            Self::Tls(command) => command.execute(target).await,
            Self::Paths(command) => command.execute(target).await,
            Self::Model(command) => command.execute(target).await,
            Self::Nodes(command) => command.execute(target).await,
            Self::Webhooks(command) => command.execute(target).await,
        }
    }
}

/// Where a command acts.
#[derive(Debug)]
pub(crate) enum Target {
    /// The embedded store in a data directory.
    Local(Local),
    /// A running service.
    Remote(Remote),
}

/// The local store's settings.
#[derive(Debug)]
pub(crate) struct Local {
    /// The data directory of the embedded store and the compile cache.
    pub(crate) data_dir: PathBuf,
    /// The ONNX model that scores beside the rules, if any.
    pub(crate) model: Option<PathBuf>,
}

impl Target {
    /// The local store; a command for it refuses `--server`.
    pub(crate) fn local(self) -> Result<Local, Failed> {
        match self {
            Self::Local(local) => Ok(local),
            Self::Remote(_) => Err(Failed::usage("this command works on a local store only: leave out --server")),
        }
    }

    /// Runs `call` against the service, off the async workers (the client
    /// blocks); a command for a service refuses to run without `--server`.
    pub(crate) async fn remote<T: Send + 'static>(
        self,
        call: impl FnOnce(&Remote) -> Result<T, Failed> + Send + 'static,
    ) -> Result<T, Failed> {
        match self {
            Self::Remote(remote) => blocking(remote, call).await,
            Self::Local(_) => Err(Failed::usage("this command talks to a service: give --server URL (and --token)")),
        }
    }
}

/// Runs a blocking call against the service on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    remote: Remote,
    call: impl FnOnce(&Remote) -> Result<T, Failed> + Send + 'static,
) -> Result<T, Failed> {
    tokio::task::spawn_blocking(move || call(&remote)).await.map_err(|e| Failed { code: 5, error: e.into() })?
}

impl Local {
    /// Opens the runtime on the store, without a model.
    pub(crate) fn open(&self) -> anyhow::Result<Runtime> {
        self.open_runtime(None)
    }

    /// Opens the runtime on the store, with the model if one was given.
    pub(crate) fn open_with_model(&self) -> anyhow::Result<Runtime> {
        self.open_runtime(self.model.as_deref())
    }

    fn open_runtime(&self, model: Option<&Path>) -> anyhow::Result<Runtime> {
        let mut config = RuntimeConfig::new(&self.data_dir);
        config.model = model.map(ModelConfig::new);
        Runtime::open(config).map_err(|error| match error {
            StartError::Model(error) => anyhow::Error::new(error).context("the prediction model was refused"),
            other => {
                anyhow::Error::new(other).context(format!("cannot open the data directory {}", self.data_dir.display()))
            }
        })
    }
}

/// Loads a module from a file (exit code 3 if refused).
pub(crate) async fn load(runtime: &Runtime, path: &Path) -> Result<Module, Failed> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))?;
    runtime.load_module(&bytes).await.map_err(|error| Failed {
        code: 3,
        error: anyhow::Error::new(error).context(format!("module {} refused", path.display())),
    })
}

/// What a transaction request names, for `run` and `submit`.
#[derive(clap::Args, Debug)]
pub(crate) struct RequestArgs {
    /// The input document, or `@FILE` to read it from a file.
    #[arg(long, default_value = "{}")]
    pub(crate) input: String,
    /// The path to run; the policy's default path if omitted.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// The transaction id; generated if omitted.
    #[arg(long)]
    pub(crate) transaction_id: Option<String>,
    /// Makes the request idempotent: a repeat with the same key runs
    /// nothing and gets the first one's outcome; the key used for another
    /// request is refused.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// The caller's profile in the policy (`[profiles.NAME]`), which
    /// orders the paths when the policy describes them (`[paths.NAME]`).
    #[arg(long)]
    pub(crate) profile: Option<String>,
}

impl RequestArgs {
    /// The input's bytes: the argument, or the file it names with `@`.
    pub(crate) fn input_bytes(&self) -> anyhow::Result<Vec<u8>> {
        match self.input.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("cannot read input file {file}")),
            None => Ok(self.input.as_bytes().to_vec()),
        }
    }
}

/// 0 for a commit, 1 for a failure.
pub(crate) fn exit_code(report: &TxReport) -> u8 {
    match report.outcome {
        TransactionOutcome::Committed { .. } => 0,
        _ => 1,
    }
}

/// Prints a line of the command's output.
#[allow(clippy::print_stdout, reason = "printing is what the command-line tool is for")]
pub(crate) fn print(text: &str) {
    println!("{text}");
}

/// Pretty JSON of a value (exit code 5 if it cannot be written).
pub(crate) fn json(value: &impl serde::Serialize) -> Result<String, Failed> {
    serde_json::to_string_pretty(value).map_err(|e| Failed { code: 5, error: e.into() })
}
