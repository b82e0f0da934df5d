//! `txmirror --server … model status`.

use crate::commands::{Target, json, print};
use crate::exit::Failed;

/// The service's model and why its file last failed to load (--server).
#[derive(clap::Args, Debug)]
pub(crate) struct StatusCommand {}

impl StatusCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let status = target.remote(|remote| remote.call("GET", "/v1/model", None, &[])).await?;
        print(&json(&status)?);
        Ok(0)
    }
}
