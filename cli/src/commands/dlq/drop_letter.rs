//! `txmirror dlq drop` (a file not named `drop.rs`, which would shadow `drop`).

use super::missing;
use crate::commands::{Target, blocking, print};
use crate::exit::Failed;

/// Removes a dead letter without running it.
#[derive(clap::Args, Debug)]
pub(crate) struct DlqDropCommand {
    /// The transaction id.
    id: String,
}

impl DlqDropCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        match target {
            Target::Local(local) => {
                if !local.open()?.drop_dead_letter(&self.id)? {
                    return Err(missing(&self.id, &local.data_dir));
                }
            }
            Target::Remote(remote) => {
                let path = format!("/v1/dlq/{}", self.id);
                blocking(remote, move |remote| remote.call("DELETE", &path, None, &[])).await?;
            }
        }
        print(&format!("dropped {}", self.id));
        Ok(0)
    }
}
