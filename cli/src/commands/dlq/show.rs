//! `txmirror dlq show`.

use super::missing;
use crate::commands::{Target, blocking, json, print};
use crate::exit::Failed;

/// Prints a dead letter with its whole history.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqShowCommand {
    /// The transaction id.
    id: String,
}

impl DlqShowCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let text = match target {
            Target::Local(local) => {
                let letter = local.open()?.dead_letter(&self.id)?.ok_or_else(|| missing(&self.id, &local.data_dir))?;
                json(&letter)?
            }
            Target::Remote(remote) => {
                let path = format!("/v1/dlq/{}", self.id);
                json(&blocking(remote, move |remote| remote.call("GET", &path, None, &[])).await?)?
            }
        };
        print(&text);
        Ok(0)
    }
}
