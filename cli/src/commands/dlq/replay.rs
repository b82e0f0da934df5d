//! `txmirror dlq replay`.

use super::missing;
use crate::commands::{Target, blocking, exit_code, json, load, print};
use crate::exit::Failed;
use crate::remote::print_report;
use crate::render;
use std::path::PathBuf;
use std::sync::Arc;
use txmirror_runtime::{Policy, ReplayError};

/// Runs a dead letter again (once); removes it if it commits.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqReplayCommand {
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
}

impl DlqReplayCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let local = match target {
            Target::Local(local) => local,
            Target::Remote(remote) => {
                let (path, as_json) = (format!("/v1/dlq/{}/replay", self.id), self.json);
                return blocking(remote, move |remote| print_report(remote.call("POST", &path, None, &[])?, as_json))
                    .await;
            }
        };
        let (Some(module), Some(policy)) = (self.module, self.policy) else {
            return Err(Failed::usage("a local replay needs the module and --policy (the service knows both)"));
        };
        let runtime = local.open_with_model()?;
        let policy = Arc::new(Policy::from_file(&policy)?);
        let module = load(&runtime, &module).await?;
        let report = runtime.replay_dead_letter(&module, &policy, &self.id).await.map_err(|error| match error {
            ReplayError::NoSuchDeadLetter(_) => missing(&self.id, &local.data_dir),
            other => Failed::from(other),
        })?;
        print(&if self.json { json(&report)? } else { render::report(&report) });
        Ok(exit_code(&report))
    }
}
