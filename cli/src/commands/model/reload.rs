//! `txmirror --server … model reload`.

use crate::commands::{Target, json, print};
use crate::exit::Failed;

/// Makes the service load its model file again now (--server).
#[derive(clap::Args, Debug)]
pub(crate) struct ReloadCommand {}

impl ReloadCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let answer = target.remote(|remote| remote.call("POST", "/v1/model/reload", None, &[])).await?;
        print(&json(&answer)?);
        Ok(0)
    }
}
