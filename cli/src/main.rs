//! `txmirror`: run transactions and inspect what they did.
//!
//! One file and one struct per subcommand under `commands/`, dispatched
//! once; the global options choose where they act (the local store, or a
//! service with `--server`).
//!
//! Exit codes:
//! - 0: the transaction committed (or, with `--dry-run`, the path returned);
//! - 1: the transaction ran and failed (the report says why);
//! - 2: the command line is wrong;
//! - 3: the module was refused;
//! - 4: the policy was refused, or the request does not fit (an unknown
//!   path, a duplicate transaction id, an idempotency key already used for
//!   another request, no such transaction or dead letter);
//! - 5: the store, the service or the runtime failed.

use clap::Parser;
use commands::{Command, Local, Target};
use exit::Failed;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use txmirror_service::telemetry::{EXPORTED_SPANS, Telemetry};

mod commands;
mod exit;
mod remote;
mod render;
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
    /// store: `tx`, `dlq`, `model status|reload`, `upload`, `put-policy`
    /// and `submit` then go through its API.
    #[arg(long, global = true, env = "TXMIRROR_SERVER")]
    server: Option<String>,

    /// The bearer token for --server.
    #[arg(long, global = true, env = "TXMIRROR_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// For an https:// --server: trust the certificates in this PEM file
    /// (a private CA, or a self-signed certificate) instead of the web's
    /// certificate authorities.
    #[arg(long, global = true, env = "TXMIRROR_CA_FILE")]
    ca_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    fn target(&self) -> Result<Target, Failed> {
        Ok(match &self.server {
            Some(server) => Target::Remote(remote::Remote::new(server, self.token.clone(), self.ca_file.as_deref())?),
            None => Target::Local(Local { data_dir: self.data_dir.clone(), model: self.model.clone() }),
        })
    }
}

fn main() -> ExitCode {
    // Dropped last: what is batched for the collector leaves before exit.
    let telemetry = match Telemetry::from_env() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::EnvFilter::from_env("TXMIRROR_LOG"));
    // The exported spans are filtered apart from the log: a quiet log
    // still exports every transaction.
    let exported = telemetry
        .as_ref()
        .map(|telemetry| telemetry.layer().with_filter(tracing_subscriber::EnvFilter::new(EXPORTED_SPANS)));
    tracing_subscriber::registry().with(log).with(exported).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(5);
        }
    };
    let result = cli.target().map(|target| runtime.block_on(cli.command.execute(target)));
    match result.and_then(|result| result) {
        Ok(code) => ExitCode::from(code),
        Err(Failed { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's arguments are checked at once (names unique,
    /// groups sound), not first when a user runs the one that is wrong.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
