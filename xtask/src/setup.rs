//! Installs what a fresh machine lacks.

use anyhow::{Context as _, Result};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Adds the `wasm32-wasip2` target through rustup if it is missing.
pub(crate) fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm32-wasip2 target")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!("installing the {WASM_TARGET} target with rustup");
    crate::run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}
