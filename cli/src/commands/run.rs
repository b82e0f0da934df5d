//! `txmirror run`: one transaction on the local store.

use super::{RequestArgs, Target, exit_code, json, load, print};
use crate::exit::Failed;
use crate::render;
use std::path::PathBuf;
use std::sync::Arc;
use txmirror_runtime::{CancelToken, Policy, TxRequest};

/// Runs one transaction and prints its result, commit version and traces.
///
/// The first Ctrl-C cancels the transaction where stopping is safe (what
/// it had sent is compensated, if the policy has a compensation path) and
/// prints how it ended; a second one quits at once.
#[derive(clap::Args, Debug)]
pub(crate) struct RunCommand {
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
}

impl RunCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let local = target.local()?;
        let runtime = local.open_with_model()?;
        let policy = Arc::new(Policy::from_file(&self.policy)?);
        let module = load(&runtime, &self.module).await?;
        let input = self.request.input_bytes()?;
        let RequestArgs { path, transaction_id, idempotency_key, profile, .. } = self.request;
        let cancel = CancelToken::new();
        let request = TxRequest {
            transaction_id,
            path,
            input,
            idempotency_key,
            caller: None,
            profile,
            fence: None,
            cancel: Some(cancel.clone()),
            notify: None,
        };
        if self.dry_run {
            let dry = runtime.dry_run(&module, &policy, request).await?;
            print(&if self.json { json(&dry)? } else { render::dry_run(&dry) });
            return Ok(if dry.result.is_ok() { 0 } else { 1 });
        }
        let interrupts = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("cancelling the transaction where it can stop safely; Ctrl-C again quits at once");
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let report = runtime.execute(&module, &policy, request).await;
        interrupts.abort();
        let report = report?;
        print(&if self.json { json(&report)? } else { render::report(&report) });
        Ok(exit_code(&report))
    }
}
