//! Clippy's lints in the same compilation as the tests.
//!
//! `cargo clippy` is `cargo check` with `clippy-driver` wrapping rustc for
//! the workspace's own crates. A check build shares no artifacts with the
//! test build, so running both compiles every dependency twice: on two
//! cores, minutes of wasmtime and cranelift. Here the test build itself is
//! linted: cargo runs `clippy-driver` as `RUSTC_WORKSPACE_WRAPPER`, which
//! lints the workspace's crates and compiles them as rustc would, while
//! dependencies are compiled once, normally. `CLIPPY_ARGS` carries
//! `-D warnings` to the driver the way `cargo clippy` passes its own
//! arguments, so that any warning, rustc's or clippy's, fails the build.

use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// How `cargo clippy` separates the arguments it hands the driver.
const SEPARATOR: &str = "__CLIPPY_HACKERY__";

/// `command` (a cargo build or test), linted by clippy with warnings as errors.
pub(crate) fn linted(command: &mut Command) -> Result<&mut Command> {
    let driver = clippy_driver()?;
    Ok(command.env("RUSTC_WORKSPACE_WRAPPER", driver).env("CLIPPY_ARGS", ["-D", "warnings", ""].join(SEPARATOR)))
}

/// The toolchain's `clippy-driver`, installed with rustup if it is missing.
fn clippy_driver() -> Result<PathBuf> {
    let which = || Command::new("rustup").args(["which", "clippy-driver"]).output();
    let mut output = which().context("rustup is needed to find clippy")?;
    if !output.status.success() {
        println!("installing clippy with rustup");
        crate::run(Command::new("rustup").args(["component", "add", "clippy"]))?;
        output = which().context("rustup is needed to find clippy")?;
    }
    if !output.status.success() {
        bail!("rustup finds no clippy-driver: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}
