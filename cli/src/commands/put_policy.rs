//! `txmirror --server … put-policy`: a module's policy on the service.

use super::{Target, print};
use crate::exit::Failed;
use std::path::PathBuf;

/// Puts a module's policy on the service (--server; operator token).
#[derive(clap::Args, Debug)]
pub(crate) struct PutPolicyCommand {
    /// The module's hash.
    module: String,
    /// The policy file (TOML).
    policy: PathBuf,
}

impl PutPolicyCommand {
    pub(crate) async fn execute(self, target: Target) -> Result<u8, Failed> {
        let text = std::fs::read(&self.policy)
            .map_err(|e| Failed { code: 4, error: anyhow::anyhow!("cannot read {}: {e}", self.policy.display()) })?;
        let path = format!("/v1/modules/{}/policy", self.module);
        target.remote(move |remote| remote.call("PUT", &path, Some(("application/toml", text)), &[])).await?;
        print(&format!("policy of {} set from {}", self.module, self.policy.display()));
        Ok(0)
    }
}
