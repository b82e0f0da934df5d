//! Chores of the txmirror project, run as `cargo xtask <command>`.
//!
//! - `demo`: installs what is missing, builds the examples and the CLI, and
//!   runs a short scenario on a fresh embedded store, printing the primary's
//!   and the mirror's traces.
//! - `test`: installs what is missing and runs the whole test suite.
//! - `bench`: runs `benches/src/bin/bench-report.rs` (the peer comparison
//!   and the durable throughput) optimised, prints its tables and writes
//!   them into `docs/benchmarks.md`.
//!
//! - `setup`: installs what is missing (see `setup.rs`): the wasm targets,
//!   the ONNX Runtime library and the training packages.
//!
//! - `train-model`: the shipped model from two seeded fault workloads
//!   (`learning.rs`).
//! - `effectiveness`: `docs/effectiveness.md`, the fault workload with and
//!   without the predictor.
//!
//! `demo` and `test` start with `setup`: a fresh machine has only Rust,
//! Python and pip.

#![allow(clippy::print_stdout, reason = "a chore runner talks to its user")]

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod demo;
mod learning;
mod setup;

fn main() -> std::process::ExitCode {
    match run_chore() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_chore() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("demo") => {
            setup::ensure_all(&root)?;
            demo::run(&root)
        }
        Some("test") => {
            setup::ensure_all(&root)?;
            run(Command::new(cargo()).current_dir(&root).args(["test", "--workspace"]).args(&args[1..]))
        }
        Some("bench") => {
            setup::ensure_all(&root)?;
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["run", "--profile", "bench", "-p", "txmirror-benches", "--bin", "bench-report", "--"])
                .args(["--write", "docs/benchmarks.md"])
                .args(&args[1..]))
        }
        Some("setup") => setup::ensure_all(&root),
        Some("train-model") => {
            setup::ensure_all(&root)?;
            learning::train_model(&root)
        }
        Some("effectiveness") => {
            setup::ensure_all(&root)?;
            learning::effectiveness(&root)
        }
        _ => {
            println!(
                "usage: cargo xtask <demo | test [cargo test args] | bench [--quick] [peers] [durable] | setup | \
                 train-model | effectiveness>"
            );
            if args.is_empty() { Ok(()) } else { bail!("unknown command {:?}", args[0]) }
        }
    }
}

/// The directory of the workspace's `Cargo.toml`.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs this xtask.
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a command, failing if it fails.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
